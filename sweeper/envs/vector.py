"""K environments stepped together, each bit-identical to its scalar ``make_env`` twin.

A population engine trains K agents in lockstep in one process; stepping K envs one Python
call at a time would dominate its loop. The classes here step them as one, and keep the one
property the engine relies on: sub-env ``k`` is bit-identical, step for step, to a scalar env
from :func:`~sweeper.envs.factory.make_env` given the same reset seeds and actions, so a
population run reproduces K independent runs exactly.

That rules out Gymnasium's own vector envs: its native ones (``CartPoleVectorEnv`` ...) draw
all sub-envs' starts from one shared generator and autoreset, so sub-env ``k`` follows no
scalar env. Here every sub-env owns its generator (``gymnasium.utils.seeding.np_random``, as
``gymnasium.Env.reset`` makes it), resets are manual (the engine decides when and with what
seed; no autoreset), and the ``TimeLimit`` is counted per sub-env.

- :class:`VectorCartPoleSimple`, :class:`VectorGridWorld`: numpy over the stepped sub-envs.
- :class:`SyncVectorEnv`: K scalar envs in a loop; any other id, and CartPoleSimple with few
  sub-envs, where the loop beats numpy's fixed per-call cost (see ``min_envs``).
"""

from __future__ import annotations

import functools
import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding
from gymnasium.wrappers import OrderEnforcing, TimeLimit

from sweeper.envs.cartpole_simple import CartPoleSimple
from sweeper.envs.factory import make_env
from sweeper.envs.gridworld import ACTION_DELTAS, PERPENDICULAR, GridWorld

__all__ = [
    "SyncVectorEnv",
    "VectorCartPoleSimple",
    "VectorEnv",
    "VectorGridWorld",
    "make_vector_env",
]

CARTPOLE_ID = "sweeper/CartPoleSimple-v0"
GRIDWORLD_ID = "sweeper/GridWorld-v0"


class VectorEnv(ABC):
    """K sub-envs with manual, per-sub-env resets and no autoreset.

    ``reset(indices, seeds)`` and ``step(actions, indices)`` touch only the sub-envs at
    ``indices``; outputs are aligned with ``indices``. Observations have the Box's dtype
    (float32 for our envs) and shape ``(n, *obs_shape)``, or are ``int64`` of shape ``(n,)``
    for a Discrete space; rewards ``float64``; terminated and truncated ``bool``. Stepping a
    sub-env that was never reset raises ``gymnasium.error.ResetNeeded``; stepping one that
    is done goes on as the scalar env would (and keeps truncating, as ``TimeLimit`` does).
    """

    num_envs: int
    single_observation_space: spaces.Space
    single_action_space: spaces.Discrete
    #: The ``TimeLimit`` of every sub-env (truncated once ``elapsed >= max_episode_steps``).
    max_episode_steps: int | None

    def __init__(
        self,
        num_envs: int,
        observation_space: spaces.Space,
        action_space: spaces.Discrete,
        max_episode_steps: int | None,
    ) -> None:
        self.num_envs = num_envs
        self.single_observation_space = observation_space
        self.single_action_space = action_space
        self.max_episode_steps = max_episode_steps
        self.closed = False
        self._was_reset = np.zeros(num_envs, dtype=bool)
        self._all_reset = False  # cached self._was_reset.all(), for the hot step(actions)
        if isinstance(observation_space, spaces.Discrete):
            self._obs_dtype: np.dtype = np.dtype(np.int64)
            self._obs_shape: tuple[int, ...] = ()
        else:
            assert isinstance(observation_space, spaces.Box)
            self._obs_dtype = np.dtype(observation_space.dtype)
            self._obs_shape = tuple(observation_space.shape)

    def reset(self, indices: np.ndarray, seeds: Sequence[int | None]) -> np.ndarray:
        """Reset the sub-envs at ``indices``; ``seeds[j]`` reseeds ``indices[j]``'s generator
        (``None`` continues it, as ``env.reset()`` vs ``env.reset(seed=s)``). Returns their
        observations."""
        idx = self._check_indices(indices)
        seeds = list(seeds)
        if len(seeds) != len(idx):
            raise ValueError(f"got {len(seeds)} seeds for {len(idx)} indices")
        seeds = [None if s is None else operator.index(s) for s in seeds]
        obs = self._reset(idx, seeds)
        if not self._all_reset:
            self._was_reset[idx] = True
            self._all_reset = bool(self._was_reset.all())
        return obs

    def step(
        self, actions: np.ndarray, indices: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step the sub-envs at ``indices`` (all when None) with ``actions`` (aligned with
        them). Returns ``(obs, rewards, terminated, truncated)`` of those sub-envs."""
        idx = None if indices is None else self._check_indices(indices)
        n = self.num_envs if idx is None else len(idx)
        if not (self._all_reset if idx is None else self._was_reset[idx].all()):
            never = np.flatnonzero(~self._was_reset)
            if idx is not None:
                never = np.intersect1d(never, idx)
            raise ResetNeeded(
                f"sub-envs {never.tolist()} were never reset; call reset(indices, seeds) first"
            )
        acts = np.asarray(actions)
        if acts.shape != (n,):
            raise ValueError(f"actions must have shape ({n},), got {acts.shape}")
        if n and acts.dtype.kind not in "iu":
            raise ValueError(f"actions must be integers, got dtype {acts.dtype}")
        acts = acts.astype(np.int64, copy=False)
        # Negative actions wrap to huge unsigned ones: one comparison checks both bounds.
        if n and (acts.astype(np.uint64) >= self.single_action_space.n).any():
            raise ValueError(
                f"actions must lie in 0..{self.single_action_space.n - 1}, got {acts.tolist()}"
            )
        return self._step(acts, idx)

    def close(self) -> None:
        """Release resources (nothing to release for the numpy classes)."""
        self.closed = True

    def __enter__(self) -> VectorEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_envs={self.num_envs})"

    # ---- for subclasses ----
    @abstractmethod
    def _reset(self, idx: np.ndarray, seeds: list[int | None]) -> np.ndarray: ...

    @abstractmethod
    def _step(
        self, actions: np.ndarray, idx: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...

    def _check_indices(self, indices: np.ndarray) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.ndim != 1:
            raise ValueError(f"indices must be a 1-D integer array, got shape {idx.shape}")
        if idx.size == 0:
            return idx.astype(np.intp)
        if idx.dtype.kind not in "iu":
            raise ValueError(f"indices must be integers, got dtype {idx.dtype}")
        if idx.min() < 0 or idx.max() >= self.num_envs:
            raise ValueError(f"indices must lie in 0..{self.num_envs - 1}, got {idx.tolist()}")
        seen = np.zeros(self.num_envs, dtype=bool)
        seen[idx] = True
        if np.count_nonzero(seen) != idx.size:
            raise ValueError(f"indices must be distinct, got {idx.tolist()}")
        return idx.astype(np.intp, copy=False)

    def _empty_obs(self) -> np.ndarray:
        return np.empty((0, *self._obs_shape), dtype=self._obs_dtype)


class _NumpyVectorEnv(VectorEnv):
    """Per-sub-env generators and ``TimeLimit`` counters, shared by the numpy classes."""

    env_id: str
    #: :func:`make_vector_env` uses this class from this many sub-envs on, a loop of scalar
    #: envs below (measured; both give identical results).
    min_envs: int

    def __init__(self, num_envs: int, max_episode_steps: int | None, **kwargs: Any) -> None:
        num_envs = _check_num_envs(num_envs)
        # One scalar env validates id, kwargs and limit exactly as make_env does.
        proto = make_env(self.env_id, max_episode_steps=max_episode_steps, **kwargs)
        try:
            limit = _time_limit(proto)
            self._init_from(proto.unwrapped)
            super().__init__(num_envs, proto.observation_space, proto.action_space, limit)
        finally:
            proto.close()
        #: Each sub-env's generator, as ``gymnasium.Env.np_random`` (None before its first
        #: reset; an unseeded first reset draws one from entropy, as the scalar env does).
        self.np_randoms: list[np.random.Generator | None] = [None] * num_envs
        self._elapsed = np.zeros(num_envs, dtype=np.int64)

    @abstractmethod
    def _init_from(self, env: gymnasium.Env) -> None:
        """Copy what stepping needs from the validated scalar env."""

    def _reseed(self, idx: np.ndarray, seeds: list[int | None]) -> list[np.random.Generator]:
        """Seed/continue each sub-env's generator exactly as ``gymnasium.Env.reset`` does, and
        restart its step counter; returns the generators aligned with ``idx``."""
        rngs = []
        for k, seed in zip(idx.tolist(), seeds):
            if seed is not None or self.np_randoms[k] is None:
                self.np_randoms[k] = seeding.np_random(seed)[0]
            rngs.append(self.np_randoms[k])
        self._elapsed[idx] = 0
        return rngs

    def _truncated(self, idx: np.ndarray | None) -> np.ndarray:
        """Count one step for the stepped sub-envs; ``TimeLimit``'s truncation flag."""
        if idx is None:
            self._elapsed += 1
            elapsed = self._elapsed
        else:
            self._elapsed[idx] += 1
            elapsed = self._elapsed[idx]
        if self.max_episode_steps is None:
            return np.zeros(elapsed.shape, dtype=bool)
        return elapsed >= self.max_episode_steps


# ---------------------------------------------------------------- CartPoleSimple
@functools.cache
def _numpy_math_matches_python() -> bool:
    """Whether ``np.cos``, ``np.sin`` and ``np.float_power(v, 2.0)`` give the bits of
    ``math.cos``, ``math.sin`` and Python's ``v**2`` (CPython: libm ``pow(|v|, 2.0)``).

    Measured on the development machine (numpy 2.4, glibc, AVX-512): float64 ``np.cos`` and
    ``np.sin`` call libm like ``math`` and matched on every input tried, but ``v**2`` is NOT
    ``v*v`` (what ``arr**2`` and ``np.power(arr, 2)`` compute) on ~0.08% of inputs: libm's
    ``pow`` is not always correctly rounded, and one differing bit grows into a different
    trajectory. ``np.float_power`` calls libm ``pow`` and matched everywhere, negative ``v``
    included. Other numpy builds may use SIMD kernels instead, so this is checked once on a
    sample; where anything differs, the numpy class computes the three per element with
    ``math`` (slower, still exact).
    """
    rng = np.random.default_rng(0)
    v = np.concatenate(
        [rng.uniform(-0.3, 0.3, 8192), rng.uniform(-20.0, 20.0, 8192), [0.0, -0.0, 1.0, -1.0]]
    )
    py = v.tolist()
    return (
        np.array_equal(np.cos(v), [math.cos(u) for u in py])
        and np.array_equal(np.sin(v), [math.sin(u) for u in py])
        and np.array_equal(_float_power_square(v), [u**2 for u in py])
    )


def _by_element(fn: Callable[[float], float]) -> Callable[[np.ndarray], np.ndarray]:
    def apply(a: np.ndarray) -> np.ndarray:
        return np.fromiter(map(fn, a.tolist()), dtype=np.float64, count=a.size)

    return apply


def _float_power_square(a: np.ndarray) -> np.ndarray:
    return np.float_power(a, 2.0)


def _python_square(v: float) -> float:
    return v**2


def _exact_math() -> tuple[Callable[[np.ndarray], np.ndarray], ...]:
    """(cos, sin, square) over float64 arrays with the bits of the scalar env's Python math."""
    if _numpy_math_matches_python():
        return np.cos, np.sin, _float_power_square
    return _by_element(math.cos), _by_element(math.sin), _by_element(_python_square)


class VectorCartPoleSimple(_NumpyVectorEnv):
    """:class:`~sweeper.envs.CartPoleSimple`, the physics as numpy over the stepped sub-envs.

    The float64 state and every operation follow the scalar env's Python-float code in the
    same order (IEEE double either way), so results are bit-identical; only ``cos``, ``sin``
    and ``**2`` needed care (see :func:`_numpy_math_matches_python`).
    """

    env_id = CARTPOLE_ID
    # A step is ~35 ufunc calls, ~25 us whatever K; a scalar step through its wrappers ~4 us
    # (2-core dev VM: numpy/loop 31/11 us per call at K=1, 35/33 at 8, 47/76 at 16).
    min_envs = 8

    def __init__(
        self, num_envs: int, *, max_episode_steps: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(num_envs, max_episode_steps, **kwargs)
        # Rows x, x_dot, theta, theta_dot (contiguous per variable); columns sub-envs.
        self._state = np.zeros((4, self.num_envs), dtype=np.float64)
        self._cos, self._sin, self._square = _exact_math()

    def _init_from(self, env: gymnasium.Env) -> None:
        if not isinstance(env, CartPoleSimple):
            raise TypeError(f"{self.env_id} built a {type(env).__name__}, not CartPoleSimple")
        self._phys = env  # class constants only: gravity, masses, length, force_mag, tau ...
        self._forces = np.array([-env.force_mag, env.force_mag])  # by action: left, right

    @property
    def state(self) -> np.ndarray:
        """``(num_envs, 4)`` float64 copy of (x, x_dot, theta, theta_dot), as the scalar
        env's ``state``."""
        return self._state.T.copy()

    @state.setter
    def state(self, value: np.ndarray) -> None:
        """Set every sub-env's state (tests), as assigning the scalar env's ``state``."""
        value = np.asarray(value, dtype=np.float64)
        if value.shape != (self.num_envs, 4):
            raise ValueError(f"state must have shape ({self.num_envs}, 4), got {value.shape}")
        self._state[:] = value.T

    def _reset(self, idx: np.ndarray, seeds: list[int | None]) -> np.ndarray:
        rngs = self._reseed(idx, seeds)
        if not rngs:
            return self._empty_obs()
        starts = np.stack([rng.uniform(-0.05, 0.05, size=4) for rng in rngs])  # (n, 4)
        self._state[:, idx] = starts.T
        return starts.astype(np.float32)

    def _step(
        self, actions: np.ndarray, idx: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        p = self._phys
        s = self._state if idx is None else self._state[:, idx]  # a copy when indexed
        x, x_dot, theta, theta_dot = s  # row views, updated in place below
        force = self._forces[actions]  # actions are 0 or 1, checked by step
        cos_theta = self._cos(theta)
        sin_theta = self._sin(theta)

        # Same expressions, same association, as CartPoleSimple.step.
        temp = (force + p.polemass_length * self._square(theta_dot) * sin_theta) / p.total_mass
        theta_acc = (p.gravity * sin_theta - cos_theta * temp) / (
            p.length * (4.0 / 3.0 - p.masspole * self._square(cos_theta) / p.total_mass)
        )
        x_acc = temp - p.polemass_length * theta_acc * cos_theta / p.total_mass

        # Each row reads only its own old value and the other rows' old values in order.
        x += p.tau * x_dot
        x_dot += p.tau * x_acc
        theta += p.tau * theta_dot
        theta_dot += p.tau * theta_acc
        if idx is not None:
            self._state[:, idx] = s

        terminated = (np.abs(x) > p.x_threshold) | (np.abs(theta) > p.theta_threshold)
        rewards = np.logical_not(terminated).astype(np.float64)  # 0.0 on the failing step
        obs = s.T.astype(np.float32, order="C")
        return obs, rewards, terminated, self._truncated(idx)


# ---------------------------------------------------------------- GridWorld
class VectorGridWorld(_NumpyVectorEnv):
    """:class:`~sweeper.envs.GridWorld` for any layout it accepts, as table look-ups.

    The validated scalar env gives the layout; moves, rewards, terminations and observations
    become per-cell tables, so a step is a few fancy indexings. Slips are drawn from each
    sub-env's generator in the scalar order (``random() < slip``, then ``integers(2)`` only
    when slipping), in a Python loop: the draws are sequential per generator anyway.
    ``reset(options={"start": ...})`` (exploring starts) has no counterpart here.
    """

    env_id = GRIDWORLD_ID
    # Table look-ups make a step ~8 us + ~0.6 us per sub-env (slip draws): numpy is no slower
    # than the loop even at K=1 (14.6 vs 16.7 us per call on the 2-core dev VM).
    min_envs = 1

    def __init__(
        self, num_envs: int, *, max_episode_steps: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(num_envs, max_episode_steps, **kwargs)
        self._pos = np.full(self.num_envs, self._start, dtype=np.intp)  # cell index per env

    def _init_from(self, env: gymnasium.Env) -> None:
        if not isinstance(env, GridWorld):
            raise TypeError(f"{self.env_id} built a {type(env).__name__}, not GridWorld")
        self.grid = env  #: the validated scalar env: layout fields and helpers, read only
        size, n = env.size, env.n_states
        self._slip = env.slip
        self._start = env.state_index(*env.start)
        self._perpendicular = np.array(PERPENDICULAR, dtype=np.int64)
        self._next = np.empty((n, len(ACTION_DELTAS)), dtype=np.intp)
        self._rewards = np.full(n, env.step_reward, dtype=np.float64)
        self._terminal = np.zeros(n, dtype=bool)
        for row in range(size):
            for col in range(size):
                cell = env.state_index(row, col)
                for move, (dr, dc) in enumerate(ACTION_DELTAS):
                    r, c = row + dr, col + dc
                    inside = 0 <= r < size and 0 <= c < size and (r, c) not in env.walls
                    self._next[cell, move] = env.state_index(r, c) if inside else cell
        # The scalar step checks the goal first, then the traps (they are disjoint anyway).
        for r, c in env.traps:
            self._rewards[env.state_index(r, c)] = env.trap_reward
            self._terminal[env.state_index(r, c)] = True
        self._rewards[env.state_index(*env.goal)] = env.goal_reward
        self._terminal[env.state_index(*env.goal)] = True
        # Observation of every cell, with the scalar _obs arithmetic.
        cells = np.arange(n)
        if env.obs_mode == "index":
            self._obs_table = cells.astype(np.int64)
        elif env.obs_mode == "onehot":
            self._obs_table = np.eye(n, dtype=np.float32)
        else:
            scale = size - 1
            rows, cols = divmod(cells, size)
            self._obs_table = np.stack([rows / scale, cols / scale], axis=1).astype(np.float32)

    def _reset(self, idx: np.ndarray, seeds: list[int | None]) -> np.ndarray:
        self._reseed(idx, seeds)
        self._pos[idx] = self._start
        return self._obs_table[self._pos[idx]]

    def _step(
        self, actions: np.ndarray, idx: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        moves = actions.copy()
        slip = self._slip
        if slip > 0.0:
            envs = range(self.num_envs) if idx is None else idx.tolist()
            rngs = self.np_randoms
            perpendicular = self._perpendicular
            for j, k in enumerate(envs):
                rng = rngs[k]
                if rng.random() < slip:
                    moves[j] = perpendicular[moves[j], int(rng.integers(2))]
        if idx is None:
            pos = self._pos = self._next[self._pos, moves]
        else:
            pos = self._next[self._pos[idx], moves]
            self._pos[idx] = pos
        obs = self._obs_table[pos]
        return obs, self._rewards[pos], self._terminal[pos], self._truncated(idx)


# ---------------------------------------------------------------- any id
class SyncVectorEnv(VectorEnv):
    """K scalar ``make_env`` envs in a Python loop: every other id, and small K.

    Identical to the scalar envs by construction; outputs are stacked in the observation
    space's dtype (``int64`` for Discrete).
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        *,
        max_episode_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        num_envs = _check_num_envs(num_envs)
        self.env_id = env_id
        self.envs: list[gymnasium.Env] = []
        try:
            for _ in range(num_envs):
                self.envs.append(make_env(env_id, max_episode_steps=max_episode_steps, **kwargs))
        except BaseException:
            self.close()
            raise
        first = self.envs[0]
        super().__init__(
            num_envs, first.observation_space, first.action_space, _time_limit(first, strict=False)
        )

    def _reset(self, idx: np.ndarray, seeds: list[int | None]) -> np.ndarray:
        if not idx.size:
            return self._empty_obs()
        envs = self.envs
        return np.array(
            [envs[k].reset(seed=s)[0] for k, s in zip(idx.tolist(), seeds)], dtype=self._obs_dtype
        )

    def _step(
        self, actions: np.ndarray, idx: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        envs = self.envs if idx is None else [self.envs[k] for k in idx.tolist()]
        if not envs:
            empty = np.empty(0, dtype=bool)
            return self._empty_obs(), np.empty(0), empty, empty.copy()
        obs, rewards, terminated, truncated = [], [], [], []
        for env, action in zip(envs, actions.tolist()):
            o, r, term, trunc, _ = env.step(action)
            obs.append(o)
            rewards.append(r)
            terminated.append(term)
            truncated.append(trunc)
        return (
            np.array(obs, dtype=self._obs_dtype),
            np.array(rewards, dtype=np.float64),
            np.array(terminated, dtype=bool),
            np.array(truncated, dtype=bool),
        )

    def close(self) -> None:
        for env in self.envs:
            env.close()
        super().close()


# ---------------------------------------------------------------- factory
_NUMPY_CLASSES: dict[str, type[_NumpyVectorEnv]] = {
    CARTPOLE_ID: VectorCartPoleSimple,
    GRIDWORLD_ID: VectorGridWorld,
}


def make_vector_env(
    env_id: str, num_envs: int, *, max_episode_steps: int | None = None, **kwargs: Any
) -> VectorEnv:
    """``num_envs`` copies of ``make_env(env_id, max_episode_steps=..., **kwargs)`` as one
    :class:`VectorEnv`: a numpy class for our ids from its ``min_envs`` sub-envs on, a loop of
    scalar envs otherwise. Raises ValueError naming ``env_id`` as ``make_env`` does."""
    num_envs = _check_num_envs(num_envs)
    cls = _NUMPY_CLASSES.get(env_id)
    if cls is not None and num_envs >= cls.min_envs:
        return cls(num_envs, max_episode_steps=max_episode_steps, **kwargs)
    return SyncVectorEnv(env_id, num_envs, max_episode_steps=max_episode_steps, **kwargs)


def _check_num_envs(num_envs: int) -> int:
    if isinstance(num_envs, bool) or operator.index(num_envs) < 1:
        raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
    return operator.index(num_envs)


def _time_limit(env: gymnasium.Env, *, strict: bool = True) -> int | None:
    """The ``TimeLimit`` of a ``make_env`` env (None without one). ``strict``: any wrapper
    besides TimeLimit and OrderEnforcing is an error, since a numpy class would skip it."""
    limit = None
    while isinstance(env, gymnasium.Wrapper):
        if isinstance(env, TimeLimit):
            limit = env._max_episode_steps
        elif strict and not isinstance(env, OrderEnforcing):
            raise ValueError(f"unexpected wrapper {type(env).__name__} around {env.unwrapped}")
        env = env.env
    return limit
