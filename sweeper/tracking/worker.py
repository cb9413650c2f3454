"""Where a run's MLflow calls execute: a logging process beside the training process.

Importing mlflow and opening its store cost a process about 2.5 s of CPU (more while
contending with the training thread for the GIL): more than a default sweep trial's
training. So the tracker (``sweeper.tracking.tracker``) hands every tracking op to
:class:`Executor`, run by default in a child process (``python -m sweeper.tracking.worker``)
that reads one JSON op per line on stdin and answers on stdout, and serves run after run of
its training process. On the embedded store the child writes rows with ``sqlite3`` and only
imports mlflow for what needs it (creating an experiment, an unusual key); with a tracking
server it calls MlflowClient. Training waits for the child only at the end of a run. If the
training process dies (kill -9), the child sees end of input and ends the run KILLED with
``outcome=killed``.

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
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sweeper.tracking import store
from sweeper.tracking.sqlite_writer import SqliteWriter, copy_artifacts, local_artifact_dir

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
MAX_WRITERS = 4


class Executor:
    """Runs tracking ops synchronously against an MLflow store (one run).

    On the embedded SQLite store the run's rows are written by :class:`SqliteWriter` (same
    rows, ~10 ms instead of ~70 ms of CPU per trial, and mlflow is not even imported) and
    artifacts are copied straight into the run's artifact directory; elsewhere (a tracking
    server, a schema this code does not know, an experiment to create) the ops go through
    MlflowClient.
    """

    def __init__(self) -> None:
        self.client = None
        self.uri: str | None = None
        self.writer: SqliteWriter | None = None
        self.run_id: str | None = None
        self.artifact_uri: str | None = None
        self.terminated = False

    def apply(self, op: str, **kw: Any) -> dict[str, Any] | None:
        return getattr(self, f"_op_{op}")(**kw)

    def _op_start(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        self.uri = uri = store.resolve_tracking_uri(spec.get("uri"))
        store.prepare_store(uri)
        self.writer = _writer(uri)
        exp_id = self._experiment(uri, spec)
        tags, params = dict(spec["tags"]), dict(spec["params"])
        start_time = int(time.time() * 1000)
        if self.writer is not None:
            self.run_id, self.artifact_uri = self.writer.create_run(
                exp_id, tags, params, start_time
            )
        else:
            from mlflow.entities import Param

            run = store.retry(self._client().create_run, exp_id, start_time, tags=tags)
            self.run_id, self.artifact_uri = run.info.run_id, run.info.artifact_uri
            items = [Param(k, v) for k, v in params.items()]
            for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
                store.retry(
                    self.client.log_batch, self.run_id, params=items[i : i + MAX_PARAMS_PER_BATCH]
                )
        return {
            "run_id": self.run_id,
            "experiment_id": exp_id,
            "artifact_uri": self.artifact_uri,
            "tracking_uri": uri,
        }

    def _client(self):
        if self.client is None:
            self.client = store.client(self.uri)
        return self.client

    def _experiment(self, uri: str, spec: Mapping[str, Any]) -> str:
        """The run's experiment: given, the parent's (nest beside it, whatever the experiment
        name says; looked up once per parent), or by name (created, restored or tagged by
        MLflow when it is not an active sweeper experiment yet)."""
        if spec.get("experiment_id") is not None:
            return str(spec["experiment_id"])
        parent = spec.get("parent")
        if parent:
            key = (uri, parent)
            if key not in _PARENT_EXPERIMENT:
                if self.writer is not None:
                    _PARENT_EXPERIMENT[key] = self.writer.experiment_of(parent)
                else:
                    run = store.retry(self._client().get_run, parent)
                    _PARENT_EXPERIMENT[key] = run.info.experiment_id
            return _PARENT_EXPERIMENT[key]
        name = spec["experiment_name"]
        if self.writer is not None:
            found = self.writer.active_experiment(name, store.KIND_TAG)
            if found is not None:
                return found
        return store.get_or_create_experiment(self._client(), name)

    def _op_metrics(self, items: list) -> None:
        if self.writer is not None:
            self.writer.log_metrics(self.run_id, items)
            return
        from mlflow.entities import Metric

        metrics = [Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in items]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            store.retry(
                self._client().log_batch,
                self.run_id,
                metrics=metrics[i : i + MAX_METRICS_PER_BATCH],
            )

    def _op_tags(self, tags: Mapping[str, str]) -> None:
        if self.writer is not None:
            self.writer.set_tags(self.run_id, tags)
            return
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), MAX_TAGS_PER_BATCH):
            batch = items[i : i + MAX_TAGS_PER_BATCH]
            store.retry(self._client().log_batch, self.run_id, tags=batch)

    def _op_artifacts(self, directory: str) -> None:
        """Every file of the run's output dir; ``.hydra/`` goes to ``hydra/``."""
        root = Path(directory)
        if not root.is_dir():
            return
        local = local_artifact_dir(self.artifact_uri) if self.artifact_uri else None
        if local is not None:  # a plain copy, as MLflow's local repository makes it
            copy_artifacts(root, local)
            return
        client = self._client()
        for path in sorted(root.iterdir()):
            if path.is_dir():
                dest = "hydra" if path.name == ".hydra" else path.name
                store.retry(client.log_artifacts, self.run_id, str(path), dest)
            elif path.is_file():
                store.retry(client.log_artifact, self.run_id, str(path))

    def _op_terminate(self, status: str) -> None:
        if self.writer is not None:
            self.writer.terminate(self.run_id, status, int(time.time() * 1000))
        else:
            store.retry(self._client().set_terminated, self.run_id, status)
        self.terminated = True

    def _op_delete(self) -> None:
        store.retry(self._client().delete_run, self.run_id)
        self.terminated = True


_PARENT_EXPERIMENT: dict[tuple[str, str], str] = {}
_WRITERS: dict[tuple[str, int], SqliteWriter | None] = {}
_WRITERS_LOCK = threading.Lock()


def _writer(uri: str) -> SqliteWriter | None:
    """The store's SqliteWriter when it is a SQLite file of the known schema, else None.
    One per database and thread (a sqlite3 connection belongs to its thread); a few kept."""
    key = (uri, threading.get_ident())
    with _WRITERS_LOCK:
        if key in _WRITERS:
            return _WRITERS[key]
        path = store.sqlite_path(uri)
        writer = SqliteWriter(path) if path is not None else None
        if writer is not None and not writer.usable:
            writer.close()
            writer = None
        while len(_WRITERS) >= MAX_WRITERS:
            oldest = _WRITERS.pop(next(iter(_WRITERS)))
            if oldest is not None:
                oldest.close()
        _WRITERS[key] = writer
        return writer


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
