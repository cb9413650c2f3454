"""Aggregates over replicates (seeds) and their bootstrap confidence intervals, from scipy.

Why not the mean of a few runs: RL returns over seeds are skewed and heavy-tailed, and one
lucky or collapsed seed moves a mean of three far (Agarwal et al., "Deep RL at the Edge of the
Statistical Precipice", NeurIPS 2021). The default aggregate is their IQM, the interquartile
mean (``scipy.stats.trim_mean`` cutting 25% at each end): robust like the median, yet using
the middle half of the runs rather than one or two. Every aggregate comes with ``n`` and a
bootstrap confidence interval (``scipy.stats.bootstrap``), so a reader sees how much it would
move with other seeds. The percentile method, not scipy's default BCa: with the handful of
seeds a sweep affords BCa's jackknife acceleration is unstable (NaN for tied values), while the
percentile interval is defined for any sample of two or more. Resampling is seeded: the same
values give the same interval, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from sweeper.choices import Aggregate

AGGREGATES = tuple(Aggregate)
LABELS = {"iqm": "IQM", "mean": "mean", "median": "median", "min": "min"}
CONFIDENCE = 0.95
N_RESAMPLES = 5000


def statistic(how: str) -> Callable[..., np.ndarray]:
    """The ``how`` aggregate as a vectorized ``f(x, axis)`` (what ``scipy.stats.bootstrap``
    resamples)."""
    if how == "iqm":
        return lambda x, axis=-1: stats.trim_mean(x, 0.25, axis=axis)
    if how == "mean":
        return lambda x, axis=-1: np.mean(x, axis=axis)
    if how == "median":
        return lambda x, axis=-1: np.median(x, axis=axis)
    if how == "min":
        return lambda x, axis=-1: np.min(x, axis=axis)
    raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {how!r}")


def aggregate(values: Sequence[float], how: str = "iqm") -> float:
    """The ``how`` aggregate of the finite ``values`` (NaN when there is none)."""
    x = finite(values)
    return float(statistic(how)(x)) if x.size else math.nan


@dataclass(frozen=True)
class Estimate:
    """An aggregate over ``n`` replicates with its confidence interval (``low``/``high`` are
    None when n < 2: one run says nothing about the spread)."""

    value: float
    low: float | None
    high: float | None
    n: int
    how: str = "iqm"
    confidence: float = CONFIDENCE

    def __str__(self) -> str:
        label = LABELS.get(self.how, self.how)
        if self.low is None or self.high is None:
            return f"{label} {self.value:.4g} (n={self.n}, no CI)"
        pct = f"{self.confidence:.0%}"
        return f"{label} {self.value:.4g} ({pct} CI {self.low:.4g} to {self.high:.4g}, n={self.n})"

    def as_dict(self, prefix: str = "") -> dict[str, float | int | None]:
        key = LABELS.get(self.how, self.how).lower()
        return {
            f"{prefix}{key}": self.value,
            f"{prefix}ci_low": self.low,
            f"{prefix}ci_high": self.high,
            f"{prefix}n": self.n,
        }


def estimate(
    values: Sequence[float],
    how: str = "iqm",
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """The ``how`` aggregate of the finite ``values`` with a percentile bootstrap CI."""
    x = finite(values)
    stat = statistic(how)
    if x.size == 0:
        return Estimate(math.nan, None, None, 0, how, confidence)
    value = float(stat(x))
    if x.size < 2:
        return Estimate(value, None, None, int(x.size), how, confidence)
    if np.ptp(x) == 0:  # every replicate the same: the resampled statistic cannot move
        return Estimate(value, value, value, int(x.size), how, confidence)
    res = stats.bootstrap(
        (x,),
        stat,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return Estimate(value, float(ci.low), float(ci.high), int(x.size), how, confidence)


def finite(values: Sequence[float]) -> np.ndarray:
    """The finite values as an array (NaN marks a replicate that gave no value)."""
    x = np.asarray([float(v) for v in values], dtype=float)
    return x[np.isfinite(x)]
