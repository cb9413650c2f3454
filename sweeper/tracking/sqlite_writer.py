"""Direct writes of a run's rows into the embedded SQLite store.

MLflow's SQLAlchemy store costs ~70 ms of CPU per run of a sweep trial (create the run, its
params, tags, metrics, termination: each call a new ORM session that re-reads the run), about
6% of a default trial's training, spent on the same 2 cores the trials train on. These are
the same rows written with plain ``sqlite3``, a transaction per op, in a few ms:

* ``create_run``: a ``runs`` row as ``SqlAlchemyStore.create_run`` makes it (RUNNING, active,
  ``name`` from the ``mlflow.runName`` tag, ``user_id`` from ``mlflow.user``, artifact URI
  ``<experiment artifact location>/<run id>/artifacts``), its tags and params;
* ``set_tags``: upserts (``mlflow.runName`` also renames the run, as MLflow does);
* ``log_metrics``: ``metrics`` rows and MLflow's rule for ``latest_metrics`` (highest step,
  then timestamp, then value);
* ``terminate``: status and end time.

Keys and values follow MLflow's rules: the usual ones (ASCII names, values within the length
limits) are accepted here; anything else goes through MLflow's own validators (which raise or
truncate). So a sweep's logging process never imports mlflow (~2.5 s of CPU per worker
process, as much as two trials' training). Every write checks that the run (or experiment)
is active, as MLflow does. Used only when the tables have exactly the columns of the MLflow
schema this was written against (checked once per database); otherwise
:attr:`SqliteWriter.usable` is False and the tracker uses MlflowClient.
``tests/tracking/test_sqlite_writer.py`` checks that a run written here reads back through
MlflowClient exactly as one written through MlflowClient.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from sweeper.tracking import store
from sweeper.tracking.limits import MAX_KEY, MAX_PARAM, MAX_TAG

SCHEMA = {
    "runs": {
        "run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id",
        "status", "start_time", "end_time", "source_version", "lifecycle_stage",
        "artifact_uri", "experiment_id", "deleted_time",
    },
    "tags": {"key", "value", "run_uuid"},
    "params": {"key", "value", "run_uuid"},
    "metrics": {"key", "value", "timestamp", "run_uuid", "step", "is_nan"},
    "latest_metrics": {"key", "value", "timestamp", "step", "is_nan", "run_uuid"},
    "experiments": {
        "experiment_id", "name", "artifact_location", "lifecycle_stage", "creation_time",
        "last_update_time", "workspace",
    },
    "experiment_tags": {"key", "value", "experiment_id"},
}  # fmt: skip
RUN_NAME_TAG, USER_TAG = "mlflow.runName", "mlflow.user"
# A strict subset of the names MLflow accepts (it also allows "/", ":" and spaces, with rules)
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


class SqliteWriter:
    """One connection to a store's database; see the module docstring."""

    def __init__(self, path: Path | str) -> None:
        self.con = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.con.execute("PRAGMA busy_timeout = 30000")

        def columns(table: str) -> set[str]:
            return {row[1] for row in self.con.execute(f"PRAGMA table_info({table})")}

        self.usable = all(columns(table) == cols for table, cols in SCHEMA.items())

    def close(self) -> None:
        with contextlib.suppress(sqlite3.ProgrammingError):  # another thread's: left to gc
            self.con.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, taken at once (no reader-to-writer upgrade to fail)."""
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _check_run_active(self, con: sqlite3.Connection, run_id: str) -> None:
        row = con.execute("SELECT lifecycle_stage FROM runs WHERE run_uuid = ?", (run_id,))
        stage = row.fetchone()
        if stage is None:
            raise RuntimeError(f"Run with id={run_id} not found")
        if stage[0] != "active":
            raise RuntimeError(f"The run {run_id} must be in the 'active' state")

    # -- runs -------------------------------------------------------------------------------
    def experiment_of(self, run_id: str) -> str:
        row = self.con.execute(
            "SELECT experiment_id FROM runs WHERE run_uuid = ?", (run_id,)
        ).fetchone()
        if row is None:
            raise RuntimeError(f"Run with id={run_id} not found")
        return str(row[0])

    def active_experiment(self, name: str, tag: str) -> str | None:
        """The id of the active experiment ``name`` (default workspace) that has tag ``tag``;
        None otherwise (MLflow then creates, restores or tags it)."""
        row = self.con.execute(
            "SELECT e.experiment_id FROM experiments e WHERE e.name = ? "
            "AND e.workspace = 'default' AND e.lifecycle_stage = 'active' AND EXISTS "
            "(SELECT 1 FROM experiment_tags t WHERE t.experiment_id = e.experiment_id "
            "AND t.key = ?)",
            (name, tag),
        ).fetchone()
        return None if row is None else str(row[0])

    def create_run(
        self,
        experiment_id: str,
        tags: Mapping[str, str],
        params: Mapping[str, str],
        start_time: int,
    ) -> tuple[str, str]:
        """Create a RUNNING run with its tags and params; its id and artifact URI."""
        return store.retry(self._create_run, experiment_id, tags, params, start_time)

    def _create_run(self, experiment_id, tags, params, start_time) -> tuple[str, str]:
        tag_rows = _tags(tags)
        param_rows = [_param(k, str(v)) for k, v in params.items()]
        run_id = uuid.uuid4().hex
        given = dict(tag_rows)
        name, user = given.get(RUN_NAME_TAG), given.get(USER_TAG, "unknown")
        if name is None:
            raise ValueError(f"create_run needs the {RUN_NAME_TAG} tag")
        with self._write() as con:
            row = con.execute(
                "SELECT artifact_location, lifecycle_stage FROM experiments "
                "WHERE experiment_id = ?",
                (int(experiment_id),),
            ).fetchone()
            if row is None:
                raise RuntimeError(f"No Experiment with id={experiment_id} exists")
            if row[1] != "active":
                raise RuntimeError(f"The experiment {experiment_id} must be in the 'active' state")
            artifact_uri = _append_to_uri(row[0], run_id, "artifacts")
            con.execute(
                "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, "
                "user_id, status, start_time, end_time, deleted_time, source_version, "
                "lifecycle_stage, artifact_uri, experiment_id) "
                "VALUES (?, ?, 'UNKNOWN', '', '', ?, 'RUNNING', ?, NULL, NULL, '', 'active', ?, ?)",
                (run_id, name, user, int(start_time), artifact_uri, int(experiment_id)),
            )
            con.executemany(
                "INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
                [(k, v, run_id) for k, v in tag_rows],
            )
            con.executemany(
                "INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)",
                [(k, v, run_id) for k, v in param_rows],
            )
        return run_id, artifact_uri

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        store.retry(self._set_tags, run_id, _tags(tags))

    def _set_tags(self, run_id: str, rows: list[tuple[str, str]]) -> None:
        with self._write() as con:
            self._check_run_active(con, run_id)
            con.executemany(
                "INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?) "
                "ON CONFLICT (key, run_uuid) DO UPDATE SET value = excluded.value",
                [(k, v, run_id) for k, v in rows],
            )
            for key, value in rows:
                if key == RUN_NAME_TAG:
                    con.execute("UPDATE runs SET name = ? WHERE run_uuid = ?", (value, run_id))

    def terminate(self, run_id: str, status: str, end_time: int) -> None:
        store.retry(self._terminate, run_id, status, end_time)

    def _terminate(self, run_id: str, status: str, end_time: int) -> None:
        with self._write() as con:
            self._check_run_active(con, run_id)
            con.execute(
                "UPDATE runs SET status = ?, end_time = ? WHERE run_uuid = ?",
                (status, int(end_time), run_id),
            )

    # -- metrics ----------------------------------------------------------------------------
    def log_metrics(self, run_id: str, items: list) -> None:
        """``items``: ``(key, value, timestamp_ms, step)`` rows of finite values."""
        store.retry(self._log_metrics, run_id, items)

    def _log_metrics(self, run_id: str, items: list) -> None:
        rows = [(str(k), float(v), int(ts), run_id, int(step), 0) for k, v, ts, step in items]
        latest: dict[str, tuple] = {}
        for key, value, ts, _, step, _ in rows:
            if key not in latest or (step, ts, value) > latest[key][:3]:
                latest[key] = (step, ts, value)
        with self._write() as con:
            self._check_run_active(con, run_id)
            con.executemany(
                "INSERT OR IGNORE INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            con.executemany(
                "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
                "VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT (key, run_uuid) DO UPDATE SET "
                "value = excluded.value, timestamp = excluded.timestamp, "
                "step = excluded.step, is_nan = 0 "
                "WHERE (excluded.step, excluded.timestamp, excluded.value) > "
                "(latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)",
                [(k, v, ts, step, run_id) for k, (step, ts, v) in latest.items()],
            )


def _plain(key: str, value: str, limit: int) -> bool:
    return len(key) <= MAX_KEY and len(value) <= limit and bool(_PLAIN_KEY.fullmatch(key))


def _param(key: str, value: str) -> tuple[str, str]:
    if _plain(key, value, MAX_PARAM):
        return key, value
    from mlflow.utils.validation import _validate_param

    param = _validate_param(key, value)
    return param.key, param.value


def _tags(tags: Mapping[str, str]) -> list[tuple[str, str]]:
    """Validated (and, like MLflow, truncated) tag rows; the last value of a key wins."""
    rows = {}
    for key, value in tags.items():
        value = str(value)
        if not _plain(key, value, MAX_TAG):
            from mlflow.utils.validation import _validate_tag

            tag = _validate_tag(key, value)
            key, value = tag.key, tag.value
        rows[key] = value
    return list(rows.items())


def _append_to_uri(uri: str, *parts: str) -> str:
    """``mlflow.utils.uri.append_to_uri_path`` for the usual case (no query or fragment)."""
    if "?" in uri or "#" in uri:
        from mlflow.utils.uri import append_to_uri_path

        return append_to_uri_path(uri, *parts)
    return "/".join([uri.rstrip("/"), *parts])


def local_artifact_dir(artifact_uri: str) -> Path | None:
    """The directory of a ``file:`` artifact URI, else None."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    parsed = urlparse(artifact_uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    return Path(url2pathname(parsed.path))


def copy_artifacts(directory: Path, artifact_dir: Path, skip: Sequence[str] | None = None) -> None:
    """What MLflow's LocalArtifactRepository does for a run's files: each top-level file
    copied into the run's artifact dir, each folder copied as a tree (``.hydra/`` as
    ``hydra/``); top-level names in ``skip`` are left out."""
    artifact_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(directory.iterdir()):
        if path.name in (skip or ()):
            continue
        if path.is_dir():
            dest = "hydra" if path.name == ".hydra" else path.name
            shutil.copytree(path, artifact_dir / dest, dirs_exist_ok=True)
        elif path.is_file():
            shutil.copy2(path, artifact_dir / path.name)
