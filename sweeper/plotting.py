"""Learning-curve figure of one run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


def plot_learning_curve(
    episode_returns: Sequence[float],
    eval_episodes: Sequence[int],
    eval_means: Sequence[float],
    path: Path,
    title: str = "",
    window: int = 20,
) -> Path:
    """Training returns (raw and moving average) with the greedy evaluation means on top."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = np.arange(1, len(episode_returns) + 1)
    ax.plot(x, episode_returns, alpha=0.3, color="#3498db", label="episode return")
    smooth = moving_average(episode_returns, window)
    if len(smooth) < len(episode_returns):
        ax.plot(x[window - 1 :], smooth, color="#2c3e50", lw=2, label=f"{window}-episode mean")
    if len(eval_means):
        ax.plot(eval_episodes, eval_means, "o-", color="#e74c3c", lw=2, label="greedy eval mean")
    ax.set_xlabel("episode")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
