"""The figure of a grid's variance decomposition: what share each hyperparameter, the
interactions and the seed take, next to how the mean moves over each hyperparameter's values.

Why one figure: a share says how much a hyperparameter matters, not which value is good; the
marginal means beside it say that, in the metric's own units. Both come from
``sweeper.variance_decomposition`` (the same resamples over seeds), with their 95% CIs, and the
seed's bar is drawn with the rest: it is usually the tallest. Pure: a :class:`Decomposition` in,
one PNG out (matplotlib's Agg backend).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sweeper.figures import log_xlim  # noqa: E402
from sweeper.variance_decomposition import (  # noqa: E402
    INTERACTIONS,
    SEED,
    Decomposition,
    Interval,
)

DPI = 100


def _finite(values: Sequence[float | None]) -> np.ndarray:
    """``values`` with NaN for what is not finite (a diverged cell's mean): NaN is a gap in
    a line, where inf - inf in an error bar warns."""
    a = np.array([np.nan if v is None else v for v in values], dtype=float)
    return np.where(np.isfinite(a), a, np.nan)


def bars(d: Decomposition) -> list[tuple[str, Interval]]:
    """The bars drawn, in order: each hyperparameter, the interactions, the seed (the data
    behind the left panel, for tests and reports)."""
    return [(p, d.shares[p]) for p in d.params] + [
        (INTERACTIONS, d.shares[INTERACTIONS]),
        (SEED, d.shares[SEED]),
    ]


def plot(
    d: Decomposition,
    path: Path | str,
    *,
    ylabel: str,
    log_params: Sequence[str] = (),
) -> Path:
    """Left: the shares of the variance (percent) with their CIs; then one panel per
    hyperparameter: the mean of the metric at each of its values, with its CI."""
    k = len(d.params)
    fig, axes = plt.subplots(1, k + 1, figsize=(4.0 * (k + 1), 4.5), squeeze=False)
    ax = axes[0, 0]
    drawn = bars(d)
    value, low, high = (
        100 * _finite([getattr(s, k) for _, s in drawn]) for k in ("value", "low", "high")
    )
    colors = ["C0"] * k + ["C7", "C3"]
    xs = np.arange(len(drawn))
    ax.bar(xs, value, color=colors, alpha=0.8)
    ax.errorbar(xs, value, yerr=[value - low, high - value], fmt="none", ecolor="k", capsize=4)
    ax.set_xticks(xs, [name.split(".")[-1] for name, _ in drawn], rotation=20, ha="right")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("share of the variance (%), omega squared")
    ax.set_title(f"{d.n_configs} configs x {d.n_seeds} seeds")
    ax.grid(True, axis="y", alpha=0.3)
    for i, p in enumerate(d.params):
        ax = axes[0, i + 1]
        levels = d.levels[p]
        means = d.marginal_means[p]
        numeric = all(isinstance(v, (int, float)) and v > 0 for v in levels)
        x = [float(v) for v in levels] if p in log_params and numeric else list(range(len(levels)))
        if x != list(range(len(levels))):
            ax.set_xscale("log")
            log_xlim(ax, x)
        else:
            ax.set_xticks(x, [str(v) for v in levels])
        v, lo, hi = (_finite([getattr(m, k) for m in means]) for k in ("value", "low", "high"))
        ax.errorbar(x, v, yerr=[v - lo, hi - v], fmt="o-", capsize=4, color="C0")
        e = d.effects[p]
        ax.set_title(f"{p}: {e.size.value:.3g} [{e.size.low:.3g}, {e.size.high:.3g}]")
        ax.set_xlabel(p)
        if i == 0:
            ax.set_ylabel(f"{ylabel}\n(mean over configs and seeds)")
        ax.grid(True, alpha=0.3)
    fig.suptitle(
        f"what explains the spread of {ylabel}: shares of the variance and marginal means, "
        f"{d.confidence:.0%} bootstrap CIs over seeds"
    )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return Path(path)
