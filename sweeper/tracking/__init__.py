"""MLflow tracking: every run an MLflow run, a parent run per Optuna study, reports.

Importing this package does not import mlflow (about 2 s): the functions that need it do.
"""

from sweeper.tracking.parent import ensure_parent_run, finalize_parent_run, study_hook
from sweeper.tracking.tracker import MlflowTracker, reuse_existing, tracking_callback

__all__ = [
    "MlflowTracker",
    "ensure_parent_run",
    "finalize_parent_run",
    "reuse_existing",
    "study_hook",
    "tracking_callback",
]
