"""The tabular agents' per-step work, compiled: epsilon-greedy acting and the TD update of
Q-learning, SARSA and Expected SARSA, for every stepped member of a population in one call.

Why compiled: a step is a handful of scalar operations per member, and numpy's fixed cost per
call (~1 us on one-element arrays, a dozen calls per step) made a K=1 Q-learning step several
times slower than the seed notebook's scalar Python loop. Here :func:`act`, :func:`observe`
and :func:`end_episodes` are one numba call each, whatever K.

Why bit-identical to the numpy code it replaces (``tests/test_tabular.py`` compares both):

- Draws: each member keeps its own ``np.random.Generator``. The kernels call its bit
  generator's C functions (``next_double``, ``next_uint32``; the addresses come from
  ``bit_generator.ctypes``, see :func:`bitgen_pointers`) and draw ``integers(n)`` with
  numpy's algorithm (``random_bounded_uint64_fill``: Lemire's bounded method on 32-bit
  draws), so they consume the generator's stream exactly as ``rng.random()`` and
  ``rng.integers(n)`` do, and leave it in the same state. (numba's own ``Generator`` support
  unboxes a generator through ctypes on every call, ~7 us each, and takes no list of them.)
- Arithmetic: the same float64 operations in the same order (``target = r + gamma * next``,
  ``q += alpha * td``); max and argmax as numpy's (the first NaN wins, ties go to the lowest
  index); Expected SARSA's mean as ``np.mean``: numpy's pairwise sum (``sweeper.agents.pairwise``),
  then the division.
- Epsilon: the linear schedule is recomputed here (a division, a min, a multiply-add, as
  numpy does them); the exponential one is read from ``EpsilonSchedules.value``, which numpy
  computed when the member's episode count last changed: compiled code cannot reproduce
  numpy's float64 ``**`` (SIMD code on AVX-512 machines, not libm's ``pow``).

The kernels do not check array shapes (the agent passes its own arrays, and numba
specializes on the caller's dtypes); member, state and action indices are checked (negative
ones wrap, as numpy's fancy indexing does). Members must be distinct, as the training loop's
are. The kernels hold the GIL but not the bit generator's lock: a generator must not be
drawn from by another thread meanwhile (each member's is its own).
Compiled once per machine (``cache=True``: numba's cache next to this file or in
``NUMBA_CACHE_DIR``); no recursion, which the cache does not take.
"""

from __future__ import annotations

import ctypes

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from sweeper.agents.pairwise import pairwise_sum

#: ``kind`` of the kernels: which next-state value the TD target bootstraps on
Q_LEARNING, SARSA, EXPECTED_SARSA = 0, 1, 2
#: columns of the bit-generator table (:func:`bitgen_pointers`)
STATE, NEXT_UINT32, NEXT_DOUBLE = 0, 1, 2
#: rows of ``params`` (float64, one column per member): the TD step's alpha and gamma, and
#: the epsilon schedule's (``EpsilonSchedules``) exponential value, start, end, decay steps
#: and whether it is linear (1.0) or exponential (0.0)
ALPHA, GAMMA, EPS_VALUE, EPS_START, EPS_END, EPS_DECAY_STEPS, EPS_LINEAR = range(7)
N_PARAMS = 7
#: rows of ``counters`` (int64, one column per member): env steps, and SARSA's cached next
#: action (the state it was drawn for, -1 for none, and the action)
STEPS, NEXT_STATE, NEXT_ACTION = range(3)
N_COUNTERS = 3

_UINT32_MAX = np.uint64(0xFFFFFFFF)


def bitgen_pointers(rng: np.random.Generator) -> tuple[int, int, int]:
    """``(state, next_uint32, next_double)`` addresses of ``rng``'s bit generator, the row
    the kernels draw with; valid while ``rng`` lives (the agent holds it)."""
    iface = rng.bit_generator.ctypes
    return (
        int(iface.state_address),
        int(ctypes.cast(iface.next_uint32, ctypes.c_void_p).value),
        int(ctypes.cast(iface.next_double, ctypes.c_void_p).value),
    )


def _bitgen_call(ret_ir: ir.Type, ret_type: types.Type) -> object:
    """An intrinsic ``(function address, state address) -> ret``: calls a bit generator's
    ``ret (*)(void *state)`` function."""

    @intrinsic
    def call(typingctx, fn, state):
        def codegen(context, builder, signature, args):
            void_p = ir.IntType(8).as_pointer()
            fnty = ir.FunctionType(ret_ir, [void_p])
            target = builder.inttoptr(args[0], fnty.as_pointer())
            return builder.call(target, [builder.inttoptr(args[1], void_p)])

        return ret_type(types.uint64, types.uint64), codegen

    return call


_next_uint32 = _bitgen_call(ir.IntType(32), types.uint32)
_next_double = _bitgen_call(ir.DoubleType(), types.float64)


@njit(cache=True)
def _random(bitgens: np.ndarray, k: int) -> float:
    """Member ``k``'s ``rng.random()``."""
    return _next_double(bitgens[k, NEXT_DOUBLE], bitgens[k, STATE])


@njit(cache=True)
def _integers(bitgens: np.ndarray, k: int, n: int) -> int:
    """Member ``k``'s ``rng.integers(n)`` (``0 < n <= 2**32``), numpy's way: no draw for
    ``n == 1``, one raw 32-bit draw for ``n == 2**32``, else Lemire's rejection method."""
    rng = np.uint64(n - 1)
    if rng == 0:
        return 0
    fn, state = bitgens[k, NEXT_UINT32], bitgens[k, STATE]
    if rng == _UINT32_MAX:
        return np.int64(_next_uint32(fn, state))
    if rng > _UINT32_MAX:
        raise ValueError("the compiled tabular agents take at most 2**32 actions")
    rng_excl = rng + np.uint64(1)
    m = np.uint64(_next_uint32(fn, state)) * rng_excl
    leftover = m & _UINT32_MAX
    if leftover < rng_excl:
        threshold = (_UINT32_MAX - rng) % rng_excl
        while leftover < threshold:
            m = np.uint64(_next_uint32(fn, state)) * rng_excl
            leftover = m & _UINT32_MAX
    return np.int64(m >> np.uint64(32))


@njit(cache=True)
def _argmax(row: np.ndarray) -> int:
    """``np.argmax``: the first maximum, or the first NaN."""
    best, value = 0, row[0]
    if np.isnan(value):
        return 0
    for j in range(1, row.size):
        v = row[j]
        if np.isnan(v):
            return j
        if v > value:
            best, value = j, v
    return best


@njit(cache=True)
def _max(row: np.ndarray) -> float:
    """``row.max()``: NaN if any is NaN (of equal values the later, as numpy's reduction
    returns for ``[0.0, -0.0]`` up to 8 actions; a table that starts at +0.0 never holds -0.0)."""
    value = row[0]
    for j in range(1, row.size):
        v = row[j]
        if v >= value or np.isnan(v):
            value = v
    return value


@njit(cache=True, error_model="numpy")
def _epsilon(k: int, params: np.ndarray, counters: np.ndarray) -> float:
    """Member ``k``'s epsilon, as ``EpsilonSchedules.__call__`` gives it: linear in its
    env steps, else the exponential schedule's value numpy computed at its last episode end."""
    if params[EPS_LINEAR, k] != 0.0:
        frac = counters[STEPS, k] / params[EPS_DECAY_STEPS, k]
        if not frac < 1.0:  # np.minimum(1.0, frac)
            frac = 1.0
        start = params[EPS_START, k]
        return start + frac * (params[EPS_END, k] - start)
    return params[EPS_VALUE, k]


@njit(cache=True)
def _index(i: int, n: int) -> int:
    """``i`` as numpy indexes an axis of size ``n`` (negative wraps), or IndexError."""
    j = i + n if i < 0 else i
    if j < 0 or j >= n:
        raise IndexError("tabular agent: a member, state or action index is out of range")
    return j


@njit(cache=True)
def _explore(q_table: np.ndarray, k: int, s: int, eps: float, bitgens: np.ndarray) -> int:
    """Epsilon-greedy: ``rng.random() < eps`` then ``rng.integers(actions)``, else argmax."""
    if _random(bitgens, k) < eps:
        return _integers(bitgens, k, q_table.shape[2])
    return _argmax(q_table[k, s])


@njit(cache=True, error_model="numpy")
def act(
    kind: int,
    q_table: np.ndarray,
    members: np.ndarray,
    obs: np.ndarray,
    counters: np.ndarray,
    params: np.ndarray,
    bitgens: np.ndarray,
    actions: np.ndarray,
    q: np.ndarray,
) -> None:
    """Epsilon-greedy ``actions`` of ``members`` in states ``obs``, and ``q`` the copies of
    their Q-rows (both outputs, one row per member).

    SARSA (``kind``) first takes the action it cached for that state in :func:`observe`
    (consumed either way); the others ignore the cache.
    """
    n_members, n_states = q_table.shape[0], q_table.shape[1]
    for row in range(members.size):
        k = _index(members[row], n_members)
        s = _index(obs[row], n_states)
        q[row] = q_table[k, s]
        if kind == SARSA:
            cached = counters[NEXT_STATE, k] == obs[row]
            counters[NEXT_STATE, k] = -1
            if cached:
                actions[row] = counters[NEXT_ACTION, k]
                continue
        actions[row] = _explore(q_table, k, s, _epsilon(k, params, counters), bitgens)


@njit(cache=True, error_model="numpy")
def observe(
    kind: int,
    q_table: np.ndarray,
    members: np.ndarray,
    obs: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    next_obs: np.ndarray,
    terminated: np.ndarray,
    truncated: np.ndarray,
    counters: np.ndarray,
    params: np.ndarray,
    bitgens: np.ndarray,
    errors: np.ndarray,
) -> None:
    """One TD update per member (counting its env step first); ``errors`` (output) gets the
    squared TD errors.

    The target bootstraps unless ``terminated``: on ``max Q[s2]`` (Q-learning), on
    ``Q[s2, a2]`` for an epsilon-greedy ``a2`` that is cached for the next :func:`act`
    (SARSA), or on the epsilon-greedy expectation ``eps * mean Q[s2] + (1 - eps) *
    Q[s2, argmax]`` (Expected SARSA). An episode end (terminated or truncated) drops the
    cache. Next values read the table before the member's own update, as numpy's did.
    """
    m = members.size
    n_members, n_states, n_actions = q_table.shape
    for row in range(m):
        counters[STEPS, _index(members[row], n_members)] += 1
    for row in range(m):
        k = _index(members[row], n_members)
        s = _index(obs[row], n_states)
        a = _index(actions[row], n_actions)
        target = float(rewards[row])
        if not terminated[row]:
            s2 = _index(next_obs[row], n_states)
            q2 = q_table[k, s2]
            if kind == Q_LEARNING:
                next_value = _max(q2)
            else:
                eps = _epsilon(k, params, counters)
                if kind == SARSA:
                    a2 = _explore(q_table, k, s2, eps, bitgens)
                    counters[NEXT_STATE, k], counters[NEXT_ACTION, k] = next_obs[row], a2
                    next_value = q2[a2]
                else:
                    mean = pairwise_sum(q2, q2.size) / n_actions
                    next_value = eps * mean + (1.0 - eps) * q2[_argmax(q2)]
            target = target + params[GAMMA, k] * next_value
        if terminated[row] or truncated[row]:
            counters[NEXT_STATE, k] = -1
        td_error = target - q_table[k, s, a]
        q_table[k, s, a] = q_table[k, s, a] + params[ALPHA, k] * td_error
        errors[row] = td_error * td_error


@njit(cache=True)
def end_episodes(members: np.ndarray, episodes: np.ndarray, counters: np.ndarray) -> None:
    """Count an episode of each of ``members`` and drop SARSA's cached next action."""
    n_members = episodes.size
    for row in range(members.size):
        k = _index(members[row], n_members)
        episodes[k] += 1
        counters[NEXT_STATE, k] = -1
