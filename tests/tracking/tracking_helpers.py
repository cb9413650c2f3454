"""Helpers shared by the tracking tests (imported as a plain module: tests have no packages)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "agent=q_learning",
    "env=gridworld",
    "train.episodes=30",
    "eval.every=10",
    "eval.episodes=2",
    "train.progress=false",
]


def tiny_cfg(*overrides: str):
    """A composed tiny tabular config (sub-second run)."""
    from sweeper.cli import compose

    return compose([*TINY, *overrides])


def train_cli(
    *overrides: str, cwd: Path, env: dict | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``python -m sweeper.train`` in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "sweeper.train", *overrides],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc
