"""The interface every agent population offers to the training loop.

The loop (``sweeper.training.Population``) only talks to agents through this protocol, so
tabular agents (which learn online from each transition) and replay-based agents (which learn
in ``update``) share one loop. An agent object holds K members of one kind (``size``); every
method takes ``members``, a sorted array of distinct member indices, and arrays with one row
per member. A single agent is K=1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Agent(Protocol):
    #: True when the members learn in ``update()`` from replay (DQN); False when they learn
    #: online inside ``observe()`` (tabular TD control).
    learns_from_replay: bool
    #: K, the number of members.
    size: int
    #: Each member's discount (the evaluation's discounted return uses it).
    gamma: np.ndarray

    def epsilon(self, members: np.ndarray) -> np.ndarray:
        """Current exploration rate of each member."""
        ...

    def act(self, obs: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Epsilon-greedy actions (one per member) and the Q-values of ``obs`` they were
        chosen from (the max-Q probe reads them)."""
        ...

    def greedy_q(self, obs: np.ndarray, members: np.ndarray) -> np.ndarray:
        """Q-values of a batch of observations per member, (m, E, ...) -> (m, E, actions):
        greedy evaluation."""
        ...

    def observe(
        self,
        members: np.ndarray,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> np.ndarray | None:
        """Record one transition per member. Tabular agents update here and return the
        squared TD errors. ``terminated`` cuts the bootstrap; ``truncated`` (time limit) does
        not. Also advances the per-step exploration schedule."""
        ...

    def update(self, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One gradient step per member from its replay ring: the losses and which members
        learned (a ring that holds less than a batch does not)."""
        ...

    def end_episode(self, members: np.ndarray) -> None:
        """Advance the per-episode exploration schedule."""
        ...

    def set_progress(self, members: np.ndarray, fractions: np.ndarray) -> None:
        """Fraction of each member's budget spent (anneals e.g. prioritized-replay beta)."""
        ...

    def nonfinite(self, member: int) -> str | None:
        """What of ``member`` holds a NaN or inf (e.g. "non-finite Q-table"), None when all
        is finite. Called at each evaluation, so it must stay cheap."""
        ...

    def reset_member(self, member: int, *args: Any, **hyperparameters: Any) -> None:
        """Make ``member`` a fresh agent (a population slot taking a new trial)."""
        ...

    def save(self, member: int, path: Path) -> Path:
        """Write ``member``'s model or Q-table under ``path`` (a file stem); return the file."""
        ...

    def nbytes(self) -> int:
        """Bytes held in the members' arrays (networks, optimizer state, replay rings)."""
        ...
