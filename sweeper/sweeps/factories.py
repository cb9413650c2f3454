"""Samplers from plain config (``name`` + keywords), built in code.

Plain names instead of ``_target_`` nodes: Hydra 1.3 instantiates nested ``_target_`` nodes of a
plugin's config before the plugin sees them, and samplers and pruners (``sweeper.pruning``) are
named the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import BaseDistribution

from sweeper.messages import one_line
from sweeper.sweeps.search_space import SearchSpaceError, grid_choices

SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc", "gp")


class FactoryError(ValueError):
    """Unknown sampler or bad keywords; one line."""


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
