"""Structured-config schemas (registered in Hydra's ConfigStore) and value checks.

The schemas make an unknown key, a wrong type or an unknown group option fail while Hydra
composes the config; :func:`validate` checks values and combinations before anything runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig


class ConfigError(ValueError):
    """A bad config value: the message is one line that names the key."""


@dataclass
class ExplorationFields:
    epsilon_start: float = 1.0
    epsilon_end: float = 0.01
    epsilon_decay: float = 0.995
    epsilon_schedule: str = "exponential"  # exponential (per episode) | linear (per step)
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
    target_update: str = "hard"  # hard | soft | none
    target_update_freq: int = 100
    tau: float = 0.005
    loss: str = "mse"  # mse | huber
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
    objective: str = "final_eval_mean"  # final_eval_mean | best_eval_mean | mean_eval
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
    aggregate: str = "iqm"  # iqm | mean | median | min
    phase: str | None = None  # tune | test: what the run is for (an MLflow tag)
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


#: The schemas of the group options, by the name their YAML files extend them with
#: (``defaults: [/schema_dqn_agent@_here_, _self_]``). Stored outside the groups, so that they
#: are not options a user can pick (``agent=schema_dqn_agent`` is an unknown option) and
#: ``--help`` does not list them.
SCHEMAS = {
    "schema_tabular_agent": TabularAgentConfig,
    "schema_dqn_agent": DQNAgentConfig,
    "schema_env": EnvConfig,
    "schema_buffer": BufferConfig,
    "schema_prioritized_buffer": PrioritizedBufferConfig,
}


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for name, node in SCHEMAS.items():
        cs.store(name=name, node=node)


def _check(ok: bool, key: str, requirement: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key} {requirement}, got {value!r}")


def is_tabular(cfg: DictConfig) -> bool:
    return "alpha" in cfg.agent


def validate(cfg: DictConfig) -> None:
    """Value checks the schema cannot express. Raises ConfigError naming the first bad key."""
    a, b, t, e = cfg.agent, cfg.buffer, cfg.train, cfg.eval
    _check(0 < a.gamma <= 1, "agent.gamma", "must be in (0, 1]", a.gamma)
    _check(
        0 <= a.epsilon_end <= a.epsilon_start <= 1,
        "agent.epsilon_start",
        "must satisfy 0 <= agent.epsilon_end <= agent.epsilon_start <= 1",
        a.epsilon_start,
    )
    _check(0 < a.epsilon_decay <= 1, "agent.epsilon_decay", "must be in (0, 1]", a.epsilon_decay)
    _check(
        a.epsilon_schedule in ("exponential", "linear"),
        "agent.epsilon_schedule",
        "must be exponential or linear",
        a.epsilon_schedule,
    )
    _check(
        a.epsilon_decay_steps > 0, "agent.epsilon_decay_steps", "must be > 0", a.epsilon_decay_steps
    )
    if is_tabular(cfg):
        _check(0 < a.alpha <= 1, "agent.alpha", "must be in (0, 1]", a.alpha)
    else:
        _check(a.lr > 0, "agent.lr", "must be > 0", a.lr)
        _check(
            a.target_update in ("hard", "soft", "none"),
            "agent.target_update",
            "must be hard, soft or none",
            a.target_update,
        )
        _check(
            a.target_update_freq >= 1,
            "agent.target_update_freq",
            "must be >= 1",
            a.target_update_freq,
        )
        _check(0 < a.tau <= 1, "agent.tau", "must be in (0, 1]", a.tau)
        _check(a.loss in ("mse", "huber"), "agent.loss", "must be mse or huber", a.loss)
        _check(a.grad_clip >= 0, "agent.grad_clip", "must be >= 0 (0 disables)", a.grad_clip)
        _check(
            len(a.hidden_sizes) > 0 and all(h > 0 for h in a.hidden_sizes),
            "agent.hidden_sizes",
            "must be a non-empty list of positive ints",
            list(a.hidden_sizes),
        )
        _check(b.capacity >= 1, "buffer.capacity", "must be >= 1", b.capacity)
        _check(b.batch_size >= 1, "buffer.batch_size", "must be >= 1", b.batch_size)
        if b.name != "none":
            _check(
                b.capacity >= b.batch_size,
                "buffer.capacity",
                f"must be >= buffer.batch_size ({b.batch_size})",
                b.capacity,
            )
        if "alpha" in b:
            _check(b.alpha >= 0, "buffer.alpha", "must be >= 0", b.alpha)
            _check(0 <= b.beta_start <= 1, "buffer.beta_start", "must be in [0, 1]", b.beta_start)
            _check(b.priority_eps > 0, "buffer.priority_eps", "must be > 0", b.priority_eps)
    _check(
        t.episodes is not None or t.total_steps is not None,
        "train.episodes",
        "or train.total_steps must be set",
        None,
    )
    if t.episodes is not None:
        _check(t.episodes >= 1, "train.episodes", "must be >= 1", t.episodes)
    if t.total_steps is not None:
        _check(t.total_steps >= 1, "train.total_steps", "must be >= 1", t.total_steps)
    _check(t.learning_starts >= 0, "train.learning_starts", "must be >= 0", t.learning_starts)
    _check(t.train_freq >= 1, "train.train_freq", "must be >= 1", t.train_freq)
    _check(t.gradient_steps >= 1, "train.gradient_steps", "must be >= 1", t.gradient_steps)
    _check(e.every >= 0, "eval.every", "must be >= 0", e.every)
    _check(e.episodes >= 1, "eval.episodes", "must be >= 1", e.episodes)
    _check(
        e.objective in ("final_eval_mean", "best_eval_mean", "mean_eval"),
        "eval.objective",
        "must be final_eval_mean, best_eval_mean or mean_eval",
        e.objective,
    )
    _check(cfg.seed >= 0, "seed", "must be >= 0", cfg.seed)
    validate_trial(cfg.trial)
    from sweeper.envs.factory import check_env_id  # registers our env ids first

    try:
        check_env_id(cfg.env.id)
    except ValueError as err:
        raise ConfigError(f"env.id: {err}") from None


def validate_trial(trial: DictConfig) -> None:
    from sweeper.statistics import AGGREGATES

    _check(
        trial.aggregate in AGGREGATES,
        "trial.aggregate",
        f"must be one of {', '.join(AGGREGATES)}",
        trial.aggregate,
    )
    if trial.seeds is not None:
        seeds = list(trial.seeds)
        _check(len(seeds) > 0, "trial.seeds", "must list at least one seed (or be null)", seeds)
        _check(all(s >= 0 for s in seeds), "trial.seeds", "must be seeds >= 0", seeds)
        _check(len(set(seeds)) == len(seeds), "trial.seeds", "must not repeat a seed", seeds)
    _check(
        trial.phase in (None, "tune", "test"),
        "trial.phase",
        "must be tune, test or null",
        trial.phase,
    )


CONF_DIR = Path(__file__).resolve().parent / "conf"


def compose_config(overrides: Sequence[str] = (), mask_secrets: bool = False) -> DictConfig:
    """The app's config composed with ``overrides``, outside a Hydra run (tests, CLI tools).
    ``mask_secrets``: passwords in URLs masked, as the app's MaskSecrets callback does for a
    run (what the CLI's commands compose: nothing downstream sees a password)."""
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name="sweeper_hash"):
        cfg = compose("config", list(overrides))
    if mask_secrets:
        from sweeper.secrets import mask_config

        mask_config(cfg)
    return cfg


#: The config groups a user picks options of (``agent=dqn``, ``+sweep=ablation``).
GROUPS = ("agent", "env", "buffer", "sweep")


def group_options(group: str) -> list[str]:
    """The options of ``group``: its YAML files in ``conf/<group>/``."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_group_choices(args: Sequence[str]) -> None:
    """One-line ConfigError for a command-line override that picks an option a group does not
    have (``agent=base_dqn``, ``env=grid``, ``agent=dqn,sarsaa``), before Hydra composes: its
    own error is a dozen lines of search path. Anything it cannot parse is left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - Hydra reports bad grammar itself
        return
    for override in parsed:
        group = override.key_or_group
        if group not in GROUPS or override.package is not None or override.is_delete():
            continue
        try:
            picked = (
                list(override.sweep_string_iterator())
                if override.is_sweep_override()
                else [override.get_value_element_as_str()]
            )
        except Exception:  # noqa: BLE001 - e.g. an interpolation: Hydra's to resolve
            continue
        options = group_options(group)
        for name in picked:
            if name not in options:
                raise ConfigError(
                    f"{override.input_line}: {group} has no option {name!r} "
                    f"(options: {', '.join(options)})"
                )
