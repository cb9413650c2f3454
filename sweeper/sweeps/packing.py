"""``hydra.sweeper.population=K``: K asked trials train as members of one population.

Why: the population engine (``sweeper.training.Population``) pays the per-step Python and
numpy overhead once for all its members, so on a small machine K trials in one process train
faster than K processes (two cores cannot run sixteen). Each member is still its own Optuna
trial and its own MLflow run: it reports its own intermediate values, is pruned alone, and
the moment it ends its slot takes the next asked trial, so no member waits for the others
(no batch barrier). With ``hydra.sweeper.seeds=N`` a trial is N members (its replicate
group) and the population has K * N members.

Trials of one population must share what sets the array shapes (``sweeper.train.SHARED_KEYS``:
env, network sizes, dueling, batch size, buffer kind). An asked trial that differs waits
until the current population has drained, then starts the next one; asking stops meanwhile.

Who does what: :class:`Packed` only trains. It takes its jobs from a *trial source*
(``claim`` -> :class:`Job` or None, ``end(number, outcome)``, ``stopped``) and computes each
job's :class:`~sweeper.sweeps.outcome.Outcome` itself, after closing the job's callbacks. The
sweeper's side of a source (asking, claiming, composing the job's config, telling Optuna,
the progress lines) is a *feed*: :class:`TuningFeed` for the sweep's trials, :class:`TestFeed`
for the re-test runs. With ``n_jobs=1`` the feed is the source and the population runs in the
sweeper's process; with ``n_jobs=J`` each of J worker processes runs one population and its
source is a pipe to a slot thread that serves the feed (``sweeper.sweeps.packed_workers``).

A kill -9 of the sweeper leaves its trials RUNNING (its workers die with it); the next run of
the same command fails them as stale and asks again, so the count of finished trials stays
exact.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import optuna
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.trial import TrialState

from sweeper import study_attrs
from sweeper.sweeps.errors import error_text
from sweeper.sweeps.ledger import safe
from sweeper.sweeps.outcome import OUTPUT_DIR, Outcome, result_attrs

if TYPE_CHECKING:  # pragma: no cover
    from sweeper.sweeps._impl import OptunaSweeperImpl
    from sweeper.sweeps.ledger import TrialLedger
    from sweeper.sweeps.progress import SweepProgress

log = logging.getLogger(__name__)

WORKER_PID = study_attrs.WORKER_PID  # the process that trained a trial (n_jobs > 1)


@dataclass
class Job:
    """A trial (or a test run) ready to train: what a population needs, all picklable."""

    number: int
    job_cfg: DictConfig  # the Hydra job config (the MLflow run's tags read it)
    cfg: DictConfig  # the task config
    output_dir: Path
    key: tuple  # sweeper.train.shape_key(cfg)


class Source(Protocol):
    """Where a population gets its jobs and tells how they ended."""

    def claim(self) -> Job | None: ...  # None: no more jobs (or the sweep stops)

    def end(self, number: int, outcome: Outcome) -> None: ...

    def stopped(self) -> bool: ...


@dataclass
class Claimed:
    """A job in a population: its group of runs and callbacks once started."""

    job: Job
    group: Any = None  # sweeper.train.Group once started
    callbacks: list[Any] = field(default_factory=list)


class Packed:
    """Drives a source's jobs through populations of ``capacity`` jobs of ``width`` members."""

    def __init__(self, source: Source, capacity: int, width: int) -> None:
        self.source = source
        self.capacity = max(1, capacity)
        self.width = max(1, width)  # members per job
        self.pending: deque[Claimed] = deque()
        self.built: Any = None

    # --- jobs ------------------------------------------------------------------------------
    def _claim(self) -> Claimed | None:
        job = self.source.claim()
        return None if job is None else Claimed(job)

    def _end(self, claimed: Claimed, exc: BaseException | None) -> None:
        self.source.end(claimed.job.number, outcome(claimed, exc))

    # --- populations ---------------------------------------------------------------------
    def run(self) -> None:
        while not self.source.stopped():
            first = self.pending.popleft() if self.pending else self._claim()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.capacity and not self.pending:
                nxt = self._claim()
                if nxt is None:
                    break
                if nxt.job.key != first.job.key:
                    self.pending.append(nxt)  # waits for a population of its own shape
                    break
                batch.append(nxt)
            self._population(batch)
        # (the sweep stopped: a job still pending was claimed but never started; its feed
        # releases it, see TuningFeed.release)

    def _population(self, batch: list[Claimed]) -> None:
        from sweeper.train import build
        from sweeper.training import Population, advance

        try:
            configs = [c for claimed in batch for c in self._group(claimed).configs]
            self.built = build(configs)
        except Exception as exc:  # noqa: BLE001 - e.g. the env failed: these trials fail
            for claimed in batch:
                self._end(claimed, exc)
            return
        members = []
        blocks: list[Claimed | None] = []
        agent, env, eval_env = self.built
        for b, claimed in enumerate(batch):
            members += self._start(claimed, agent, b)
            blocks.append(claimed)
        population = Population(agent, env, eval_env, members, batch[0].job.cfg.train.probe_max_q)
        events = population.events()
        while any(b is not None for b in blocks):
            try:
                event, _ = advance(events)
            except Exception as exc:  # noqa: BLE001 - the population broke: its trials fail
                for claimed in blocks:
                    if claimed is not None:
                        claimed.group.fail(exc)
                        self._end(claimed, exc)
                return
            if event is None:
                break
            b = event.member // self.width
            claimed = blocks[b]
            if claimed is None or event.member not in claimed.group.slots:
                continue
            try:
                finished = claimed.group.handle(event)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - ends this trial only
                for slot in claimed.group.slots:
                    population.stop(slot)
                claimed.group.fail(exc)
                self._end(claimed, exc)
                blocks[b] = self._refill(population, b, batch[0].job.key)
                continue
            if finished:
                self._end(claimed, None)
                blocks[b] = self._refill(population, b, batch[0].job.key)

    def _group(self, claimed: Claimed):
        from sweeper.train import Group, integrations, replicate_callbacks

        job = claimed.job
        with _hydra_job(job):  # the MLflow run's tags read the job's Hydra config
            callbacks = integrations(job.cfg, job.output_dir, _tracking_mode(job.cfg))
        claimed.callbacks = callbacks
        seed_callbacks = replicate_callbacks(job.cfg, callbacks) if job.cfg.trial.seeds else None
        claimed.group = Group(
            job.cfg, job.output_dir, callbacks, seed_callbacks or (lambda c, d: ())
        )
        return claimed.group

    def _start(self, claimed: Claimed, agent: Any, block: int) -> list[Any]:
        slots = range(block * self.width, (block + 1) * self.width)
        return claimed.group.start(agent, slots)

    def _refill(self, population: Any, block: int, key: tuple) -> Claimed | None:
        """The next job in ``block``'s slots, when it has this population's shape."""
        from sweeper.train import reset_member

        if self.pending or self.source.stopped():
            return None
        claimed = self._claim()
        if claimed is None:
            return None
        if claimed.job.key != key:
            self.pending.append(claimed)
            return None
        try:
            group = self._group(claimed)
            slots = list(range(block * self.width, (block + 1) * self.width))
            for slot, cfg in zip(slots, group.configs, strict=True):
                reset_member(self.built, slot, cfg)
            for slot, member in zip(
                slots, self._start(claimed, population.agent, block), strict=True
            ):
                population.assign(slot, member)
        except Exception as exc:  # noqa: BLE001 - this trial fails, the slots stay free
            if claimed.group is not None:
                claimed.group.fail(exc)
            self._end(claimed, exc)
            return None
        return claimed


def outcome(claimed: Claimed, exc: BaseException | None) -> Outcome:
    """How a packed job ended, after closing its callbacks (e.g. the MLflow run logs the
    files and ends): COMPLETE with its value, PRUNED, or FAIL with the error."""
    job = claimed.job
    for cb in claimed.callbacks:
        with contextlib.suppress(Exception):
            cb.close(exc)
    attrs = {OUTPUT_DIR: str(job.output_dir), **result_attrs(job.output_dir)}
    value = claimed.group.value if claimed.group is not None and exc is None else None
    if exc is None and value is not None and math.isfinite(value):
        return Outcome(TrialState.COMPLETE, value=float(value), attrs=attrs)
    if exc is None:
        return Outcome(TrialState.FAIL, error=f"the objective is {value}", attrs=attrs)
    if isinstance(exc, optuna.TrialPruned):
        return Outcome(TrialState.PRUNED, attrs=attrs)
    return Outcome(TrialState.FAIL, error=error_text(exc), attrs=attrs)


# --- the sweeper's side: feeds ---------------------------------------------------------------
def compose_job(sweeper: OptunaSweeperImpl, number: int, overrides: Sequence[str]) -> Job:
    """The job's Hydra and task configs and output dir, as a launcher would compose them."""
    from sweeper.config import validate
    from sweeper.train import shape_key

    job_cfg = sweeper.compose(overrides)
    with open_dict(job_cfg):
        job_cfg.hydra.job.num = number
        job_cfg.hydra.job.id = f"{job_cfg.hydra.job.name}_{number}"
    output_dir = Path(str(job_cfg.hydra.sweep.dir)) / str(job_cfg.hydra.sweep.subdir)
    cfg = OmegaConf.masked_copy(job_cfg, [k for k in job_cfg if k != "hydra"])
    validate(cfg)
    return Job(number, job_cfg, cfg, output_dir, shape_key(cfg))


class TuningFeed:
    """The sweep's trials: ask and claim (the ledger's ``next_trial``), compose; tell and print
    the end. Safe to serve from several slot threads."""

    def __init__(
        self, sweeper: OptunaSweeperImpl, ledger: TrialLedger, progress: SweepProgress
    ) -> None:
        self.sweeper, self.ledger, self.progress = sweeper, ledger, progress
        self.trials: dict[int, optuna.trial.Trial] = {}

    def claim(self) -> Job | None:
        while True:
            asked = self.ledger.next_trial()
            if asked is None:
                return None
            trial, overrides, shown = asked
            self.trials[trial.number] = trial
            self.progress.trial_started(trial.number, " ".join(shown))
            try:
                return compose_job(self.sweeper, trial.number, overrides)
            except Exception as exc:  # noqa: BLE001 - this trial fails, the sweep goes on
                self.end(trial.number, Outcome(TrialState.FAIL, error=error_text(exc)))

    def end(self, number: int, outcome: Outcome) -> None:
        trial = self.trials.pop(number, None)
        if trial is None:  # released meanwhile (the sweep was interrupted)
            return
        self.ledger.tell(trial, outcome)
        self.progress.trial_finished(self.ledger.plan.study, number, outcome)

    def retry(self, number: int, error: str) -> None:
        """Trial ``number``'s worker died: retried (``TrialLedger.retry``), not failed."""
        trial = self.trials.pop(number, None)
        if trial is None:  # released meanwhile (the sweep was interrupted)
            return
        failed = self.ledger.retry(trial, error)
        self.ledger.run_due_hooks()
        if failed is not None:  # retried enough: it counts as failed
            self.progress.trial_finished(self.ledger.plan.study, number, failed)

    def abandon(self, number: int, reason: str) -> None:
        """Trial ``number`` was cut short by the sweep's stop: failed, uncounted, its point
        asked again by the next run."""
        trial = self.trials.pop(number, None)
        if trial is not None:
            self.ledger.finish_uncounted(number, reason, dict(trial.params))

    def stopped(self) -> bool:
        return self.ledger.stop.is_set()

    def release(self) -> None:
        """Un-claim the trials handed out but never ended (the sweep stopped while they
        waited for a population of their shape): they do not count, their point is asked
        again by the next run."""
        for number, trial in list(self.trials.items()):
            self.trials.pop(number, None)
            self.ledger.finish_uncounted(
                number, "interrupted: the sweep stopped", dict(trial.params)
            )

    def handed(self, number: int, pid: int) -> None:
        """Trial ``number`` trains in worker process ``pid`` (kept as a user attr)."""
        trial = self.trials.get(number)
        if trial is not None:
            safe(trial.set_user_attr, WORKER_PID, pid)


class TestFeed:
    """The re-test runs (one job per (config, test seed)): compose; keep each outcome."""

    __test__ = False  # not a pytest class

    def __init__(self, sweeper: OptunaSweeperImpl, jobs: Sequence[tuple[int, list[str]]]):
        self.sweeper = sweeper
        self.todo = deque(jobs)
        self.jobs = dict(jobs)
        self.attempts: dict[int, int] = {}
        self.outcomes: dict[int, Outcome] = {}
        self._lock = threading.Lock()

    def claim(self) -> Job | None:
        while True:
            with self._lock:
                if not self.todo:
                    return None
                number, overrides = self.todo.popleft()
            try:
                return compose_job(self.sweeper, number, overrides)
            except Exception as exc:  # noqa: BLE001 - this run fails, the others go on
                self.end(number, Outcome(TrialState.FAIL, error=error_text(exc)))

    def end(self, number: int, outcome: Outcome) -> None:
        self.outcomes[number] = outcome

    def retry(self, number: int, error: str) -> None:
        """Run ``number``'s worker died: queued again, up to ``MAX_RETRIES`` times."""
        from sweeper.sweeps.ledger import MAX_RETRIES

        with self._lock:
            self.attempts[number] = attempts = self.attempts.get(number, 0) + 1
            if attempts <= MAX_RETRIES:
                self.todo.append((number, self.jobs[number]))
                return
        self.end(number, Outcome(TrialState.FAIL, error=f"{error} (retried {MAX_RETRIES} times)"))

    def abandon(self, number: int, reason: str) -> None:
        self.end(number, Outcome(TrialState.FAIL, error=reason))

    def stopped(self) -> bool:
        return False

    def release(self) -> None:
        pass

    def handed(self, number: int, pid: int) -> None:
        pass


def _tracking_mode(cfg: DictConfig) -> str:
    """Where the packed runs' MLflow calls run: in this process for a local store (one
    logging child per run would be K * (seeds + 1) processes), a child per run otherwise (a
    server can hang; the child keeps that off the training loop)."""
    from sweeper.tracking import is_remote, resolve_tracking_uri

    uri = resolve_tracking_uri(cfg.tracking.get("tracking_uri"))
    return "process" if is_remote(uri) else "sync"


@contextlib.contextmanager
def _hydra_job(job: Job):
    """The job's Hydra config as the current HydraConfig while its callbacks are made, as
    the launcher would have set it in the job's process (the MLflow run's tags read it)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_config = HydraConfig.instance()
    before = hydra_config.cfg
    if job.job_cfg is not None:
        hydra_config.set_config(job.job_cfg)
    try:
        yield
    finally:
        hydra_config.cfg = before
