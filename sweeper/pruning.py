"""Pruning: the pruner's description, its construction, and the trial side's training callback
that reports evaluations to the Optuna trial and prunes.

The pruner is named in plain config (``name`` + keywords, as the samplers in
``sweeper.sweeps.factories``) because it is rebuilt inside every trial process from a JSON-able
description stored in the study. This module sits below both the app (``sweeper.train``) and
the sweeper (``sweeper.sweeps``): both use it, neither imports the other for it.

The sweeper injects ``trial.study_name``, ``trial.storage`` and ``trial.number`` overrides into
every job; this works the same in the sweeper's own process (basic launcher) and in worker
processes (joblib), since the trial is rebuilt from the storage with public API
(``optuna.load_study`` + ``optuna.trial.Trial``). The pruner is rebuilt from the description the
sweeper stored in the study's user attrs (``sweeper:pruner``).

Intermediate values are reported with ``step = episode`` (training episodes so far), so pruners
compare trials at equal training progress.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optuna

from sweeper import study_attrs
from sweeper.callbacks import Callback, Metrics
from sweeper.messages import one_line
from sweeper.study_storage import open_storage

PRUNER_ATTR = study_attrs.PRUNER
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "none")
REPORT_KEY = "eval_return_mean"


class PrunerError(ValueError):
    """Unknown pruner or bad keywords; one line."""


# ``warmup_steps`` (no pruning before this step, here: training episode) in each pruner's terms
WARMUP_KEYS = {
    "median": "n_warmup_steps",
    "percentile": "n_warmup_steps",
    "successive_halving": "min_resource",
    "hyperband": "min_resource",
}


def pruner_spec(
    name: str | None, kwargs: Mapping[str, Any] | None, warmup_steps: int | None = None
) -> dict[str, Any]:
    """A JSON-able pruner description (stored in the study so trial processes rebuild it).

    ``warmup_steps`` is understood by every pruner (``n_warmup_steps`` of median/percentile,
    ``min_resource`` of successive halving/hyperband, ignored by none), so a sweep config can set
    a warmup and the user can still switch pruner; an explicit keyword in ``kwargs`` wins.
    """
    name = (name or "none").lower()
    kw = dict(kwargs or {})
    if warmup_steps is not None:
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise PrunerError(
                f"hydra.sweeper.pruner.warmup_steps: must be an integer >= 0, got {warmup_steps!r}"
            )
        key = WARMUP_KEYS.get(name)
        if key == "min_resource":
            kw.setdefault(key, max(1, warmup_steps))
        elif key is not None:
            kw.setdefault(key, warmup_steps)
    spec = {"name": name, "kwargs": kw}
    make_pruner(spec)  # validate now
    return spec


def make_pruner(spec: Mapping[str, Any] | None) -> optuna.pruners.BasePruner:
    spec = spec or {"name": "none"}
    name = spec.get("name", "none")
    kw = dict(spec.get("kwargs") or {})
    try:
        if name == "median":
            return optuna.pruners.MedianPruner(**kw)
        if name == "percentile":
            kw.setdefault("percentile", 25.0)
            return optuna.pruners.PercentilePruner(**kw)
        if name == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(**kw)
        if name == "hyperband":
            return optuna.pruners.HyperbandPruner(**kw)
        if name in ("none", "nop", None):
            return optuna.pruners.NopPruner()
    except (TypeError, ValueError) as err:
        raise PrunerError(f"hydra.sweeper.pruner: {name}: {one_line(err)}") from None
    raise PrunerError(
        f"hydra.sweeper.pruner.name: unknown pruner {name!r} (one of {', '.join(PRUNERS)})"
    )


def load_trial(study_name: str, storage_spec: str, number: int) -> optuna.trial.Trial:
    """The running trial ``number`` of a stored study, with the study's pruner."""
    storage = open_storage(storage_spec)
    pruner_desc = storage.get_study_user_attrs(storage.get_study_id_from_name(study_name)).get(
        PRUNER_ATTR
    )
    study = optuna.load_study(
        study_name=study_name,
        storage=storage,
        sampler=optuna.samplers.RandomSampler(),  # a trial never samples: params come as overrides
        pruner=make_pruner(pruner_desc),
    )
    study_id = storage.get_study_id_from_name(study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    return optuna.trial.Trial(study, trial_id)


class PruningCallback(Callback):
    """Reports ``eval_return_mean`` at each evaluation; raises ``optuna.TrialPruned`` when the
    study's pruner says so (``train.run`` then ends the run with status PRUNED)."""

    def __init__(self, trial: optuna.trial.Trial, key: str = REPORT_KEY) -> None:
        self.trial = trial
        self.key = key

    def on_eval(self, index: int, episode: int, step: int, metrics: Metrics) -> None:
        value = float(metrics[self.key])
        if not math.isfinite(value):
            return
        self.trial.report(value, step=episode)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at episode {episode} ({self.key}={value:.4g})")


def pruning_callback(trial_cfg: Any) -> PruningCallback:
    """The callback for the ``trial`` config node (``sweeper.schema.TrialConfig``)."""
    trial = load_trial(trial_cfg.study_name, trial_cfg.storage, int(trial_cfg.number))
    return PruningCallback(trial)
