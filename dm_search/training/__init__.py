"""Training one trial: its config (``config``), data and label noise (``data``, ``noise``),
networks (``models``), optimiser recipe (``recipe``) and the training loop (``trainer``).

A trial here knows nothing of studies: it imports ``dm_search.loss``, ``dm_search.edf`` and
``dm_search.common``, and never ray or optuna, so that it runs the same in a plain script,
in ``dm-search train`` and in a Ray worker.
"""
