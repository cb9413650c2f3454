"""Planning a sweep: everything is checked and composed before any trial runs.

The search space from ``hydra.sweeper.params`` + command-line overrides, sampler and pruner, a
composition of the task config with the fixed overrides and with each parameter's extreme values
(the app's validator, by default ``sweeper.config.validate``), the storage (opened and pinged),
the study (created or resumed; its name from :mod:`sweeper.sweeps.study_name`), the sweep dir
(claimed). Any problem raises a one-line error naming the parameter; a sweep that never started
leaves no directory behind.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from sweeper import study_attrs
from sweeper.analysis import SAMPLER_ATTR, SWEEP_ATTR
from sweeper.messages import one_line
from sweeper.overrides import format_value
from sweeper.pruning import PRUNER_ATTR, pruner_spec
from sweeper.seeding import replicate_seeds
from sweeper.study_storage import canonical, open_storage
from sweeper.sweeps import remote
from sweeper.sweeps import sweep_dir as sweep_dir_mod
from sweeper.sweeps.errors import SweepError, root_cause
from sweeper.sweeps.factories import grid_size, make_sampler
from sweeper.sweeps.hooks import HookError, StudyHook, StudyInfo, load_hooks, resolve
from sweeper.sweeps.search_space import (
    SearchSpace,
    build_search_space,
    grid_choices,
    param_overrides,
    validate_space,
)
from sweeper.sweeps.study_name import default_study_name, identity, worker_seed

if TYPE_CHECKING:
    from sweeper.sweeps._impl import OptunaSweeperImpl

log = logging.getLogger("sweeper.sweeps")

SEEDS_ATTR = study_attrs.REPLICATE_SEEDS  # study: the sweep seed and the tuning seeds
DEFAULT_VALIDATOR = "sweeper.config:validate"


@dataclass
class Plan:
    """What planning found, for the run: the study and its storage, the space, the sweep
    dir, the seeds; the run adds the hooks' ``info``, the parent run and the trial overrides."""

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


def make_plan(sweeper: OptunaSweeperImpl, arguments: Sequence[str]) -> Plan:
    """Check every setting, compose the task config at the fixed overrides and at each
    parameter's extremes, open the storage and the study: nothing runs yet, and any problem
    raises with one line naming the parameter."""
    self = sweeper
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
    _check_replicates(self)
    if isinstance(self.population, bool) or not isinstance(self.population, int):
        raise SweepError(f"hydra.sweeper.population: must be an int >= 1, got {self.population!r}")
    if self.population < 1:
        raise SweepError(f"hydra.sweeper.population: must be >= 1, got {self.population}")
    if (
        self.population > 1
        and self.n_jobs > 1
        and launcher_kind(self.launcher) not in ("isolated", "basic")
        and remote.remote_kind(self.launcher) is None  # a population per task / job
    ):
        # J populations train on J worker processes of this sweeper's own (packed_workers),
        # which keep the isolated launcher's contract (a dead worker fails its trials
        # alone); joblib's loky would fail every trial in flight. The basic launcher runs
        # everything in this process: one population here, with the warning of _slots
        raise SweepError(
            f"hydra.sweeper.population={self.population} with hydra.sweeper.n_jobs="
            f"{self.n_jobs} trains {self.n_jobs} populations on worker processes: needs "
            f"hydra/launcher=isolated (got {launcher_name(self)}), or n_jobs=1"
        )
    validator = load_validator(self.validator_path)
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
    base_cfg = _task_cfg(self, validator, space.fixed, "fixed overrides " + " ".join(space.fixed))
    first = {n: extremes(d)[0] for n, d in space.distributions.items()}
    for name, dist in space.distributions.items():
        for value in extremes(dist):
            sample = {**first, name: value}
            overrides = list(space.fixed) + param_overrides(space.distributions, sample)
            point = " ".join(f"{n}={_shown(v, space.distributions[n])}" for n, v in sample.items())
            _task_cfg(self, validator, overrides, point)
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
    kind = remote.remote_kind(self.launcher)
    if kind is not None:  # before any storage or directory is written
        remote.check(kind, launcher_name(self), storage_spec, hooks)
    study_name = self.study_name or default_study_name(
        self.config,
        space,
        base_cfg,
        identity(
            self.direction,
            sampler_name,
            seed,
            self.sampler_cfg.get("kwargs"),
            pspec,
            self.seeds,
            self.aggregate,
        ),
    )
    try:
        sweep_claim = sweep_dir_mod.claim(Path(str(self.config.hydra.sweep.dir)), study_name)
    except sweep_dir_mod.SweepDirError as err:
        raise SweepError(str(err)) from None
    try:
        storage = open_storage(storage_spec)
        study = _open_study(study_name, storage, sampler, self.direction)
        sweep_claim = sweep_dir_mod.resume(sweep_claim, study)  # a resumed study: its own dir
    except BaseException:
        sweep_claim.release()  # a sweep that never started leaves no directory
        raise
    seed = worker_seed(study, seed, sampler_name)
    study.sampler = make_sampler(
        sampler_name, self.sampler_cfg.get("kwargs"), seed, space.distributions
    )
    sweep_seed = int(OmegaConf.select(base_cfg, "seed", default=0) or 0)
    tuning_seeds = replicate_seeds(sweep_seed, self.seeds, "tune")
    replicates = supports_replicates(base_cfg)
    if not replicates:
        if self.seeds > 1:
            raise SweepError(
                "hydra.sweeper.seeds: this app's config has no trial.seeds "
                "(sweeper.schema.TrialConfig): it cannot train replicates"
            )
        tuning_seeds = []
    if self.population > 1 and not supports_population(base_cfg):
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
    study.set_user_attr(SAMPLER_ATTR, {"name": sampler_name, "seed": self.sampler_cfg.get("seed")})
    sweep_dir = sweep_claim.path
    if (
        not sweep_claim.resumed
        and Path(sweep_dir).resolve() != Path(str(self.config.hydra.sweep.dir)).resolve()
    ):
        log.info(
            "hydra.sweep.dir %s is another study's: using %s",
            self.config.hydra.sweep.dir,
            sweep_dir,
        )
    with read_write(self.config.hydra), open_dict(self.config.hydra):
        self.config.hydra.sweep.dir = str(sweep_dir)  # the launcher's multirun.yaml
    return Plan(
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


def _check_replicates(self: OptunaSweeperImpl) -> None:
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


def _open_study(study_name: str, storage: Any, sampler: Any, direction: str) -> optuna.Study:
    try:
        study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            sampler=sampler,
            direction=direction,
            load_if_exists=True,
        )
    except Exception as err:
        raise SweepError(f"hydra.sweeper.storage: {root_cause(err)}") from None
    if study.direction.name.lower() != direction:
        raise SweepError(
            f"hydra.sweeper.direction: study {study_name!r} exists with direction "
            f"{study.direction.name.lower()}, not {direction}"
        )
    return study


def load_validator(path: str | None) -> Any:
    """The config validator, resolved in planning. The default one belongs to this app
    (``sweeper.config``): another app that uses the plugin without that module just runs
    without a validator; a path the user set must import."""
    if not path:
        return None
    try:
        return resolve(str(path), "hydra.sweeper.validator")
    except HookError:
        if path == DEFAULT_VALIDATOR and importlib.util.find_spec("sweeper.config") is None:
            log.debug("no %s: composed configs are not validated", path)
            return None
        raise


def _task_cfg(
    sweeper: OptunaSweeperImpl, validator: Any, overrides: Sequence[str], what: str
) -> DictConfig:
    from sweeper.config import ConfigError

    try:
        cfg = sweeper.compose(overrides)
    except Exception as err:
        raise SweepError(f"{what}: {one_line(err, 400)}") from None
    with open_dict(cfg):
        del cfg["hydra"]
    if validator is None:
        return cfg
    try:
        validator(cfg)
    except ConfigError as err:
        raise SweepError(f"{what}: {one_line(err, 2000)}") from None
    except Exception as err:  # a missing key in a foreign config
        raise SweepError(f"{what}: {type(err).__name__}: {one_line(err, 400)}") from None
    return cfg


def supports_replicates(task_cfg: DictConfig) -> bool:
    """Whether the app's config takes ``trial.seeds`` (this app's ``TrialConfig``); another
    app run with this sweeper gets its trials as plain jobs, one seed each."""
    trial = OmegaConf.select(task_cfg, "trial")
    return isinstance(trial, DictConfig) and "seeds" in trial and "test_of" in trial


def supports_population(task_cfg: DictConfig) -> bool:
    """Whether the trials are this project's app (``sweeper.train``), whose configs the
    population engine can build; ``hydra.sweeper.population`` needs it."""
    return (
        supports_replicates(task_cfg)
        and OmegaConf.select(task_cfg, "train.probe_max_q") is not None
    )


def launcher_kind(launcher: Any) -> str:
    """``basic`` (jobs in this process), ``isolated`` (this project's worker processes),
    ``joblib``, or the launcher's class name."""
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher

    if isinstance(launcher, BasicLauncher):
        return "basic"
    name = type(launcher).__name__
    return {"IsolatedLauncher": "isolated", "JoblibLauncher": "joblib"}.get(name, name)


def launcher_name(sweeper: OptunaSweeperImpl) -> str:
    """The launcher as the user chose it (``hydra/launcher=...``), for messages."""
    choices = OmegaConf.select(sweeper.config, "hydra.runtime.choices") or {}
    name = choices.get("hydra/launcher") if hasattr(choices, "get") else None
    return str(name or type(sweeper.launcher).__name__)


def extremes(dist) -> list[Any]:
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
