"""How much of a grid's spread each hyperparameter explains, how much the interactions, and how
much the seed alone: the exact variance decomposition of a designed experiment.

Why not fANOVA here: when a study's trials form a full grid (every combination of the swept
values, each trained on the same tuning seeds) it is a balanced factorial experiment with
replicates, and the functional ANOVA of its per-seed values is computed exactly from cell and
marginal means (Hutter, Hoos & Leyton-Brown 2014); a random forest fitted to the aggregated
points adds its own noise to a question the grid answers, and normalizing its importances to
sum to 1 hides what the seed explains. Here the seed is a component like the others.

The estimator (classical ANOVA on ``value ~ A * B * C * ...`` with the seeds as replicates,
the same sums of squares as ``statsmodels``' ``anova_lm``, which the tests check): each term's
sum of squares ``SS``, ``df``, the residual mean square ``MS_E`` (what varies between seeds of
one config) and the bias-corrected share of the variance, omega squared,

    share(term) = (SS_term - df_term * MS_E) / (SS_total + MS_E)
    share(seed) = N * MS_E / (SS_total + MS_E)

which sum to 1 over the terms and the seed. The correction removes the part of a term's spread
that the seed noise in its means would produce with no effect at all (a main effect's raw share,
the variance of its marginal means, is biased up by it), so a hyperparameter with no effect
has a share near 0 (it can be slightly negative) rather than a share of the noise. Each main
effect, "interactions" (all interaction terms together) and "seed" are reported.

Uncertainty: every config was trained on the same tuning seeds, so a resample draws seed
*indices* with replacement and keeps each drawn seed's value in every config (a resampled
seed is a whole replicate of the experiment; resampling cell by cell would break the pairing
that makes two shares comparable): ``scipy.stats.bootstrap`` with ``paired=True`` over the
seed indices. Every statistic (shares, pairwise differences of shares, effects in the metric's
units) is computed on the same resamples, so a difference of two shares is paired.

Two corrections make the interval honest at the 5-10 seeds a sweep affords, both checked by
simulation against known components (tests/test_variance_decomposition.py):

* *Centring.* A resample that repeats a seed has less spread between seeds of one config
  than the data, so almost every resample puts the seed's share below the estimate (at 10
  seeds the plain percentile interval covered the true seed share in about 60% of
  simulated experiments). The omega-squared estimate is already corrected for bias, so the
  resamples are shifted by the bootstrap's own bias (their mean minus the estimate): their
  spread is kept, their offset is not. (BCa's bias correction breaks down here: with almost
  every resample on one side its adjusted percentiles collapse to the edge.)
* *Width.* A percentile interval of ``n`` replicates is too narrow by about the ratio of a
  normal to a Student t quantile; Hesterberg's expanded percentile interval (2015) takes the
  percentiles whose normal quantile is ``sqrt(n / (n - 1)) * t(n - 1)`` (:func:`expanded_alpha`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from sweeper.statistics import CONFIDENCE, N_RESAMPLES

SEED = "seed"
INTERACTIONS = "interactions"
MIN_SEEDS = 3  # fewer seeds per config: no spread to resample


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap CI (``low``/``high`` NaN when not resampled)."""

    value: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_list(self) -> list[float]:
        return [self.value, self.low, self.high]


@dataclass(frozen=True)
class Effect:
    """How far a hyperparameter's marginal mean moves over its values: from the value where
    the mean is lowest (``low_level``, mean ``low_mean``) to where it is highest. The two
    values are picked on the same data, so the size is never below 0 and is biased up where
    the hyperparameter does nothing: whether it matters is its share's CI; this says how much,
    in the metric's units, where it does. Its CI is that of the difference of those two means
    over the same resamples of seeds."""

    low_level: Any
    high_level: Any
    low_mean: float
    high_mean: float
    size: Interval  # high_mean - low_mean, in the metric's units, with its CI


@dataclass
class Decomposition:
    """The variance decomposition of one metric over a full grid (see the module docstring).

    ``shares`` maps each swept hyperparameter, ``"interactions"`` and ``"seed"`` to its share
    of the variance (fractions); ``differences[(a, b)]`` is ``share(a) - share(b)`` on the
    same resamples, for every pair of the hyperparameters and the seed; ``first`` the fraction
    of resamples in which each hyperparameter has the largest share of the hyperparameters;
    ``marginal_means`` the mean of the metric at each value of each hyperparameter, with its
    CI."""

    metric: str
    params: list[str]
    levels: dict[str, list[Any]]
    n_configs: int
    n_seeds: int
    shares: dict[str, Interval]
    differences: dict[tuple[str, str], Interval]
    first: dict[str, float]
    effects: dict[str, Effect]
    marginal_means: dict[str, list[Interval]]
    n_resamples: int
    confidence: float = CONFIDENCE
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def ranked(self) -> list[str]:
        """The hyperparameters and the seed, largest share first."""
        return sorted([*self.params, SEED], key=lambda k: -self.shares[k].value)

    def difference(self, a: str, b: str) -> Interval:
        if (a, b) in self.differences:
            return self.differences[(a, b)]
        d = self.differences[(b, a)]
        return Interval(-d.value, -d.high, -d.low)

    def separated(self, a: str, b: str) -> bool:
        """The data decide between ``a`` and ``b``: the CI of their difference excludes 0."""
        return self.difference(a, b).excludes_zero()

    def tiers(self) -> list[list[str]]:
        """:attr:`ranked` cut into tiers: a cut falls between two places only where every
        component above it is decided above every component below it (the CI of each such
        difference excludes 0), so within a tier the data do not give the order."""
        order = self.ranked
        out: list[list[str]] = [[]]
        for i, name in enumerate(order):
            out[-1].append(name)
            below = order[i + 1 :]
            if below and all(self.separated(a, b) for a in order[: i + 1] for b in below):
                out.append([])
        return [t for t in out if t]

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "estimator": "omega squared (exact ANOVA of the full grid)",
            "n_configs": self.n_configs,
            "n_seeds": self.n_seeds,
            "n_resamples": self.n_resamples,
            "confidence": self.confidence,
            "shares": {k: v.as_list() for k, v in self.shares.items()},
            "differences": {f"{a} - {b}": v.as_list() for (a, b), v in self.differences.items()},
            "first": dict(self.first),
            "tiers": self.tiers(),
            "effects": {
                p: {
                    "from": e.low_level,
                    "to": e.high_level,
                    "from_mean": e.low_mean,
                    "to_mean": e.high_mean,
                    "size": e.size.as_list(),
                }
                for p, e in self.effects.items()
            },
            "marginal_means": {
                p: {str(v): m.as_list() for v, m in zip(self.levels[p], ms)}
                for p, ms in self.marginal_means.items()
            },
        }


# -- sums of squares ------------------------------------------------------------------------------


def terms(k: int) -> list[tuple[int, ...]]:
    """Every ANOVA term of ``k`` factors: main effects first, then interactions by order."""
    return [s for r in range(1, k + 1) for s in itertools.combinations(range(k), r)]


def sums_of_squares(y: np.ndarray) -> tuple[dict[tuple[int, ...], float], float, float]:
    """``({term: SS}, SS_error, SS_total)`` of a balanced full factorial ``y`` of shape
    ``(L_1, ..., L_k, n)`` (the last axis: the replicates)."""
    return _sums_of_squares(np.asarray(y, dtype=float)[None, ...], squeeze=True)


def _sums_of_squares(y: np.ndarray, squeeze: bool = False):
    """``y``: ``(B, L_1, ..., L_k, n)``. Each term's effect is the inclusion-exclusion of the
    marginal means over its factors' subsets; its SS is its squared effect summed over all
    observations (each effect cell repeats ``N / prod(L_term)`` times). Also batched: ``y``
    has a leading axis of resamples, and the sums are arrays over it."""
    k = y.ndim - 2
    n_obs = int(np.prod(y.shape[1:]))
    grand = y.mean(axis=tuple(range(1, y.ndim)), keepdims=True)
    means: dict[tuple[int, ...], np.ndarray] = {(): grand}
    for s in terms(k):
        other = tuple(1 + i for i in range(k) if i not in s) + (y.ndim - 1,)
        means[s] = y.mean(axis=other, keepdims=True)
    ss: dict[tuple[int, ...], Any] = {}
    for s in terms(k):
        effect = sum(
            (-1) ** (len(s) - len(t)) * means[t]
            for r in range(len(s) + 1)
            for t in itertools.combinations(s, r)
        )
        cells = int(np.prod([y.shape[1 + i] for i in s]))
        ss[s] = (effect**2).sum(axis=tuple(range(1, y.ndim))) * (n_obs / cells)
    cell_means = y.mean(axis=-1, keepdims=True)
    ss_error = ((y - cell_means) ** 2).sum(axis=tuple(range(1, y.ndim)))
    ss_total = ((y - grand) ** 2).sum(axis=tuple(range(1, y.ndim)))
    if squeeze:
        ss = {s: float(v[0]) for s, v in ss.items()}
        return ss, float(ss_error[0]), float(ss_total[0])
    return ss, ss_error, ss_total


def omega_squared(y: np.ndarray) -> np.ndarray:
    """Per resample (leading axis of ``y``: ``(B, L_1, ..., L_k, n)``) the bias-corrected shares:
    columns ``[main effect 1, ..., main effect k, interactions, seed]``, summing to 1."""
    k = y.ndim - 2
    levels = y.shape[1:-1]
    n = y.shape[-1]
    n_obs = int(np.prod(levels)) * n
    ss, ss_error, ss_total = _sums_of_squares(y)
    df_error = int(np.prod(levels)) * (n - 1)
    ms_error = ss_error / df_error
    denom = np.where(ss_total + ms_error > 0, ss_total + ms_error, np.nan)
    out = np.empty((y.shape[0], k + 2))
    interactions = np.zeros(y.shape[0])
    for s in terms(k):
        df = int(np.prod([levels[i] - 1 for i in s]))
        share = (ss[s] - df * ms_error) / denom
        if len(s) == 1:
            out[:, s[0]] = share
        else:
            interactions = interactions + share
    out[:, k] = interactions
    out[:, k + 1] = n_obs * ms_error / denom
    return out


# -- the decomposition ----------------------------------------------------------------------------


def decompose(
    y: np.ndarray,
    params: Sequence[str],
    levels: Mapping[str, Sequence[Any]],
    *,
    metric: str = "objective",
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> Decomposition:
    """The decomposition of ``y`` (shape ``(L_1, ..., L_k, n_seeds)``, axis i the values
    ``levels[params[i]]`` in that order, the last axis the seeds, the same seed at the same
    index in every config) with bootstrap CIs over the seeds. Deterministic in ``seed``."""
    y = np.asarray(y, dtype=float)
    k = len(params)
    if y.ndim != k + 1:
        raise ValueError(f"y has {y.ndim} axes, expected {k} hyperparameters + 1 seed axis")
    if not np.all(np.isfinite(y)):
        raise ValueError("y has non-finite values")
    n = y.shape[-1]
    if n < MIN_SEEDS:
        raise ValueError(f"{n} seeds per config, needs at least {MIN_SEEDS}")
    names = [*params, INTERACTIONS, SEED]
    compared = [*params, SEED]
    pairs = list(itertools.combinations(compared, 2))
    col = {name: i for i, name in enumerate(names)}

    def margins(data: np.ndarray) -> list[np.ndarray]:  # (B, L_i) per hyperparameter
        return [
            data.mean(axis=tuple(a for a in range(1, data.ndim) if a != 1 + i)) for i in range(k)
        ]

    point_margins = [m[0] for m in margins(y[None, ...])]
    extremes = [(int(np.argmin(m)), int(np.argmax(m))) for m in point_margins]

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.asarray(idx)
        batch = idx.reshape(-1, idx.shape[-1]) if idx.ndim > 1 else idx[None, :]
        data = np.moveaxis(y[..., batch], -2, 0)  # (B, L_1, ..., L_k, n): whole seeds
        shares = omega_squared(data)
        diffs = np.stack([shares[:, col[a]] - shares[:, col[b]] for a, b in pairs], axis=1)
        means = margins(data)
        ranges = np.stack([m[:, hi] - m[:, lo] for m, (lo, hi) in zip(means, extremes)], axis=1)
        out = np.concatenate([shares, diffs, ranges, *means], axis=1).T  # (outputs, B)
        return out[:, 0] if idx.ndim == 1 else out

    point = statistic(np.arange(n))
    res = stats.bootstrap(
        (np.arange(n),),
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    # Centred on the estimate: the resamples' mean minus the estimate is the bootstrap's own
    # bias (see the module docstring), taken out of every resample.
    dist = np.asarray(res.bootstrap_distribution, dtype=float)
    dist = dist - (dist.mean(axis=1) - point)[:, None]
    alpha = expanded_alpha(1 - confidence, n)
    low, high = np.percentile(dist, [50 * alpha, 100 - 50 * alpha], axis=1)
    # a share is at most the whole variance, a difference of two shares at most that apart
    n_shares = len(names) + len(pairs)
    high[:n_shares] = np.minimum(high[:n_shares], 1.0)
    low[len(names) : n_shares] = np.maximum(low[len(names) : n_shares], -1.0)

    def interval(i: int) -> Interval:
        return Interval(float(point[i]), float(low[i]), float(high[i]))

    shares = {name: interval(i) for i, name in enumerate(names)}
    differences = {pair: interval(len(names) + j) for j, pair in enumerate(pairs)}
    main = dist[:k]  # (k, B)
    winners = np.argmax(main, axis=0)
    first = {p: float(np.mean(winners == i)) for i, p in enumerate(params)}
    offset = len(names) + len(pairs)
    effects = {}
    for i, p in enumerate(params):
        lo, hi = extremes[i]
        effects[p] = Effect(
            low_level=levels[p][lo],
            high_level=levels[p][hi],
            low_mean=float(point_margins[i][lo]),
            high_mean=float(point_margins[i][hi]),
            size=interval(offset + i),
        )
    offset += k
    marginal_means = {}
    for p in params:
        marginal_means[p] = [interval(offset + j) for j in range(len(levels[p]))]
        offset += len(levels[p])
    return Decomposition(
        metric=metric,
        params=list(params),
        levels={p: list(levels[p]) for p in params},
        n_configs=int(np.prod(y.shape[:-1])),
        n_seeds=n,
        shares=shares,
        differences=differences,
        first=first,
        effects=effects,
        marginal_means=marginal_means,
        n_resamples=n_resamples,
        confidence=confidence,
        settings={
            "interval": "bias-centred expanded percentile",
            "resampled": "seed indices (whole seeds, paired)",
            "seed": seed,
        },
    )


def expanded_alpha(alpha: float, n: int) -> float:
    """Hesterberg's expanded percentile interval (2015): the tail probability whose normal
    quantile is Student's t quantile at ``n - 1`` df scaled by ``sqrt(n / (n - 1))``, so the
    bootstrap percentile interval of ``n`` replicates is as wide as a t interval would be
    (at 10 seeds a 95% interval takes the 0.85% and 99.15% percentiles)."""
    if n < 2:
        return alpha
    z = math.sqrt(n / (n - 1)) * stats.t.ppf(1 - alpha / 2, n - 1)
    return float(2 * stats.norm.sf(z))


# -- a study's trials as a grid -------------------------------------------------------------------


def full_grid(
    rows: Sequence[tuple[Mapping[str, Any], Sequence[int], Sequence[Any] | None]],
    params: Sequence[str],
) -> tuple[np.ndarray, dict[str, list[Any]]] | str:
    """The per-seed values of ``rows`` (one per trial: its params, its tuning seeds, its
    per-seed values) as the array :func:`decompose` takes, with each hyperparameter's values in
    order; or, when they are not a full grid on shared seeds, the reason why not."""
    if not params:
        return "no hyperparameter varied"
    if not rows:
        return "no complete trial"
    levels = {p: _ordered({_key(r[0].get(p)) for r in rows}) for p in params}
    seeds = sorted(rows[0][1])
    if len(seeds) < MIN_SEEDS:
        return f"{len(seeds)} seed(s) per config, needs at least {MIN_SEEDS}"
    size = int(np.prod([len(v) for v in levels.values()]))
    if len(rows) != size:
        return f"{len(rows)} complete trials, a full grid of these values has {size}"
    y = np.full([*(len(levels[p]) for p in params), len(seeds)], np.nan)
    seen = set()
    for values, trial_seeds, per_seed in rows:
        if sorted(trial_seeds) != seeds or per_seed is None or len(per_seed) != len(seeds):
            return "the configs were not all trained on the same tuning seeds"
        cell = tuple(levels[p].index(_key(values.get(p))) for p in params)
        if cell in seen:
            return f"config {dict(values)} was trained twice"
        seen.add(cell)
        order = np.argsort(np.asarray(trial_seeds))
        row = np.asarray([_float(v) for v in per_seed])[order]
        if not np.all(np.isfinite(row)):
            return f"config {dict(values)} has a seed without a value"
        y[cell] = row
    return y, {p: [v[1] for v in levels[p]] for p in params}


def _key(value: Any) -> tuple[int, Any]:
    """Orderable: numbers by value, anything else by its text after them."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, value if isinstance(value, str) else repr(value))


def _ordered(keys: set) -> list:
    return sorted(keys, key=lambda k: (k[0], k[1]))


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
