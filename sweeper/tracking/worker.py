"""Where a run's MLflow calls execute: a logging process beside the training process.

Importing mlflow and opening its store cost a process about 2.5 s of CPU (more while
contending with the training thread for the GIL): more than a default sweep trial's
training. So the tracker (``sweeper.tracking.tracker``) hands every tracking op to
:class:`Executor`, run by default in a child process (``python -m sweeper.tracking.worker``)
that reads one JSON op per line on stdin and answers on stdout, and serves run after run of
its training process. It calls MLflow's public client (``MlflowClient``: ``create_run``,
``log_batch``, ``log_artifacts``, ``set_terminated``), batched within MLflow's own limits.
Training waits for the child only at the end of a run. If the
training process dies (kill -9), the child sees end of input and ends the run KILLED with
``outcome=worker died``.

A dead or hung tracking server never blocks training:

* the child runs MlflowClient with short HTTP limits (:data:`HTTP_LIMITS`: 2 retries, 5 s
  per request, instead of MLflow's 7 retries with 120 s timeouts, minutes per call); values
  the user set in the environment win. A call to a dead server fails within seconds;
* after the first failed op the child makes no more calls for that run, prints one line to
  stderr (``sweeper: tracking: <uri> unreachable (<reason>): MLflow logging stopped for this
  run; training continues``) and reports the error at ``end``. The next run tries again;
* the training process never blocks on the child: ops are written to a non-blocking pipe,
  what does not fit waits in a buffer drained by a writer thread, and the answers are read
  by a reader thread. Waiting at the end of a run gives up when the child makes no progress
  for longer than one MLflow call can take (:func:`stall_limit`), and the child is killed.

Ops: ``start`` (create the run: spec with uri, experiment, tags, params; answers the run id),
``adopt`` (watch a run another process ends, e.g. the sweeper's parent run: KILLED if it dies),
``metrics`` ([key, value, timestamp_ms, step] rows), ``tags``, ``artifacts`` (a directory),
``terminate`` (status), ``delete``, ``end`` (answers ``{"ok": true}`` or the first error, and
whether the child already printed it). The child also writes ``{"beat": 1}`` after each op
and each MLflow call: progress the parent's stall detection sees.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sweeper.secrets import mask_text
from sweeper.tracking import store

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
CLOSE_DEADLINE = 30.0  # seconds an orphaned logging child keeps trying to end its run KILLED


class Executor:
    """Runs tracking ops synchronously against an MLflow store (one run), through
    MlflowClient."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress  # the logging child's progress reports (None: in-process)
        self.client = None
        self.uri: str | None = None
        self.run_id: str | None = None
        self.artifact_uri: str | None = None
        self.terminated = False
        # what an unfinished run says when its process dies (end of input)
        self.on_death = {"outcome": "worker died", "error": "training process died"}

    def apply(self, op: str, **kw: Any) -> dict[str, Any] | None:
        return getattr(self, f"_op_{op}")(**kw)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One store call (retried on transient errors), reported as progress."""
        with self._remote():
            return store.retry(fn, *args, **kwargs)

    @contextlib.contextmanager
    def _remote(self):
        """Calls that may wait for a server: no heartbeat while they run, a beat when each
        returns (see :class:`Progress`)."""
        if self.progress is None or not store.is_remote(self.uri):
            yield
            return
        self.progress.remote = True
        try:
            yield
        finally:
            self.progress.remote = False
        self.progress.beat()

    def _op_start(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        self.uri = uri = store.resolve_tracking_uri(spec.get("uri"))
        store.prepare_store(uri)
        exp_id = self._experiment(uri, spec)
        tags, params = dict(spec["tags"]), dict(spec["params"])
        from mlflow.entities import Param

        start_time = int(time.time() * 1000)
        run = self._call(self._client().create_run, exp_id, start_time, tags=tags)
        self.run_id, self.artifact_uri = run.info.run_id, run.info.artifact_uri
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self._call(
                self.client.log_batch, self.run_id, params=items[i : i + MAX_PARAMS_PER_BATCH]
            )
        return {
            "run_id": self.run_id,
            "experiment_id": exp_id,
            "artifact_uri": self.artifact_uri,
            "tracking_uri": uri,
        }

    def _op_adopt(self, uri: str, run_id: str, on_death: Mapping[str, str]) -> None:
        """Watch a run that another process created and normally ends itself (a study's
        parent run, ended by the sweeper): if that process dies first, its end of input ends
        the run KILLED with the ``on_death`` tags, as for a trial's run."""
        self.uri = store.resolve_tracking_uri(uri)
        self.run_id = run_id
        self.on_death = dict(on_death)

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
                run = self._call(self._client().get_run, parent)
                _PARENT_EXPERIMENT[key] = run.info.experiment_id
            return _PARENT_EXPERIMENT[key]
        name = spec["experiment_name"]
        client = self._client()
        with self._remote():
            return store.get_or_create_experiment(client, name)

    def _op_metrics(self, items: list) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in items]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self._call(
                self._client().log_batch,
                self.run_id,
                metrics=metrics[i : i + MAX_METRICS_PER_BATCH],
            )

    def _op_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), MAX_TAGS_PER_BATCH):
            batch = items[i : i + MAX_TAGS_PER_BATCH]
            self._call(self._client().log_batch, self.run_id, tags=batch)

    def _op_artifacts(self, directory: str, skip: list[str] | None = None) -> None:
        """Every file of the run's output dir but the top-level names in ``skip``;
        ``.hydra/`` goes to ``hydra/``."""
        root = Path(directory)
        if not root.is_dir():
            return
        client = self._client()
        for path in sorted(root.iterdir()):
            if path.name in (skip or ()):
                continue
            if path.is_dir():
                dest = "hydra" if path.name == ".hydra" else path.name
                self._call(client.log_artifacts, self.run_id, str(path), dest)
            elif path.is_file():
                self._call(client.log_artifact, self.run_id, str(path))

    def _op_terminate(self, status: str) -> None:
        self._call(self._client().set_terminated, self.run_id, status)
        self.terminated = True

    def _op_delete(self) -> None:
        self._call(self._client().delete_run, self.run_id)
        self.terminated = True


_PARENT_EXPERIMENT: dict[tuple[str, str], str] = {}
# MLflow's HTTP client retries 7 times with exponential backoff and 120 s timeouts: minutes
# per call when the server is gone, during which the logging child takes no ops. These make a
# call to a dead server fail within seconds (connection refused: ~2-4 s; a server that accepts
# connections but never answers: ~20 s); a value set in the environment wins.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",  # MLflow: 7
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # MLflow: 2 (s, doubled per retry)
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",  # MLflow: 120 (s, connect and read, per request)
}
STALL_MARGIN_S = 10.0


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The logging child's environment: ``base`` (os.environ) plus the HTTP limits."""
    env = {**(os.environ if base is None else base), "PYTHONUNBUFFERED": "1"}
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network calls from trials
    # MLflow writes "View run <url>" to stdout at each run's end: the child's stdout is its
    # answer pipe, and a sweep's trials would print two lines each (the run summary names it)
    env.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for key, value in HTTP_LIMITS.items():
        env.setdefault(key, value)
    return env


def stall_limit(env: Mapping[str, str]) -> float:
    """How long the parent waits for a child that shows no progress before killing it: the
    longest one MLflow HTTP call can take under ``env``'s limits (every attempt timing out,
    every backoff with its jitter), plus a margin. 29 s with :data:`HTTP_LIMITS`. The child
    reports progress after each call and, during local work (importing mlflow, creating a
    database, waiting for a SQLite lock), every second: only a call to an unresponsive
    server, or a frozen child, is silent that long."""

    def number(name: str, default: float) -> float:
        try:
            return max(0.0, float(env.get(name, default)))
        except ValueError:
            return default

    retries = int(number("MLFLOW_HTTP_REQUEST_MAX_RETRIES", 7))
    factor = number("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", 2)
    timeout = number("MLFLOW_HTTP_REQUEST_TIMEOUT", 120)
    jitter = number("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", 1.0)
    # urllib3: no sleep before the first retry, then factor * 2**(n-1), at most 120 s
    backoff = sum(min(factor * 2 ** (n - 1), 120.0) for n in range(2, retries + 1))
    return (retries + 1) * timeout + backoff + retries * jitter + STALL_MARGIN_S


class ProcessExecutor:
    """The parent's handle on a logging child process (same ``apply`` interface, async).

    A child serves one run at a time but outlives it: :meth:`acquire` hands out an idle child
    of this process before starting a new one, so a process that trains many runs (a joblib
    worker running trial after trial) pays mlflow's import once, not per trial.

    :meth:`send` never blocks: the op goes straight into the pipe (non-blocking) when it fits,
    as it does while the child keeps up, so an op sent just before the training process dies
    still reaches the child; otherwise it waits in a buffer that a writer thread drains. A
    reader thread takes the child's answers and notes its progress; :meth:`reply` gives up
    (and kills the child) after :func:`stall_limit` seconds without progress.
    """

    _idle: list[ProcessExecutor] = []
    _lock = threading.Lock()

    def __init__(self) -> None:
        env = child_env()
        self.stall_s = stall_limit(env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sweeper.tracking.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the child's warnings go to the run's stderr
            env=env,
        )
        self.error: str | None = None  # the child cannot take ops (gone, or killed)
        self.stalled = False
        self._fd = self.proc.stdin.fileno()
        os.set_blocking(self._fd, False)
        self._pending = bytearray()  # what did not fit into the pipe yet
        self._cv = threading.Condition()
        self._closing = False
        self._writer: threading.Thread | None = None
        self._answers: queue.SimpleQueue = queue.SimpleQueue()
        self._heard = time.monotonic()
        threading.Thread(
            target=self._read_loop, name="sweeper-tracking-reader", daemon=True
        ).start()

    @classmethod
    def acquire(cls) -> ProcessExecutor:
        """An idle live child of this process, or a new one."""
        with cls._lock:
            while cls._idle:
                child = cls._idle.pop()
                if child.proc.poll() is None and child.error is None:
                    return child
        return cls()

    # -- to the child -----------------------------------------------------------------------
    def send(self, op: str, **kw: Any) -> None:
        """Queue an op; never blocks. Dropped once the child is gone or was killed."""
        if self.error is not None:
            return
        data = (json.dumps({"op": op, **kw}) + "\n").encode()
        with self._cv:
            if self._closing or self.error is not None:
                return
            if not self._pending:
                rest = self._write(data)
                if rest is None:
                    return
                data = rest
            if data:
                self._pending += data
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write_loop, name="sweeper-tracking-writer", daemon=True
                    )
                    self._writer.start()
                self._cv.notify()

    def _write(self, data: bytes) -> bytes | None:
        """Write what the pipe takes now (lock held); the rest, or None if the child is gone."""
        try:
            written = os.write(self._fd, data)
        except BlockingIOError:
            written = 0
        except OSError as err:  # EPIPE: the child exited
            self.error = f"the logging process is gone ({err})"
            self._pending.clear()
            return None
        return data[written:]

    def _write_loop(self) -> None:
        import select

        while True:
            with self._cv:
                while not self._pending and not self._closing and self.error is None:
                    self._cv.wait()
                if not self._pending or self.error is not None:
                    break
            try:
                select.select([], [self._fd], [], 1.0)
            except (OSError, ValueError):
                break
            with self._cv:
                if self.error is not None:
                    break
                rest = self._write(bytes(self._pending))
                if rest is None:
                    break
                del self._pending[: len(self._pending) - len(rest)]
        with self._cv:
            if self._closing:
                self._close_fd()

    def _close_input(self) -> None:
        """End of input for the child, once the buffered ops are written."""
        with self._cv:
            self._closing = True
            if self._writer is None or not self._writer.is_alive() or not self._pending:
                self._close_fd()
            self._cv.notify()

    def _close_fd(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    # -- from the child ---------------------------------------------------------------------
    def _read_loop(self) -> None:
        for line in self.proc.stdout:
            self._heard = time.monotonic()
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict) and "beat" not in msg:
                self._answers.put(msg)
        self._answers.put(None)  # end of output: the child exited

    def reply(self) -> dict[str, Any]:
        """The child's next answer; an error when it exited or made no progress for
        ``stall_s`` seconds (then it is killed: the run's remaining ops are lost)."""
        if self.stalled:
            return {"error": self.error}
        start = time.monotonic()
        while True:
            try:
                msg = self._answers.get(timeout=0.25)
            except queue.Empty:
                quiet = time.monotonic() - max(start, self._heard)
                if quiet > self.stall_s:
                    self.stalled = True
                    self.error = f"the logging process made no progress for {quiet:.0f} s"
                    self.kill()
                    return {"error": self.error}
                continue
            if msg is None:
                self._answers.put(None)  # every later reply sees it too
                try:
                    code = self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    code = None
                self.error = self.error or f"the logging process exited with {code}"
                return {"error": self.error}
            return msg

    def end(self) -> dict[str, Any]:
        """Finish every op of this run: ``{"error": the first error or None, "reported":
        whether the child already printed it}``. A healthy child goes back to the idle pool;
        one that failed is closed (killed if it does not exit within seconds)."""
        self.send("end")
        answer = self.reply()
        if answer.get("error") is None and self.error is None and self.proc.poll() is None:
            with self._lock:
                self._idle.append(self)
        else:
            self.close()
        return answer

    def close(self, timeout: float = 5.0) -> None:
        self._close_input()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        self.error = self.error or "the logging process was killed"
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        with self._cv:
            self._pending.clear()
            self._cv.notify()
        if self._writer is None or not self._writer.is_alive():
            self._close_fd()


# -- the child ---------------------------------------------------------------------------------
class Progress:
    """What the child tells its parent about progress: a ``{"beat": 1}`` line after each
    MLflow call and op, and every second while it works locally (not while it waits for a
    server: that is what the parent's stall limit measures)."""

    def __init__(self, write: Callable[[dict[str, Any]], None]) -> None:
        self._write = write
        self.busy = False  # applying an op
        self.remote = False  # inside a call to a server

    def beat(self) -> None:
        self._write({"beat": 1})

    def start(self) -> None:
        threading.Thread(target=self._run, name="sweeper-tracking-beat", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(1.0)
            if self.busy and not self.remote:
                self.beat()


CONNECTION_MARKERS = (
    "connection refused",
    "max retries exceeded",
    "failed to establish",
    "timed out",
    "connection aborted",
    "connection reset",
    "remotedisconnected",
    "name or service not known",
    "temporary failure in name resolution",
    "connectionerror",
)


LOST_ENV = "SWEEPER_TRACKING_LOST"  # a sweep's marker file: tracking failed in one of its runs


def say_failure(line: str) -> None:
    """Print a run's tracking failure on stderr, once per sweep: in a sweep (``LOST_ENV``
    names a file in its directory) the first run whose logging fails creates the file and
    prints; the others (often every later run: the server is gone) keep quiet, and the
    sweeper reads the file at its end (the exit code says tracking was lost). Outside a
    sweep: every time."""
    marker = os.environ.get(LOST_ENV)
    if marker:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return
        except OSError:  # no room, or no such dir: say it anyway
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(line + "\n")
    print(line, file=sys.stderr, flush=True)


def failure_line(uri: str | None, error: str) -> str:
    """The one stderr line the child prints when a run's logging stops."""
    from sweeper.messages import one_line
    from sweeper.tracking.preflight import mask

    shown = mask(uri) if uri else "the tracking store"
    lowered = error.lower()
    what = "unreachable" if any(m in lowered for m in CONNECTION_MARKERS) else "failed"
    reason = _short_reason(error)
    if uri:
        reason = reason.replace(uri, shown)
    return (
        f"sweeper: tracking: {shown} {what} ({one_line(reason, 200)}): "
        "MLflow logging stopped for this run; training continues"
    )


def _short_reason(error: str) -> str:
    """``Connection refused`` rather than urllib3's paragraph about pools and retries."""
    import re

    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", error)
    if found:
        return found.group(1).strip()
    lowered = error.lower()
    for marker in ("read timed out", "connect timeout", "timed out", "connection aborted"):
        if marker in lowered:
            return marker
    return error


def main() -> None:
    """The child: apply ops from stdin, run after run, until end of input.

    ``end`` closes a run and answers; end of input in the middle of a run means the training
    process died, and the run ends KILLED. The first failed op of a run stops the run's
    logging: one line on stderr, no more calls to the store for that run."""
    import logging
    import signal

    # Ctrl-C reaches the whole foreground process group: the training process handles it
    # (its run ends KILLED); this process must live on to record that.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # urllib3 logs each retry as a warning (to stderr, with no handler): the failure is
    # said once, below.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    # MLflow's own handlers (its loggers do not propagate) print a traceback for each failed
    # commit, e.g. every "database or disk is full": the run's one line says it, once
    import mlflow  # noqa: F401 - configures those loggers on import: quiet them now

    logging.raiseExceptions = False  # a full disk: no "--- Logging error ---" either
    for name in ("mlflow", "sqlalchemy.engine", "alembic"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(lambda record: not record.exc_info)
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # nothing else may write to the answer channel
    out_lock = threading.Lock()

    def write(msg: dict[str, Any]) -> None:
        with out_lock:
            try:
                out.write(json.dumps(msg) + "\n")
                out.flush()
            except (OSError, ValueError):  # the training process is gone
                pass

    progress = Progress(write)
    progress.start()
    executor = Executor(progress)
    error: str | None = None
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:  # an op torn by the training process's death: the end
            break
        op = msg.pop("op")
        if op == "end":
            sys.stderr.flush()
            write({"ok": error is None, "error": error, "reported": error is not None})
            executor, error = Executor(progress), None  # ready for the parent's next run
            continue
        if error is not None:
            continue
        answer = None
        progress.busy = True
        try:
            answer = executor.apply(op, **msg)
        except Exception as err:  # noqa: BLE001 - reported to the parent
            error = mask_text(f"{type(err).__name__}: {err}")  # an HTTP error may show u:pw@
            uri = executor.uri or (msg.get("spec") or {}).get("uri")
            say_failure(failure_line(uri, error))
            answer = {"error": error} if op == "start" else None
        finally:
            progress.busy = progress.remote = False
        if op == "start":
            write(answer)
        else:
            progress.beat()
    # End of input in the middle of a run: the training process died.
    # Closing it matters more than speed (a RUNNING run would stay RUNNING for good): keep
    # trying for a while, e.g. while other dying processes of the sweep hold the SQLite lock.
    # Also after an earlier failed op: the store may be back.
    if executor.run_id is not None and not executor.terminated:
        deadline = time.monotonic() + CLOSE_DEADLINE
        while True:
            try:
                executor.apply("tags", tags=executor.on_death)
                executor.apply("terminate", status="KILLED")
                break
            except Exception as err:  # noqa: BLE001
                if time.monotonic() > deadline:
                    say_failure(failure_line(executor.uri, f"{type(err).__name__}: {err}"))
                    break
                time.sleep(0.5)
    # Every op is committed: skip the interpreter's teardown (mlflow's atexit handlers and
    # threads take about a second).
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
