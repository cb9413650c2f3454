"""Where runs are tracked: the embedded SQLite store under ``outputs/`` or any tracking URI.

The embedded default is ``sqlite:///<abs>/outputs/mlflow.db`` with artifacts under
``outputs/mlartifacts``. Several trial processes share it safely:

* the first process to touch a new database creates its tables under an exclusive file lock
  (MLflow would otherwise run its migrations concurrently in each process), atomically: in a
  temp file beside it, switched to WAL journaling (so readers, the UI, never block the
  writer), then renamed into place. MLflow's migrations are not transactional on SQLite, so
  a kill during them used to leave a half-built database that broke every later command;
  :func:`prepare_store` moves such a database aside and rebuilds it if it holds no runs;
* MLflow sets ``busy_timeout`` to 20 s on each SQLite session; on top of that every write
  goes through :func:`retry`, which retries "database is locked" / temporarily unavailable
  errors with jittered exponential backoff (SQLite may refuse a lock at once, without
  waiting, when a reader upgrades to a writer).

mlflow is imported lazily (it costs ~2 s), only by the functions that need it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
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
# A study's parent run carries ROLE_TAG=parent (its trials, re-tests and reproductions do not)
ROLE_TAG = "sweeper.role"
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


def is_remote(uri: str | None) -> bool:
    """A store behind a network (a tracking server, a database server), not a local file."""
    if not uri or sqlite_path(uri) is not None:
        return False
    return "://" in uri and not uri.startswith(("file:", "sqlite:"))


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The configured URI, else ``$MLFLOW_TRACKING_URI``, else the embedded SQLite store.

    A masked URI (``user:***@``, as configs hold it) comes back with its real password
    (``sweeper.secrets.reveal``; ValueError if this process was never given it)."""
    from sweeper import secrets

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    return secrets.reveal(uri)


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


class StoreError(RuntimeError):
    """The embedded store cannot be used as it is; the message is one line."""


# Tables every MLflow schema since 1.x has: a database without one of them is half-built.
# (Not the installed MLflow's full list: an older revision lacks the newer tables, and
# :func:`_state` compares the revision itself.)
CORE_TABLES = (
    "experiments", "runs", "tags", "params", "metrics", "latest_metrics", "experiment_tags",
)  # fmt: skip
_SIDECARS = ("-wal", "-shm", "-journal")  # SQLite's files beside a database, named after it


def _state(path: Path) -> tuple[str, str]:
    """``("missing"|"ready"|"broken"|"unreadable", why)`` of the database file ``path``.

    ready: an ``alembic_version`` row at the installed MLflow's head revision (or one it
    does not know: a newer MLflow's, left to MlflowClient), the core tables, and no
    ``_alembic_tmp_*`` table (what a migration killed half-way leaves; the next one then
    fails with "table _alembic_tmp_tags already exists"). MLflow's migrations are not
    transactional on SQLite, so a kill between two of them leaves an older revision: broken
    too (MlflowClient refuses it). Opening it rolls back a hot journal, as any SQLite reader
    does."""
    import sqlite3

    if not path.exists() or path.stat().st_size == 0:
        if any(_sidecar(path, s).exists() for s in _SIDECARS):
            return "broken", "half-built: an empty database with leftover journal files"
        return "missing", ""
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as con:
            names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            leftovers = sorted(n for n in names if n.startswith("_alembic_tmp_"))
            if leftovers:
                return "broken", f"half-built: an interrupted migration left table {leftovers[0]}"
            missing = [t for t in ("alembic_version", *CORE_TABLES) if t not in names]
            if missing:
                return "broken", f"half-built: table {missing[0]} is missing ({len(names)} tables)"
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
            if row is None:
                return "broken", "half-built: alembic_version is empty"
            head, known = _migrations()
            if head is not None and row[0] != head and row[0] in known:
                return "broken", f"schema revision {row[0]}, not the installed MLflow's {head}"
    except sqlite3.Error as err:
        if is_transient(err):
            raise
        return "unreadable", f"{type(err).__name__}: {err}"
    return "ready", ""


@functools.cache
def _migrations() -> tuple[str | None, frozenset[str]]:
    """The installed MLflow's head schema revision (None if not exactly one) and all its
    revisions, read from its alembic scripts without importing mlflow or alembic (~2 s)."""
    import importlib.util
    import re

    spec = importlib.util.find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        return None, frozenset()
    versions = Path(spec.submodule_search_locations[0]) / "store" / "db_migrations" / "versions"
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in versions.glob("*.py"):
        text = script.read_text(errors="replace")
        rev = re.search(r"^revision\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
        down = re.search(r"^down_revision\s*=\s*(\([^)]*\)|[^\n]*)", text, re.M)
        if rev is None:
            continue
        revisions.add(rev.group(1))
        if down is not None:
            parents.update(re.findall(r"['\"]([^'\"]+)['\"]", down.group(1)))
    heads = revisions - parents
    return (next(iter(heads)) if len(heads) == 1 else None), frozenset(revisions)


def _has_tables(path: Path) -> bool:
    """Whether ``path`` is a complete MLflow database (see :func:`_state`)."""
    return _state(path)[0] == "ready"


def _sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


# What a database holds that is worth keeping: (label, tables), a migration's copy included.
_DATA = (
    ("run", ("runs", "_alembic_tmp_runs")),
    ("registered model", ("registered_models", "_alembic_tmp_registered_models")),
    ("trace", ("trace_info", "_alembic_tmp_trace_info")),
)


def _data_in(path: Path) -> str:
    """What a (half-built) database holds, e.g. ``"3 runs, 1 trace"``; "" when nothing."""
    import sqlite3

    if not path.exists() or path.stat().st_size == 0:
        return ""
    parts = []
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as con:
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for label, tables in _DATA:
            n = sum(
                con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
                for t in tables
                if t in names
            )
            if n:
                parts.append(f"{n} {label}{'s' if n > 1 else ''}")
    return ", ".join(parts)


def _set_aside(path: Path, uri: str, why: str) -> None:
    """An unusable database: moved aside (logged) when it holds nothing, else StoreError."""
    import sqlite3

    try:
        held = _data_in(path)
    except sqlite3.Error as err:
        raise StoreError(
            f"MLflow store {path} is unusable ({why}) and cannot be read "
            f"({type(err).__name__}: {err}): move it away or repair it"
        ) from None
    if held:
        fix = (
            f"back it up, then run 'mlflow db upgrade {uri}'"
            if why.startswith("schema revision")
            else "move it away to start a new store, or repair it (back it up first)"
        )
        raise StoreError(f"MLflow store {path} is unusable ({why}) and holds {held}: {fix}")
    aside = _move_aside(path)
    logging.getLogger(__name__).warning(
        "MLflow store %s was unusable (%s) and held no runs: moved aside to %s, creating a new one",
        path,
        why,
        aside.name,
    )


def _move_aside(path: Path) -> Path:
    """Rename ``path`` and its journal files to ``<name>.broken-<timestamp>[...]``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.broken-{stamp}")
    n = 1
    while any(_sidecar(aside, s).exists() for s in ("", *_SIDECARS)):
        n += 1
        aside = path.with_name(f"{path.name}.broken-{stamp}-{n}")
    for suffix in ("", *_SIDECARS):  # the database first: its journal stays with it or is gone
        with contextlib.suppress(FileNotFoundError):
            os.rename(_sidecar(path, suffix), _sidecar(aside, suffix))
    return aside


def _remove_temps(path: Path) -> None:
    """Delete ``<name>.tmp-<pid>`` builds (and their journals). Called under the exclusive lock,
    which every builder holds while building: any such file is a dead (killed) build's."""
    for tmp in path.parent.glob(f"{path.name}.tmp-*"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _build(path: Path, uri: str) -> None:
    """Create the schema in ``<name>.tmp-<pid>`` beside ``path``, switch it to WAL, close
    everything (no -wal/-shm left), fsync it and rename it into place: a kill at any moment
    leaves either no database or a complete one (plus a temp file the next build removes)."""
    import sqlite3

    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp_uri = sqlite_uri(tmp)
    try:
        SqlAlchemyStore(tmp_uri, artifact_root(uri))  # runs MLflow's migrations
        engine = SqlAlchemyStore._engine_map.pop(tmp_uri, None)  # its cached engine: closed
        if engine is not None:
            engine.dispose()
        with contextlib.closing(sqlite3.connect(tmp, timeout=30)) as con:
            con.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the file header
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        # the last connection's close checkpointed and deleted -wal and -shm
        left = [s for s in _SIDECARS if _sidecar(tmp, s).exists()]
        if left:
            raise StoreError(f"MLflow store: {tmp} still has {left[0]} open after creation")
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent, directory=True)
    finally:
        for suffix in ("", *_SIDECARS):
            with contextlib.suppress(FileNotFoundError):
                _sidecar(tmp, suffix).unlink()


def prepare_store(uri: str) -> None:
    """Make sure a ``sqlite:///`` store's database is complete, creating it if needed.

    Readers check it under a shared file lock; creation and repair happen under the exclusive
    lock, atomically (:func:`_build`). A database MlflowClient cannot use (half-built by a
    creation killed in an older version, or at an older schema revision; see :func:`_state`)
    is moved aside to ``mlflow.db.broken-<timestamp>`` and rebuilt when it holds no runs (nor
    registered models or traces); otherwise :class:`StoreError` names it and says what to do
    (user data is never deleted)."""
    path = sqlite_path(uri)
    if path is None or uri in _initialized:
        return
    lock = path.with_name(path.name + ".lock")
    with file_lock(lock, shared=True):  # never look at a database half-way through a repair
        ready = _has_tables(path)
    if ready:
        _initialized.add(uri)
        return
    for name in ("mlflow.store.db.utils", "alembic"):  # "Creating initial tables..." chatter
        logging.getLogger(name).setLevel(logging.WARNING)
    with file_lock(lock):
        state, why = _state(path)  # another process may have made it while we waited
        if state != "ready":
            _remove_temps(path)
            if state == "unreadable":
                raise StoreError(
                    f"MLflow store {path} is not a readable SQLite database ({why}): "
                    "move it away or set tracking.tracking_uri"
                )
            if state == "broken":
                _set_aside(path, uri, why)
            _build(path, uri)
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


def find_original(client, prefix: str):
    """The run that first trained the config whose hash starts with ``prefix`` (a reproduced
    or reused run only when there is no original), and that hash; LookupError (one line) when
    no config or several match."""
    runs = search_all_runs(
        client,
        f"tags.config_hash LIKE '{prefix}%'",
        order_by=["attributes.start_time DESC"],
        max_results=5000,
    )
    hashes = sorted({r.data.tags["config_hash"] for r in runs})
    if not hashes:
        from sweeper.secrets import mask

        raise LookupError(f"no run with config hash {prefix} in {mask(client.tracking_uri)}")
    if len(hashes) > 1:
        shown = ", ".join(h[:12] for h in hashes[:5]) + (", ..." if len(hashes) > 5 else "")
        raise LookupError(
            f"config hash prefix {prefix} is ambiguous: {len(hashes)} configs "
            f"match ({shown}); give more digits"
        )

    def rank(r):
        tags = r.data.tags
        original = "reproduced_from" not in tags and "reused_from" not in tags
        return (not original, r.info.status != "FINISHED", -r.info.start_time)

    return sorted(runs, key=rank)[0], hashes[0]
