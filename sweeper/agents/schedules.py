"""Exploration schedules: the seed's per-episode multiplicative decay and a linear per-step one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EpsilonSchedule:
    """epsilon as a pure function of (env steps, finished episodes).

    kind="exponential": ``max(end, start * decay**episodes)`` (the seed notebook, per episode).
    kind="linear": from ``start`` to ``end`` over ``decay_steps`` env steps, then ``end``.
    """

    start: float = 1.0
    end: float = 0.01
    decay: float = 0.995
    kind: str = "exponential"
    decay_steps: int = 10_000

    def __post_init__(self) -> None:
        if self.kind not in ("exponential", "linear"):
            raise ValueError(
                f"epsilon_schedule must be 'exponential' or 'linear', got {self.kind!r}"
            )

    def __call__(self, steps: int, episodes: int) -> float:
        if self.kind == "linear":
            frac = min(1.0, steps / max(1, self.decay_steps))
            return self.start + frac * (self.end - self.start)
        return max(self.end, self.start * self.decay**episodes)
