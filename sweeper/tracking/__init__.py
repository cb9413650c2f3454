"""MLflow tracking: every run an MLflow run, a parent run per Optuna study, reports.

On by default (``tracking.enabled=true``). Every ``python -m sweeper.train`` run, each job of
a Hydra multirun and each trial of the Optuna sweeper becomes an MLflow run in the embedded
store ``sqlite:///<cwd>/outputs/mlflow.db`` (artifacts in ``outputs/mlartifacts``), or in
``tracking.tracking_uri`` / ``$MLFLOW_TRACKING_URI`` (e.g. an ``mlflow server``). Options:

    tracking.enabled=false              no MLflow at all
    tracking.tracking_uri=http://127.0.0.1:5000
    tracking.experiment=NAME            default: the study name, else <agent>_<env>
    tracking.skip_existing=true         reuse a FINISHED run of the same config hash

Commands (``sweeper --help``):

    sweeper hash agent.lr=1e-3 seed=1   the config hash, no training
    sweeper reproduce 3f2a9c            re-run that config, compare final metrics (exit 0: same)
    sweeper report --study NAME         top trials, best config, importances, plots
    sweeper ui --port 5000              the MLflow UI on 127.0.0.1 over the embedded store

Importing this package does not import mlflow (about 2 s of CPU): the training process never
does (a logging child process makes the MLflow calls, ``sweeper.tracking.worker``).
"""

import importlib
from typing import TYPE_CHECKING, Any

# The API the sweeper (``sweeper.sweeps``) and the app use; the modules behind it are
# tracking's own (an import-linter contract in pyproject.toml keeps sweeps off them). Loaded
# on first use (PEP 562): the logging child imports ``sweeper.tracking.worker``, and this
# package's own import must not pull in the parent run's statistics (numpy, scipy: ~1 s).
_API = {
    "MlflowTracker": "tracker",
    "TrackingUriError": "preflight",
    "check_tracking_uri": "preflight",
    "ensure_parent_run": "parent",
    "finalize_parent_run": "parent",
    "find_parent_run": "parent",
    "is_remote": "store",
    "outputs_dir": "store",
    "resolve_tracking_uri": "store",
    "reuse_existing": "tracker",
    "study_hook": "parent",
    "tracking_callback": "tracker",
}
__all__ = [
    "MlflowTracker",
    "TrackingUriError",
    "check_tracking_uri",
    "ensure_parent_run",
    "finalize_parent_run",
    "find_parent_run",
    "is_remote",
    "outputs_dir",
    "resolve_tracking_uri",
    "reuse_existing",
    "study_hook",
    "tracking_callback",
]

if TYPE_CHECKING:
    from sweeper.tracking.parent import (
        ensure_parent_run,
        finalize_parent_run,
        find_parent_run,
        study_hook,
    )
    from sweeper.tracking.preflight import TrackingUriError, check_tracking_uri
    from sweeper.tracking.store import is_remote, outputs_dir, resolve_tracking_uri
    from sweeper.tracking.tracker import MlflowTracker, reuse_existing, tracking_callback


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    globals()[name] = value
    return value
