"""What a race strategist reads off a learned F1 policy (``sweeper.envs.f1``).

* :func:`pit_map`: the greedy decision over (lap x tyre age) on each dry compound, in the
  seed's GridWorld-heatmap style: a cell says "stay out" or the compound it pits for. The
  policy is asked about states (P``position``, green flag, dry, the race's start compound
  already used) whether or not it visited them; the map shows what it would do.
* :func:`greedy_race` + :func:`plot_race_trace`: one greedy race lap by lap against the rivals,
  the car's position coloured by its tyre compound, pit laps marked.

``greedy_q(obs) -> (n, actions)`` is any Q-function of one member (the tabular Q-table's rows,
a DQN's network); ties go to the lowest action, as the agents' own greedy choice does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.envs.f1 import DRY, F1PitStrategy
from sweeper.envs.f1_policies import greedy, races

COLOURS = {"soft": "#d62728", "medium": "#e6b800", "hard": "#7f7f7f", "inter": "#2ca02c",
           "wet": "#1f77b4"}  # fmt: skip
LETTER = {"soft": "S", "medium": "M", "hard": "H", "inter": "I", "wet": "W"}

GreedyQ = Callable[[np.ndarray], np.ndarray]


def pit_map(greedy_q: GreedyQ, env: F1PitStrategy, position: int = 1) -> dict[str, np.ndarray]:
    """compound -> (laps, laps + 1) array of greedy actions (0 stay out, 1 + i pit for
    ``env.compounds[i]``) at (lap, tyre age); -1 where the age cannot be (older than the lap
    allows) or where a Q value is not finite (a diverged agent has no greedy action)."""
    maps = {}
    for compound in (c for c in DRY if c in env.compounds):
        used = {compound, env.start_compound} & set(DRY)
        out = np.full((env.laps, env.laps + 1), -1, dtype=np.int64)
        obs, cells = [], []
        for lap in range(env.laps):
            for age in range(lap + 1):
                obs.append(env.observation(lap, age, compound, used, position=position))
                cells.append((lap, age))
        q = np.asarray(greedy_q(np.asarray(obs)), dtype=float)
        actions = np.where(np.isfinite(q).all(axis=1), np.argmax(q, axis=1), -1)
        for (lap, age), action in zip(cells, actions.tolist(), strict=True):
            out[lap, age] = action
        maps[compound] = out
    return maps


def plot_pit_map(maps: dict[str, np.ndarray], env: F1PitStrategy, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    names = ["stay out", *(f"pit: {c}" for c in env.compounds)]
    cmap = ListedColormap(["#ffffff", *(COLOURS[c] for c in env.compounds)])
    fig, axes = plt.subplots(1, len(maps), figsize=(4.2 * len(maps), 4.2), squeeze=False)
    for ax, (compound, grid) in zip(axes[0], maps.items(), strict=True):
        shown = np.ma.masked_less(grid.T, 0)
        ax.imshow(shown, origin="lower", cmap=cmap, vmin=0, vmax=len(names) - 1, aspect="auto")
        for lap in range(grid.shape[0]):
            for age in range(grid.shape[1]):
                action = int(grid[lap, age])
                if action > 0:
                    letter = LETTER[env.compounds[action - 1]]
                    ax.text(lap, age, letter, ha="center", va="center", fontsize=6)
        ax.set_title(f"on {compound}s")
        ax.set_xlabel("lap")
        ax.set_ylabel("tyre age (laps)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(len(names))]
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def greedy_race(greedy_q: GreedyQ, env: F1PitStrategy, seed: int = 0) -> list[dict[str, Any]]:
    """One race with the greedy policy; the env's trace (per lap: position, compound, pit,
    safety car, weather, the rivals' positions)."""
    races(env, greedy(greedy_q), 1, offset=seed)
    return env.trace()


def plot_race_trace(trace: list[dict[str, Any]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    laps = [t["lap"] for t in trace]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    n_rivals = len(trace[0]["rivals"]) if trace else 0
    for r in range(n_rivals):
        ax.plot(laps, [t["rivals"][r] for t in trace], color="#cccccc", lw=1, zorder=1)
    ax.plot(laps, [t["position"] for t in trace], color="black", lw=1.5, zorder=2)
    for t in trace:
        ax.scatter(t["lap"], t["position"], color=COLOURS[t["compound"]], s=28, zorder=3)
        if t["pit"]:
            ax.axvline(t["lap"], color=COLOURS[t["compound"]], ls="--", lw=1, zorder=0)
        if t["safety_car"]:
            ax.axvspan(t["lap"] - 0.5, t["lap"] + 0.5, color="#ffe08a", alpha=0.4, zorder=0)
    ax.invert_yaxis()
    ax.set_xlabel("lap")
    ax.set_ylabel("position")
    ax.set_title(title)
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=n) for n, c in COLOURS.items()]
    handles.append(plt.Line2D([], [], color="#cccccc", label="rivals"))
    ax.legend(handles=handles, fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
