"""The structured config: one dataclass per config node, each hyperparameter's type and default
stated here once.

Hydra's ConfigStore registers them (``sweeper.config.register_configs``); a group option's YAML
extends its schema (``defaults: [/schema_dqn_agent@_here_, _self_]``) and states only what
differs from these defaults (its ``_target_``, its name, e.g. ``double: true``). Fixed choices
are Enums (``sweeper.choices``), so Hydra refuses a value outside them while it composes; the
engine takes its per-member defaults from here (``sweeper.agents.dqn.HYPERPARAMETERS``).
Ranges and combinations are checked in one place, ``sweeper.config.validate``.

No Hydra import (``omegaconf.MISSING`` only): the engine may read these defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import MISSING

from sweeper.choices import Aggregate, EpsilonSchedule, Loss, Objective, Phase, TargetUpdate


@dataclass(frozen=True)
class Interval:
    """A range a value must lie in, stated once for every layer that checks it (the config's
    ``validate`` names the key; the engine's constructors raise ValueError)."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        left, right = "(["[not self.low_open], ")]"[not self.high_open]
        return f"{left}{self.low:g}, {self.high:g}{right}"


#: (0, 1]: a discount, a learning rate of the tabular update, a decay factor, a Polyak tau
UNIT = Interval(0.0, 1.0, low_open=True)


@dataclass
class ExplorationFields:
    epsilon_start: float = 1.0
    epsilon_end: float = 0.01
    epsilon_decay: float = 0.995
    epsilon_schedule: EpsilonSchedule = EpsilonSchedule.exponential
    epsilon_decay_steps: int = 10_000


@dataclass
class TabularAgentConfig(ExplorationFields):
    _target_: str = MISSING
    name: str = MISSING
    alpha: float = 0.1
    gamma: float = 0.9


@dataclass
class DQNAgentConfig(ExplorationFields):
    _target_: str = "sweeper.agents.dqn.DQNAgent"
    name: str = "dqn"
    lr: float = 1e-3
    gamma: float = 0.99
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    double: bool = False
    dueling: bool = False
    target_update: TargetUpdate = TargetUpdate.hard
    target_update_freq: int = 100
    tau: float = 0.005
    loss: Loss = Loss.mse
    huber_delta: float = 1.0
    grad_clip: float = 1.0  # 0 disables clipping
    adam_eps: float = 1e-8


@dataclass
class EnvConfig:
    id: str = MISSING
    name: str = MISSING
    max_episode_steps: int | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class BufferConfig:
    _target_: str = MISSING
    name: str = MISSING
    capacity: int = 10_000
    batch_size: int = 64


@dataclass
class PrioritizedBufferConfig(BufferConfig):
    alpha: float = 0.6
    beta_start: float = 0.4
    priority_eps: float = 1e-6


@dataclass
class TrainConfig:
    episodes: int | None = 500
    total_steps: int | None = None
    learning_starts: int = 0
    train_freq: int = 1
    gradient_steps: int = 1
    probe_max_q: bool = True
    progress: bool = True
    save_model: bool = True
    plot: bool = True


@dataclass
class EvalConfig:
    every: int = 50  # episodes between greedy evaluations; 0: only at the end
    episodes: int = 10
    objective: Objective = Objective.final_eval_mean
    stop_return: float | None = None  # stop training once an eval mean reaches it ("solved")


@dataclass
class TrialConfig:
    """Filled in by the Optuna sweeper for each trial; empty for a plain run."""

    study_name: str | None = None
    storage: str | None = None
    number: int | None = None
    parent_run_id: str | None = None
    # Replicates (sweeper.replicates): train the config on each of these seeds, in lockstep,
    # under <run dir>/seed_<s>/; the run's objective is their aggregate (``aggregate``). The
    # Optuna sweeper sets them from hydra.sweeper.seeds; ``seed`` then only names the sweep.
    seeds: list[int] | None = None
    aggregate: Aggregate = Aggregate.iqm
    phase: Phase | None = None  # what the run is for (an MLflow tag)
    test_of: int | None = None  # the tuning trial a test run re-evaluates on unseen seeds


@dataclass
class TrackingConfig:
    """MLflow tracking (``sweeper.tracking``): every run is an MLflow run."""

    enabled: bool = True
    # None: $MLFLOW_TRACKING_URI, else the embedded store sqlite:///<cwd>/outputs/mlflow.db
    # (artifacts in outputs/mlartifacts); or a server, e.g. http://127.0.0.1:5000
    tracking_uri: str | None = None
    # None: the study name for sweeper trials, else <agent>_<env>
    experiment: str | None = None
    # True: a run whose config hash already has a FINISHED run reuses its objective instead of
    # training (logged as a short run tagged reused_from=<run id>, outcome=reused).
    skip_existing: bool = False
    # Per-episode metrics (return, length, epsilon, loss, max_q) go to MLflow every this many
    # episodes (and at the last one); evaluations always. The full series is the run's
    # episodes.csv artifact. Why not every episode: MLflow's store writes each metric row
    # through its ORM, ~0.2 s of CPU per 500-episode run, 7% of the main job (README, Speed).
    episode_metrics_every: int = 10


@dataclass
class Config:
    agent: Any = MISSING
    env: EnvConfig = MISSING
    buffer: BufferConfig = MISSING
    seed: int = 42
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trial: TrialConfig = field(default_factory=TrialConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def defaults(schema: type, exclude: tuple[str, ...] = ("_target_", "name")) -> dict[str, Any]:
    """The scalar defaults of a schema's fields but ``exclude``, for code outside Hydra (the
    engine's per-member hyperparameters)."""
    return {
        f.name: f.default
        for f in fields(schema)
        if f.name not in exclude and f.default not in (MISSING, dataclasses.MISSING)
    }
