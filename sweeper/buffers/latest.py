"""The "no replay" ablation: learn from the most recent transition only (online DQN).

It keeps the replay-buffer interface so the DQN agent needs no special case: ``sample()``
always returns each member's last transition (a batch of one), with weight 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from sweeper.buffers.uniform import (
    ReplaySamples,
    UniformReplayBuffer,
    _positive_int,
    as_rngs,
    per_member,
)


class LatestTransitionBuffer(UniformReplayBuffer):
    """One slot per member; ``capacity``/``batch_size`` are validated but otherwise ignored.

    Sweeps can thus switch ``buffer`` to this class without touching ``capacity`` or
    ``batch_size``: the effective values are always 1 (``requested_capacity`` and
    ``requested_batch_size`` keep what was asked for). ``rng`` only counts the members:
    sampling is deterministic.
    """

    def __init__(
        self,
        capacity: int | Sequence[int] = 1,
        batch_size: int = 1,
        obs_shape: int | Sequence[int] = (),
        rng: np.random.Generator | Sequence[np.random.Generator] | None = None,
        obs_dtype: npt.DTypeLike = np.float32,
    ) -> None:
        rngs = as_rngs(np.random.default_rng(0) if rng is None else rng)
        self.requested_capacity = [
            _positive_int("capacity", c) for c in per_member("buffer.capacity", capacity, len(rngs))
        ]
        self.requested_batch_size = _positive_int("batch_size", batch_size)
        super().__init__(1, 1, obs_shape, rngs, obs_dtype)

    def sample(self, members: np.ndarray) -> ReplaySamples:
        """Each member's last transition, as a batch of one."""
        self._check_nonempty(members)
        indices = np.zeros((len(members), 1), dtype=np.int64)
        return self._gather(members, indices, np.ones(indices.shape, dtype=np.float32))

    def reset_member(self, member: int, rng: np.random.Generator, **params: Any) -> None:
        unknown = set(params) - {"capacity"}
        if unknown:
            raise TypeError(f"unexpected buffer parameters {sorted(unknown)}")
        if "capacity" in params:
            self.requested_capacity[member] = _positive_int("capacity", params.pop("capacity"))
        super().reset_member(member, rng)
