"""The Optuna sweeper's logic (the Hydra plugin in ``hydra_plugins/sweeper_optuna`` is thin).

Modules, one concept each: ``search_space`` (override grammar -> distributions), ``factories``
(samplers), ``plan`` (checks and compositions before any trial), ``study_name`` (which study,
which sampler seed), ``ledger`` (ask/claim/tell, counting, stale trials, failures),
``liveness`` (a trial's owner and heartbeat), ``outcome`` (a job's end as an Optuna outcome),
``errors``, ``_impl`` (the slots), ``packing`` / ``packed_workers`` (populations of trials),
``retest`` / ``retest_runs`` (fresh-seed re-tests), ``results`` (summary,
optimization_results.yaml), ``progress``, ``hooks`` (study-level hooks for tracking),
``launcher`` / ``workers`` (the isolated launcher), ``sweep_dir``. The pruner and the trial-side
pruning callback are ``sweeper.pruning``; the storage is ``sweeper.study_storage``.
"""
