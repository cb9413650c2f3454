"""Where runs are tracked: the embedded SQLite store under ``outputs/`` or any tracking URI.

The embedded default is ``sqlite:///<abs>/outputs/mlflow.db`` with artifacts under
``outputs/mlartifacts``. Several trial processes share it safely:

* the first process to touch a new database creates its tables under an exclusive file lock
  (MLflow would otherwise run its migrations concurrently in each process) and switches it to
  WAL journaling, so readers (the UI) never block the writer;
* MLflow sets ``busy_timeout`` to 20 s on each SQLite session; on top of that every write
  goes through :func:`retry`, which retries "database is locked" / temporarily unavailable
  errors with jittered exponential backoff (SQLite may refuse a lock at once, without
  waiting, when a reader upgrades to a writer).

mlflow is imported lazily (it costs ~2 s), only by the functions that need it.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
ENV_OUTPUTS = "SWEEPER_OUTPUTS"  # overrides the outputs/ folder of the embedded store
# MLflow 3's UI opens an experiment in its "model training" (runs) view with this tag.
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
_initialized: set[str] = set()


def outputs_dir() -> Path:
    """``$SWEEPER_OUTPUTS``, else ``outputs/`` of the directory the command was started in
    (Hydra's original cwd, also with ``hydra.job.chdir=true``), absolute."""
    if os.environ.get(ENV_OUTPUTS):
        return Path(os.environ[ENV_OUTPUTS]).resolve()
    return (_start_dir() / "outputs").resolve()


def _start_dir() -> Path:
    import sys

    if "hydra" in sys.modules:  # never import hydra just for this
        try:
            from hydra.core.hydra_config import HydraConfig

            if HydraConfig.initialized():
                return Path(HydraConfig.get().runtime.cwd)
        except Exception:  # noqa: BLE001
            pass
    return Path.cwd()


def default_tracking_uri() -> str:
    return sqlite_uri(outputs_dir() / DB_NAME)


def sqlite_uri(path: Path | str) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The configured URI, else ``$MLFLOW_TRACKING_URI``, else the embedded SQLite store."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def artifact_root(uri: str) -> str | None:
    """Where a new experiment's artifacts go: beside a SQLite database; the server decides
    for a tracking server (None)."""
    path = sqlite_path(uri)
    if path is None:
        return None
    return (path.parent / ARTIFACTS_DIR).resolve().as_uri()


@contextlib.contextmanager
def file_lock(path: Path, shared: bool = False):
    """An inter-process lock (fcntl; exclusive unless ``shared``) held for the ``with`` block."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _has_tables(path: Path) -> bool:
    import sqlite3

    if not path.exists() or path.stat().st_size == 0:
        return False
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as con:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
            return row is not None
    except sqlite3.Error:
        return False


def prepare_store(uri: str) -> None:
    """Create the SQLite database's tables once, under a file lock, in WAL mode.

    An existing database is left to MlflowClient (which verifies its schema anyway)."""
    path = sqlite_path(uri)
    if path is None or uri in _initialized:
        return
    lock = path.with_name(path.name + ".lock")
    with file_lock(lock, shared=True):  # never look at a database half-way through creation
        ready = _has_tables(path)
    if ready:
        _initialized.add(uri)
        return
    import logging

    for name in ("mlflow.store.db.utils", "alembic"):  # "Creating initial tables..." chatter
        logging.getLogger(name).setLevel(logging.WARNING)
    with file_lock(lock):
        import sqlite3

        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        if not _has_tables(path):  # else another process made it while we waited
            SqlAlchemyStore(uri, artifact_root(uri))  # creates the schema
            with contextlib.closing(sqlite3.connect(path, timeout=30)) as con:
                con.execute("PRAGMA journal_mode=WAL")
    _initialized.add(uri)


def client(tracking_uri: str | None = None):
    """An MlflowClient on the resolved URI, the store prepared."""
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    prepare_store(uri)
    return MlflowClient(tracking_uri=uri)


def is_transient(err: BaseException) -> bool:
    text = str(err).lower()
    if "database is locked" in text or "database is busy" in text:
        return True
    code = getattr(err, "error_code", "")
    return code in ("TEMPORARILY_UNAVAILABLE",)


def retry(
    fn: Callable[..., T], *args: Any, attempts: int = 8, base: float = 0.05, **kwargs: Any
) -> T:
    """Call ``fn``; on a transient store error wait (jittered, doubling) and try again."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            if attempt == attempts - 1 or not is_transient(err):
                raise
            time.sleep(base * 2**attempt * (0.5 + random.random()))
    raise AssertionError("unreachable")


def get_or_create_experiment(mlflow_client, name: str) -> str:
    """The id of experiment ``name``, created (artifacts beside a SQLite store) if missing."""
    exp = retry(mlflow_client.get_experiment_by_name, name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            retry(mlflow_client.restore_experiment, exp.experiment_id)
        if KIND_TAG not in exp.tags:
            retry(mlflow_client.set_experiment_tag, exp.experiment_id, KIND_TAG, KIND)
        return exp.experiment_id
    uri = mlflow_client.tracking_uri
    root = artifact_root(uri)
    location = f"{root}/{_safe(name)}" if root else None
    try:
        return retry(
            mlflow_client.create_experiment, name, artifact_location=location, tags={KIND_TAG: KIND}
        )
    except Exception as err:  # another process created it meanwhile
        exp = retry(mlflow_client.get_experiment_by_name, name)
        if exp is None:
            raise err
        return exp.experiment_id


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "experiment"


def all_experiment_ids(mlflow_client) -> list[str]:
    from mlflow.entities import ViewType

    exps = retry(
        mlflow_client.search_experiments, view_type=ViewType.ACTIVE_ONLY, max_results=50_000
    )
    return [e.experiment_id for e in exps]


def search_all_runs(
    mlflow_client, filter_string: str, order_by: list[str] | None = None, max_results: int = 1000
) -> list:
    """Active runs matching ``filter_string`` in every active experiment."""
    ids = all_experiment_ids(mlflow_client)
    runs: list = []
    for start in range(0, len(ids), 100):  # search_runs takes at most 100 experiments
        token = None
        while True:
            page = retry(
                mlflow_client.search_runs,
                ids[start : start + 100],
                filter_string,
                max_results=max_results,
                order_by=order_by,
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token or len(runs) >= max_results:
                break
    return runs
