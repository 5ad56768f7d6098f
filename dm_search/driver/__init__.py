"""Running a study on Ray: the driver (``runner``) and the named helpers it hands each job to,
the race of the best candidates (``race``) and the code that runs in a Ray worker (``worker``).

The only package that imports ray. The worker imports neither optuna nor the plotting, so
that a Ray worker process loads only what training needs.
"""
