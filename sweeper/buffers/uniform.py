"""Uniform experience replay (the DQN default): one ring per member of a population.

In the style of Stable-Baselines3's ``ReplayBuffer``: transitions live in preallocated numpy
arrays used as rings (``pos``/``size``), so adding never allocates and the oldest transition
is overwritten once a ring is full. A population of K agents (``sweeper.population``) keeps
K rings in one set of arrays with a leading member axis: member ``k``'s ring is
``observations[k, :capacity[k]]``, so every member may have its own capacity while one
``take`` gathers the minibatches of all members at once. A single agent is the K=1 case.

Only ``terminated`` is stored: a time-limit truncation is not a true end of the episode, so
its target must still bootstrap from ``next_obs``. Randomness comes from one injected
``np.random.Generator`` per member, so member ``k`` samples exactly what it would alone.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt


class ReplaySamples(NamedTuple):
    """Minibatches of m members (leading axis); every buffer returns this type so the agent
    has one code path."""

    observations: np.ndarray  # (m, B, *obs_shape) float32
    actions: np.ndarray  # (m, B) int64
    rewards: np.ndarray  # (m, B) float32
    next_observations: np.ndarray  # (m, B, *obs_shape) float32
    terminated: np.ndarray  # (m, B) float32, 1.0 where the episode terminated (not truncated)
    weights: np.ndarray  # (m, B) float32 importance-sampling weights (ones when uniform)
    indices: np.ndarray  # (m, B) int64 positions in each member's ring, for priority updates


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


def per_member(name: str, value: Any, members: int) -> list[Any]:
    """``value`` for each of ``members`` members: a scalar is shared, a sequence is one value
    per member (ValueError naming the key ``name`` when its length is wrong)."""
    if isinstance(value, str) or not isinstance(value, Sequence | np.ndarray):
        return [value] * members
    values = list(value)
    if len(values) != members:
        raise ValueError(f"{name}: {len(values)} values for {members} members")
    return values


def as_rngs(rng: np.random.Generator | Sequence[np.random.Generator]) -> list[np.random.Generator]:
    if isinstance(rng, np.random.Generator):
        rngs = [rng]
    elif isinstance(rng, Sequence | np.ndarray):
        rngs = list(rng)
    else:
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    for r in rngs:
        if not isinstance(r, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(r).__name__}")
    if not rngs:
        raise ValueError("a replay buffer needs at least one member (one rng)")
    return rngs


class UniformReplayBuffer:
    """Fixed-capacity rings of transitions sampled uniformly with replacement (like SB3).

    ``rng``: one generator per member (a single generator: one member). ``capacity``: one
    value for all members or one per member. ``batch_size`` is shared (it sets the shapes).
    """

    def __init__(
        self,
        capacity: int | Sequence[int],
        batch_size: int,
        obs_shape: int | Sequence[int],
        rng: np.random.Generator | Sequence[np.random.Generator],
        obs_dtype: npt.DTypeLike = np.float32,
    ) -> None:
        self.rngs = as_rngs(rng)
        self.members = k = len(self.rngs)
        self.batch_size = _positive_int("batch_size", batch_size)
        caps = [_positive_int("capacity", c) for c in per_member("buffer.capacity", capacity, k)]
        for c in caps:
            if c < self.batch_size:
                raise ValueError(
                    f"buffer.capacity ({c}) must be >= buffer.batch_size ({self.batch_size})"
                )
        self.capacity = np.array(caps, dtype=np.int64)
        self.obs_shape = _as_shape(obs_shape)
        self.obs_dtype = np.dtype(obs_dtype)
        self.pos = np.zeros(k, dtype=np.int64)
        self.size = np.zeros(k, dtype=np.int64)
        self._unit_weights = np.ones((0, self.batch_size), dtype=np.float32)
        self._allocate()

    def _allocate(self) -> None:
        k, n, shape = self.members, int(self.capacity.max()), self.obs_shape
        self.observations = np.zeros((k, n, *shape), dtype=self.obs_dtype)
        # A separate next_obs array (SB3's default, optimize_memory_usage=False) keeps
        # episode boundaries trivially correct at twice the observation memory.
        self.next_observations = np.zeros((k, n, *shape), dtype=self.obs_dtype)
        self.actions = np.zeros((k, n), dtype=np.int64)
        self.rewards = np.zeros((k, n), dtype=np.float32)
        self.terminated = np.zeros((k, n), dtype=np.float32)
        # Flat views: row k * n + i is member k's slot i, so one take serves all members.
        self._flat = [
            a.reshape(k * n, *a.shape[2:])
            for a in (
                self.observations,
                self.next_observations,
                self.actions,
                self.rewards,
                self.terminated,
            )
        ]
        self._row0 = np.arange(k, dtype=np.int64) * n

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._flat)

    def __len__(self) -> int:
        """Transitions held by member 0 (the single-agent case); see :attr:`size`."""
        return int(self.size[0])

    def can_sample(self, members: np.ndarray) -> np.ndarray:
        """Per member of ``members``: does its ring hold a whole batch?"""
        return self.size[members] >= self.batch_size

    def add(
        self,
        members: np.ndarray,
        obs: npt.ArrayLike,
        actions: npt.ArrayLike,
        rewards: npt.ArrayLike,
        next_obs: npt.ArrayLike,
        terminated: npt.ArrayLike,
    ) -> None:
        """Store one transition for each of ``members`` (a leading axis on every field) at its
        ring's ``pos``, overwriting the member's oldest transition once its ring is full."""
        obs = np.asarray(obs)
        next_obs = np.asarray(next_obs)
        want = (len(members), *self.obs_shape)
        # Without this check numpy would silently broadcast e.g. a scalar into every slot.
        if obs.shape != want or next_obs.shape != want:
            raise ValueError(
                f"observation shape {obs.shape}/{next_obs.shape} does not match "
                f"(members, *obs_shape) = {want}"
            )
        pos = self.pos[members]
        rows = self._row0[members] + pos  # one flat row index serves the five arrays
        flat_obs, flat_next, flat_actions, flat_rewards, flat_terminated = self._flat
        flat_obs[rows] = obs
        flat_next[rows] = next_obs
        flat_actions[rows] = actions
        flat_rewards[rows] = rewards
        flat_terminated[rows] = terminated
        self._on_add(members, pos)
        cap = self.capacity[members]
        nxt = pos + 1
        nxt[nxt == cap] = 0
        self.pos[members] = nxt
        self.size[members] = np.minimum(self.size[members] + 1, cap)

    def _on_add(self, members: np.ndarray, positions: np.ndarray) -> None:
        """Hook for subclasses (priority of the new transitions)."""

    def _check_nonempty(self, members: np.ndarray) -> None:
        if (self.size[members] == 0).any():
            raise RuntimeError("cannot sample from an empty replay buffer")

    def _gather(
        self, members: np.ndarray, indices: np.ndarray, weights: np.ndarray
    ) -> ReplaySamples:
        # take() copies, so callers may keep the batch safely; reusing output arrays here
        # would alias earlier batches. (take is ~4x faster than a[idx].)
        rows = indices + self._row0[members, None]
        obs, next_obs, actions, rewards, terminated = (a.take(rows, axis=0) for a in self._flat)
        if obs.dtype != np.float32:  # e.g. uint8 pixels; scaling is the agent's business
            obs, next_obs = obs.astype(np.float32), next_obs.astype(np.float32)
        return ReplaySamples(obs, actions, rewards, next_obs, terminated, weights, indices)

    def sample(self, members: np.ndarray) -> ReplaySamples:
        """``batch_size`` transitions per member, drawn uniformly with replacement from its
        own ring with its own generator; weights are ones.

        An index is ``floor(u * size)`` for a uniform ``u`` in [0, 1): one ``random`` call
        per member (``Generator.integers`` costs seven times as much at batch 64, per member
        per update); the bias of the float product is below 2**-40 for any ring size here.
        """
        self._check_nonempty(members)
        indices = np.empty((len(members), self.batch_size))
        for row, k in enumerate(members.tolist()):
            self.rngs[k].random(out=indices[row])
        indices *= self.size[members][:, None]
        indices = indices.astype(np.int64)
        return self._gather(members, indices, self._ones(len(members)))

    def _ones(self, m: int) -> np.ndarray:
        """Unit importance weights for ``m`` members (one array, shared by every batch: nothing
        writes to a batch's weights; writeable, so the compiled update sees one array type
        for uniform and prioritized replay and is compiled once)."""
        ones = self._unit_weights
        if ones.shape[0] != m:
            ones = self._unit_weights = np.ones((m, self.batch_size), dtype=np.float32)
        return ones

    def update_priorities(
        self, members: np.ndarray, indices: np.ndarray, td_errors: np.ndarray
    ) -> None:
        """No-op: uniform replay has no priorities (kept so the agent has one code path)."""

    def set_progress(self, members: np.ndarray, fractions: np.ndarray) -> None:
        """No-op: nothing to anneal in uniform replay."""

    def reset_member(self, member: int, rng: np.random.Generator, **params: Any) -> None:
        """Empty member ``member``'s ring and give it a new generator (a population slot that
        takes a new trial). ``params`` may set its ``capacity`` (the rings grow when it is larger
        than what they hold)."""
        unknown = set(params) - {"capacity"}
        if unknown:
            raise TypeError(f"unexpected buffer parameters {sorted(unknown)}")
        if "capacity" in params:
            cap = _positive_int("capacity", params.pop("capacity"))
            if cap < self.batch_size:
                raise ValueError(
                    f"buffer.capacity ({cap}) must be >= buffer.batch_size ({self.batch_size})"
                )
            allocated = self.observations.shape[1]
            self.capacity[member] = cap
            if cap > allocated:  # the rings grow; the other members' transitions stay
                old = [a.copy() for a in self._flat]
                self._allocate()
                for new, kept in zip(self._flat, old, strict=True):
                    new.reshape(self.members, -1, *new.shape[1:])[:, :allocated] = kept.reshape(
                        self.members, allocated, *kept.shape[1:]
                    )
        self.rngs[member] = rng
        self.pos[member] = self.size[member] = 0

    def __repr__(self) -> str:
        if not hasattr(self, "actions"):  # failed construction (shown in tracebacks)
            return f"<{type(self).__name__} (not initialized)>"
        return (
            f"{type(self).__name__}(members={self.members}, capacity={self.capacity.tolist()}, "
            f"batch_size={self.batch_size}, obs_shape={self.obs_shape})"
        )
