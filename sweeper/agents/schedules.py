"""Exploration schedules: the seed's per-episode multiplicative decay and a linear per-step
one, for every member of a population at once."""

from __future__ import annotations

import numpy as np

from sweeper.choices import EpsilonSchedule, names

SCHEDULES = tuple(EpsilonSchedule)


class EpsilonSchedules:
    """epsilon of each member as a pure function of its (env steps, finished episodes).

    kind="exponential": ``max(end, start * decay**episodes)`` (the seed notebook, per episode).
    kind="linear": from ``start`` to ``end`` over ``decay_steps`` env steps, then ``end``.
    """

    def __init__(self, members: int) -> None:
        self.start = np.ones(members)
        self.end = np.full(members, 0.01)
        self.decay = np.full(members, 0.995)
        self.linear = np.zeros(members, dtype=bool)
        self.decay_steps = np.full(members, 10_000.0)
        self.any_linear = False
        #: the exponential schedule's epsilon at each member's current episode count (it
        #: changes only when an episode ends: acting reads it instead of recomputing it)
        self.value = np.ones(members)

    def set_member(
        self,
        member: int,
        start: float = 1.0,
        end: float = 0.01,
        decay: float = 0.995,
        kind: str = EpsilonSchedule.exponential,
        decay_steps: int = 10_000,
    ) -> None:
        if kind not in SCHEDULES:
            raise ValueError(f"epsilon_schedule must be {names(EpsilonSchedule)}, got {kind!r}")
        self.start[member], self.end[member], self.decay[member] = start, end, decay
        self.linear[member] = kind == EpsilonSchedule.linear
        self.any_linear = bool(self.linear.any())
        self.decay_steps[member] = max(1, int(decay_steps))
        self.episodes_ended(np.array([member]), np.zeros(1, dtype=np.int64))

    def episodes_ended(self, members: np.ndarray, episodes: np.ndarray) -> None:
        """``members`` have now finished ``episodes`` episodes: refresh :attr:`value`."""
        self.value[members] = np.maximum(
            self.end[members], self.start[members] * self.decay[members] ** episodes
        )

    def __call__(self, members: np.ndarray, steps: np.ndarray, episodes: np.ndarray) -> np.ndarray:
        start, end = self.start[members], self.end[members]
        eps = np.maximum(end, start * self.decay[members] ** episodes)
        if self.any_linear:
            linear = self.linear[members]
            frac = np.minimum(1.0, steps / self.decay_steps[members])
            eps = np.where(linear, start + frac * (end - start), eps)
        return eps
