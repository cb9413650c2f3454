"""Where a run's MLflow calls execute: a logging process beside the training process.

Importing mlflow and opening its store cost a trial process about 2.5 s of CPU (more while
contending with the training thread for the GIL): more than 5% of a default trial. So the
tracker (``sweeper.tracking.tracker``) hands every MLflow call to :class:`Executor`, run by
default in a child process (``python -m sweeper.tracking.worker``) that reads one JSON op
per line on stdin and answers on stdout. Training never waits for MLflow; the child runs on
another core. If the training process dies (kill -9), the child sees end of input and ends
the run KILLED with ``outcome=killed``.

Ops: ``start`` (create the run: spec with uri, experiment, tags, params; answers the run id),
``metrics`` ([key, value, timestamp_ms, step] rows), ``tags``, ``artifacts`` (a directory),
``terminate`` (status), ``delete``, ``end`` (answers ``{"ok": true}`` or the first error).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sweeper.tracking import store

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100


class SqliteMetrics:
    """Bulk metric inserts into the embedded SQLite store's ``metrics``/``latest_metrics``.

    MLflow's own ``log_batch`` goes through the SQLAlchemy ORM at about 1 ms per metric:
    ~2.5 s of CPU for the 2,500 per-episode values of a default trial, as much as everything
    else together. This writes the same rows with ``executemany`` in one transaction and keeps
    MLflow's rule for the latest value (highest step, then timestamp, then value). Used only
    when both tables have exactly the columns of the MLflow schema this was written against
    (checked once); otherwise ``usable`` is False and MLflow's ``log_batch`` is used.
    """

    METRICS = {"key", "value", "timestamp", "run_uuid", "step", "is_nan"}
    LATEST = {"key", "value", "timestamp", "step", "is_nan", "run_uuid"}

    def __init__(self, path: Path) -> None:
        import sqlite3

        self.con = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.con.execute("PRAGMA busy_timeout = 30000")

        def columns(table: str) -> set[str]:
            return {row[1] for row in self.con.execute(f"PRAGMA table_info({table})")}

        self.usable = columns("metrics") == self.METRICS and columns("latest_metrics") == (
            self.LATEST
        )

    def log_metrics(self, run_id: str, items: list) -> None:
        store.retry(self._log, run_id, items)

    def _log(self, run_id: str, items: list) -> None:
        rows = [(str(k), float(v), int(ts), run_id, int(step), 0) for k, v, ts, step in items]
        latest: dict[str, tuple] = {}
        for key, value, ts, _, step, _ in rows:
            if key not in latest or (step, ts, value) > latest[key][:3]:
                latest[key] = (step, ts, value)
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        try:
            stage = con.execute(
                "SELECT lifecycle_stage FROM runs WHERE run_uuid = ?", (run_id,)
            ).fetchone()
            if stage is None or stage[0] != "active":
                raise RuntimeError(f"run {run_id} is not active")
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
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


class Executor:
    """Runs tracking ops synchronously against an MLflow store (one run)."""

    def __init__(self) -> None:
        self.client = None
        self.sqlite: SqliteMetrics | None = None
        self.run_id: str | None = None
        self.terminated = False

    def apply(self, op: str, **kw: Any) -> dict[str, Any] | None:
        return getattr(self, f"_op_{op}")(**kw)

    def _op_start(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        from mlflow.entities import Param

        self.client = store.client(spec.get("uri"))
        path = store.sqlite_path(self.client.tracking_uri)
        self.sqlite = SqliteMetrics(path) if path is not None else None
        if spec.get("experiment_id") is not None:
            exp_id = spec["experiment_id"]
        elif spec.get("parent"):  # nest beside the parent, whatever the experiment name says
            exp_id = store.retry(self.client.get_run, spec["parent"]).info.experiment_id
        else:
            exp_id = store.get_or_create_experiment(self.client, spec["experiment_name"])
        run = store.retry(self.client.create_run, exp_id, tags=dict(spec["tags"]))
        self.run_id = run.info.run_id
        params = [Param(k, v) for k, v in spec["params"].items()]
        for i in range(0, len(params), MAX_PARAMS_PER_BATCH):
            store.retry(
                self.client.log_batch, self.run_id, params=params[i : i + MAX_PARAMS_PER_BATCH]
            )
        return {
            "run_id": self.run_id,
            "experiment_id": exp_id,
            "artifact_uri": run.info.artifact_uri,
            "tracking_uri": self.client.tracking_uri,
        }

    def _op_metrics(self, items: list) -> None:
        if self.sqlite is not None and self.sqlite.usable:
            self.sqlite.log_metrics(self.run_id, items)
            return
        from mlflow.entities import Metric

        metrics = [Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in items]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            store.retry(
                self.client.log_batch,
                self.run_id,
                metrics=metrics[i : i + MAX_METRICS_PER_BATCH],
            )

    def _op_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), MAX_TAGS_PER_BATCH):
            store.retry(self.client.log_batch, self.run_id, tags=items[i : i + MAX_TAGS_PER_BATCH])

    def _op_artifacts(self, directory: str) -> None:
        """Every file of the run's output dir; ``.hydra/`` goes to ``hydra/``."""
        root = Path(directory)
        if not root.is_dir():
            return
        for path in sorted(root.iterdir()):
            if path.is_dir():
                dest = "hydra" if path.name == ".hydra" else path.name
                store.retry(self.client.log_artifacts, self.run_id, str(path), dest)
            elif path.is_file():
                store.retry(self.client.log_artifact, self.run_id, str(path))

    def _op_terminate(self, status: str) -> None:
        store.retry(self.client.set_terminated, self.run_id, status)
        self.terminated = True

    def _op_delete(self) -> None:
        store.retry(self.client.delete_run, self.run_id)
        self.terminated = True


class ProcessExecutor:
    """The parent's handle on a logging child process (same ``apply`` interface, async).

    A child serves one run at a time but outlives it: :meth:`acquire` hands out an idle child
    of this process before starting a new one, so a process that trains many runs (a joblib
    worker running trial after trial) pays mlflow's import once, not per trial.
    """

    _idle: list[ProcessExecutor] = []
    _lock = threading.Lock()

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network calls from trials
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sweeper.tracking.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the child's warnings go to the run's stderr
            text=True,
            env=env,
            bufsize=1,
        )
        self.error: str | None = None

    @classmethod
    def acquire(cls) -> ProcessExecutor:
        """An idle live child of this process, or a new one."""
        with cls._lock:
            while cls._idle:
                child = cls._idle.pop()
                if child.proc.poll() is None:
                    return child
        return cls()

    def send(self, op: str, **kw: Any) -> None:
        if self.error is not None:
            return
        try:
            self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as err:
            self.error = f"the logging process is gone ({err})"

    def reply(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            return {"error": f"the logging process exited with {self.proc.returncode}"}
        return json.loads(line)

    def end(self) -> str | None:
        """Finish every op of this run; the first error, if any. A healthy child goes back
        to the idle pool; one that failed is closed."""
        self.send("end")
        answer = self.reply() if self.error is None else {"error": self.error}
        if answer.get("error") is None and self.proc.poll() is None:
            with self._lock:
                self._idle.append(self)
        else:
            self.close()
        return answer.get("error")

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main() -> None:
    """The child: apply ops from stdin, run after run, until end of input.

    ``end`` closes a run and answers; end of input in the middle of a run means the training
    process died, and the run ends KILLED."""
    import signal

    # Ctrl-C reaches the whole foreground process group: the training process handles it
    # (its run ends KILLED); this process must live on to record that.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # nothing else may write to the answer channel
    executor = Executor()
    error: str | None = None
    for line in sys.stdin:
        msg = json.loads(line)
        op = msg.pop("op")
        if op == "end":
            try:
                out.write(json.dumps({"ok": error is None, "error": error}) + "\n")
                out.flush()
                sys.stderr.flush()
            except OSError:
                pass
            executor, error = Executor(), None  # ready for the parent's next run
            continue
        if error is not None:
            continue
        try:
            answer = executor.apply(op, **msg)
        except Exception as err:  # noqa: BLE001 - reported to the parent
            error = f"{type(err).__name__}: {err}"
            answer = {"error": error} if op == "start" else None
        if op == "start":
            try:
                out.write(json.dumps(answer) + "\n")
                out.flush()
            except OSError:  # the training process is gone: finish its run below
                pass
    # End of input in the middle of a run: the training process died.
    if executor.run_id is not None and not executor.terminated and error is None:
        try:
            executor.apply("tags", tags={"outcome": "killed", "error": "training process died"})
            executor.apply("terminate", status="KILLED")
        except Exception:  # noqa: BLE001
            pass
    # Every op is committed: skip the interpreter's teardown (mlflow's atexit handlers and
    # threads take about a second).
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
