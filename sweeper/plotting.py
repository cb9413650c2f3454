"""The training figure of a run, and of a replicate group: the seed notebook's four panels.

Why these panels: the seed's DQN section reads training from episode length (against its goal
line), reward, loss and epsilon, each with a 20-episode moving average; a run's figure shows the
same, plus the greedy evaluations, so a user can put a run next to the notebook. The data come
from the run's ``episodes.csv`` and ``evals.csv`` (:func:`run_panels`), so the figure shows
exactly what was logged. A replicate group (one config on several seeds) gets the same panels
with the IQM over its seeds and a 95% bootstrap CI band (``sweeper.figures.curve_band``).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sweeper.figures import CI_LABEL, curve_band, smooth_curve  # noqa: E402

WINDOW = 20  # the seed's moving average
#: (column of episodes.csv, panel title, y label), in the seed's order
PANELS = (
    ("length", "episode length", "episode length"),
    ("return", "reward", "total reward"),
    ("loss", "loss", "mean loss per episode"),
    ("epsilon", "exploration rate (epsilon)", "epsilon"),
)
EVAL_COLUMN = "eval_return_mean"
RAW = ("epsilon",)  # a schedule, drawn as it is (the seed does not smooth it)


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


def read_columns(path: Path | str) -> dict[str, np.ndarray]:
    """A CSV written by ``sweeper.callbacks.CsvWriter`` as float columns (empty: no file)."""
    path = Path(path)
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {k: np.array([_float(r.get(k)) for r in rows]) for k in rows[0]}


def _float(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else np.nan
    except ValueError:
        return np.nan


def run_panels(run_dir: Path | str, window: int = WINDOW) -> dict[str, dict[str, np.ndarray]]:
    """Per panel (``length``, ``return``, ``loss``, ``epsilon``, and ``eval`` when the run
    evaluated): ``x`` (episode), ``y`` (as logged), and ``smooth_x``/``smooth_y``, the
    ``window``-episode trailing mean (NaN-aware: episodes before the first update have no
    loss; epsilon is not smoothed). The data behind :func:`plot_run`."""
    episodes = read_columns(Path(run_dir) / "episodes.csv")
    out: dict[str, dict[str, np.ndarray]] = {}
    if "episode" not in episodes:
        return out
    x = episodes["episode"]
    for column, _, _ in PANELS:
        if column in episodes:
            y = episodes[column]
            sx, sy = smooth_curve(x, y, None if column in RAW else window)
            out[column] = {"x": x, "y": y, "smooth_x": sx, "smooth_y": sy}
    evals = read_columns(Path(run_dir) / "evals.csv")
    if EVAL_COLUMN in evals:
        out["eval"] = {"x": evals["episode"], "y": evals[EVAL_COLUMN]}
    return out


def _axes(title: str):
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    fig.suptitle(title)
    return fig, list(axes.flat)


def _finish(fig, axes, goal: float | None, goal_on_length: bool, path: Path | str) -> Path:
    for ax, (column, name, ylabel) in zip(axes, PANELS):
        ax.set_title(name)
        ax.set_xlabel("episode")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if goal is not None and (column == "return" or (column == "length" and goal_on_length)):
            ax.axhline(goal, color="red", linestyle="--", label=f"goal ({goal:g})")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_run(
    run_dir: Path | str,
    path: Path | str,
    title: str = "",
    *,
    goal: float | None = None,
    goal_on_length: bool = False,
    window: int = WINDOW,
) -> Path:
    """The four panels of one run (raw per episode, ``window``-episode mean on top; the greedy
    evaluations on the reward panel); ``goal`` (the env's solved return) as a dashed line on
    the reward panel, and on the length panel where ``goal_on_length`` (a return of one per
    step: the seed's "Goal (200 steps)")."""
    data = run_panels(run_dir, window)
    fig, axes = _axes(title)
    for ax, (column, _, _) in zip(axes, PANELS):
        d = data.get(column)
        if d is None or not np.isfinite(d["y"]).any():
            ax.text(0.5, 0.5, f"no {column} logged", ha="center", transform=ax.transAxes)
            continue
        raw = column in RAW
        ax.plot(d["x"], d["y"], alpha=1.0 if raw else 0.3, color="C0", label="per episode")
        if not raw and len(d["smooth_x"]) < len(d["x"]):
            ax.plot(d["smooth_x"], d["smooth_y"], color="C0", lw=2, label=f"{window}-ep mean")
        if column == "return" and "eval" in data:
            e = data["eval"]
            ax.plot(e["x"], e["y"], "o-", color="C3", lw=2, label="greedy evaluation mean")
    return _finish(fig, axes, goal, goal_on_length, path)


def group_panels(
    run_dirs: Sequence[Path | str], window: int = WINDOW, how: str = "iqm"
) -> dict[str, object]:
    """Per panel, the ``how`` aggregate over the seeds' ``window``-episode means with its 95%
    CI band (``sweeper.figures.Band``); ``eval``: over their greedy evaluations."""
    runs = [run_panels(d, window) for d in run_dirs]
    out: dict[str, object] = {}
    for column, _, _ in PANELS:
        curves = [(r[column]["x"], r[column]["y"]) for r in runs if column in r]
        if curves:
            out[column] = curve_band(curves, how, smooth=None if column in RAW else window)
    evals = [(r["eval"]["x"], r["eval"]["y"]) for r in runs if "eval" in r]
    if evals:
        out["eval"] = curve_band(evals, how)
    return out


def plot_group(
    run_dirs: Sequence[Path | str],
    path: Path | str,
    title: str = "",
    *,
    goal: float | None = None,
    goal_on_length: bool = False,
    window: int = WINDOW,
    how: str = "iqm",
) -> Path:
    """The four panels over a replicate group's seeds (:func:`group_panels`)."""
    bands: Mapping[str, object] = group_panels(run_dirs, window, how)
    fig, axes = _axes(f"{title}\n{how.upper()} over {len(run_dirs)} seeds, {CI_LABEL} band")
    for ax, (column, _, _) in zip(axes, PANELS):
        band = bands.get(column)
        if band is None or not np.isfinite(band.value).any():
            ax.text(0.5, 0.5, f"no {column} logged", ha="center", transform=ax.transAxes)
            continue
        smoothed = "" if column in RAW else f"{window}-ep mean, "
        ax.plot(band.x, band.value, color="C0", lw=2, label=f"{smoothed}{how.upper()}")
        ax.fill_between(band.ci_x, band.low, band.high, color="C0", alpha=0.2, label=CI_LABEL)
        if column == "return" and "eval" in bands:
            e = bands["eval"]
            ax.plot(e.x, e.value, "o-", color="C3", lw=2, label="greedy evaluation")
            ax.fill_between(e.ci_x, e.low, e.high, color="C3", alpha=0.15)
    return _finish(fig, axes, goal, goal_on_length, path)
