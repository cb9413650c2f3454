"""The Optuna sweeper: ask/tell over Hydra launchers, N slots with no batch barrier.

Flow of ``sweep(arguments)``:

1. **Plan** (nothing runs yet; any problem exits with a one-line message naming the parameter):
   the search space from ``hydra.sweeper.params`` + command-line overrides, sampler and pruner,
   a composition of the task config with the fixed overrides and with each parameter's extreme
   values (``sweeper.config.validate``), the storage (opened and pinged), the study (created or
   resumed; its default name hashes the search space, the fixed overrides and the task config).
2. **Slots**: ``n_jobs`` threads, each looping *fail stale trials -> count -> ask -> launch one
   job -> tell*. A slot that finishes starts the next trial at once (no batch barrier). The
   basic launcher mutates process-global state (``HydraConfig``, logging, cwd), so with it the
   sweep runs one slot in the main thread; process launchers (joblib) run slots concurrently.
   With ``population=K`` each slot trains a population of up to K trials instead of one job
   (``sweeper.sweeps.packing``; in this process with one slot, else one worker process per
   slot: ``sweeper.sweeps.packed_workers``, which needs ``hydra/launcher=isolated``).
3. **Results**: summary table, ``optimization_results.yaml``, study hooks.

Counting (resume, several workers): the study is done when the trials that *count* reach
``n_trials``. Every trial counts except queued (WAITING) ones and those marked
``sweeper:uncounted`` (RUNNING trials of a killed process found stale, surplus trials from a race
between workers, interrupted trials); with the grid sampler the params of such a trial are
queued again (``enqueue_trial``), since Optuna's grid sampler takes every finished trial's point
as visited. A RUNNING trial is stale when its owner (hostname + pid + process start time, in the
user attr ``sweeper:owner``) is this host and that process is gone; when the owner lives on
another host (or the trial has no owner yet), when its heartbeat (user attr
``sweeper:heartbeat``, refreshed every ``heartbeat_interval`` s by a thread of the owning
sweeper) is older than ``grace_period`` s. JournalStorage has no heartbeat of its own and
Optuna's RDB heartbeat only runs inside ``Study.optimize``, hence this one for every storage.

Seeding: the first process of a fresh study uses ``hydra.sweeper.sampler.seed`` (two fresh
sweeps of the same command sample the same points); a process that resumes a study or shares
it with another worker derives its own seed, so it does not repeat the points already sampled.
The grid sampler keeps the configured seed everywhere (it fixes the grid's order).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from optuna.trial import TrialState

from sweeper import study_attrs
from sweeper.analysis import SAMPLER_ATTR, SWEEP_ATTR, UNCOUNTED, counts, n_counted, tally
from sweeper.messages import one_line
from sweeper.pruning import PRUNER_ATTR, PrunerError, pruner_spec
from sweeper.secrets import mask_text
from sweeper.seeding import replicate_seeds
from sweeper.study_storage import StorageError, canonical, open_storage, redact
from sweeper.sweeps import results as results_mod
from sweeper.sweeps import sweep_dir as sweep_dir_mod
from sweeper.sweeps.factories import FactoryError, grid_size, make_sampler
from sweeper.sweeps.hooks import HookError, StudyHook, StudyInfo, load_hooks, resolve
from sweeper.sweeps.progress import SweepProgress
from sweeper.sweeps.search_space import (
    SearchSpace,
    SearchSpaceError,
    build_search_space,
    format_value,
    grid_choices,
    override_key,
    param_overrides,
    validate_space,
)
from sweeper.sweeps.workers import process_alive, process_start, watch_parent

log = logging.getLogger("sweeper.sweeps")

OWNER = study_attrs.OWNER
HEARTBEAT = study_attrs.HEARTBEAT
ERROR = study_attrs.ERROR
OVERRIDES = study_attrs.OVERRIDES
OUTPUT_DIR = study_attrs.OUTPUT_DIR
REQUEUED = study_attrs.REQUEUED
# study: the sweep seed and the tuning seeds every trial trains
SEEDS_ATTR = study_attrs.REPLICATE_SEEDS
WORKER = study_attrs.WORKER
DEFAULT_VALIDATOR = "sweeper.config:validate"


class SweepError(Exception):
    """A problem found before any trial ran; one line."""


class TrialExit(RuntimeError):
    """A job called ``sys.exit`` (e.g. a config error): the trial fails, the sweep goes on."""


class GuardedTask:
    """Wraps the task function so that ``SystemExit`` inside a job becomes an ordinary
    exception: Hydra's ``run_job`` only catches ``Exception``, so a ``SystemExit`` would end the
    whole sweep under the basic launcher (and abort joblib's executor).

    In a worker process (joblib's, the isolated launcher's) it also ties the worker's life to
    the sweeper's (:func:`~sweeper.sweeps.workers.watch_parent`): no orphan trains on after a
    kill -9 of the sweeper."""

    def __init__(self, task_function: TaskFunction) -> None:
        self.task_function = task_function
        self.sweeper_pid = os.getpid()
        self.sweeper_start = process_start(self.sweeper_pid)

    def __call__(self, cfg: DictConfig) -> Any:
        watch_parent(self.sweeper_pid, self.sweeper_start)
        try:
            return self.task_function(cfg)
        except SystemExit as exc:
            cause = exc.__cause__ or exc.__context__
            detail = f": {type(cause).__name__}: {cause}" if cause is not None else ""
            raise TrialExit(f"the job exited with code {exc.code}{detail}") from None


def result_attrs(out_dir: Path) -> dict[str, Any]:
    """What a trial keeps from its job's ``result.json`` (as user attrs): a replicate group's
    per-seed objectives and metrics with their aggregates and CI (``sweeper.replicates``),
    or a single run's metrics (e.g. ``mean_max_q``)."""
    try:
        result = json.loads((Path(out_dir) / "result.json").read_text())
    except (OSError, ValueError):
        return {}
    if study_attrs.SEEDS in result:
        skip = ("objective", "objective_name", "status", "error", "runs")
        return {k: v for k, v in result.items() if k not in skip and v is not None}
    return {k: v for k, v in (result.get("metrics") or {}).items() if v is not None}


def _supports_replicates(task_cfg: DictConfig) -> bool:
    """Whether the app's config takes ``trial.seeds`` (this app's ``TrialConfig``); another
    app run with this sweeper gets its trials as plain jobs, one seed each."""
    trial = OmegaConf.select(task_cfg, "trial")
    return isinstance(trial, DictConfig) and "seeds" in trial and "test_of" in trial


def _supports_population(task_cfg: DictConfig) -> bool:
    """Whether the trials are this project's app (``sweeper.train``), whose configs the
    population engine can build; ``hydra.sweeper.population`` needs it."""
    return (
        _supports_replicates(task_cfg)
        and OmegaConf.select(task_cfg, "train.probe_max_q") is not None
    )


def _owner() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": process_start(pid)}


def _owner_alive(owner: dict[str, Any]) -> bool | None:
    """True/False for an owner on this host; None when it lives elsewhere (unknown)."""
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return None
    return process_alive(int(owner.get("pid", -1)), owner.get("start"))


def _error_text(exc: BaseException) -> str:
    """``Type: message`` on one line, URL passwords masked (it is stored in the study and
    copied to MLflow; an MLflow error quotes the whole tracking URL)."""
    return mask_text(f"{type(exc).__name__}: {one_line(exc, 2000)}")


@dataclass
class Outcome:
    state: TrialState
    value: float | None = None
    error: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


def outcome_of(ret: JobReturn | BaseException) -> Outcome:
    """The Optuna outcome of a job: COMPLETE with a finite value, PRUNED, or FAIL with an error.

    Works on JobReturns from the sweeper's process and from joblib workers (whose exception
    came back pickled).
    """
    if isinstance(ret, BaseException):
        return Outcome(TrialState.FAIL, error=_error_text(ret))
    attrs: dict[str, Any] = {}
    if ret.hydra_cfg is not None:
        out_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir")
        if out_dir:
            attrs[OUTPUT_DIR] = str(out_dir)
            attrs.update(result_attrs(Path(out_dir)))
    if ret.status == JobStatus.COMPLETED:
        value = ret._return_value
        try:
            number = float(value)
        except (TypeError, ValueError):
            return Outcome(
                TrialState.FAIL, error=f"the objective is not a number: {value!r}", attrs=attrs
            )
        if not math.isfinite(number):
            return Outcome(TrialState.FAIL, error=f"the objective is {number}", attrs=attrs)
        return Outcome(TrialState.COMPLETE, value=number, attrs=attrs)
    exc = ret._return_value
    if isinstance(exc, optuna.TrialPruned):
        return Outcome(TrialState.PRUNED, attrs=attrs)
    if isinstance(exc, BaseException):
        return Outcome(TrialState.FAIL, error=_error_text(exc), attrs=attrs)
    return Outcome(TrialState.FAIL, error=f"job status {ret.status}: {exc!r}", attrs=attrs)


class OptunaSweeperImpl(Sweeper):
    def __init__(
        self,
        direction: str = "maximize",
        study_name: str | None = None,
        storage: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        max_failures: int | None = None,
        sampler: Any = None,
        pruner: Any = None,
        params: Any = None,
        heartbeat_interval: float = 5.0,
        grace_period: float = 60.0,
        progress: bool = True,
        study_hooks: Sequence[str] = (),
        summary: Any = None,
        validator: str | None = DEFAULT_VALIDATOR,
        seeds: int = 1,
        aggregate: str = "iqm",
        retest: Any = None,
        population: int = 1,
    ) -> None:
        self.direction = str(direction).lower()
        self.population = population
        self.seeds = seeds
        self.aggregate = str(aggregate)
        self.retest_cfg = {"enabled": True, "top_k": 3, "seeds": 10, **(_plain(retest) or {})}
        self.study_name = study_name
        self.storage_spec = storage
        self.n_trials = int(n_trials)
        self.n_jobs = int(n_jobs)
        self.max_failures = max_failures
        self.sampler_cfg = _plain(sampler) or {}
        self.pruner_cfg = _plain(pruner) or {}
        self.params = _plain(params) or {}
        self.heartbeat_interval = float(heartbeat_interval)
        self.grace_period = float(grace_period)
        self.progress_enabled = bool(progress)
        self.study_hooks = list(study_hooks or ())
        self.summary_cfg = _plain(summary) or {}
        self.validator_path = validator
        self.validator: Any = None  # resolved in planning
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher = None
        # runtime state
        self._lock = threading.RLock()
        self._running: dict[int, optuna.trial.Trial] = {}  # number -> trial this process runs
        self._stop = threading.Event()
        self._failures = 0
        self._hooks_due: list[int] = []  # trials failed under the lock, hooks not yet told
        self._last_error: str | None = None
        self._started_here: list[int] = []

    # -- Hydra API -------------------------------------------------------------------------
    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from sweeper.secrets import mask_config

        # Before the launcher writes multirun.yaml or a job's .hydra/ files: a password in the
        # storage or tracking URL is masked (the real URL stays in this process's environment;
        # idempotent where the app's MaskSecrets callback already did it).
        mask_config(config, as_overrides=True)
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=GuardedTask(task_function), config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        try:
            plan = self._plan(arguments)
        except (
            SearchSpaceError,
            StorageError,
            FactoryError,
            PrunerError,
            HookError,
            SweepError,
        ) as err:
            raise SystemExit(f"sweeper: {one_line(err, 2000)}") from None
        return self._run(plan)

    # -- planning ----------------------------------------------------------------------------
    def _load_validator(self) -> Any:
        """The config validator, resolved in planning. The default one belongs to this app
        (``sweeper.config``): another app that uses the plugin without that module just runs
        without a validator; a path the user set must import."""
        path = self.validator_path
        if not path:
            return None
        try:
            return resolve(str(path), "hydra.sweeper.validator")
        except HookError:
            if path == DEFAULT_VALIDATOR and importlib.util.find_spec("sweeper.config") is None:
                log.debug("no %s: composed configs are not validated", path)
                return None
            raise

    def _worker_seed(self, study: optuna.Study, seed: int | None, sampler: str) -> int | None:
        """The configured seed for the first process of a fresh study; a derived one on resume
        or when another worker shares the study (else both would sample the same points).

        Not for the grid sampler: its seed shuffles the grid, and the grid ids kept in the
        study's trials only mean the same points in every process with the same shuffle; so
        every process of a grid study uses the configured seed (0 when unset).

        Every process registers itself in the study (user attr ``sweeper:worker:<id>``) and then
        reads the registrations: of two processes starting together at least one sees the
        other, so at most one of them keeps the configured seed.
        """
        if sampler == "grid":
            return 0 if seed is None else seed
        me = _owner()
        key = f"{WORKER}{me['host']}:{me['pid']}:{me['start']}"
        study.set_user_attr(key, time.time())
        others = [k for k in study.user_attrs if k.startswith(WORKER) and k != key]
        n_existing = len(study.get_trials(deepcopy=False))
        if seed is None or (not others and n_existing == 0):
            return seed
        derived = derive_seed(seed, n_existing, me["host"], me["pid"], me["start"])
        log.info(
            "sampler seed %s -> %s (%s)",
            seed,
            derived,
            f"resuming {n_existing} trial(s)" if n_existing else "another worker shares the study",
        )
        return derived

    def _compose(self, overrides: Sequence[str]) -> DictConfig:
        assert self.hydra_context is not None and self.config is not None
        return self.hydra_context.config_loader.load_sweep_config(
            master_config=self.config, sweep_overrides=list(overrides)
        )

    def _task_cfg(self, overrides: Sequence[str], what: str) -> DictConfig:
        from sweeper.config import ConfigError

        try:
            cfg = self._compose(overrides)
        except Exception as err:
            raise SweepError(f"{what}: {one_line(err, 400)}") from None
        with open_dict(cfg):
            del cfg["hydra"]
        if self.validator is None:
            return cfg
        try:
            self.validator(cfg)
        except ConfigError as err:
            raise SweepError(f"{what}: {one_line(err, 2000)}") from None
        except Exception as err:  # a missing key in a foreign config
            raise SweepError(f"{what}: {type(err).__name__}: {one_line(err, 400)}") from None
        return cfg

    def _plan(self, arguments: Sequence[str]) -> _Plan:
        assert self.config is not None
        if self.direction not in ("maximize", "minimize"):
            raise SweepError(
                f"hydra.sweeper.direction: must be maximize or minimize, got {self.direction!r}"
            )
        if self.n_trials < 1:
            raise SweepError(f"hydra.sweeper.n_trials: must be >= 1, got {self.n_trials}")
        if self.n_jobs < 1:
            raise SweepError(f"hydra.sweeper.n_jobs: must be >= 1, got {self.n_jobs}")
        if self.max_failures is not None and (
            isinstance(self.max_failures, bool)
            or not isinstance(self.max_failures, int)
            or self.max_failures < 1
        ):
            raise SweepError(
                "hydra.sweeper.max_failures: must be >= 1 (or null: never stop), "
                f"got {self.max_failures}"
            )
        self._check_replicates()
        if isinstance(self.population, bool) or not isinstance(self.population, int):
            raise SweepError(
                f"hydra.sweeper.population: must be an int >= 1, got {self.population!r}"
            )
        if self.population < 1:
            raise SweepError(f"hydra.sweeper.population: must be >= 1, got {self.population}")
        if self.population > 1 and self.n_jobs > 1 and not self._isolated() and not self._basic():
            # J populations train on J worker processes of this sweeper's own (packed_workers),
            # which keep the isolated launcher's contract (a dead worker fails its trials
            # alone); joblib's loky would fail every trial in flight. The basic launcher runs
            # everything in this process: one population here, with the warning of _slots
            raise SweepError(
                f"hydra.sweeper.population={self.population} with hydra.sweeper.n_jobs="
                f"{self.n_jobs} trains {self.n_jobs} populations on worker processes: needs "
                f"hydra/launcher=isolated (got {self._launcher_name()}), or n_jobs=1"
            )
        self.validator = self._load_validator()
        space = build_search_space(self.params, arguments)
        validate_space(space)
        if any(n.lstrip("+~") == "seed" for n in space.distributions):
            raise SweepError(
                "seed: seeds are replicates, not a hyperparameter: set hydra.sweeper.seeds=N "
                "(every trial trains N tuning seeds; a fixed seed=S picks them)"
            )
        reserved = [o for o in space.fixed if o.lstrip("+~").startswith("trial.")]
        reserved += [n for n in space.distributions if n.lstrip("+~").startswith("trial.")]
        if reserved:
            raise SweepError(f"{reserved[0].split('=')[0]}: trial.* is set by the sweeper")

        # Compose before anything runs: fixed overrides, then each parameter at its extremes
        # (the others at their first extreme; an error names the whole point, since the bad
        # key may be another parameter's).
        base_cfg = self._task_cfg(space.fixed, "fixed overrides " + " ".join(space.fixed))
        first = {n: _extremes(d)[0] for n, d in space.distributions.items()}
        for name, dist in space.distributions.items():
            for value in _extremes(dist):
                sample = {**first, name: value}
                overrides = list(space.fixed) + param_overrides(space.distributions, sample)
                point = " ".join(
                    f"{n}={_shown(v, space.distributions[n])}" for n, v in sample.items()
                )
                self._task_cfg(overrides, point)
        hooks = load_hooks(self.study_hooks, base_cfg)  # bad paths fail before any storage

        sampler_name = str(self.sampler_cfg.get("name", "tpe")).lower()
        n_trials = self.n_trials
        if sampler_name == "grid":
            if not space.distributions:
                raise SweepError("hydra.sweeper.sampler: the grid sampler needs parameters")
            size = grid_size(space.distributions)
            if size < n_trials:
                log.info("grid sampler: %d grid points, n_trials %d -> %d", size, n_trials, size)
                n_trials = size
        seed = self.sampler_cfg.get("seed")
        sampler = make_sampler(  # validates the sampler before any storage is written
            sampler_name, self.sampler_cfg.get("kwargs"), seed, space.distributions
        )
        pspec = pruner_spec(
            self.pruner_cfg.get("name", "none"),
            self.pruner_cfg.get("kwargs"),
            self.pruner_cfg.get("warmup_steps"),
        )

        storage_spec = canonical(self.storage_spec)
        study_name = self.study_name or default_study_name(
            self.config, space, base_cfg, self._identity(sampler_name, seed, pspec)
        )
        try:
            sweep_claim = sweep_dir_mod.claim(Path(str(self.config.hydra.sweep.dir)), study_name)
        except sweep_dir_mod.SweepDirError as err:
            raise SweepError(str(err)) from None
        try:
            storage = open_storage(storage_spec)
            study = self._open_study(study_name, storage, sampler)
        except BaseException:
            sweep_claim.release()  # a sweep that never started leaves no directory
            raise
        seed = self._worker_seed(study, seed, sampler_name)
        study.sampler = make_sampler(
            sampler_name, self.sampler_cfg.get("kwargs"), seed, space.distributions
        )
        sweep_seed = int(OmegaConf.select(base_cfg, "seed", default=0) or 0)
        tuning_seeds = replicate_seeds(sweep_seed, self.seeds, "tune")
        replicates = _supports_replicates(base_cfg)
        if not replicates:
            if self.seeds > 1:
                raise SweepError(
                    "hydra.sweeper.seeds: this app's config has no trial.seeds "
                    "(sweeper.config.TrialConfig): it cannot train replicates"
                )
            tuning_seeds = []
        if self.population > 1 and not _supports_population(base_cfg):
            raise SweepError(
                "hydra.sweeper.population: this app is not sweeper.train: its trials cannot "
                "train as one population"
            )
        study.set_user_attr(PRUNER_ATTR, pspec)
        study.set_user_attr(SEEDS_ATTR, {"sweep_seed": sweep_seed, "tune": tuning_seeds})
        study.set_user_attr(study_attrs.SEARCH_SPACE, space.describe())
        study.set_user_attr(study_attrs.FIXED_OVERRIDES, list(space.fixed))
        choices = OmegaConf.select(self.config, "hydra.runtime.choices") or {}
        study.set_user_attr(SWEEP_ATTR, choices.get("sweep") if hasattr(choices, "get") else None)
        study.set_user_attr(
            SAMPLER_ATTR, {"name": sampler_name, "seed": self.sampler_cfg.get("seed")}
        )
        sweep_dir = sweep_claim.path
        if Path(sweep_dir).resolve() != Path(str(self.config.hydra.sweep.dir)).resolve():
            log.info(
                "hydra.sweep.dir %s is another study's: using %s",
                self.config.hydra.sweep.dir,
                sweep_dir,
            )
        with read_write(self.config.hydra), open_dict(self.config.hydra):
            self.config.hydra.sweep.dir = str(sweep_dir)  # the launcher's multirun.yaml
        return _Plan(
            space=space,
            study=study,
            storage=storage,
            storage_spec=storage_spec,
            n_trials=n_trials,
            sweep_dir=sweep_dir,
            base_cfg=base_cfg,
            sampler_name=sampler_name,
            pruner=pspec,
            study_id=storage.get_study_id_from_name(study.study_name),
            hooks=hooks,
            seed=seed,
            sweep_seed=sweep_seed,
            tuning_seeds=tuning_seeds,
        )

    def _check_replicates(self) -> None:
        from sweeper.statistics import AGGREGATES

        for key, value, low in (
            ("hydra.sweeper.seeds", self.seeds, 1),
            ("hydra.sweeper.retest.top_k", self.retest_cfg.get("top_k"), 1),
            ("hydra.sweeper.retest.seeds", self.retest_cfg.get("seeds"), 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SweepError(f"{key}: must be an int >= {low}, got {value!r}")
        if self.aggregate not in AGGREGATES:
            raise SweepError(
                f"hydra.sweeper.aggregate: must be one of {', '.join(AGGREGATES)}, "
                f"got {self.aggregate!r}"
            )

    def _open_study(self, study_name: str, storage: Any, sampler: Any) -> optuna.Study:
        try:
            study = optuna.create_study(
                study_name=study_name,
                storage=storage,
                sampler=sampler,
                direction=self.direction,
                load_if_exists=True,
            )
        except Exception as err:
            raise SweepError(f"hydra.sweeper.storage: {root_cause(err)}") from None
        if study.direction.name.lower() != self.direction:
            raise SweepError(
                f"hydra.sweeper.direction: study {study_name!r} exists with direction "
                f"{study.direction.name.lower()}, not {self.direction}"
            )
        return study

    def _isolated(self) -> bool:
        return type(self.launcher).__name__ == "IsolatedLauncher"

    def _basic(self) -> bool:
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        return isinstance(self.launcher, BasicLauncher)

    def _launcher_name(self) -> str:
        choices = OmegaConf.select(self.config, "hydra.runtime.choices") or {}
        name = choices.get("hydra/launcher") if hasattr(choices, "get") else None
        return str(name or type(self.launcher).__name__)

    # -- running -------------------------------------------------------------------------------
    def _slots(self) -> int:
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        if self.n_jobs > 1 and isinstance(self.launcher, BasicLauncher):
            log.warning(
                "hydra.sweeper.n_jobs=%d with the basic launcher: it runs jobs in this process "
                "and changes process-global state, so trials (or populations) run one at a "
                "time; use hydra/launcher=isolated for parallel slots",
                self.n_jobs,
            )
            return 1
        if self.n_jobs > 1 and type(self.launcher).__name__ == "JoblibLauncher":
            log.warning(
                "hydra/launcher=joblib: if one of loky's worker processes dies, loky fails every "
                "trial in flight; hydra/launcher=isolated fails only the trial that died"
            )
        launcher_jobs = OmegaConf.select(self.config, "hydra.launcher.n_jobs")
        if self.population > 1:  # packed slots own their workers, not the launcher's
            return self.n_jobs
        if isinstance(launcher_jobs, int) and 0 < launcher_jobs < self.n_jobs:
            log.warning(
                "hydra.launcher.n_jobs=%d < hydra.sweeper.n_jobs=%d: slots will wait for workers",
                launcher_jobs,
                self.n_jobs,
            )
        return self.n_jobs

    def _run(self, plan: _Plan) -> dict[str, Any]:
        study = plan.study
        info = StudyInfo(
            study_name=study.study_name,
            storage=redact(plan.storage_spec),
            direction=self.direction,
            n_trials=plan.n_trials,
            search_space=plan.space.describe(),
            fixed_overrides=list(plan.space.fixed),
            sweep_dir=str(plan.sweep_dir),
            task_config=plan.base_cfg,
        )
        hooks = plan.hooks
        plan.info = info
        parent_run_id = None
        for hook in hooks:
            try:
                rid = hook.on_study_start(info)
            except Exception as err:
                raise SystemExit(
                    f"sweeper: study hook {type(hook).__name__}: {root_cause(err)}"
                ) from None
            parent_run_id = parent_run_id or rid
        plan.trial_overrides = [
            f"trial.study_name={format_value(study.study_name)}",
            f"trial.storage={format_value(plan.storage_spec)}",
            f"hydra.sweep.dir={format_value(str(plan.sweep_dir))}",
        ]
        if parent_run_id:
            plan.trial_overrides.append(f"trial.parent_run_id={format_value(parent_run_id)}")
        plan.parent_run_id = parent_run_id
        if plan.tuning_seeds:
            plan.trial_overrides += [
                f"trial.seeds=[{','.join(str(s) for s in plan.tuning_seeds)}]",
                f"trial.aggregate={self.aggregate}",
                "trial.phase=tune",
            ]

        done_before = n_counted(tally(study.get_trials(deepcopy=False)))
        slots = self._slots()
        # one launch per trial: the launchers' per-launch banners would bury the progress lines
        for name in _LAUNCHER_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        log.info(
            "%s %s (%s, %s sampler, seed %s, %s pruner): %d/%d trials done, %d slot(s); "
            "search space %s",
            "resuming study" if done_before else "study",
            study.study_name,
            redact(plan.storage_spec),
            plan.sampler_name,
            plan.seed,
            plan.pruner["name"],
            done_before,
            plan.n_trials,
            slots,
            plan.space.describe(),
        )
        if done_before:
            log.info(
                "(the same command resumes its study; a fresh one: another "
                "hydra.sweeper.study_name=NAME or hydra.sweeper.sampler.seed, or remove the study "
                "from %s)",
                redact(plan.storage_spec),
            )
        progress = SweepProgress(plan.n_trials, self.direction, self.progress_enabled)
        progress.start(study)
        beat = threading.Thread(target=self._heartbeat, args=(plan,), daemon=True)
        beat.start()
        errors: list[BaseException] = []

        def slot() -> None:
            try:
                self._slot(plan, progress)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
                self._stop.set()

        def packed() -> None:
            from sweeper.sweeps.packed_workers import run_packed
            from sweeper.sweeps.packing import TuningFeed

            # J slots: at most an equal share of the trials left each, so that no population
            # takes them all while another slot idles
            share = -(-max(1, plan.n_trials - done_before) // slots)
            capacity = self.population if slots == 1 else min(self.population, share)
            width = max(1, len(plan.tuning_seeds))  # members per trial
            try:
                run_packed(TuningFeed(self, plan, progress), capacity, width, slots, self._stop)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
                self._stop.set()

        try:
            if self.population > 1:
                packed()
            elif slots == 1:
                slot()
            else:
                threads = [
                    threading.Thread(target=slot, name=f"sweeper-slot-{i}", daemon=True)
                    for i in range(slots)
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    while t.is_alive():
                        t.join(0.5)
        except KeyboardInterrupt:
            self._stop.set()
            progress.stop()
            self._fail_owned(plan, "interrupted (KeyboardInterrupt)")
            self._run_due_hooks(plan)
            raise
        except BaseException:
            self._close_launcher()
            raise
        self._stop.set()
        progress.stop()
        if errors:
            self._close_launcher()
            self._abort(plan, errors[0])
        self._run_due_hooks(plan)
        prefetch = None
        if self._retest_due(plan):  # its runs train elsewhere: this process is free meanwhile
            prefetch = results_mod.prefetch(self, plan)
        try:
            self._retest(plan)
        except Exception as err:
            self._abort(plan, err)
        finally:
            self._close_launcher()
        if prefetch is not None:
            prefetch.join()
        try:
            summary = results_mod.finish(self, plan, hooks, info)
        except Exception as err:
            self._abort(plan, err)
        stop_reason = summary.get("stopped")
        if stop_reason:
            raise SystemExit(f"sweeper: {stop_reason}")
        if summary.get("best") is None:
            raise SystemExit(f"sweeper: {summary['message']}")
        return summary

    def _close_launcher(self) -> None:
        close = getattr(self.launcher, "close", None)
        if callable(close):
            close()  # the isolated launcher's worker processes

    def _retest(self, plan: _Plan) -> None:
        """Re-train the best ``retest.top_k`` configs on ``retest.seeds`` test seeds, disjoint
        from the tuning seeds (``sweeper.sweeps.retest``); one job per (config, seed) on the
        launcher, so every slot stays busy; with ``population`` > 1 the jobs train packed,
        spread evenly over the slots' populations (one population per slot)."""
        from sweeper.sweeps import retest

        cfg = self.retest_cfg
        if not self._retest_due(plan):
            return
        trials = retest.top_trials(plan.study, int(cfg["top_k"]))
        if not trials:
            return
        seeds = replicate_seeds(plan.sweep_seed, int(cfg["seeds"]), "test")
        extra = [o for o in plan.trial_overrides if o.startswith("trial.study_name=")]
        if plan.parent_run_id:
            extra.append(f"trial.parent_run_id={format_value(plan.parent_run_id)}")
        extra.append(f"hydra.sweep.dir={format_value(str(plan.sweep_dir))}")
        jobs, where = [], []
        for t in trials:
            for s in seeds:
                subdir = retest.run_dir(Path(), t.number, s)
                jobs.append(
                    retest.job_overrides(
                        t.user_attrs.get(OVERRIDES, []),
                        t.number,
                        s,
                        [*extra, f"hydra.sweep.subdir={subdir}"],
                    )
                )
                where.append((t.number, plan.sweep_dir / subdir))
        log.info(
            "re-testing the best %d config(s) on %d test seeds (%d runs)",
            len(trials),
            len(seeds),
            len(jobs),
        )
        first = 1 + max(t.number for t in plan.study.get_trials(deepcopy=False))
        if self.population > 1:  # packed too: the runs of one population share its shapes
            from sweeper.sweeps.packed_workers import run_tests

            capacity = self.population * max(1, len(plan.tuning_seeds))  # same member count
            cost = {t.number: retest.run_cost(t.user_attrs.get(OUTPUT_DIR)) for t in trials}
            done = run_tests(
                self,
                [(first + i, j) for i, j in enumerate(jobs)],
                capacity,
                self._slots(),
                [cost[number] for number, _ in where],
            )
            failed = Outcome(TrialState.FAIL, error="not run")
            outcomes = [done.get(first + i, failed) for i in range(len(jobs))]
        else:
            rets = self.launcher.launch(jobs, initial_job_idx=first)
            outcomes = [outcome_of(ret) for ret in rets]
        values: dict[int, list[float | None]] = {}
        for (number, out_dir), outcome in zip(where, outcomes, strict=True):
            if outcome.state != TrialState.COMPLETE:
                log.warning("test run %s of trial %d: %s", out_dir.name, number, outcome.error)
            values.setdefault(number, []).append(
                retest.read_objective(out_dir) if outcome.state == TrialState.COMPLETE else None
            )
        retest.summarize(plan.study, trials, seeds, values, self.aggregate)

    def _identity(self, sampler_name: str, seed: Any, pruner: Any) -> dict[str, Any]:
        """The settings that change which trials a study asks, or what their values mean: a
        study started with other ones is another study (its default name differs)."""
        return {
            "direction": self.direction,
            "sampler": {
                "name": sampler_name,
                "seed": seed,
                "kwargs": self.sampler_cfg.get("kwargs") or {},
            },
            "pruner": pruner,
            "seeds": self.seeds,
            "aggregate": self.aggregate,
        }

    def _retest_due(self, plan: _Plan) -> bool:
        # (no tuning seeds: an app without replicates, see _supports_replicates)
        return bool(
            self.retest_cfg.get("enabled") and not self._stop_reason() and plan.tuning_seeds
        )

    def _stop_reason(self) -> bool:
        return self.max_failures is not None and self._failures >= self.max_failures

    def _abort(self, plan: _Plan, err: BaseException) -> None:
        """End a sweep whose storage (or a hook) failed mid-way: one line naming the cause.

        What finished is kept: every finished trial was told before the failure, and the
        trials still RUNNING in the storage are failed as stale by the next run. The hooks are
        told (``results["error"]``) so that e.g. the MLflow parent run does not stay RUNNING.
        """
        if not isinstance(err, Exception):
            raise err
        cause = root_cause(err)
        for hook in plan.hooks:
            try:
                hook.on_study_end(plan.info, {"study": None, "error": cause})
            except Exception as hook_err:  # noqa: BLE001 - the storage's error matters more
                log.debug("study hook %s failed: %s", type(hook).__name__, hook_err)
        raise SystemExit(
            f"sweeper: the sweep stopped: storage {redact(plan.storage_spec)} failed: {cause}; "
            "finished trials are kept (re-run the same command to resume)"
        ) from None

    def _run_due_hooks(self, plan: _Plan) -> None:
        """``on_trial_end`` for the trials failed as stale/surplus/interrupted meanwhile."""
        with self._lock:
            due, self._hooks_due = self._hooks_due, []
        for number in due:
            self._trial_ended(plan, number)

    def _trial_ended(self, plan: _Plan, number: int) -> None:
        """Tell the hooks how a trial ended (e.g. MLflow closes a run its process left open)."""
        hooks = [h for h in plan.hooks if callable(getattr(h, "on_trial_end", None))]
        if not hooks or plan.info is None:
            return
        try:
            trial = plan.storage.get_trial(
                plan.storage.get_trial_id_from_study_id_trial_number(plan.study_id, number)
            )
        except Exception as err:  # noqa: BLE001 - the storage error surfaces in the slot
            log.debug("trial %d not readable for hooks: %s", number, err)
            return
        for hook in hooks:
            try:
                hook.on_trial_end(plan.info, trial)
            except Exception as err:  # noqa: BLE001 - a hook never fails a trial
                log.warning("study hook %s on trial %d: %s", type(hook).__name__, number, err)

    def _next_trial(self, plan: _Plan) -> tuple[optuna.trial.Trial, list[str], list[str]] | None:
        """Ask and claim the next trial: ``(trial, job overrides, sampled overrides)``, or
        None when the study has its trials (or this run stops)."""
        study = plan.study
        with self._lock:
            if self._stop.is_set():
                return None
            self._fail_stale(plan)
            if n_counted(tally(study.get_trials(deepcopy=False))) >= plan.n_trials:
                return None
            trial = study.ask(fixed_distributions=plan.space.distributions)
            self._running[trial.number] = trial
        self._run_due_hooks(plan)
        try:
            overrides, shown = self._claim(plan, trial)
        except _Surplus:
            self._run_due_hooks(plan)
            return None
        except Exception:  # the storage failed right after ask: no trial stays RUNNING
            with contextlib.suppress(Exception):
                self._finish_uncounted(
                    plan, trial.number, "interrupted: storage error", dict(trial.params)
                )
            raise
        return trial, overrides, shown

    def _slot(self, plan: _Plan, progress: SweepProgress) -> None:
        study = plan.study
        while not self._stop.is_set():
            asked = self._next_trial(plan)
            if asked is None:
                return
            trial, overrides, shown = asked
            progress.trial_started(trial.number, " ".join(shown))
            try:
                ret: JobReturn | BaseException = self.launcher.launch(
                    [overrides], initial_job_idx=trial.number
                )[0]
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - a broken job must not end the sweep
                ret = exc
            outcome = outcome_of(ret)
            self._tell(plan, trial, outcome)
            progress.trial_finished(study, trial.number, outcome)

    def _claim(self, plan: _Plan, trial: optuna.trial.Trial) -> tuple[list[str], list[str]]:
        """Mark the new trial as ours and check it is not one too many (another worker may
        have asked at the same moment); returns the job's overrides and the sampled ones."""
        trial.set_user_attr(OWNER, _owner())
        trial.set_user_attr(HEARTBEAT, time.time())
        sampled = param_overrides(plan.space.distributions, trial.params)
        overrides = list(plan.space.fixed) + sampled
        trial.set_user_attr(OVERRIDES, overrides)
        counted = [t.number for t in plan.study.get_trials(deepcopy=False) if counts(t)]
        if trial.number in counted and sorted(counted).index(trial.number) >= plan.n_trials:
            self._finish_uncounted(plan, trial.number, "surplus", dict(trial.params))
            raise _Surplus
        job = overrides + list(plan.trial_overrides) + [f"trial.number={trial.number}"]
        return job, sampled

    def _tell(self, plan: _Plan, trial: optuna.trial.Trial, outcome: Outcome) -> None:
        for key, value in outcome.attrs.items():
            _safe(trial.set_user_attr, key, value)
        if outcome.error:
            _safe(trial.set_user_attr, ERROR, outcome.error)
        try:
            if outcome.state == TrialState.COMPLETE:
                plan.study.tell(trial, outcome.value, skip_if_finished=True)
            else:
                plan.study.tell(trial, state=outcome.state, skip_if_finished=True)
        finally:
            with self._lock:
                self._running.pop(trial.number, None)
        self._trial_ended(plan, trial.number)
        if outcome.state == TrialState.FAIL:
            log.warning("trial %d failed: %s", trial.number, outcome.error)
            with self._lock:
                self._failures += 1
                self._last_error = outcome.error
                if self.max_failures is not None and self._failures >= self.max_failures:
                    self._stop.set()

    def _finish_uncounted(
        self, plan: _Plan, number: int, reason: str, params: dict[str, Any] | None = None
    ) -> None:
        """Fail a stale, surplus or interrupted trial so that it does not count. Its point was
        never evaluated: for the grid sampler (which takes every finished trial's point as
        visited) the params are queued again, so the grid loses no point."""
        trial_id = plan.storage.get_trial_id_from_study_id_trial_number(plan.study_id, number)
        _safe(plan.storage.set_trial_user_attr, trial_id, UNCOUNTED, reason)
        _safe(plan.storage.set_trial_user_attr, trial_id, ERROR, reason)
        failed = False
        try:
            if plan.storage.get_trial(trial_id).state == TrialState.RUNNING:
                plan.study.tell(number, state=TrialState.FAIL)  # raises if finished meanwhile
                failed = True
        except Exception as err:  # finished meanwhile by its owner or another worker
            log.debug("could not fail trial %d: %s", number, err)
        with self._lock:
            self._running.pop(number, None)
            if failed:  # the hooks run outside the lock (they may call a slow server)
                self._hooks_due.append(number)
        if failed and params and plan.sampler_name == "grid":
            self._requeue(plan, number, params)

    def _requeue(self, plan: _Plan, number: int, params: dict[str, Any]) -> None:
        """Queue ``params`` again unless a counted trial has them or they are queued already."""
        for t in plan.study.get_trials(deepcopy=False):
            if t.state == TrialState.WAITING and t.user_attrs.get(REQUEUED) == number:
                return
            if t.number != number and counts(t) and t.params == params:
                return
        plan.study.enqueue_trial(params, user_attrs={REQUEUED: number})
        log.info("trial %d's params queued again: %s", number, params)

    def _fail_stale(self, plan: _Plan) -> None:
        now = time.time()
        for t in plan.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number in self._running:
                continue
            owner = t.user_attrs.get(OWNER)
            alive = _owner_alive(owner) if owner else None
            beat = t.user_attrs.get(HEARTBEAT)
            if beat is None and t.datetime_start is not None:
                beat = t.datetime_start.timestamp()
            reason = None
            if alive is False:
                reason = f"stale: its sweeper process {owner.get('pid')} is gone"
            elif alive is None and beat is not None and now - float(beat) > self.grace_period:
                # the heartbeat only decides when liveness cannot be checked (another host)
                reason = f"stale: no heartbeat for {now - float(beat):.0f}s"
            if reason:
                log.warning("trial %d was left RUNNING (%s): marked FAIL", t.number, reason)
                self._finish_uncounted(plan, t.number, reason, dict(t.params))

    def _fail_owned(self, plan: _Plan, reason: str) -> None:
        for number, trial in list(self._running.items()):
            self._finish_uncounted(plan, number, reason, dict(trial.params))

    def _heartbeat(self, plan: _Plan) -> None:
        while not self._stop.wait(self.heartbeat_interval):
            with self._lock:
                owned = list(self._running.values())
            for trial in owned:
                _safe(trial.set_user_attr, HEARTBEAT, time.time())


_LAUNCHER_LOGGERS = (
    "hydra._internal.core_plugins.basic_launcher",
    "hydra_plugins.hydra_joblib_launcher._core",
    "sweeper.sweeps.launcher",
)


class _Surplus(Exception):
    pass


@dataclass
class _Plan:
    space: SearchSpace
    study: optuna.Study
    storage: Any
    storage_spec: str
    n_trials: int
    sweep_dir: Path
    base_cfg: DictConfig
    sampler_name: str
    pruner: dict[str, Any]
    study_id: int = -1
    hooks: list[StudyHook] = field(default_factory=list)
    seed: int | None = None
    trial_overrides: list[str] = field(default_factory=list)
    info: StudyInfo | None = None
    sweep_seed: int = 0
    tuning_seeds: list[int] = field(default_factory=list)
    parent_run_id: str | None = None


def root_cause(err: BaseException, limit: int = 400) -> str:
    """``Type: message`` of the innermost exception of ``err``'s chain, on one line: Optuna's
    RDB storage wraps a lost connection ("the database system is shutting down") in a
    StorageInternalError whose own text blames "invalid data in the commit"."""
    seen = {id(err)}
    inner = err
    while True:
        nxt = inner.__cause__ or inner.__context__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        if str(nxt).strip() not in ("", "()"):  # e.g. SQLAlchemy's InvalidatePoolError: no text
            inner = nxt
        else:
            inner = _deeper(nxt, seen) or inner
            break
    return mask_text(f"{type(inner).__name__}: {one_line(inner, limit)}")


def _deeper(err: BaseException, seen: set[int]) -> BaseException | None:
    """The innermost exception below ``err`` in its chain that says something, if any."""
    found = None
    while True:
        nxt = err.__cause__ or err.__context__
        if nxt is None or id(nxt) in seen:
            return found
        seen.add(id(nxt))
        if str(nxt).strip() not in ("", "()"):
            found = nxt
        err = nxt


def derive_seed(seed: int, *parts: Any) -> int:
    """A seed for a resumed or parallel process: deterministic in ``seed`` and ``parts``
    (existing trial count, host, pid, process start), different from ``seed`` itself."""
    payload = json.dumps([seed, *parts], default=str).encode()
    derived = int.from_bytes(hashlib.sha256(payload).digest()[:4], "big")
    return derived if derived != seed else derived ^ 1


def default_study_name(
    config: DictConfig,
    space: SearchSpace,
    task_cfg: DictConfig,
    settings: Mapping[str, Any] | None = None,
) -> str:
    """``<sweep or agent-env>-<sampler>-<hash>``: the hash covers the search space, the fixed
    overrides, the composed task config and ``settings`` (the sweeper settings that change
    which trials are asked or what their values are: :meth:`OptunaSweeperImpl._identity`), so
    re-running the same command resumes the same study and changing the sampler's seed, the
    pruner or the number of seeds starts another. Tracking settings are left out: turning
    MLflow on or off (or pointing it elsewhere) resumes the study too."""
    task = OmegaConf.to_container(task_cfg, resolve=False)
    if isinstance(task, dict):
        task.pop("trial", None)
        task.pop("tracking", None)
    fixed = sorted(f for f in space.fixed if override_key(f).split(".", 1)[0] != "tracking")
    identity = {"space": space.describe(), "fixed": fixed, "task": task}
    if settings:
        identity["sweeper"] = dict(settings)
    payload = json.dumps(identity, sort_keys=True, default=str)
    digest = hashlib.sha1(payload.encode()).hexdigest()[:10]
    choices = OmegaConf.select(config, "hydra.runtime.choices") or {}
    prefix = choices.get("sweep") if hasattr(choices, "get") else None
    if not prefix:
        agent = OmegaConf.select(task_cfg, "agent.name", default="task")
        env = OmegaConf.select(task_cfg, "env.name", default="")
        prefix = f"{agent}-{env}".strip("-")
    sampler = (settings or {}).get("sampler", {}).get("name")
    return "-".join(str(p) for p in (prefix, sampler, digest) if p)


def _extremes(dist) -> list[Any]:
    """Values that bracket a distribution (the config is validated at each of them)."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, optuna.distributions.FloatDistribution) and dist.step is not None:
        values = grid_choices("", dist)
        return [values[0], values[-1]]
    return [dist.low, dist.high]


def _shown(value: Any, dist) -> str:
    if isinstance(dist, optuna.distributions.CategoricalDistribution) and isinstance(value, str):
        return value
    return format_value(value)


def _plain(node: Any) -> Any:
    if node is None:
        return None
    if isinstance(node, DictConfig) or OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _safe(fn, *args) -> None:
    try:
        fn(*args)
    except Exception as err:  # the trial was finished meanwhile, or a transient storage error
        log.debug("%s%s failed: %s", getattr(fn, "__name__", fn), args[:2], err)


__all__ = [
    "OptunaSweeperImpl",
    "GuardedTask",
    "TrialExit",
    "outcome_of",
    "default_study_name",
    "counts",
    "tally",
    "derive_seed",
]
