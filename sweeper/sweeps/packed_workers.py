"""``hydra.sweeper.population=K`` with ``hydra.sweeper.n_jobs=J``: J populations, one per
worker process.

Why: one population trains in one process, so one population uses one core. With J slots
each slot thread of the sweeper owns a worker process (``sweeper.sweeps.workers``: forked
from the fork server, dies with the sweeper) that runs one population at a time
(:class:`~sweeper.sweeps.packing.Packed`) and only trains. The sweeper keeps everything
else: asking and claiming trials, composing and validating their configs, telling Optuna,
the progress lines, the hooks, the heartbeat. Worker and slot talk over a pipe:

* ``("claim",)`` -> a :class:`~sweeper.sweeps.packing.Job` or None (no more trials, or the
  sweep stops);
* ``("end", number, outcome)`` -> whether the sweep stops (the worker then takes no new
  trial and lets its population drain);
* ``("done",)``: the worker's population drained and it has no more trials; it exits.

A worker that dies (kill -9, out of memory) fails exactly the trials it held, with the
signal that killed it (:class:`~sweeper.sweeps.workers.WorkerDied`); the slot starts a fresh
worker if trials remain, and the other slots' populations never notice. A trial that
trained in a worker keeps its pid (user attr ``sweeper:worker_pid``). MLflow runs are made in
the worker as in a packed sweep in one process; pruning goes through the Optuna storage.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from multiprocessing.connection import Connection
from typing import Any

from sweeper.sweeps import sweep_log
from sweeper.sweeps.packing import Job, Packed, Source
from sweeper.sweeps.workers import (
    WorkerDied,
    context,
    death_line,
    in_environ,
    process_start,
    watch_parent,
)

log = logging.getLogger(__name__)


# -- the worker process --------------------------------------------------------------------------
class PipeSource:
    """A worker's trial source: its slot thread in the sweeper, over ``conn``."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._stopped = False

    def claim(self) -> Job | None:
        if self._stopped:
            return None
        job = self._ask(("claim",))
        if job is None:
            self._stopped = True
        return job

    def end(self, number: int, outcome: Any) -> None:
        stop = bool(self._ask(("end", number, outcome)))
        # every answer is read, also once stopped: an unread answer (``stopped or recv()``
        # skipped it) let this worker exit while its slot still wrote to the pipe, so the slot
        # saw "died (exited with code 0)" and failed the trials whose ends were still queued
        self._stopped = self._stopped or stop

    def _ask(self, message: tuple) -> Any:
        self.tell(message)
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            raise SweeperGone from None

    def tell(self, message: tuple) -> None:
        try:
            self.conn.send(message)
        except OSError:
            raise SweeperGone from None

    def stopped(self) -> bool:
        return self._stopped


class SweeperGone(Exception):
    """The pipe to the sweeper broke: the sweeper died (its trials are failed as stale and
    its runs closed by the next run of the same command)."""


def _worker_main(
    conn: Connection, parent_pid: int, parent_start: str | None, capacity: int, width: int
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sweeper's to handle
    watch_parent(parent_pid, parent_start)
    # one line a record on stderr, tracebacks in the sweep's log file (``sweep_log``)
    sweep_log.worker_logging(f"[worker {os.getpid()}]")
    source = PipeSource(conn)
    try:
        Packed(source, capacity, width).run()
        source.tell(("done",))
    except SweeperGone:  # no traceback: the sweeper is gone
        os._exit(70)  # EX_SOFTWARE, as watch_parent
    except Exception as err:  # e.g. a full disk: one line, the traceback in the log file
        from sweeper.sweeps.errors import error_text

        log.error("worker process stopped: %s", error_text(err), exc_info=True)
        raise SystemExit(1) from None  # (multiprocessing prints no traceback for it)


# -- the sweeper's side --------------------------------------------------------------------------
class Slot:
    """One slot of a packed sweep: serves ``feed`` to a worker process; starts a fresh one
    when its worker dies and jobs remain."""

    def __init__(self, feed: Any, capacity: int, width: int, index: int = 0) -> None:
        self.feed, self.capacity, self.width, self.index = feed, capacity, width, index
        self._ctx = context()
        self.proc: Any = None

    def kill(self) -> None:
        """End the worker now (the sweep was interrupted; its trials were released)."""
        proc = self.proc
        if proc is not None and proc.is_alive():
            proc.kill()

    def run(self) -> None:
        from sweeper.sweeps.errors import error_text

        first = self.feed.claim()  # a worker only when there is work for it
        while first is not None:
            held: set[int] = {first.number}
            try:
                self._serve(first, held)
                return
            except WorkerDied as err:
                if self.feed.stopped():  # killed by the sweep's stop (Ctrl-C): not a death
                    for number in sorted(held):
                        self.feed.abandon(number, "interrupted: the sweep stopped")
                    return
                # the trials it held did not fail of themselves: each is tried again
                log.warning("packed slot %d: %s", self.index, err)
                for number in sorted(held):
                    self.feed.retry(number, error_text(err))
            if self.feed.stopped():
                return
            first = self.feed.claim()

    def _serve(self, first: Job, held: set[int]) -> None:
        conn, child = self._ctx.Pipe(duplex=True)
        me = os.getpid()
        proc = self._ctx.Process(
            target=in_environ,
            args=(
                dict(os.environ),
                _worker_main,
                child,
                me,
                process_start(me),
                self.capacity,
                self.width,
            ),
            name=f"sweeper-population-{self.index}",
        )
        proc.daemon = False  # daemonic processes may not have children (MLflow loggers)
        proc.start()
        child.close()
        self.proc = proc
        log.info("packed slot %d: worker process %d", self.index, proc.pid)
        queued: list[Job] = [first]
        try:
            while True:
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    proc.join(timeout=10)
                    raise WorkerDied(death_line(proc.pid, proc.exitcode)) from None
                if msg[0] == "claim":
                    job = queued.pop() if queued else self.feed.claim()
                    if job is not None:
                        held.add(job.number)
                        self.feed.handed(job.number, proc.pid)
                    self._send(conn, proc, job)
                elif msg[0] == "end":
                    _, number, outcome = msg
                    held.discard(number)
                    self.feed.end(number, outcome)
                    self._send(conn, proc, self.feed.stopped())
                elif msg[0] == "done":
                    return
        finally:
            conn.close()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)

    @staticmethod
    def _send(conn: Connection, proc: Any, message: Any) -> None:
        try:
            conn.send(message)
        except (OSError, BrokenPipeError):
            proc.join(timeout=10)
            raise WorkerDied(death_line(proc.pid, proc.exitcode)) from None


class RemoteSlot:
    """One slot of a packed sweep on a remote launcher (``sweeper.sweeps.remote``): claims
    up to ``capacity`` jobs of one shape, trains them as one population in one Ray task or
    submitit job, ends each with the outcome the task returned. Unlike a local worker it
    does not refill a member's slots mid-population (the task has no pipe back): the next
    population starts when this one returns."""

    def __init__(self, feed: Any, capacity: int, width: int, index: int, runner: Any) -> None:
        self.feed, self.capacity, self.width, self.index = feed, capacity, width, index
        self.runner = runner

    def kill(self) -> None:
        """Nothing to kill here: Ray ends a dead driver's tasks, submitit's jobs their own."""

    def run(self) -> None:
        from optuna.trial import TrialState

        from sweeper.sweeps.errors import error_text
        from sweeper.sweeps.outcome import Outcome

        pending: Job | None = None
        while not self.feed.stopped():
            first, pending = pending or self.feed.claim(), None
            if first is None:
                return
            batch = [first]
            while len(batch) < self.capacity and not self.feed.stopped():
                job = self.feed.claim()
                if job is None:
                    break
                if job.key != first.key:
                    pending = job  # the next population's
                    break
                batch.append(job)
            try:
                outcomes, error = self.runner(batch, self.capacity, self.width), None
            except Exception as err:  # noqa: BLE001 - the task died: its trials fail
                outcomes, error = {}, error_text(err)
                log.warning("packed slot %d: the population's job failed: %s", self.index, error)
            for job in batch:
                self.feed.end(
                    job.number,
                    outcomes.get(job.number)
                    or Outcome(TrialState.FAIL, error=f"the population's job failed: {error}"),
                )
        # (a pending job was claimed but never started: the feed releases it)


def run_packed(
    feed: Any,
    capacity: int,
    width: int,
    n_slots: int,
    stop: threading.Event | None = None,
    runner: Any = None,
) -> None:
    """Train ``feed``'s jobs in populations of ``capacity`` jobs of ``width`` members: in this
    process when ``n_slots`` is 1, else on ``n_slots`` worker processes (``feed`` may be a
    list, one feed per slot); with ``runner`` (``sweeper.sweeps.remote.population_runner``)
    each population is one Ray task or submitit job instead. Raises the first error of a slot
    (e.g. the storage failed; ``stop`` is set then, so that the other slots take no new job),
    after the other slots ended."""
    feeds = list(feed) if isinstance(feed, list) else [feed] * n_slots
    if n_slots <= 1 and runner is None:
        feed = feeds[0]
        source: Source = feed
        try:
            Packed(source, capacity, width).run()
        finally:
            feed.release()
        return
    errors: list[BaseException] = []
    n_slots = max(1, n_slots)
    slots: list[Any] = [
        Slot(feeds[i], capacity, width, i)
        if runner is None
        else RemoteSlot(feeds[i], capacity, width, i, runner)
        for i in range(n_slots)
    ]

    def slot(i: int) -> None:
        try:
            slots[i].run()
        except BaseException as exc:  # noqa: BLE001 - reported by the caller's thread
            errors.append(exc)
            if stop is not None:
                stop.set()

    threads = [
        threading.Thread(target=slot, args=(i,), name=f"sweeper-population-{i}", daemon=True)
        for i in range(n_slots)
    ]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    finally:
        for i, each in enumerate(feeds):
            if all(each is not other for other in feeds[:i]):  # each feed once
                each.release()
        if any(t.is_alive() for t in threads):  # interrupted: no worker outlives the sweep
            if stop is not None:
                stop.set()  # first: a slot whose worker is killed now knows why
            for s in slots:
                s.kill()
            for t in threads:  # each slot gives its trials back (``Slot.run``)
                t.join(timeout=10)
    if errors:
        raise errors[0]


def balanced_shares(jobs: list[Any], costs: list[float], n: int) -> list[list[Any]]:
    """``jobs`` split into ``n`` shares of about equal total cost: the longest job first,
    each to the share with the least cost so far (then the fewest jobs); a share keeps the
    jobs' order."""
    shares: list[list[int]] = [[] for _ in range(n)]
    load = [0.0] * n
    for i in sorted(range(len(jobs)), key=lambda i: -costs[i]):
        share = min(range(n), key=lambda s: (load[s], len(shares[s])))
        shares[share].append(i)
        load[share] += costs[i]
    return [[jobs[i] for i in sorted(share)] for share in shares]


def run_tests(
    sweeper: Any,
    jobs: list[tuple[int, list[str]]],
    capacity: int,
    n_slots: int,
    costs: list[float] | None = None,
    runner: Any = None,
):
    """The re-test runs (``(number, overrides)``, one seed each), packed: up to ``capacity``
    runs per population over ``n_slots`` populations. With ``costs`` (one estimate per job,
    ``retest.run_cost``) each slot gets its own runs, the longest first to the least loaded
    slot, so that the slots' work, not their number of runs, is even: a population ends with
    its longest run, and one slot with all the long runs kept the other core idle for a third
    of the re-test. Their outcomes by number."""
    from sweeper.sweeps.packing import TestFeed

    n_slots = max(1, min(n_slots, len(jobs)))
    if costs is None or n_slots == 1:
        feed = TestFeed(sweeper, jobs)
        per_slot = -(-len(jobs) // n_slots)  # every slot gets its share at once
        run_packed(feed, min(capacity, per_slot), 1, n_slots, runner=runner)
        return feed.outcomes
    shares = balanced_shares(jobs, costs, n_slots)
    feeds = [TestFeed(sweeper, share) for share in shares]
    run_packed(feeds, min(capacity, max(len(share) for share in shares)), 1, n_slots, runner=runner)
    return {number: outcome for feed in feeds for number, outcome in feed.outcomes.items()}
