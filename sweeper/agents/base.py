"""The interface every agent offers to the training loop.

The loop (``sweeper.training``) only talks to agents through this protocol, so tabular
agents (which learn online from each transition) and replay-based agents (which learn in
``update``) share one loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class Agent(Protocol):
    #: True when the agent learns in ``update()`` from a replay buffer (DQN); False when it
    #: learns online inside ``observe()`` (tabular TD control).
    learns_from_replay: bool

    @property
    def epsilon(self) -> float:
        """Current exploration rate."""
        ...

    def act(self, obs: np.ndarray | int, greedy: bool = False) -> int:
        """Epsilon-greedy action (greedy=True: argmax, used in evaluation)."""
        ...

    def observe(
        self,
        obs: np.ndarray | int,
        action: int,
        reward: float,
        next_obs: np.ndarray | int,
        terminated: bool,
        truncated: bool,
    ) -> float | None:
        """Record one transition. Tabular agents update here and return the squared TD error.

        ``terminated`` cuts the bootstrap; ``truncated`` (time limit) does not.
        Also advances the per-step exploration schedule.
        """
        ...

    def update(self) -> float | None:
        """One gradient step from the buffer; returns the loss (None when nothing to learn)."""
        ...

    def end_episode(self) -> None:
        """Advance the per-episode exploration schedule."""
        ...

    def set_progress(self, fraction: float) -> None:
        """Fraction of the training budget spent (anneals e.g. prioritized-replay beta)."""
        ...

    def max_q(self, obs: np.ndarray | int) -> float:
        """max_a Q(obs, a): the overestimation probe."""
        ...

    def nonfinite(self) -> str | None:
        """What holds a NaN or inf (e.g. "non-finite Q-table"), None when all is finite.

        Called at each evaluation, so it must stay cheap (one ``isfinite`` pass).
        """
        ...

    def save(self, path: Path) -> Path:
        """Write the model or Q-table under ``path`` (a file stem); return the file written."""
        ...
