"""The names of the user attributes the sweeper writes on Optuna trials and studies.

Why one module: these names are the contract between the process that writes a trial (the
sweeper, a packed worker, a trial's process), the code that reads it back (the summary,
``sweeper report``, ``sweeper studies``, the MLflow parent run, a resumed sweep) and studies
stored by older versions. Each is stated once here; the values never change.
"""

PREFIX = "sweeper:"

# -- on trials --------------------------------------------------------------------------------
UNCOUNTED = "sweeper:uncounted"  # a stale or surplus trial: does not count towards n_trials
SEEDS = "sweeper:seeds"  # the tuning seeds the trial trained (its replicates)
AGGREGATE = "sweeper:aggregate"  # how its value aggregates them (iqm, mean, ...)
OVERRIDES = "sweeper:overrides"  # the trial's overrides, to reproduce it
ERROR = "sweeper:error"  # why it failed, on one line
OUTPUT_DIR = "sweeper:output_dir"  # its run directory
OWNER = "sweeper:owner"  # the process running it (host, pid, start)
HEARTBEAT = "sweeper:heartbeat"  # the owner's last sign of life
REQUEUED = "sweeper:requeued_from"  # a queued trial re-running a stale trial's grid point
RETRIES = "sweeper:retries"  # how many attempts of this point died with their worker before
WORKER_PID = "sweeper:worker_pid"  # the packed worker process that trained it

# -- on studies -------------------------------------------------------------------------------
FIXED_OVERRIDES = "sweeper:fixed_overrides"  # the sweep's fixed overrides (trials: theirs)
SEARCH_SPACE = "sweeper:search_space"
REPLICATE_SEEDS = "sweeper:replicate_seeds"  # {"sweep_seed", "tune"}: every trial's seeds
PRUNER = "sweeper:pruner"  # the pruner's JSON description (trial processes rebuild it)
RETEST = "sweeper:retest"  # the outcome of re-testing the best configs on test seeds
SWEEP = "sweeper:sweep"  # the ready-made sweep config it was started from (+sweep=)
SAMPLER = "sweeper:sampler"  # {"name", "seed"} of its sampler
WORKER = "sweeper:worker:"  # key prefix: one key per sweeper process that worked on it
RETEST_CLAIM = "sweeper:retest_claim:"  # key prefix: one key per attempt to claim the re-test
SWEEP_DIR = "sweeper:sweep_dir"  # the directory the study claimed (a resume goes back to it)
