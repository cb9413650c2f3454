"""Samplers and pruners from plain config (``name`` + keywords), built in code.

Plain names instead of ``_target_`` nodes: Hydra 1.3 instantiates nested ``_target_`` nodes of a
plugin's config before the plugin sees them, and the pruner must also be rebuilt inside every
trial process (from the study's user attrs), which needs a JSON-able description.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution

from sweeper.messages import one_line
from sweeper.sweeps.search_space import SearchSpaceError, grid_choices

SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc", "gp")
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "none")


class FactoryError(ValueError):
    """Unknown sampler/pruner or bad keywords; one line."""


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without ``study.stop()`` in ``after_trial``: that call only works
    inside ``Study.optimize``; this sweeper stops by counting trials instead."""

    def after_trial(self, study, trial, state, values) -> None:  # noqa: D401
        return None


def make_sampler(
    name: str,
    kwargs: Mapping[str, Any] | None,
    seed: int | None,
    distributions: Mapping[str, BaseDistribution],
) -> optuna.samplers.BaseSampler:
    kw = dict(kwargs or {})
    name = (name or "tpe").lower()
    try:
        if name == "tpe":
            kw.setdefault("multivariate", True)
            kw.setdefault("constant_liar", True)  # parallel slots do not sample the same point
            return optuna.samplers.TPESampler(seed=seed, **kw)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed, **kw)
        if name == "grid":
            space = {n: grid_choices(n, d) for n, d in distributions.items()}
            return _GridSampler(space, seed=seed, **kw)
        if name == "cmaes":
            try:
                import cmaes  # noqa: F401
            except ImportError:
                raise FactoryError(
                    "hydra.sweeper.sampler.name: cmaes needs the 'cmaes' package "
                    "(pip install cmaes); use tpe, random, grid, qmc or gp"
                ) from None
            return optuna.samplers.CmaEsSampler(seed=seed, **kw)
        if name == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, **kw)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, **kw)
    except (TypeError, ValueError) as err:
        if isinstance(err, (FactoryError, SearchSpaceError)):
            raise
        raise FactoryError(f"hydra.sweeper.sampler: {name}: {one_line(err)}") from None
    raise FactoryError(
        f"hydra.sweeper.sampler.name: unknown sampler {name!r} (one of {', '.join(SAMPLERS)})"
    )


def grid_size(distributions: Mapping[str, BaseDistribution]) -> int:
    n = 1
    for name, dist in distributions.items():
        n *= len(grid_choices(name, dist))
    return n


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
            raise FactoryError(
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
        raise FactoryError(f"hydra.sweeper.pruner: {name}: {one_line(err)}") from None
    raise FactoryError(
        f"hydra.sweeper.pruner.name: unknown pruner {name!r} (one of {', '.join(PRUNERS)})"
    )
