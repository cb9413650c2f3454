"""The "no replay" ablation: learn from the most recent transition only (online DQN).

It keeps the replay-buffer interface so the DQN agent needs no special case: ``sample()``
always returns exactly the last transition added (a batch of one), with weight 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from sweeper.buffers.uniform import ReplaySamples, UniformReplayBuffer, _positive_int


class LatestTransitionBuffer(UniformReplayBuffer):
    """A one-slot buffer; ``capacity``/``batch_size`` are validated but otherwise ignored.

    Sweeps can thus switch ``buffer`` to this class without touching ``capacity`` or
    ``batch_size``: the effective values are always 1 (``requested_capacity`` and
    ``requested_batch_size`` keep what was asked for). ``obs_shape`` may be omitted, in
    which case storage is allocated from the first observation added. ``rng`` is unused:
    sampling is deterministic.
    """

    def __init__(
        self,
        capacity: int = 1,
        batch_size: int = 1,
        obs_shape: int | Sequence[int] | None = None,
        rng: np.random.Generator | None = None,
        obs_dtype: npt.DTypeLike = np.float32,
    ) -> None:
        self.requested_capacity = _positive_int("capacity", capacity)
        self.requested_batch_size = _positive_int("batch_size", batch_size)
        self._lazy = obs_shape is None
        super().__init__(
            capacity=1,
            batch_size=1,
            obs_shape=() if obs_shape is None else obs_shape,
            rng=np.random.default_rng(0) if rng is None else rng,
            obs_dtype=obs_dtype,
        )

    def add(
        self,
        obs: npt.ArrayLike,
        action: int,
        reward: float,
        next_obs: npt.ArrayLike,
        terminated: bool,
    ) -> None:
        if self._lazy:
            self.obs_shape = np.shape(obs)
            self._allocate()
            self._lazy = False
        super().add(obs, action, reward, next_obs, terminated)

    def sample(self) -> ReplaySamples:
        """The last transition added, as a batch of one."""
        self._check_nonempty()
        return self._gather(np.zeros(1, dtype=np.int64), np.ones(1, dtype=np.float32))
