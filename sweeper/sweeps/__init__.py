"""The Optuna sweeper's logic (the Hydra plugin in ``hydra_plugins/sweeper_optuna`` is thin).

Modules: ``search_space`` (override grammar -> distributions), ``storage`` (journal file / RDB),
``factories`` (samplers, pruners), ``trial`` (the pruning callback inside a trial), ``_impl``
(ask/tell slots, stale trials, failures), ``results`` (summary, optimization_results.yaml),
``progress``, ``hooks`` (study-level hooks for tracking).
"""
