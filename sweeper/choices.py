"""The fixed choices of the config, each stated once, as Enums.

The structured config (``sweeper.config``) types its fields with them, so Hydra refuses a value
outside a choice while it composes (as Hydra's own Optuna plugin does with ``Direction`` and
``Sampler``), and the engine (agents, schedules, the training loop, statistics) reads the same
names instead of spelling the strings again. They are ``StrEnum``s whose names are their values:
``TargetUpdate.hard == "hard"``, ``str(TargetUpdate.hard) == "hard"``, and a config saved as
YAML, hashed, or logged to MLflow reads exactly as it did with plain strings.

No imports from the project: every layer may use this module.
"""

from __future__ import annotations

from enum import StrEnum


class EpsilonSchedule(StrEnum):
    """``agent.epsilon_schedule``: per episode (the seed notebook) or linear per env step."""

    exponential = "exponential"
    linear = "linear"


class TargetUpdate(StrEnum):
    """``agent.target_update``: copy every ``target_update_freq`` steps, Polyak with ``tau``,
    or no target network (bootstrap from the online net: the ablation). The order is the
    engine's ``target_mode`` index."""

    hard = "hard"
    soft = "soft"
    none = "none"


class Loss(StrEnum):
    """``agent.loss``: the TD error's loss."""

    mse = "mse"
    huber = "huber"


class Objective(StrEnum):
    """``eval.objective``: which greedy evaluations make a run's objective."""

    final_eval_mean = "final_eval_mean"
    best_eval_mean = "best_eval_mean"
    mean_eval = "mean_eval"


class Aggregate(StrEnum):
    """``trial.aggregate`` / ``hydra.sweeper.aggregate``: a config's objective over its seeds."""

    iqm = "iqm"
    mean = "mean"
    median = "median"
    min = "min"


class Phase(StrEnum):
    """``trial.phase``: what a sweep's run is for (an MLflow tag)."""

    tune = "tune"
    test = "test"


def names(choice: type[StrEnum]) -> str:
    """``a, b or c``: the choices for a message."""
    values = [m.value for m in choice]
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " or " + values[-1]
