"""Uniform experience replay (the DQN default), in the style of Stable-Baselines3.

Transitions live in preallocated numpy arrays used as a ring (``pos``/``full``), so adding
never allocates and the oldest transition is overwritten once the buffer is full.
Only ``terminated`` is stored: a time-limit truncation is not a true end of the episode, so
its target must still bootstrap from ``next_obs``.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt


class ReplaySamples(NamedTuple):
    """One minibatch; every buffer returns this type so the agent has one code path."""

    observations: np.ndarray  # (B, *obs_shape) float32
    actions: np.ndarray  # (B,) int64
    rewards: np.ndarray  # (B,) float32
    next_observations: np.ndarray  # (B, *obs_shape) float32
    terminated: np.ndarray  # (B,) float32, 1.0 where the episode terminated (not truncated)
    weights: np.ndarray  # (B,) float32 importance-sampling weights (ones when uniform)
    indices: np.ndarray  # (B,) int64 buffer positions, for priority updates


def _positive_int(name: str, value: Any) -> int:
    """Coerce a size hyperparameter to int, rejecting < 1 and non-integral values.

    Hydra/OmegaConf may hand over ``10000.0``; that is accepted, ``10000.5`` is not.
    """
    try:
        as_int = operator.index(value)
    except TypeError:
        if isinstance(value, float) and value.is_integer():
            as_int = int(value)
        else:
            raise ValueError(f"buffer.{name} must be an integer, got {value!r}") from None
    if as_int < 1:
        raise ValueError(f"buffer.{name} must be >= 1, got {as_int}")
    return as_int


def _as_shape(obs_shape: int | Sequence[int]) -> tuple[int, ...]:
    """Accept an int or any sequence (including an OmegaConf ListConfig)."""
    if isinstance(obs_shape, int | np.integer):
        return (int(obs_shape),)
    return tuple(int(d) for d in obs_shape)


class UniformReplayBuffer:
    """Fixed-capacity ring of transitions sampled uniformly with replacement (like SB3)."""

    def __init__(
        self,
        capacity: int,
        batch_size: int,
        obs_shape: tuple[int, ...],
        rng: np.random.Generator,
        obs_dtype: npt.DTypeLike = np.float32,
    ) -> None:
        self.capacity = _positive_int("capacity", capacity)
        self.batch_size = _positive_int("batch_size", batch_size)
        if self.capacity < self.batch_size:
            raise ValueError(
                f"buffer.capacity ({self.capacity}) must be >= "
                f"buffer.batch_size ({self.batch_size})"
            )
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        self.rng = rng
        self.obs_shape = _as_shape(obs_shape)
        self.obs_dtype = np.dtype(obs_dtype)
        self.pos = 0
        self.full = False
        self._allocate()

    def _allocate(self) -> None:
        n, shape = self.capacity, self.obs_shape
        self.observations = np.zeros((n, *shape), dtype=self.obs_dtype)
        # A separate next_obs array (SB3's default, optimize_memory_usage=False) keeps
        # episode boundaries trivially correct at twice the observation memory.
        self.next_observations = np.zeros((n, *shape), dtype=self.obs_dtype)
        self.actions = np.zeros(n, dtype=np.int64)
        self.rewards = np.zeros(n, dtype=np.float32)
        self.terminated = np.zeros(n, dtype=np.float32)

    def __len__(self) -> int:
        return self.capacity if self.full else self.pos

    def can_sample(self) -> bool:
        return len(self) >= self.batch_size

    def add(
        self,
        obs: npt.ArrayLike,
        action: int,
        reward: float,
        next_obs: npt.ArrayLike,
        terminated: bool,
    ) -> None:
        """Store one transition at ``pos``, overwriting the oldest once full."""
        obs = np.asarray(obs)
        next_obs = np.asarray(next_obs)
        # Without this check numpy would silently broadcast e.g. a scalar into every slot.
        if obs.shape != self.obs_shape or next_obs.shape != self.obs_shape:
            raise ValueError(
                f"observation shape {obs.shape}/{next_obs.shape} does not match the "
                f"buffer's obs_shape {self.obs_shape}"
            )
        i = self.pos
        self.observations[i] = obs
        self.next_observations[i] = next_obs
        self.actions[i] = action
        self.rewards[i] = reward
        self.terminated[i] = float(terminated)
        self._on_add(i)
        self.pos = i + 1
        if self.pos == self.capacity:
            self.pos = 0
            self.full = True

    def _on_add(self, index: int) -> None:
        """Hook for subclasses (priority of the new transition)."""

    def _check_nonempty(self) -> None:
        if len(self) == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")

    def _gather(self, indices: np.ndarray, weights: np.ndarray) -> ReplaySamples:
        # take() copies, so callers may keep (or torch.from_numpy) the batch safely; reusing
        # output arrays here would alias earlier batches. (take is ~4x faster than a[idx].)
        obs = self.observations.take(indices, axis=0)
        next_obs = self.next_observations.take(indices, axis=0)
        if obs.dtype != np.float32:  # e.g. uint8 pixels; scaling is the agent's business
            obs, next_obs = obs.astype(np.float32), next_obs.astype(np.float32)
        return ReplaySamples(
            observations=obs,
            actions=self.actions.take(indices),
            rewards=self.rewards.take(indices),
            next_observations=next_obs,
            terminated=self.terminated.take(indices),
            weights=weights,
            indices=indices,
        )

    def sample(self) -> ReplaySamples:
        """``batch_size`` transitions drawn uniformly with replacement; weights are ones."""
        self._check_nonempty()
        indices = self.rng.integers(0, len(self), size=self.batch_size, dtype=np.int64)
        return self._gather(indices, np.ones(self.batch_size, dtype=np.float32))

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """No-op: uniform replay has no priorities (kept so the agent has one code path)."""

    def set_progress(self, fraction: float) -> None:
        """No-op: nothing to anneal in uniform replay."""

    def __repr__(self) -> str:
        if not hasattr(self, "actions"):  # failed construction (shown in tracebacks)
            return f"<{type(self).__name__} (not initialized)>"
        return (
            f"{type(self).__name__}(capacity={self.capacity}, batch_size={self.batch_size}, "
            f"obs_shape={self.obs_shape}, len={len(self)})"
        )
