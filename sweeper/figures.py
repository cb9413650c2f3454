"""Study-level figures: many runs (seeds, configurations) summarised in one small PNG each.

Why a module of its own: a sweep's question is never "what did this run do" (that is
``sweeper.plotting``'s per-run learning curve) but "does this choice beat that one, across
seeds". Answering it honestly needs the same statistics everywhere, so every number drawn here
comes from ``sweeper.statistics``: an aggregate over replicates (IQM by default, ``how`` picks
another of ``statistics.AGGREGATES``) with its seeded percentile-bootstrap 95% CI, and every
drawn aggregate says which aggregate it is, that the band or bar is a 95% CI, and over how many
replicates (n). With n = 1 there is no interval, and none is drawn; non-finite values (NaN, inf)
are dropped by ``statistics`` before aggregating, so a diverged seed lowers n rather than
poisoning the figure.

The functions are pure: plain data in (numpy arrays, dicts, lists), one PNG out (matplotlib's
Agg backend, about 10x5 inches at 100 dpi), its path returned. Nothing here imports Optuna or
MLflow; the callers collect the data and log the files. The numbers behind each figure come
from public helpers (``curve_band``, ``effect_estimates``, ``q_panel_stats``, ...), so tests
and reports can check a figure's numbers without reading pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sweeper.statistics import AGGREGATES, CONFIDENCE, LABELS, Estimate, aggregate, estimate  # noqa: E402

Curve = tuple[Sequence[float], Sequence[float]]
Cell = tuple[int, int]

FIGSIZE = (10.0, 5.0)
DPI = 100
#: At most this many x points get a bootstrap CI per curve band (the line itself is full
#: resolution): 60 estimates of ~4 ms each keep a 4-group figure well under two seconds.
MAX_CI_POINTS = 60
#: (row, col) step of each GridWorld action, 0 up, 1 down, 2 left, 3 right (the same as
#: ``sweeper.envs.gridworld.ACTION_DELTAS``; repeated so this module does not import gymnasium).
ACTION_DELTAS: tuple[Cell, ...] = ((-1, 0), (1, 0), (0, -1), (0, 1))
CI_LABEL = f"{CONFIDENCE:.0%} CI"


def _label(how: str) -> str:
    if how not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {how!r}")
    return LABELS[how]


def _n_text(n: Sequence[int] | np.ndarray) -> str:
    """``n=5``, or ``n=3-5`` when missing values make n vary along a curve."""
    n = np.asarray(n, dtype=int)
    if n.size == 0:
        return "n=0"
    lo, hi = int(n.min()), int(n.max())
    return f"n={hi}" if lo == hi else f"n={lo}\u2013{hi}"


def _save(fig: Any, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _ci_arrays(ests: Sequence[Estimate]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    value = np.array([e.value for e in ests], dtype=float)
    low = np.array([math.nan if e.low is None else e.low for e in ests], dtype=float)
    high = np.array([math.nan if e.high is None else e.high for e in ests], dtype=float)
    return value, low, high


# ---------------------------------------------------------------------------------------------
# Curves: smoothing, alignment, aggregate bands
# ---------------------------------------------------------------------------------------------


def smooth_curve(x: Sequence[float], y: Sequence[float], window: int | None):
    """Trailing ``window``-point mean of one seed's curve, ``(x[window-1:], means)``.

    The same as ``sweeper.plotting.moving_average`` (a "valid" convolution) on finite data, but
    NaN-aware: a window averages its finite points and is NaN only when it has none. A curve
    shorter than the window, or ``window`` None or 1, is returned unchanged (plotting's rule).
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if window is None or window <= 1 or len(y) < window:
        return x, y
    finite = np.isfinite(y)
    kernel = np.ones(int(window))
    sums = np.convolve(np.where(finite, y, 0.0), kernel, mode="valid")
    counts = np.convolve(finite.astype(float), kernel, mode="valid")
    means = np.full(sums.shape, math.nan)
    np.divide(sums, counts, out=means, where=counts > 0)
    return x[int(window) - 1 :], means


def _clean(curve: Curve) -> tuple[np.ndarray, np.ndarray]:
    x, y = curve
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"a curve's x and y differ in length: {x.size} != {y.size}")
    keep = np.isfinite(x)
    x, y = x[keep], y[keep]
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if np.any(np.diff(x) == 0):
        raise ValueError("a curve repeats an x value; give one y per x")
    return x, y


def align_curves(curves: Sequence[Curve]) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed curves on one x grid: ``(grid, values)`` with ``values[seed, i]`` at ``grid[i]``.

    The grid is the union of all seeds' x values inside the range every seed covers (from the
    largest first x to the smallest last x), so curves of unequal length are cut at the
    shortest. Each seed is linearly interpolated onto the grid, which is exact at its own x
    values: seeds logged on the same x grid are just stacked. A NaN y marks that seed missing at
    its x and on the grid points between it and its neighbours (nothing is interpolated across
    a gap). Seeds with no finite y at all are left out.
    """
    cleaned = [c for c in map(_clean, curves) if np.isfinite(c[1]).any()]
    if not cleaned:
        return np.empty(0), np.empty((0, 0))
    start = max(x[0] for x, _ in cleaned)
    stop = min(x[-1] for x, _ in cleaned)
    grid = np.unique(np.concatenate([x for x, _ in cleaned]))
    grid = grid[(grid >= start) & (grid <= stop)]
    rows = []
    for x, y in cleaned:
        missing = ~np.isfinite(y)
        row = np.interp(grid, x, np.where(missing, 0.0, y))
        row[np.interp(grid, x, missing.astype(float)) > 0] = math.nan
        rows.append(row)
    return grid, np.vstack(rows)


def _ci_indices(size: int, max_points: int) -> np.ndarray:
    if size <= max_points:
        return np.arange(size)
    return np.unique(np.round(np.linspace(0, size - 1, max_points)).astype(int))


@dataclass(frozen=True)
class Band:
    """An aggregate curve over seeds and its CI band, as drawn.

    ``value`` and ``n`` (finite seeds) are at every ``x``; ``low``/``high`` (NaN where n < 2)
    are the bootstrap CI at ``ci_x``, a subsample of at most ``MAX_CI_POINTS`` of ``x`` (first
    and last included), where ``ci_value`` is ``estimate``'s aggregate. ``n_curves`` counts the
    seeds with any finite value.
    """

    x: np.ndarray
    value: np.ndarray
    n: np.ndarray
    ci_x: np.ndarray
    ci_value: np.ndarray
    low: np.ndarray
    high: np.ndarray
    how: str
    n_curves: int


def curve_band(
    curves: Sequence[Curve],
    how: str = "iqm",
    *,
    smooth: int | None = None,
    max_ci_points: int = MAX_CI_POINTS,
) -> Band:
    """Aggregate per-seed curves ``(x, y)`` into a :class:`Band`.

    Each seed is first smoothed (``smooth``-point trailing moving average, see
    :func:`smooth_curve`), then the seeds are aligned (:func:`align_curves`), then the
    aggregate is ``statistics.aggregate`` at every x and ``statistics.estimate`` (value and
    95% CI) at the subsampled ``ci_x``.
    """
    _label(how)
    smoothed = [smooth_curve(*_clean(c), smooth) for c in curves]
    grid, values = align_curves(smoothed)
    n = np.isfinite(values).sum(axis=0) if values.size else np.zeros(0, dtype=int)
    agg = np.array([aggregate(values[:, i], how) for i in range(grid.size)], dtype=float)
    idx = _ci_indices(grid.size, max_ci_points)
    ests = [estimate(values[:, i], how) for i in idx]
    ci_value, low, high = _ci_arrays(ests)
    return Band(
        x=grid,
        value=agg,
        n=n,
        ci_x=grid[idx],
        ci_value=ci_value,
        low=low,
        high=high,
        how=how,
        n_curves=int(values.shape[0]) if values.size else 0,
    )


def _draw_band(ax: Any, band: Band, label: str, color: str, linestyle: str = "-") -> None:
    ax.plot(
        band.x,
        band.value,
        color=color,
        lw=2,
        linestyle=linestyle,
        label=f"{label} ({_n_text(band.n)})",
    )
    if np.isfinite(band.low).any():
        ax.fill_between(band.ci_x, band.low, band.high, color=color, alpha=0.2, lw=0)


def _band_legend_title(how: str) -> str:
    return f"line: {_label(how)} over seeds, band: {CI_LABEL}"


def learning_curves(
    groups: Mapping[str, Sequence[Curve]],
    path: Path | str,
    *,
    ylabel: str,
    title: str,
    how: str = "iqm",
    xlabel: str = "episode",
    smooth: int | None = None,
    max_ci_points: int = MAX_CI_POINTS,
) -> Path:
    """One aggregate line and shaded 95% CI band per group of per-seed curves.

    ``groups`` maps a label (``"buffer=uniform, agent.target_update=hard"``) to its seeds'
    curves ``(x, y)``; ``smooth`` is a moving-average window applied per seed before
    aggregating (the seed notebook used 20 on episode lengths). See :func:`curve_band` for how
    unequal curves are aligned (cut at the shortest seed) and where the CI is computed.
    """
    label = _label(how)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    for i, (name, curves) in enumerate(groups.items()):
        band = curve_band(curves, how, smooth=smooth, max_ci_points=max_ci_points)
        _draw_band(ax, band, name, f"C{i % 10}")
    ax.set_xlabel(xlabel if not smooth else f"{xlabel} ({smooth}-point moving average per seed)")
    ax.set_ylabel(f"{ylabel} ({label}, {CI_LABEL})")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if groups:
        ax.legend(title=_band_legend_title(how), fontsize=8, title_fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# Hyperparameter marginal effects
# ---------------------------------------------------------------------------------------------


def _value_key(value: Any) -> tuple[int, float, str]:
    if isinstance(value, int | float | np.integer | np.floating):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _tick(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    return str(value)


def effect_estimates(
    effects: Mapping[str, Mapping[Any, Sequence[float]]], how: str = "iqm"
) -> dict[str, list[tuple[Any, Estimate]]]:
    """Per hyperparameter, ``(value, statistics.estimate(replicates))`` in sorted value order
    (numbers ascending, then anything else by its text)."""
    _label(how)
    return {
        name: [(v, estimate(by_value[v], how)) for v in sorted(by_value, key=_value_key)]
        for name, by_value in effects.items()
    }


def log_xlim(ax: Any, xs: Sequence[float]) -> None:
    """Span a log x axis over the positions ``xs`` with a margin, explicitly: from its data
    alone (one finite point, the others NaN after a divergence) matplotlib divides by zero
    and warns while drawing."""
    xs = [float(x) for x in xs if math.isfinite(float(x)) and float(x) > 0]
    if not xs:
        return
    lo, hi = min(xs), max(xs)
    pad = (hi / lo) ** 0.08 if hi > lo else 2.0
    ax.set_xlim(lo / pad, hi * pad)


def _draw_estimates(ax: Any, xs: Sequence[float], ests: Sequence[Estimate], **style: Any) -> None:
    """Points with 95% CI error bars (a hollow point where n < 2), n written above each; a
    value that is not finite (no finite replicate) is not drawn."""
    xs = np.asarray(xs, dtype=float)
    value, low, high = _ci_arrays(ests)
    has_ci = np.isfinite(value) & np.isfinite(low) & np.isfinite(high)
    bare = np.isfinite(value) & ~has_ci
    color = style.pop("color", None)
    label = style.pop("label", None)
    if has_ci.any():
        ax.errorbar(
            xs[has_ci],
            value[has_ci],
            yerr=[value[has_ci] - low[has_ci], high[has_ci] - value[has_ci]],
            fmt="o",
            capsize=4,
            color=color,
            label=label,
            **style,
        )
        label = None
    if bare.any():
        ax.plot(xs[bare], value[bare], "o", mfc="none", color=color, label=label, **style)
    for x, v, hi, est in zip(xs, value, high, ests):
        if not math.isfinite(v):
            continue
        top = hi if math.isfinite(hi) else v
        ax.annotate(
            f"n={est.n}",
            (x, top),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
            color=color,
        )


def marginal_effects(
    effects: Mapping[str, Mapping[Any, Sequence[float]]],
    path: Path | str,
    *,
    ylabel: str,
    title: str,
    how: str = "iqm",
    log_params: Sequence[str] = (),
) -> Path:
    """One panel per hyperparameter: the aggregate over its replicates at each value, with 95%
    CI error bars and n written above each point.

    ``effects`` maps a hyperparameter name to ``{value: [replicate values]}``. Values sit at
    categorical positions in sorted order; a parameter in ``log_params`` whose values are all
    positive numbers gets a true log x axis instead.
    """
    label = _label(how)
    table = effect_estimates(effects, how)
    k = max(len(table), 1)
    ncols = min(k, 3)
    nrows = math.ceil(k / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(FIGSIZE[0], max(FIGSIZE[1], 3.5 * nrows)),
        squeeze=False,
    )
    for ax in axes.flat[len(table) :]:
        ax.set_visible(False)
    for i, (ax, (name, points)) in enumerate(zip(axes.flat, table.items())):
        values = [v for v, _ in points]
        ests = [e for _, e in points]
        numeric = all(_value_key(v)[0] == 0 and float(v) > 0 for v in values)
        if name in log_params and numeric and values:
            xs = [float(v) for v in values]
            ax.set_xscale("log")
            log_xlim(ax, xs)
            ax.set_xlabel(f"{name} (log scale)")
        else:
            xs = list(range(len(values)))
            ax.set_xticks(xs, [_tick(v) for v in values])
            ax.set_xlim(-0.5, len(values) - 0.5)
            ax.set_xlabel(name)
        _draw_estimates(ax, xs, ests, color="C0")
        if i % ncols == 0:
            ax.set_ylabel(f"{ylabel}\n({label}, {CI_LABEL})")
        ax.grid(True, alpha=0.3)
        ax.margins(y=0.15)
    fig.suptitle(f"{title}\n{label} over replicates with {CI_LABEL} error bars; n per point")
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# Tuning seeds vs fresh test seeds
# ---------------------------------------------------------------------------------------------


def tuning_vs_test(
    rows: Sequence[Mapping[str, Any]],
    path: Path | str,
    *,
    title: str,
    how: str = "iqm",
    ylabel: str = "return",
) -> Path:
    """Per configuration, the aggregate on the tuning seeds beside the one on fresh test
    seeds, each with its 95% CI and n: a gap shows how much of the tuned score was selection
    luck. ``rows`` are ``{"label": str, "tuning": [floats], "test": [floats]}``."""
    label = _label(how)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    positions = np.arange(len(rows), dtype=float)
    for offset, key, color in ((-0.15, "tuning", "C0"), (0.15, "test", "C1")):
        ests = [estimate(row[key], how) for row in rows]
        _draw_estimates(
            ax, positions + offset, ests, color=color, label=f"{key} seeds: {label}, {CI_LABEL}"
        )
    ax.set_xticks(positions, [str(row["label"]) for row in rows], rotation=15, ha="right")
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_ylabel(f"{ylabel} ({label}, {CI_LABEL})")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.margins(y=0.15)
    if rows:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# GridWorld Q-value heatmaps
# ---------------------------------------------------------------------------------------------


def gridworld_layout(env: Any = None, **kwargs: Any) -> dict[str, Any]:
    """The layout :func:`q_heatmaps` expects, from a ``sweeper.envs.gridworld.GridWorld``
    (or a wrapper of one) or, when ``env`` is None, from the GridWorld constructor's keyword
    arguments (defaults: the seed's 4x4 layout).

    Keys: ``size`` (int, the grid is size x size, state index ``row * size + col``), and
    ``walls``, ``goals``, ``traps`` (sorted lists of ``(row, col)``), ``start`` (``(row, col)``).
    """
    if env is None:
        from sweeper.envs.gridworld import GridWorld

        env = GridWorld(**kwargs)
    elif kwargs:
        raise TypeError("give either a GridWorld or its constructor arguments, not both")
    env = getattr(env, "unwrapped", env)
    return {
        "size": int(env.size),
        "walls": sorted(tuple(c) for c in env.walls),
        "goals": [tuple(env.goal)],
        "traps": sorted(tuple(c) for c in env.traps),
        "start": tuple(env.start),
    }


def q_panel_stats(q_tables: Sequence[np.ndarray], how: str = "iqm") -> dict[str, np.ndarray]:
    """Per state, across seeds: ``value``/``low``/``high``/``n`` = ``statistics.estimate`` of
    max_a Q(s, a) (a seed with a NaN Q(s, .) is missing there), and ``greedy`` = argmax over
    actions of ``statistics.aggregate(Q(s, a), "mean")`` across seeds (-1 where that mean is
    NaN or the same for every action, e.g. a never-visited state)."""
    _label(how)
    q = np.stack([np.asarray(t, dtype=float) for t in q_tables])
    if q.ndim != 3:
        raise ValueError(f"Q tables must be (n_states, n_actions) arrays, got {q.shape[1:]}")
    v = q.max(axis=2)  # (seeds, states); NaN if any action is NaN
    ests = [estimate(v[:, s], how) for s in range(q.shape[1])]
    value, low, high = _ci_arrays(ests)
    greedy = np.full(q.shape[1], -1, dtype=int)
    for s in range(q.shape[1]):
        means = np.array([aggregate(q[:, s, a], "mean") for a in range(q.shape[2])])
        if np.isfinite(means).all() and np.ptp(means) > 0:
            greedy[s] = int(np.argmax(means))
    return {
        "value": value,
        "low": low,
        "high": high,
        "n": np.array([e.n for e in ests], dtype=int),
        "greedy": greedy,
    }


def q_heatmaps(
    panels: Mapping[str, Mapping[str, Any]],
    path: Path | str,
    *,
    title: str,
    how: str = "iqm",
) -> Path:
    """Per agent, the GridWorld's learned state values: the aggregate over seeds of
    max_a Q(s, a) per cell (colour, RdYlGn from -1 to 1 as in the seed notebook's "Learned
    Q-Values (max over actions)"), printed with its 95% CI, and an arrow for the greedy action
    of the across-seed mean Q in every cell that is neither a wall nor terminal.

    ``panels`` maps an agent label (``"q_learning"``, ``"sarsa"``) to ``{"q_tables": [one
    (size*size, 4) array per seed], "layout": gridworld_layout(env)}``; walls show "W", goals
    "G", traps "T", the start "S" (if the layout has ``start``).
    """
    label = _label(how)
    k = max(len(panels), 1)
    fig, axes = plt.subplots(
        1, k, figsize=(max(FIGSIZE[0], 5.0 * k), FIGSIZE[1]), squeeze=False, layout="constrained"
    )
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="#7f7f7f")
    image = None
    for ax, (name, panel) in zip(axes.flat, panels.items()):
        layout = panel["layout"]
        size = int(layout["size"])
        walls = {tuple(c) for c in layout.get("walls", ())}
        goals = {tuple(c) for c in layout.get("goals", ())}
        traps = {tuple(c) for c in layout.get("traps", ())}
        start = tuple(layout["start"]) if layout.get("start") is not None else None
        stats = q_panel_stats(panel["q_tables"], how)
        if stats["value"].size != size * size:
            raise ValueError(
                f"{name}: Q tables have {stats['value'].size} states, the {size}x{size} "
                f"layout has {size * size}"
            )
        grid = stats["value"].reshape(size, size).copy()
        for r, c in walls:
            grid[r, c] = math.nan
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-1.0, vmax=1.0)
        for r in range(size):
            for c in range(size):
                s = r * size + c
                cell = (r, c)
                if cell in walls:
                    ax.text(c, r, "W", ha="center", va="center", fontsize=14, weight="bold")
                    continue
                mark = "G" if cell in goals else "T" if cell in traps else None
                if mark:
                    ax.text(c, r + 0.05, mark, ha="center", va="center", fontsize=14, weight="bold")
                if cell == start:
                    ax.text(c - 0.42, r - 0.38, "S", ha="left", va="top", fontsize=8)
                v, lo, hi = stats["value"][s], stats["low"][s], stats["high"][s]
                if math.isfinite(v):
                    ax.text(c, r - 0.3, f"{v:.2f}", ha="center", va="center", fontsize=9)
                if math.isfinite(lo) and math.isfinite(hi):
                    ax.text(
                        c, r + 0.34, f"[{lo:.2f}, {hi:.2f}]", ha="center", va="center", fontsize=6
                    )
                a = stats["greedy"][s]
                if mark is None and a >= 0:
                    dr, dc = ACTION_DELTAS[a]
                    ax.arrow(
                        c - 0.13 * dc,
                        r + 0.03 - 0.13 * dr,
                        0.26 * dc,
                        0.26 * dr,
                        width=0.02,
                        head_width=0.12,
                        head_length=0.08,
                        length_includes_head=True,
                        color="black",
                    )
        ax.set_xticks(range(size))
        ax.set_yticks(range(size))
        ax.set_xlabel("col")
        ax.set_ylabel("row")
        ax.set_title(f"{name} ({_n_text(stats['n'][stats['n'] > 0])} seeds)")
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(
            image, ax=list(axes.flat), shrink=0.8, label=f"{label} over seeds of max_a Q(s, a)"
        )
    fig.suptitle(
        f"{title}\ncells: {label} of max_a Q(s, a) [{CI_LABEL}]; "
        "arrows: greedy action of the mean Q over seeds",
        fontsize=10,
    )
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# Overestimation: predicted max-Q vs measured return
# ---------------------------------------------------------------------------------------------


def overestimation_gaps(
    max_q: Sequence[Curve], returns: Sequence[Curve]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per seed, the curve ``max_q - return`` on the two curves' aligned grid
    (:func:`align_curves`; ``max_q[i]`` and ``returns[i]`` are the same seed)."""
    if len(max_q) != len(returns):
        raise ValueError(f"{len(max_q)} max-Q curves but {len(returns)} return curves")
    gaps = []
    for mq, ret in zip(max_q, returns):
        grid, values = align_curves([mq, ret])
        if values.shape[0] == 2:
            gaps.append((grid, values[0] - values[1]))
    return gaps


def overestimation(
    groups: Mapping[str, Mapping[str, Sequence[Curve]]],
    path: Path | str,
    *,
    title: str,
    how: str = "iqm",
    xlabel: str = "episode",
    max_ci_points: int = MAX_CI_POINTS,
) -> Path:
    """Left: per group (``"DQN"``, ``"Double DQN"``) the predicted max-Q at the evaluation
    start states (solid) and the measured discounted return of the same greedy policy (dashed,
    same colour), each an aggregate over seeds with a 95% CI band. Right: the per-seed gap
    max-Q - return, aggregated with its CI: the overestimation bias.

    ``groups[label]`` is ``{"max_q": [per-seed (x, y)], "return": [per-seed (x, y)]}``, the two
    lists in the same seed order.
    """
    label = _label(how)
    fig, (left, right) = plt.subplots(1, 2, figsize=FIGSIZE)
    for i, (name, data) in enumerate(groups.items()):
        color = f"C{i % 10}"
        mq = curve_band(data["max_q"], how, max_ci_points=max_ci_points)
        ret = curve_band(data["return"], how, max_ci_points=max_ci_points)
        gap = curve_band(
            overestimation_gaps(data["max_q"], data["return"]), how, max_ci_points=max_ci_points
        )
        _draw_band(left, mq, f"{name}: predicted max Q", color)
        _draw_band(left, ret, f"{name}: measured return", color, linestyle="--")
        _draw_band(right, gap, name, color)
    right.axhline(0.0, color="black", lw=0.8)
    left.set_ylabel(f"value at start states ({label}, {CI_LABEL})")
    right.set_ylabel(f"max Q - return ({label}, {CI_LABEL})")
    left.set_title("predicted (solid) vs measured (dashed)")
    right.set_title("overestimation")
    for ax in (left, right):
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
        if groups:
            ax.legend(title=_band_legend_title(how), fontsize=7, title_fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
