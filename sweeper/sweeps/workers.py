"""Trial processes that fail alone and die with their sweeper (``hydra/launcher=isolated``).

Why not joblib's pool: loky runs every job in one shared executor. When one of its workers
dies (kill -9, the OOM killer), loky marks the whole executor broken, terminates every other
worker with its process tree and fails every job in flight with ``TerminatedWorkerError``:
one dead trial took another one with it, and the logging child of the innocent trial died
before it could close its MLflow run. Here every parallel slot owns an independent worker
process (forked from a fork server that preloaded torch, own pipe): a worker that dies fails
only the job it held, with the signal that killed it; the next job gets a fresh worker.
Workers are reused job after job, so torch and the app are imported once per slot, as with
loky.


Workers die with their sweeper. A worker (and, via :func:`watch_parent`, any process that runs
trials for a sweeper: loky workers too) runs a watchdog thread that ends the process when the
sweeper process is gone; its MLflow logging child then sees end of input and ends the run
KILLED. Without it, loky workers of a killed sweeper lived on for minutes, finished their
trials and marked runs FINISHED that Optuna had failed.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from sweeper.processes import process_alive, process_start

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.5  # seconds between two looks at the parent

# What every trial process imports (torch, numpy, Gymnasium, Hydra, the training loop):
# imported once, by the fork server, not by each worker (see :func:`context`).
# (Not ``sweeper.train`` itself: a worker re-runs the sweeper's main module as
# ``__mp_main__``, which must not be imported yet.)
PRELOAD = [
    "hydra",
    "cloudpickle",
    "optuna",
    "torch",
    "sweeper.seeding",
    "sweeper.agents.dqn",
    "sweeper.agents.preload",  # the compiled update, loaded once for every worker
    "sweeper.agents.tabular",
    "sweeper.pruning",
    "sweeper.training",
    "sweeper.config",
    "sweeper.callbacks",
    "sweeper.replicates",
    "sweeper.statistics",
    "sweeper.sweeps.packing",
]
_preload: list[str] = list(PRELOAD)


def preload(modules: Sequence[str]) -> None:
    """Also import ``modules`` in the fork server (e.g. MLflow's client, when trials log).
    Takes effect for a fork server not started yet: the sweeper calls it while planning."""
    for name in modules:
        if name not in _preload:
            _preload.append(name)


def context() -> Any:
    """The multiprocessing context trial processes start from.

    ``forkserver`` where the platform has it, with :data:`PRELOAD` (and :func:`preload`'s
    modules) imported in the server: each worker is a fork of a process that already holds
    torch and MLflow, so a sweep pays their import (~2 s of CPU each) once, not once per
    worker process (a packed sweep starts 2 workers per phase; on a 2-core machine that CPU
    is taken from training). The server is single-threaded and never trains, so forking it
    is safe; a worker gets the sweeper's environment as it is when the worker starts (as
    with ``spawn``), not the server's, see :func:`in_environ`. Elsewhere: ``spawn``.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(_preload))
    return ctx


def in_environ(environ: dict[str, str], target: Any, *args: Any) -> None:
    """Run ``target(*args)`` under ``environ``: the environment of the process that started
    this one, at that moment (a fork server's children otherwise get the server's)."""
    os.environ.clear()
    os.environ.update(environ)
    target(*args)


class WorkerDied(RuntimeError):
    """The process running a job ended before answering (killed, crashed, out of memory)."""


_watched: set[int] = set()
_watch_lock = threading.Lock()


def watch_parent(pid: int, start: str | None) -> None:
    """End this process when process ``pid`` (its sweeper) is gone; idempotent per pid.

    Does nothing in the sweeper's own process. ``os._exit``: the trial is lost anyway, and the
    interpreter's teardown could block on the very threads that wait for the dead parent."""
    if pid == os.getpid():
        return
    with _watch_lock:
        if pid in _watched:
            return
        _watched.add(pid)

    def watch() -> None:
        while process_alive(pid, start):
            time.sleep(WATCH_INTERVAL)
        os._exit(70)  # EX_SOFTWARE: the sweeper died

    threading.Thread(target=watch, name=f"sweeper-watch-{pid}", daemon=True).start()


# -- the worker process --------------------------------------------------------------------------
def _worker_main(conn: Connection, parent_pid: int, parent_start: str | None) -> None:
    """Run jobs from ``conn`` until it closes: each message is a cloudpickled job, each answer
    a cloudpickled JobReturn (or the exception that escaped ``run_job``)."""
    import cloudpickle

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sweeper's to handle
    watch_parent(parent_pid, parent_start)
    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            answer: Any = _execute(*cloudpickle.loads(payload))
        except BaseException as exc:  # noqa: BLE001 - reported to the sweeper as the job's error
            answer = exc
        try:
            payload = cloudpickle.dumps(answer)
        except Exception as err:  # noqa: BLE001 - an unpicklable result: say so instead
            payload = cloudpickle.dumps(RuntimeError(f"result not picklable: {err}"))
        try:
            conn.send_bytes(payload)
        except OSError:  # the sweeper closed the pipe (it stopped, or died): nobody to tell
            return


def _execute(
    idx: int,
    overrides: Sequence[str],
    hydra_context: Any,
    config: Any,
    task_function: Any,
    singleton_state: dict[Any, Any],
) -> Any:
    """What joblib's ``execute_job`` does: one Hydra job in this process."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals
    from omegaconf import open_dict

    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    return run_job(
        hydra_context=hydra_context,
        config=sweep_config,
        task_function=task_function,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


# -- the sweeper's side --------------------------------------------------------------------------
class _Worker:
    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        me = os.getpid()
        self.proc = ctx.Process(
            target=in_environ,
            args=(dict(os.environ), _worker_main, child, me, process_start(me)),
            name="sweeper-trial",
        )
        self.proc.daemon = False  # daemonic processes may not have children (the MLflow logger)
        self.proc.start()
        child.close()

    def alive(self) -> bool:
        return self.proc.is_alive()

    def run(self, payload: bytes) -> Any:
        import cloudpickle

        try:
            self.conn.send_bytes(payload)
            return cloudpickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError, BrokenPipeError):
            self.proc.join(timeout=10)
            raise WorkerDied(death_line(self.proc.pid, self.proc.exitcode)) from None

    def close(self, timeout: float = 5.0) -> None:
        try:
            self.conn.close()
        except OSError:
            pass
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout)


def death_line(pid: int | None, code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        how = f"killed by {name}"
    elif code is None:
        how = "gone"
    else:
        how = f"exited with code {code}"
    return f"the trial's process {pid} died ({how}) before it reported a result"


class WorkerPool:
    """Independent worker processes, one per job in flight; idle ones are reused."""

    def __init__(self, max_workers: int | None = None) -> None:
        self._ctx = context()
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self._slots = threading.BoundedSemaphore(max_workers) if max_workers else None
        atexit.register(self.close)

    def run(self, payload: bytes) -> Any:
        """Run one cloudpickled job on a worker; raises WorkerDied when the worker dies (or
        the pool was closed: the sweep is ending)."""
        if self._slots is not None:
            self._slots.acquire()
        try:
            worker = self._acquire()
            try:
                result = worker.run(payload)
            except WorkerDied:
                self._forget(worker)
                worker.close(timeout=1)
                raise
            with self._lock:
                if self._closed:
                    worker.close(timeout=1)
                else:
                    self._idle.append(worker)
            return result
        finally:
            if self._slots is not None:
                self._slots.release()

    def _acquire(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise WorkerDied("the sweep is shutting down: no new trial process")
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
                self._all.remove(worker)
                worker.close(timeout=1)  # reap it, close its pipe
            worker = _Worker(self._ctx)
            self._all.append(worker)
            return worker

    def _forget(self, worker: _Worker) -> None:
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)

    def close(self) -> None:
        """Stop every worker: idle ones end at once (their pipe closes), busy ones are killed
        (their trials are failed by the sweeper anyway). New jobs are refused."""
        with self._lock:
            self._closed = True
            workers, self._all, self._idle = list(self._all), [], []
        for worker in workers:
            worker.close(timeout=1)
