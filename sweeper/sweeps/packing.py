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

The population runs in the sweeper's own process (like Hydra's basic launcher runs jobs):
there is one slot (``n_jobs`` must be 1) and no job process per trial. A kill -9 of the
sweeper leaves its trials RUNNING; the next run of the same command fails them as stale and
asks again, so the count of finished trials stays exact.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.trial import TrialState

if TYPE_CHECKING:  # pragma: no cover
    from sweeper.sweeps._impl import OptunaSweeperImpl, _Plan
    from sweeper.sweeps.progress import SweepProgress

log = logging.getLogger(__name__)


@dataclass
class Claimed:
    """An asked trial ready to train: its task config and its output directory."""

    trial: optuna.trial.Trial
    cfg: DictConfig
    output_dir: Path
    key: tuple
    job_cfg: DictConfig | None = None
    group: Any = None  # sweeper.train.Group once started
    callbacks: list[Any] = field(default_factory=list)


class Packed:
    """Drives one sweep's trials through populations of ``capacity`` trials each."""

    def __init__(
        self, sweeper: OptunaSweeperImpl, plan: _Plan, progress: SweepProgress, capacity: int
    ) -> None:
        self.sweeper, self.plan, self.progress = sweeper, plan, progress
        self.capacity = capacity
        self.width = max(1, len(plan.tuning_seeds))  # members per trial
        self.pending: deque[Claimed] = deque()

    # --- trials ------------------------------------------------------------------------
    def _claim(self) -> Claimed | None:
        """The next asked trial (None: enough trials, or the sweep stops)."""
        from sweeper.train import shape_key

        while True:
            asked = self.sweeper._next_trial(self.plan)
            if asked is None:
                return None
            trial, overrides, shown = asked
            self.progress.trial_started(trial.number, " ".join(shown))
            try:
                job_cfg, cfg, output_dir = self._job(trial.number, overrides)
                return Claimed(trial, cfg, output_dir, shape_key(cfg), job_cfg)
            except Exception as exc:  # noqa: BLE001 - this trial fails, the sweep goes on
                self._end(trial, None, exc)

    def _job(self, number: int, overrides: list[str]) -> tuple[DictConfig, DictConfig, Path]:
        """The trial's task config and output dir, as a launcher would compose them."""
        from sweeper.config import validate

        job_cfg = self.sweeper._compose(overrides)
        with open_dict(job_cfg):
            job_cfg.hydra.job.num = number
            job_cfg.hydra.job.id = f"{job_cfg.hydra.job.name}_{number}"
        output_dir = Path(str(job_cfg.hydra.sweep.dir)) / str(job_cfg.hydra.sweep.subdir)
        cfg = OmegaConf.masked_copy(job_cfg, [k for k in job_cfg if k != "hydra"])
        validate(cfg)
        return job_cfg, cfg, output_dir

    def _end(self, trial: optuna.trial.Trial, claimed: Claimed | None, exc: BaseException | None):
        """Tell Optuna (and the hooks, the progress line) how ``trial`` ended."""
        from sweeper.sweeps._impl import OUTPUT_DIR, Outcome, _error_text, result_attrs

        attrs: dict[str, Any] = {}
        value = None
        if claimed is not None:
            attrs = {OUTPUT_DIR: str(claimed.output_dir), **result_attrs(claimed.output_dir)}
            for cb in claimed.callbacks:  # e.g. the MLflow run logs the files and ends
                if hasattr(cb, "close"):
                    with contextlib.suppress(Exception):
                        cb.close(exc)
            if claimed.group is not None and exc is None:
                value = claimed.group.value
        if exc is None and value is not None and math.isfinite(value):
            outcome = Outcome(TrialState.COMPLETE, value=float(value), attrs=attrs)
        elif exc is None:
            outcome = Outcome(TrialState.FAIL, error=f"the objective is {value}", attrs=attrs)
        elif isinstance(exc, optuna.TrialPruned):
            outcome = Outcome(TrialState.PRUNED, attrs=attrs)
        else:
            outcome = Outcome(TrialState.FAIL, error=_error_text(exc), attrs=attrs)
        self.sweeper._tell(self.plan, trial, outcome)
        self.progress.trial_finished(self.plan.study, trial.number, outcome)

    # --- populations ---------------------------------------------------------------------
    def run(self) -> None:
        while not self.sweeper._stop.is_set():
            first = self.pending.popleft() if self.pending else self._claim()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.capacity and not self.pending:
                nxt = self._claim()
                if nxt is None:
                    break
                if nxt.key != first.key:
                    self.pending.append(nxt)  # waits for a population of its own shape
                    break
                batch.append(nxt)
            self._population(batch)

    def _population(self, batch: list[Claimed]) -> None:
        from sweeper.train import build
        from sweeper.training import Population, advance

        configs = [c for claimed in batch for c in self._group(claimed).configs]
        try:
            self.built = build(configs)
        except Exception as exc:  # noqa: BLE001 - e.g. the env failed: these trials fail
            for claimed in batch:
                self._end(claimed.trial, claimed, exc)
            return
        members = []
        blocks: list[Claimed | None] = []
        agent, env, eval_env = self.built
        for b, claimed in enumerate(batch):
            members += self._start(claimed, agent, b)
            blocks.append(claimed)
        population = Population(agent, env, eval_env, members, batch[0].cfg.train.probe_max_q)
        events = population.events()
        while any(b is not None for b in blocks):
            try:
                event, _ = advance(events)
            except Exception as exc:  # noqa: BLE001 - the population broke: its trials fail
                for claimed in blocks:
                    if claimed is not None:
                        claimed.group.fail(exc)
                        self._end(claimed.trial, claimed, exc)
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
                self._end(claimed.trial, claimed, exc)
                blocks[b] = self._refill(population, b, batch[0].key)
                continue
            if finished:
                self._end(claimed.trial, claimed, None)
                blocks[b] = self._refill(population, b, batch[0].key)

    def _group(self, claimed: Claimed):
        from sweeper.train import Group, integrations, replicate_callbacks

        with _hydra_job(claimed):  # the MLflow run's tags read the job's Hydra config
            callbacks = integrations(claimed.cfg, claimed.output_dir, _tracking_mode(claimed.cfg))
        claimed.callbacks = callbacks
        seed_callbacks = (
            replicate_callbacks(claimed.cfg, callbacks) if claimed.cfg.trial.seeds else None
        )
        claimed.group = Group(
            claimed.cfg, claimed.output_dir, callbacks, seed_callbacks or (lambda c, d: ())
        )
        return claimed.group

    def _start(self, claimed: Claimed, agent: Any, block: int) -> list[Any]:
        slots = range(block * self.width, (block + 1) * self.width)
        return claimed.group.start(agent, slots)

    def _refill(self, population: Any, block: int, key: tuple) -> Claimed | None:
        """The next trial in ``block``'s slots, when it has this population's shape."""
        from sweeper.train import reset_member

        if self.pending or self.sweeper._stop.is_set():
            return None
        claimed = self._claim()
        if claimed is None:
            return None
        if claimed.key != key:
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
            self._end(claimed.trial, claimed, exc)
            return None
        return claimed


def _tracking_mode(cfg: DictConfig) -> str:
    """Where the packed runs' MLflow calls run: in this process for a local store (one
    logging child per run would be K * (seeds + 1) processes), a child per run otherwise (a
    server can hang; the child keeps that off the training loop)."""
    from sweeper.tracking import store
    from sweeper.tracking.worker import is_remote

    uri = store.resolve_tracking_uri(cfg.tracking.get("tracking_uri"))
    return "process" if is_remote(uri) else "sync"


@contextlib.contextmanager
def _hydra_job(claimed: Claimed):
    """The trial's Hydra job config as the current HydraConfig while its callbacks are made,
    as the launcher would have set it in the job's process (the MLflow run's tags read it)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_config = HydraConfig.instance()
    before = hydra_config.cfg
    if claimed.job_cfg is not None:
        hydra_config.set_config(claimed.job_cfg)
    try:
        yield
    finally:
        hydra_config.cfg = before
