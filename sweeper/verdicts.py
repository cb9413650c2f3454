"""One-line verdicts on the seed notebook's claims, computed from per-arm, per-seed numbers.

The seed notebook (Part 6.2, Q-learning and DQN) states four things as facts after one run each:
SARSA is more conservative near the trap than Q-learning (section 2), experience replay and the
target network are both necessary (section 7), vanilla DQN overestimates Q-values and Double
DQN reduces that (section 8), and asks which of lr / target_update_freq / buffer size matters
most (Exercise 3). The functions here take what a sweep measured, one number per seed and arm,
and say whether the claim holds on that data, with the numbers behind the answer.

Every function is pure: numbers in, a :class:`Verdict` out. The statistics are scipy's, through
:mod:`sweeper.statistics` (an aggregate, IQM by default, with a seeded percentile bootstrap CI)
and :func:`compare` (the difference between two independent arms' aggregates, with a two-sample
percentile bootstrap CI from ``scipy.stats.bootstrap``). The rule is the same everywhere:

* holds -- the 95% CI of the difference lies entirely on the claimed side of 0;
* does not hold -- it lies entirely on the other side;
* not enough evidence (``holds=None``) -- the CI includes 0, or an arm has fewer than two
  seeds (one run says nothing about the spread, so there is no CI).

Each :attr:`Verdict.line` starts with ``verdict:``, names the claim, says ``holds``,
``does not hold`` or ``not enough evidence`` and then gives every number it rests on, as
``IQM x [lo, hi] (n=..)`` per arm and ``a - b = +d [lo, hi]`` per difference, all with four
significant digits. :attr:`Verdict.details` has the same numbers, JSON-serialisable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from sweeper.statistics import (
    CONFIDENCE,
    LABELS,
    N_RESAMPLES,
    Estimate,
    estimate,
    finite,
    statistic,
)

HOLDS = "holds"
FAILS = "does not hold"
UNKNOWN = "not enough evidence"

ABLATION_CLAIM = "experience replay and the target network are both necessary"
OVERESTIMATION_CLAIM = "DQN overestimates more than Double DQN"
TRAP_CLAIM = "SARSA is more conservative near the trap (lower values)"
WET_CLAIM = "SARSA stays on inters longer than Q-learning on a drying track"
SC_REPLAY_CLAIM = (
    "prioritized replay learns a better strategy than uniform where safety cars come out"
)

MIN_TOP_SHARE = 0.9
MIN_TRIALS = 20  # Exercise 3's grid is 27 configs; fewer trials than that barely fit a model
MIN_RESAMPLES = 100


@dataclass(frozen=True)
class Verdict:
    """A claim of the seed notebook checked against data.

    ``holds`` is True (the CI of the difference is on the claimed side of 0), False (on the
    other side) or None (not enough evidence: the CI includes 0, or an arm has n < 2).
    ``line`` is the one line a user reads; ``details`` holds its numbers (JSON-serialisable).
    """

    claim: str
    holds: bool | None
    line: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return HOLDS if self.holds else FAILS if self.holds is False else UNKNOWN


# -- numbers -----------------------------------------------------------------------------------


def _g(x: float | None) -> str:
    """The one number format of every line: four significant digits."""
    return "nan" if x is None or not math.isfinite(x) else f"{x:.4g}"


def _signed(x: float) -> str:
    return "nan" if not math.isfinite(x) else f"{x:+.4g}"


def _num(x: float | None) -> float | None:
    """A float for ``details`` (None for NaN/inf/None, so ``json.dumps`` stays strict)."""
    return None if x is None or not math.isfinite(x) else float(x)


def _fmt_estimate(e: Estimate, note: str | None = None) -> str:
    label = LABELS.get(e.how, e.how)
    extra = f", {note}" if note else ""
    if e.low is None or e.high is None:
        return f"{label} {_g(e.value)} (n={e.n}, no CI{extra})"
    return f"{label} {_g(e.value)} [{_g(e.low)}, {_g(e.high)}] (n={e.n}{extra})"


def _fmt_diff(d: Mapping[str, Any]) -> str:
    if d["low"] is None or d["high"] is None:
        return f"{_signed(d['value'])} (no CI: n={d['n_a']} vs n={d['n_b']})"
    return f"{_signed(d['value'])} [{_g(d['low'])}, {_g(d['high'])}]"


def _estimate_details(e: Estimate) -> dict[str, Any]:
    return {
        "how": e.how,
        "value": _num(e.value),
        "low": _num(e.low),
        "high": _num(e.high),
        "n": e.n,
    }


def compare(
    a: Sequence[float],
    b: Sequence[float],
    how: str = "iqm",
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """``aggregate(a) - aggregate(b)`` of two independent samples with its bootstrap CI.

    The CI is ``scipy.stats.bootstrap`` over both samples (``paired=False``: each is resampled
    on its own), statistic the difference of the ``how`` aggregates (IQM: ``trim_mean(x, 0.25)
    - trim_mean(y, 0.25)``), percentile method, ``rng=np.random.default_rng(seed)``. Non-finite
    values are dropped, as in :func:`sweeper.statistics.estimate`. Returns ``value``, ``low``,
    ``high`` (None when an arm has fewer than two values), ``n_a``, ``n_b``, ``how`` and
    ``confidence``.
    """
    agg = statistic(how)
    x, y = finite(a), finite(b)
    out: dict[str, Any] = {
        "how": how,
        "value": math.nan,
        "low": None,
        "high": None,
        "n_a": int(x.size),
        "n_b": int(y.size),
        "confidence": confidence,
    }
    if x.size == 0 or y.size == 0:
        return out
    out["value"] = float(agg(x) - agg(y))
    if x.size < 2 or y.size < 2:
        return out
    if np.ptp(x) == 0 and np.ptp(y) == 0:  # nothing to resample: the difference cannot move
        out["low"] = out["high"] = out["value"]
        return out

    def difference(s: np.ndarray, t: np.ndarray, axis: int = -1) -> np.ndarray:
        return agg(s, axis=axis) - agg(t, axis=axis)

    ci = stats.bootstrap(
        (x, y),
        difference,
        paired=False,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).confidence_interval
    out["low"], out["high"] = float(ci.low), float(ci.high)
    return out


def _side(d: Mapping[str, Any]) -> int | None:
    """+1 when the CI of the difference is above 0, -1 when below, 0 when it includes 0, None
    when there is no CI (an arm with n < 2)."""
    if d["low"] is None or d["high"] is None:
        return None
    return 1 if d["low"] > 0 else -1 if d["high"] < 0 else 0


def _diff_details(d: Mapping[str, Any]) -> dict[str, Any]:
    return {**d, "value": _num(d["value"]), "low": _num(d["low"]), "high": _num(d["high"])}


def _line(claim: str, holds: bool | None, body: str) -> str:
    status = HOLDS if holds else FAILS if holds is False else UNKNOWN
    return f"verdict: {claim}: {status}; {body} ([..] = {CONFIDENCE:.0%} bootstrap CI)"


def _small(named: Mapping[str, Estimate]) -> list[str]:
    return [f"n={e.n} for {name}" for name, e in named.items() if e.n < 2]


# -- section 7: ablation -----------------------------------------------------------------------


def ablation(
    arms: Mapping[str, Sequence[float]],
    *,
    full: str,
    metric: str,
    how: str = "iqm",
    higher_is_better: bool = True,
    claim: str = ABLATION_CLAIM,
    seed: int = 0,
) -> Verdict:
    """Section 7: is the full agent better than each arm with one component removed?

    ``arms`` maps an arm's name to its per-seed values of ``metric`` (e.g. ``{"full DQN":
    [...], "no replay": [...], "no target network": [...]}``); ``full`` names the full agent.
    Holds when, for every ablated arm, the CI of ``full - arm`` is on the better side of 0
    (above 0, or below when ``higher_is_better`` is False); does not hold when some ablated arm
    is better with its CI clear of 0 (the line says which, and by how much); otherwise, or when
    an arm has n < 2, not enough evidence.
    """
    if full not in arms:
        raise ValueError(f"full arm {full!r} is not among the arms {sorted(arms)}")
    ablated = [name for name in arms if name != full]
    if not ablated:
        raise ValueError("ablation needs at least one ablated arm besides the full one")
    sign = 1 if higher_is_better else -1
    ests = {name: estimate(values, how, seed=seed) for name, values in arms.items()}
    diffs = {name: compare(arms[full], arms[name], how, seed=seed) for name in ablated}
    sides = {name: _side(d) for name, d in diffs.items()}
    better = {name: None if s is None else s * sign for name, s in sides.items()}

    worse_than_ablated = [name for name in ablated if better[name] == -1]
    small = _small(ests)
    if worse_than_ablated:
        holds: bool | None = False
        reason = "; ".join(
            f"{name!r} is better than {full!r} by {_g(abs(diffs[name]['value']))} "
            f"[{_g(min(abs(diffs[name]['low']), abs(diffs[name]['high'])))}, "
            f"{_g(max(abs(diffs[name]['low']), abs(diffs[name]['high'])))}]"
            for name in worse_than_ablated
        )
    elif small:
        holds, reason = None, "no CI with " + ", ".join(small)
    elif all(better[name] == 1 for name in ablated):
        holds = True
        reason = f"{full!r} is better than every ablated arm"
    else:
        holds = None
        unclear = [name for name in ablated if better[name] != 1]
        reason = "CI of the difference includes 0 for " + ", ".join(repr(n) for n in unclear)

    direction = "higher" if higher_is_better else "lower"
    per_arm = ", ".join(f"{name} {_fmt_estimate(e)}" for name, e in ests.items())
    per_diff = ", ".join(f"{full} - {name} = {_fmt_diff(diffs[name])}" for name in ablated)
    body = f"{reason}; {metric} ({direction} is better): {per_arm}; {per_diff}"
    details = {
        "metric": metric,
        "how": how,
        "higher_is_better": higher_is_better,
        "full": full,
        "arms": {name: _estimate_details(e) for name, e in ests.items()},
        "differences": {name: _diff_details(d) for name, d in diffs.items()},
        "ablated_better": worse_than_ablated,
    }
    return Verdict(claim, holds, _line(claim, holds, body), details)


# -- section 8: overestimation -----------------------------------------------------------------


def _bias(e: Estimate) -> str:
    if e.low is None or e.high is None:
        return "bias unknown"
    if e.low > 0:
        return "overestimates"
    if e.high < 0:
        return "underestimates"
    return "no clear bias"


def overestimation(
    dqn: Sequence[float],
    double: Sequence[float],
    *,
    how: str = "iqm",
    names: tuple[str, str] = ("DQN", "Double DQN"),
    seed: int = 0,
) -> Verdict:
    """Section 8: does vanilla DQN overestimate more than Double DQN?

    ``dqn`` and ``double`` hold one gap per seed, a gap being the mean over the evaluated
    states of (predicted max-Q - measured discounted return). Holds when the CI of
    ``gap_dqn - gap_double`` is above 0, does not hold when it is below 0. The line also says
    whether each method overestimates at all: its own gap CI above 0 ("overestimates"), below 0
    ("underestimates"), or including 0 ("no clear bias").
    """
    a_name, b_name = names
    claim = f"{a_name} overestimates more than {b_name}"
    ests = {a_name: estimate(dqn, how, seed=seed), b_name: estimate(double, how, seed=seed)}
    diff = compare(dqn, double, how, seed=seed)
    side = _side(diff)
    small = _small(ests)
    holds = None if small or side in (None, 0) else side == 1
    if small:
        reason = "no CI with " + ", ".join(small)
    elif holds is None:
        reason = f"CI of {a_name} - {b_name} includes 0"
    elif holds:
        reason = f"{a_name}'s gap is larger"
    else:
        reason = f"{b_name}'s gap is larger"
    per_arm = ", ".join(f"{name} {_fmt_estimate(e, _bias(e))}" for name, e in ests.items())
    body = (
        f"{reason}; gap = predicted max-Q - discounted return: {per_arm}; "
        f"{a_name} - {b_name} = {_fmt_diff(diff)}"
    )
    details = {
        "how": how,
        "gaps": {name: _estimate_details(e) for name, e in ests.items()},
        "bias": {name: _bias(e) for name, e in ests.items()},
        "difference": _diff_details(diff),
    }
    return Verdict(claim, holds, _line(claim, holds, body), details)


# -- section 2: SARSA near the trap ------------------------------------------------------------


def greater(
    claim: str,
    a: tuple[str, Sequence[float]],
    b: tuple[str, Sequence[float]],
    measure: str,
    *,
    reasons: tuple[str, str] | None = None,
    how: str = "iqm",
    seed: int = 0,
    details: Mapping[str, Any] | None = None,
) -> Verdict:
    """``claim`` says arm ``a``'s ``measure`` is greater than arm ``b``'s: each arm is
    ``(name, one value per seed)``. Holds when the CI of ``a - b`` is above 0, does not hold
    when it is below 0. ``reasons`` words the two outcomes (default: "<a>'s <measure> is
    higher" / "... lower"); ``details`` adds to the verdict's numbers."""
    (a_name, a_values), (b_name, b_values) = a, b
    ests = {a_name: estimate(a_values, how, seed=seed), b_name: estimate(b_values, how, seed=seed)}
    diff = compare(a_values, b_values, how, seed=seed)
    side = _side(diff)
    small = _small(ests)
    holds = None if small or side in (None, 0) else side == 1
    higher, lower = reasons or (f"{a_name}'s is higher", f"{a_name}'s is lower")
    if small:
        reason = "no CI with " + ", ".join(small)
    elif holds is None:
        reason = f"CI of {a_name} - {b_name} includes 0"
    else:
        reason = higher if holds else lower
    per_arm = ", ".join(f"{name} {_fmt_estimate(e)}" for name, e in ests.items())
    body = f"{reason}; {measure}: {per_arm}; {a_name} - {b_name} = {_fmt_diff(diff)}"
    out = {
        "how": how,
        "measure": measure,
        "values": {name: _estimate_details(e) for name, e in ests.items()},
        "difference": _diff_details(diff),
        **dict(details or {}),
    }
    return Verdict(claim, holds, _line(claim, holds, body), out)


def conservative_near_trap(
    q_learning: Sequence[float],
    sarsa: Sequence[float],
    cells: str,
    *,
    how: str = "iqm",
    seed: int = 0,
) -> Verdict:
    """Section 2: does SARSA value the cells next to the trap lower than Q-learning?

    ``q_learning`` and ``sarsa`` hold one value per seed: the mean over the cells next to the
    trap of the learned state value (max over actions). ``cells`` says which cells, for the
    line (e.g. ``"(2,3), (3,2): next to the trap at (3,3)"``). Holds when the CI of
    ``q_learning - sarsa`` is above 0, does not hold when it is below 0.
    """
    return greater(
        TRAP_CLAIM,
        ("Q-learning", q_learning),
        ("SARSA", sarsa),
        f"state value (max over actions) near the trap, cells {cells}",
        reasons=("SARSA's values are lower", "SARSA's values are higher"),
        how=how,
        seed=seed,
        details={"cells": cells},
    )


# -- Exercise 3: which hyperparameter matters most ---------------------------------------------

_RANKING_KEYS = ("importance", "low", "high", "top_share", "n_trials", "n_resamples")


def importance_ranking(
    ranking: Mapping[str, Mapping[str, float]],
    *,
    min_top_share: float = MIN_TOP_SHARE,
    min_trials: int = MIN_TRIALS,
    min_resamples: int = MIN_RESAMPLES,
    expected: str | None = None,
    n_configs: int | None = None,
    n_seeds: int | None = None,
) -> Verdict:
    """Exercise 3: which hyperparameter matters most, if the data can tell.

    ``ranking`` maps each hyperparameter to a mapping with the keys

    * ``importance``: its importance on all trials (the point value);
    * ``low``, ``high``: the bootstrap CI of that importance;
    * ``top_share``: the fraction (0..1) of bootstrap resamples in which it ranked first;
    * ``n_trials``: the number of completed trials the importances were fit on;
    * ``n_resamples``: the number of bootstrap resamples behind ``low``/``high``/``top_share``.

    (``n_trials`` and ``n_resamples`` must be the same for every hyperparameter; another module
    computes the bootstrap.) The leader is the hyperparameter with the largest ``top_share``
    (ties: the larger importance). The claim "<leader> matters most" holds when its
    ``top_share >= min_top_share``, with at least ``min_trials`` trials and ``min_resamples``
    resamples; otherwise there is not enough evidence to rank. With ``expected`` named, the
    claim is "<expected> matters most", and it does not hold when another hyperparameter leads
    with that confidence. ``n_configs``/``n_seeds``, when given, describe the design in the line.
    """
    if not ranking:
        raise ValueError("importance_ranking needs at least one hyperparameter")
    for name, entry in ranking.items():
        missing = [k for k in _RANKING_KEYS if k not in entry]
        if missing:
            raise ValueError(f"ranking[{name!r}] lacks {', '.join(missing)}")
        if not 0.0 <= float(entry["top_share"]) <= 1.0:
            raise ValueError(f"ranking[{name!r}]['top_share'] must be in [0, 1]")
    n_trials = {int(e["n_trials"]) for e in ranking.values()}
    n_resamples = {int(e["n_resamples"]) for e in ranking.values()}
    if len(n_trials) != 1 or len(n_resamples) != 1:
        raise ValueError("every hyperparameter must share n_trials and n_resamples")
    (trials,), (resamples,) = n_trials, n_resamples
    if expected is not None and expected not in ranking:
        raise ValueError(f"expected {expected!r} is not among {sorted(ranking)}")

    order = sorted(
        ranking,
        key=lambda k: (float(ranking[k]["top_share"]), float(ranking[k]["importance"])),
        reverse=True,
    )
    leader = order[0]
    share = float(ranking[leader]["top_share"])
    claim = f"{expected or leader} matters most"

    design = f"{trials} trials"
    if n_configs is not None and n_seeds is not None:
        design += f", {n_configs} configs x {n_seeds} seeds"
    elif n_configs is not None:
        design += f", {n_configs} configs"

    def pct(x: float) -> str:
        return f"{_g(100 * float(x))}%"

    def entry_text(name: str, first: bool) -> str:
        e = ranking[name]
        share_text = (
            f"ranked first in {pct(e['top_share'])} of {resamples} resamples"
            if first
            else f"first in {pct(e['top_share'])}"
        )
        return (
            f"{name} importance {_g(float(e['importance']))} "
            f"[{_g(float(e['low']))}, {_g(float(e['high']))}], {share_text}"
        )

    shortfalls = []
    if share < min_top_share:
        shortfalls.append(
            f"{leader} ranked first in only {pct(share)} of resamples, below {pct(min_top_share)}"
        )
    if trials < min_trials:
        shortfalls.append(f"only {trials} trials, below {min_trials}")
    if resamples < min_resamples:
        shortfalls.append(f"only {resamples} resamples, below {min_resamples}")

    if shortfalls:  # the claim names no leader: the line must not say one matters most
        holds: bool | None = None
        claim = f"{expected} matters most" if expected else "which hyperparameter matters most"
        status = f"{UNKNOWN} to rank ({'; '.join(shortfalls)})"
    elif expected is None or expected == leader:
        holds, status = True, HOLDS
    else:
        holds, status = False, f"{FAILS} ({leader} matters most, not {expected})"
    ranked = "; ".join(entry_text(name, i == 0) for i, name in enumerate(order))
    line = f"verdict: {claim}: {status}; {ranked} ({design}; [..] = bootstrap CI)"
    details = {
        "leader": leader,
        "expected": expected,
        "order": order,
        "n_trials": trials,
        "n_resamples": resamples,
        "n_configs": n_configs,
        "n_seeds": n_seeds,
        "min_top_share": min_top_share,
        "min_trials": min_trials,
        "min_resamples": min_resamples,
        "hyperparameters": {
            name: {
                k: _num(float(ranking[name][k])) for k in ("importance", "low", "high", "top_share")
            }
            for name in order
        },
    }
    return Verdict(claim, holds, line, details)
