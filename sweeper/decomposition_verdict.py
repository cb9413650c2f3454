"""The answer a grid's variance decomposition gives to "which hyperparameter matters most",
as one line that ranks only what the data separate.

Why its own rule: a ranking by point values (or by how often a hyperparameter comes first in
the resamples) names a winner even where two shares are within each other's noise, and then two
runs of the same sweep name different winners. Here a comparison is decided only where the CI of
the difference of two shares, paired over the same seeds, excludes 0
(:meth:`sweeper.variance_decomposition.Decomposition.separated`); the line says "tie" where it
does not, and "not enough evidence" only when no two hyperparameters separate.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from sweeper.variance_decomposition import INTERACTIONS, SEED, Decomposition, Effect
from sweeper.verdicts import UNKNOWN, Verdict


def percent(x: float) -> str:
    """A share in percent for people, without the sign: ``7.1``, ``63`` (two significant
    digits, whole numbers from 10 on)."""
    if not math.isfinite(x):
        return "nan"
    v = 100 * x
    text = f"{v:.0f}" if abs(v) >= 9.95 else f"{v:.1f}"
    return text[1:] if text in ("-0", "-0.0") else text


def _share(d: Decomposition, name: str) -> str:
    s = d.shares[name]
    return f"{percent(s.value)}% [{percent(s.low)}, {percent(s.high)}]"


def _diff(d: Decomposition, a: str, b: str) -> str:
    x = d.difference(a, b)
    sign = "+" if x.value >= 0 else ""
    return f"{sign}{percent(x.value)}% [{percent(x.low)}, {percent(x.high)}]"


def _names(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _shown(name: str) -> str:
    return "the seed" if name == SEED else name


def _tier_text(d: Decomposition, tier: Sequence[str], where: str) -> str:
    """``agent.lr matters most (7.1% [3.8, 12])`` or ``agent.lr and ... tie (..., difference
    +1.2% [..])``, with the pairs the data do separate inside a larger tier."""
    shares = ", ".join(_share(d, name) for name in tier)
    names = _names([_shown(name) for name in tier])
    if len(tier) == 1:
        verb = {"first": "matters most", "last": "least", "middle": "next"}[where]
        return f"{names} {verb} ({shares})"
    if len(tier) == 2:
        how = "tie for most" if where == "first" else "tie"
        return f"{names} {how} ({shares}, difference {_diff(d, *tier)})"
    how = "tie for most" if where == "first" else "follow"
    inside = [
        f"{_shown(a)} above {_shown(b)} by {_diff(d, a, b)}"
        for a, b in itertools.combinations(tier, 2)
        if d.separated(a, b)
    ]
    return f"{names} {how} ({shares}" + (f"; {', '.join(inside)})" if inside else ")")


def _effect_text(name: str, e: Effect) -> str:
    return (
        f"{name} {e.size.value:.3g} [{e.size.low:.3g}, {e.size.high:.3g}] "
        f"({_level(e.low_level)}: {e.low_mean:.3g} -> {_level(e.high_level)}: {e.high_mean:.3g})"
    )


def _level(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def answer(d: Decomposition, measure: str | None = None) -> Verdict:
    """Which hyperparameter matters most, as far as ``d`` decides: one line that ranks only
    what the data separate (:meth:`Decomposition.tiers`).

    ``holds`` is True when the hyperparameter with the largest share is separated from every
    other (it "matters most"), None otherwise: ``details["answer"]`` says ``tie`` (the
    ``contenders``, those not separated from the largest, tie for most, while the data do
    separate some pair) or ``not enough evidence`` (no two hyperparameters separate; nothing is
    named as mattering most)."""
    tiers = d.tiers()
    top = max(d.params, key=lambda p: d.shares[p].value)
    contenders = [top] + [p for p in d.params if p != top and not d.separated(top, p)]
    if len(contenders) == 1:
        holds, kind = True, "decided"
        status = f"{top} matters most of the hyperparameters"
    elif any(d.separated(a, b) for a, b in itertools.combinations(d.params, 2)):
        holds, kind = None, "tie"
        status = f"{_names(contenders)} tie for the most important hyperparameter"
    else:
        holds, kind = None, UNKNOWN
        status = f"{UNKNOWN} to rank the hyperparameters (no two of them separate)"
    if len(tiers) == 1:
        body = f"nothing separates: {_tier_text(d, tiers[0], 'middle')}"
    else:
        body = "; ".join(
            _tier_text(d, t, "first" if i == 0 else "last" if i == len(tiers) - 1 else "middle")
            for i, t in enumerate(tiers)
        )
    effects = ", ".join(_effect_text(p, d.effects[p]) for p in d.params)
    on = f" (on {measure})" if measure else ""
    line = (
        f"verdict{on}: {status}; {body}; interactions {_share(d, INTERACTIONS)}; "
        f"the mean across each range: {effects} ({d.n_configs} configs x {d.n_seeds} seeds, "
        f"omega squared, {d.confidence:.0%} bootstrap CIs over seeds)"
    )
    details = {
        "answer": kind,
        "status": status,
        "most_important": top if holds else None,
        "contenders": contenders,
        **d.as_dict(),
    }
    return Verdict("which hyperparameter matters most", holds, line, details)
