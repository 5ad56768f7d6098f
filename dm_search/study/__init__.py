"""What a study is: its spec (``spec``), each family's search coordinates and ranges
(``families``), the search space Optuna samples (``space``), the early-stopping rules
(``stopping``) and the racing rules that pick a winner (``racing``).

Pure rules and definitions: nothing here trains or writes. Imports ``dm_search.training``
(for trial configs), ``dm_search.edf``, ``dm_search.common`` and optuna; never ray.
"""
