"""Replay buffers and the sum tree, on real numpy data (no mocks).

Every buffer holds one ring per member of a population (a leading member axis). Most tests
use a single member (K=1, ``members=M0``); the population tests check that members with their
own capacities, generators and PER hyperparameters never influence one another.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sweeper.buffers import (
    LatestTransitionBuffer,
    PrioritizedReplayBuffer,
    ReplaySamples,
    SumTree,
    UniformReplayBuffer,
)

OBS_SHAPE = (3,)
M0 = np.array([0])
FIELDS = ReplaySamples._fields


def transition(i: int, obs_shape: tuple[int, ...] = OBS_SHAPE) -> tuple:
    """A transition whose every field encodes ``i``, so stored rows can be identified."""
    obs = np.full(obs_shape, float(i), dtype=np.float32)
    return obs, i % 4, float(i) / 2, obs + 0.5, i % 3 == 0


def stacked(ids, obs_shape: tuple[int, ...] = OBS_SHAPE) -> tuple:
    """``add`` arguments (after ``members``): transition ``ids[j]`` for the j-th member."""
    obs, actions, rewards, next_obs, terminated = zip(*(transition(i, obs_shape) for i in ids))
    return (
        np.stack(obs),
        np.array(actions),
        np.array(rewards),
        np.stack(next_obs),
        np.array(terminated),
    )


def fill(buffer: UniformReplayBuffer, n: int, start: int = 0, members=M0) -> None:
    """Add transitions ``start .. start+n-1``; member k gets ``i + 1000 * k``."""
    for i in range(start, start + n):
        buffer.add(members, *stacked([i + 1000 * k for k in members], buffer.obs_shape))


def make(cls, capacity: int = 8, batch_size: int = 4, seed: int = 0, **kwargs):
    return cls(capacity, batch_size, OBS_SHAPE, np.random.default_rng(seed), **kwargs)


def rngs(*seeds: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in seeds]


def assert_rows_match_storage(buffer: UniformReplayBuffer, members, s: ReplaySamples) -> None:
    k, i = np.asarray(members)[:, None], s.indices
    np.testing.assert_array_equal(s.observations, buffer.observations[k, i])
    np.testing.assert_array_equal(s.next_observations, buffer.next_observations[k, i])
    np.testing.assert_array_equal(s.actions, buffer.actions[k, i])
    np.testing.assert_array_equal(s.rewards, buffer.rewards[k, i])
    np.testing.assert_array_equal(s.terminated, buffer.terminated[k, i])


def assert_same_samples(a: ReplaySamples, b: ReplaySamples) -> None:
    """Bitwise equality of every field, dtype included."""
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name, strict=True)


def row(s: ReplaySamples, j: int) -> ReplaySamples:
    """Row ``j`` of a population sample, shaped like a K=1 sample."""
    return ReplaySamples(*(field[j : j + 1] for field in s))


def chi_square(counts: np.ndarray, expected_probs: np.ndarray) -> float:
    expected = counts.sum() * expected_probs
    return float(((counts - expected) ** 2 / expected).sum())


# --------------------------------------------------------------------------- ring storage


@pytest.mark.parametrize("cls", [UniformReplayBuffer, PrioritizedReplayBuffer])
def test_ring_wraps_and_overwrites_oldest(cls) -> None:
    buf = make(cls, capacity=5, batch_size=2)

    def state():
        return len(buf), int(buf.pos[0]), int(buf.size[0]), bool(buf.can_sample(M0)[0])

    assert state() == (0, 0, 0, False)
    fill(buf, 1)
    assert state() == (1, 1, 1, False)
    fill(buf, 4, start=1)
    assert state() == (5, 0, 5, True)  # full
    fill(buf, 2, start=5)  # overwrites transitions 0 and 1
    assert state() == (5, 2, 5, True)
    np.testing.assert_array_equal(buf.observations[0, :, 0], [5, 6, 2, 3, 4])
    np.testing.assert_array_equal(buf.rewards[0], [2.5, 3.0, 1.0, 1.5, 2.0])
    np.testing.assert_array_equal(buf.actions[0], [1, 2, 2, 3, 0])
    np.testing.assert_array_equal(buf.terminated[0], [0, 1, 0, 1, 0])


def test_can_sample_needs_batch_size_transitions() -> None:
    buf = make(UniformReplayBuffer, capacity=10, batch_size=4)
    fill(buf, 3)
    assert buf.can_sample(M0).tolist() == [False]
    fill(buf, 1, start=3)
    assert buf.can_sample(M0).tolist() == [True]


@pytest.mark.parametrize("cls", [UniformReplayBuffer, PrioritizedReplayBuffer])
def test_storage_and_sample_dtypes_and_shapes(cls) -> None:
    obs_shape = (2, 3)
    buf = cls(6, 4, obs_shape, np.random.default_rng(0))
    fill(buf, 6)
    assert buf.observations.shape == (1, 6, 2, 3) and buf.observations.dtype == np.float32
    assert buf.next_observations.shape == (1, 6, 2, 3)
    assert buf.actions.shape == buf.rewards.shape == buf.terminated.shape == (1, 6)
    assert buf.actions.dtype == np.int64
    assert buf.rewards.dtype == np.float32 and buf.terminated.dtype == np.float32
    for name in ("pos", "size", "capacity"):
        assert getattr(buf, name).shape == (1,) and getattr(buf, name).dtype == np.int64
    s = buf.sample(M0)
    assert isinstance(s, ReplaySamples)
    assert s.observations.shape == s.next_observations.shape == (1, 4, 2, 3)
    for name, dtype in [
        ("observations", np.float32),
        ("actions", np.int64),
        ("rewards", np.float32),
        ("next_observations", np.float32),
        ("terminated", np.float32),
        ("weights", np.float32),
        ("indices", np.int64),
    ]:
        assert getattr(s, name).dtype == dtype, name
    for name in ("actions", "rewards", "terminated", "weights", "indices"):
        assert getattr(s, name).shape == (1, 4), name
    assert_rows_match_storage(buf, M0, s)


def test_uint8_observations_are_stored_compactly_and_sampled_as_float32() -> None:
    buf = UniformReplayBuffer(4, 2, (2, 2), np.random.default_rng(0), obs_dtype=np.uint8)
    obs = np.full((1, 2, 2), 255, dtype=np.uint8)
    buf.add(M0, obs, [1], [0.0], obs, [False])
    assert buf.observations.dtype == np.uint8 and buf.next_observations.dtype == np.uint8
    s = buf.sample(M0)
    assert s.observations.dtype == s.next_observations.dtype == np.float32
    assert s.observations.max() == 255.0 and s.next_observations.max() == 255.0


def test_only_termination_is_stored_as_done() -> None:
    """A time-limit truncation is added with terminated=False: its target bootstraps."""
    buf = make(UniformReplayBuffer, capacity=2, batch_size=1)
    obs = np.zeros((1, *OBS_SHAPE), dtype=np.float32)
    buf.add(M0, obs, [0], [1.0], obs, terminated=np.array([False]))  # truncated by time limit
    buf.add(M0, obs, [0], [1.0], obs, terminated=np.array([True]))
    np.testing.assert_array_equal(buf.terminated, [[0.0, 1.0]])
    buf.add(M0, obs, [0], [1.0], obs, terminated=np.array([np.bool_(True)]))  # gymnasium's type
    assert buf.terminated[0, 0] == 1.0


def test_samples_are_copies() -> None:
    buf = make(UniformReplayBuffer)
    fill(buf, 8)
    s = buf.sample(M0)
    before = buf.observations.copy(), buf.next_observations.copy()
    s.observations[:] = -1
    s.next_observations[:] = -1
    s.rewards[:] = -1
    np.testing.assert_array_equal(buf.observations, before[0])
    np.testing.assert_array_equal(buf.next_observations, before[1])
    assert (buf.rewards >= 0).all()


def test_add_rejects_wrong_observation_shape() -> None:
    buf = make(UniformReplayBuffer)
    with pytest.raises(ValueError, match="obs_shape"):
        buf.add(M0, np.zeros((1, 4)), [0], [0.0], np.zeros((1, 4)), [False])
    with pytest.raises(ValueError, match="obs_shape"):
        buf.add(M0, 0.0, [0], [0.0], 0.0, [False])  # would otherwise broadcast silently
    with pytest.raises(ValueError, match="obs_shape"):  # the member axis is required
        buf.add(M0, np.zeros(3), [0], [0.0], np.zeros(3), [False])
    with pytest.raises(ValueError, match="obs_shape"):  # obs and next_obs both checked
        buf.add(M0, np.zeros((1, 3)), [0], [0.0], np.zeros((1, 4)), [False])
    with pytest.raises(ValueError, match="obs_shape"):  # one row per member
        buf.add(M0, np.zeros((2, 3)), [0], [0.0], np.zeros((2, 3)), [False])
    assert buf.size.tolist() == [0] and buf.pos.tolist() == [0]


@pytest.mark.parametrize("cls", [UniformReplayBuffer, PrioritizedReplayBuffer])
def test_sampling_an_empty_buffer_raises(cls) -> None:
    with pytest.raises(RuntimeError, match="empty"):
        make(cls).sample(M0)
    pop = cls(4, 2, OBS_SHAPE, rngs(0, 1))
    fill(pop, 3, members=np.array([0]))
    pop.sample(np.array([0]))
    with pytest.raises(RuntimeError, match="empty"):  # any empty member in the request
        pop.sample(np.array([0, 1]))


def test_uniform_priority_hooks_are_noops_and_weights_are_one() -> None:
    buf = make(UniformReplayBuffer)
    fill(buf, 8)
    s = buf.sample(M0)
    buf.update_priorities(M0, s.indices, np.arange(4.0)[None])
    buf.set_progress(M0, np.array([0.5]))
    np.testing.assert_array_equal(s.weights, np.ones((1, 4), dtype=np.float32))


@pytest.mark.parametrize("cls", [UniformReplayBuffer, PrioritizedReplayBuffer])
def test_same_seed_same_samples(cls) -> None:
    a, b = make(cls, seed=123), make(cls, seed=123)
    fill(a, 8)
    fill(b, 8)
    for _ in range(5):
        sa, sb = a.sample(M0), b.sample(M0)
        assert_same_samples(sa, sb)
        td = np.arange(4.0) + sa.indices
        a.update_priorities(M0, sa.indices, td)
        b.update_priorities(M0, sb.indices, td)
    c = make(cls, seed=124)
    fill(c, 8)
    assert not np.array_equal(a.sample(M0).indices, c.sample(M0).indices)


def test_uniform_sampling_frequencies() -> None:
    buf = make(UniformReplayBuffer, capacity=20, batch_size=20, seed=7)
    fill(buf, 20)
    counts = np.zeros(20)
    for _ in range(1500):
        counts += np.bincount(buf.sample(M0).indices[0], minlength=20)
    # df = 19: mean 19, sd ~6.2; 50 is ~5 sd out.
    assert chi_square(counts, np.full(20, 1 / 20)) < 50


def test_uniform_samples_only_written_slots() -> None:
    buf = make(UniformReplayBuffer, capacity=100, batch_size=4)
    fill(buf, 6)
    for _ in range(200):
        assert buf.sample(M0).indices.max() < 6


# --------------------------------------------------------------------------- sum tree


def oracle_find(leaves: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """searchsorted on the cumulative sum, with queries >= total mapped to the last
    positive leaf (what SumTree.find guarantees instead of an out-of-range index)."""
    cum = np.cumsum(leaves)
    found = np.searchsorted(cum, np.maximum(queries, 0), side="right")
    return np.minimum(found, np.flatnonzero(leaves)[-1])


@pytest.mark.parametrize("branching", [2, 3, 32])
@pytest.mark.parametrize("capacity", [1, 2, 3, 7, 32, 33, 100, 1000, 1025])
def test_sum_tree_matches_cumsum_oracle(capacity: int, branching: int) -> None:
    rng = np.random.default_rng(capacity * 100 + branching)
    tree = SumTree(capacity, branching=branching)
    leaves = np.zeros(capacity)
    # Integer-valued floats keep all sums exact, so the oracle comparison is exact; many
    # zeros (including trailing ones) exercise the empty-leaf guard.
    for _ in range(5):
        idx = rng.integers(0, capacity, size=rng.integers(1, 2 * capacity + 2))
        vals = rng.integers(0, 4, size=idx.size).astype(float)
        tree.update(idx, vals)
        for i, v in zip(idx, vals, strict=True):  # sequential semantics: last write wins
            leaves[i] = v
        np.testing.assert_array_equal(tree.values(), leaves)
        assert tree.total == leaves.sum()
        if leaves.sum() == 0:
            continue
        cum = np.cumsum(leaves)
        queries = np.concatenate(
            [rng.random(300) * cum[-1], cum, cum - 0.5, [0.0, -1.0, cum[-1] * 2, np.inf]]
        )
        found = tree.find(queries)
        np.testing.assert_array_equal(found, oracle_find(leaves, queries))
        assert (leaves[found] > 0).all()


def test_sum_tree_duplicate_indices_last_write_wins() -> None:
    tree = SumTree(10)
    tree.update([3, 5, 3, 3, 5], [1.0, 2.0, 7.0, 4.0, 9.0])
    assert tree[3] == 4.0 and tree[5] == 9.0
    assert tree.total == 13.0
    np.testing.assert_array_equal(tree.get([5, 3]), [9.0, 4.0])


def test_sum_tree_query_at_total_never_returns_empty_leaf() -> None:
    """The classic float-rounding bug: a query equal to the total walks right into
    zero-priority (not yet written) leaves."""
    for branching in (2, 32):
        tree = SumTree(1000, branching=branching)
        values = np.random.default_rng(0).random(37) * 1e-3 + 0.1
        tree.update(np.arange(37), values)
        total = tree.total
        queries = np.array([total, np.nextafter(total, np.inf), total * (1 + 1e-12), 1e300])
        np.testing.assert_array_equal(tree.find(queries), 36)


def test_sum_tree_float_values_respect_prefix_intervals() -> None:
    rng = np.random.default_rng(3)
    tree = SumTree(5000)
    leaves = rng.random(5000) ** 4  # spans several orders of magnitude
    leaves[rng.random(5000) < 0.3] = 0.0
    tree.update(np.arange(5000), leaves)
    assert tree.total == pytest.approx(leaves.sum(), rel=1e-12)
    cum = np.cumsum(leaves)
    queries = rng.random(10_000) * tree.total
    found = tree.find(queries)
    assert (leaves[found] > 0).all()
    before = np.concatenate([[0.0], cum])[found]
    tol = 1e-9 * cum[-1]
    assert (before <= queries + tol).all() and (queries < cum[found] + tol).all()


def test_sum_tree_scalar_set_matches_update_and_sums_do_not_drift() -> None:
    rng = np.random.default_rng(5)
    a, b = SumTree(300), SumTree(300)
    for _ in range(3000):
        i, v = int(rng.integers(300)), float(rng.random())
        a.set(i, v)
        b.update([i], [v])
    np.testing.assert_array_equal(a.values(), b.values())
    assert a.total == b.total
    assert a.total == pytest.approx(a.values().sum(), rel=1e-13)


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_sum_tree_survives_pickle_and_deepcopy(how: str) -> None:
    """The tree's child views must be rebuilt, not copied, or updates stop propagating."""
    tree = SumTree(100, branching=4)
    tree.update(np.arange(100), np.ones(100))
    clone = pickle.loads(pickle.dumps(tree)) if how == "pickle" else copy.deepcopy(tree)
    clone.update([7, 99], [5.0, 0.0])
    clone.set(0, 3.0)
    assert clone.total == 100 + 4 - 1 + 2
    assert tree.total == 100  # the original is independent
    leaves = clone.values()
    queries = np.linspace(0, clone.total, 50)
    np.testing.assert_array_equal(clone.find(queries), oracle_find(leaves, queries))


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_prioritized_buffer_survives_pickle_and_deepcopy(how: str) -> None:
    buf = PrioritizedReplayBuffer(8, 2, OBS_SHAPE, rngs(0, 1), alpha=1.0, priority_eps=[1e-6, 1e-3])
    fill(buf, 8, members=np.array([0, 1]))
    clone = pickle.loads(pickle.dumps(buf)) if how == "pickle" else copy.deepcopy(buf)
    clone.update_priorities(np.array([0, 1]), np.array([[3], [5]]), np.array([[10.0], [2.0]]))
    assert clone.trees[0].total == pytest.approx(7 + 10 + 1e-6)
    assert clone.trees[1].total == pytest.approx(7 + 2 + 1e-3)
    assert buf.trees[0].total == buf.trees[1].total == 8.0  # the original is independent
    fill(clone, 1, start=8, members=np.array([0, 1]))  # slot 0 gets the clone's max priority
    assert clone.trees[0][0] == pytest.approx(10 + 1e-6)
    assert buf.trees[0][0] == 1.0 and buf.pos.tolist() == [0, 0]
    # The clone continues the original's random streams.
    fresh = pickle.loads(pickle.dumps(buf)) if how == "pickle" else copy.deepcopy(buf)
    assert_same_samples(buf.sample(np.array([0, 1])), fresh.sample(np.array([0, 1])))


def test_sum_tree_find_preserves_query_shape() -> None:
    tree = SumTree(4)
    tree.update([0, 1, 2, 3], [1.0, 1.0, 1.0, 1.0])
    assert tree.find(np.array([[0.5, 1.5], [2.5, 3.5]])).tolist() == [[0, 1], [2, 3]]
    assert int(tree.find(2.5)) == 2


def test_sum_tree_rejects_bad_input() -> None:
    tree = SumTree(8)
    with pytest.raises(ValueError, match="positive total"):
        tree.find([0.0])
    with pytest.raises(IndexError):
        tree.update([8], [1.0])
    with pytest.raises(IndexError):
        tree.update([-1], [1.0])
    with pytest.raises(IndexError):
        tree.set(8, 1.0)
    for bad in (-1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="finite"):
            tree.update([0], [bad])
        with pytest.raises(ValueError, match="finite"):
            tree.set(0, bad)
    with pytest.raises(ValueError):
        SumTree(0)
    with pytest.raises(ValueError):
        SumTree(8, branching=1)


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 80),
    branching=st.sampled_from([2, 4, 32]),
    ops=st.lists(
        st.lists(st.tuples(st.integers(0, 79), st.integers(0, 50)), min_size=1, max_size=20),
        min_size=1,
        max_size=8,
    ),
    fractions=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20),
)
def test_sum_tree_property(capacity, branching, ops, fractions) -> None:
    tree = SumTree(capacity, branching=branching)
    leaves = np.zeros(capacity)
    for op in ops:
        idx = np.array([i % capacity for i, _ in op])
        vals = np.array([float(v) for _, v in op])
        tree.update(idx, vals)
        for i, v in zip(idx, vals, strict=True):
            leaves[i] = v
    np.testing.assert_array_equal(tree.values(), leaves)
    assert tree.total == leaves.sum()
    if leaves.sum() > 0:
        queries = np.array(fractions) * leaves.sum()
        np.testing.assert_array_equal(tree.find(queries), oracle_find(leaves, queries))


# --------------------------------------------------------------------------- compiled tree


def numpy_levels(tree: SumTree) -> list[np.ndarray]:
    """The tree's levels rebuilt from its leaves with numpy, as the numpy sum tree defined
    them: row ``b`` is 0 then ``np.add.accumulate`` of its k children; padding rows are 0."""
    k = tree.branching
    children = tree._raw.reshape(-1, k)
    levels = []
    for level in reversed(tree._levels):
        ref = np.zeros_like(level)
        ref[: len(children), 1:] = np.add.accumulate(children, axis=1)
        levels.append(ref)
        if len(ref) > 1:  # not yet the root's row
            children = ref[:, -1].reshape(-1, k)
    return levels[::-1]


def numpy_find(levels: list[np.ndarray], queries: np.ndarray) -> np.ndarray:
    """The numpy sum tree's descent: per level, clip the query below the node's total, take
    the first child whose prefix sum exceeds it, subtract the prefix sum before that child."""
    v = np.fmax(np.asarray(queries, dtype=np.float64).ravel(), 0.0)
    k = levels[0].shape[1] - 1
    nodes = np.zeros(v.size, dtype=np.int64)
    for level in levels:
        rows = level[nodes]
        v = np.minimum(v, np.nextafter(rows[:, -1], 0.0))
        first_above = (rows <= v[:, None]).argmin(axis=1)
        v = v - rows[np.arange(v.size), first_above - 1]
        nodes = nodes * k + first_above - 1
    return nodes


def assert_bitwise(got, want) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("branching", [2, 3, 4, 32])
@pytest.mark.parametrize("capacity", [1, 5, 16, 27, 64, 100, 1024, 1500])
def test_compiled_tree_is_bitwise_the_numpy_tree(capacity: int, branching: int) -> None:
    """Leaves over twelve orders of magnitude, so sums round: after every set/update the
    compiled kernels' rows are exactly numpy's accumulate of the children, the total is the
    leaves' sum (to rounding), and find descends exactly as the numpy tree did. Capacities
    are and are not powers of the branching factor."""
    rng = np.random.default_rng(capacity * 10 + branching)
    tree = SumTree(capacity, branching=branching)
    leaves = np.zeros(capacity)
    for step in range(30):
        if step % 3 == 0:
            i, value = (
                int(rng.integers(capacity)),
                float(rng.random() * 10.0 ** rng.integers(-6, 6)),
            )
            tree.set(i, value)
            leaves[i] = value
        else:
            idx = rng.integers(0, capacity, int(rng.integers(1, 70)))
            vals = rng.random(idx.size) * 10.0 ** rng.integers(-6, 6, idx.size)
            vals[rng.random(idx.size) < 0.2] = 0.0
            tree.update(idx, vals)
            for i, value in zip(idx, vals, strict=True):  # a duplicate's last write wins
                leaves[i] = value
        np.testing.assert_array_equal(tree.values(), leaves)
        levels = numpy_levels(tree)
        for got, want in zip(tree._levels, levels, strict=True):
            assert_bitwise(got, want)
        assert tree.total == pytest.approx(leaves.sum(), rel=1e-12)
        assert (tree._marks == branching).all()  # the batch write's scratch is left clean
        if tree.total > 0:
            total = tree.total
            queries = np.concatenate(
                [rng.random(50) * total, [0.0, -1.0, np.nan, total, 2 * total, np.inf]]
            )
            found = tree.find(queries)
            assert_bitwise(found, numpy_find(levels, queries))
            assert (leaves[found] > 0).all()


@pytest.mark.parametrize("branching", [2, 5, 32])
def test_compiled_tree_prefix_sums_and_totals_match_cumsum(branching: int) -> None:
    """Multiples of 1/8 sum exactly in any order, so the tree must agree with the brute-force
    oracle exactly: totals with ``sum``, every query (boundaries included) with
    ``searchsorted`` on ``cumsum``."""
    rng = np.random.default_rng(branching)
    for capacity in (1, 7, 40, 200):
        tree = SumTree(capacity, branching=branching)
        leaves = np.zeros(capacity)
        for _ in range(20):
            idx = rng.integers(0, capacity, int(rng.integers(1, 2 * capacity + 1)))
            vals = rng.integers(0, 24, idx.size) / 8.0
            tree.update(idx, vals)
            for i, value in zip(idx, vals, strict=True):
                leaves[i] = value
            i = int(rng.integers(capacity))
            leaves[i] = rng.integers(0, 24) / 8.0
            tree.set(i, leaves[i])
            assert tree.total == leaves.sum()
            if leaves.sum() == 0:
                continue
            cum = np.cumsum(leaves)
            queries = np.concatenate([rng.random(100) * cum[-1], cum, cum - 1 / 16, [cum[-1] * 3]])
            np.testing.assert_array_equal(tree.find(queries), oracle_find(leaves, queries))


def test_sum_tree_loads_the_numpy_trees_pickled_state() -> None:
    """A tree pickled by the numpy implementation (a list of levels) loads and keeps working."""
    tree = SumTree(100, branching=4)
    tree.update(np.arange(100), np.random.default_rng(0).random(100))
    old_state = {
        "capacity": 100,
        "branching": 4,
        "_levels": [level.copy() for level in tree._levels],
        "_raw": tree._raw.copy(),
    }
    clone = SumTree.__new__(SumTree)
    clone.__setstate__(old_state)
    for t in (tree, clone):
        t.update([7, 50, 7], [5.0, 0.0, 2.0])
        t.set(99, 3.0)
    for got, want in zip(clone._levels, tree._levels, strict=True):
        assert_bitwise(got, want)
    queries = np.linspace(0, tree.total, 77)
    assert_bitwise(clone.find(queries), tree.find(queries))


# --------------------------------------------------------------------------- prioritized


def prioritized_with_tds(tds, alpha: float, batch_size: int = 4, seed: int = 0, **kwargs):
    buf = PrioritizedReplayBuffer(
        len(tds), batch_size, OBS_SHAPE, np.random.default_rng(seed), alpha=alpha, **kwargs
    )
    fill(buf, len(tds))
    buf.update_priorities(M0, np.arange(len(tds))[None], np.asarray(tds, dtype=float)[None])
    return buf


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_prioritized_sampling_frequencies_follow_p_alpha(alpha: float) -> None:
    tds = np.array([1.0, -2.0, 3.0, -4.0])  # the sign must not matter
    buf = prioritized_with_tds(tds, alpha=alpha)
    counts = np.zeros(4)
    for _ in range(5000):
        counts += np.bincount(buf.sample(M0).indices[0], minlength=4)
    expected = (np.abs(tds) + buf.priority_eps[0]) ** alpha
    expected /= expected.sum()
    np.testing.assert_allclose(counts / counts.sum(), expected, atol=0.01)


def test_prioritized_alpha_zero_is_uniform() -> None:
    buf = prioritized_with_tds([0.1, 5.0, 20.0, 0.0, 3.0, 1.0, 2.0, 9.0], alpha=0.0)
    np.testing.assert_array_equal(buf.trees[0].values(), np.ones(8))
    counts = np.zeros(8)
    for _ in range(2000):
        s = buf.sample(M0)
        np.testing.assert_array_equal(s.weights, np.ones((1, 4), dtype=np.float32))
        counts += np.bincount(s.indices[0], minlength=8)
    assert chi_square(counts, np.full(8, 1 / 8)) < 30  # df = 7


@pytest.mark.parametrize("alpha", [1.0, 0.5])
@pytest.mark.parametrize("progress", [0.0, 0.5, 1.0])
def test_prioritized_importance_weights_match_formula(alpha: float, progress: float) -> None:
    tds = np.array([1.0, 2.0, 3.0, 4.0])
    buf = prioritized_with_tds(tds, alpha=alpha, batch_size=4, beta_start=0.4)
    buf.set_progress(M0, np.array([progress]))
    beta = 0.4 + progress * 0.6
    p = (tds + buf.priority_eps[0]) ** alpha
    probs = p / p.sum()
    for _ in range(20):
        s = buf.sample(M0)
        w = (4 * probs[s.indices]) ** (-beta)  # (N P(i))^-beta
        np.testing.assert_allclose(s.weights, w / w.max(), rtol=1e-6)  # batch-max normalized
        assert s.weights.max() == pytest.approx(1.0)


def test_prioritized_importance_weights_crafted_exact_values() -> None:
    """Hand-computed: priorities 1 and 4 (alpha=1), N=2, so P = (0.2, 0.8) and
    (N P)^-beta = (0.4^-beta, 1.6^-beta). With beta=0.5 the batch-max normalized weights
    are 1 for transition 0 and (1.6/0.4)^-0.5 = 0.5 for transition 1."""
    buf = PrioritizedReplayBuffer(
        2, 2, OBS_SHAPE, np.random.default_rng(0), alpha=1.0, beta_start=0.5, priority_eps=1e-12
    )
    fill(buf, 2)
    buf.update_priorities(M0, np.array([[0, 1]]), np.array([[1.0, 4.0]]))
    # With stratified sampling over 2 segments of mass 2.5 each, segment one always hits
    # transition 0 (mass [0, 1)) or 1, segment two always hits transition 1.
    seen_both = False
    for _ in range(50):
        s = buf.sample(M0)
        indices, weights = s.indices[0], s.weights[0]
        expected = {0: 1.0, 1: 0.5} if 0 in indices else {1: 1.0}
        seen_both |= 0 in indices
        for i, w in zip(indices, weights, strict=True):
            assert w == pytest.approx(expected[int(i)], rel=1e-6)
    assert seen_both


def test_beta_annealing() -> None:
    buf = make(PrioritizedReplayBuffer, beta_start=0.4)
    assert buf.beta.shape == (1,) and buf.beta[0] == 0.4
    for fraction, beta in [(0.5, 0.7), (1.0, 1.0), (3.0, 1.0), (-1.0, 0.4)]:
        buf.set_progress(M0, np.array([fraction]))
        assert buf.beta[0] == pytest.approx(beta)
    with pytest.raises(ValueError):
        buf.set_progress(M0, np.array([float("nan")]))
    assert buf.beta[0] == pytest.approx(0.4)  # a rejected update changes nothing


def test_beta_annealing_per_member() -> None:
    buf = PrioritizedReplayBuffer(8, 4, OBS_SHAPE, rngs(0, 1, 2), beta_start=[0.0, 0.4, 1.0])
    np.testing.assert_array_equal(buf.beta, [0.0, 0.4, 1.0])
    buf.set_progress(np.array([0, 1, 2]), np.array([0.5, 0.5, 0.5]))
    np.testing.assert_allclose(buf.beta, [0.5, 0.7, 1.0])
    buf.set_progress(np.array([2, 0]), np.array([0.0, 1.0]))  # a subset, in any order
    np.testing.assert_allclose(buf.beta, [1.0, 0.7, 1.0])
    buf.set_progress(np.array([1]), np.array([0.0]))
    np.testing.assert_allclose(buf.beta, [1.0, 0.4, 1.0])


def test_new_transitions_get_max_priority() -> None:
    buf = make(PrioritizedReplayBuffer, capacity=6, batch_size=2, alpha=0.5)
    fill(buf, 3)
    np.testing.assert_array_equal(buf.trees[0].values()[:3], 1.0)  # initial max priority 1
    buf.update_priorities(M0, np.array([[0, 1]]), np.array([[8.0, 0.5]]))
    fill(buf, 1, start=3)
    expected = (8.0 + buf.priority_eps[0]) ** 0.5
    assert buf.trees[0][3] == pytest.approx(expected)
    buf.update_priorities(M0, np.array([[0]]), np.array([[0.1]]))  # max never decreases
    fill(buf, 3, start=4)  # wraps: slot 0 is overwritten and gets the max priority again
    assert buf.trees[0][0] == pytest.approx(expected)
    assert buf.max_priority[0] == pytest.approx(8.0 + buf.priority_eps[0])


def test_max_priority_is_per_member() -> None:
    buf = PrioritizedReplayBuffer(6, 2, OBS_SHAPE, rngs(0, 1), alpha=1.0)
    both = np.array([0, 1])
    fill(buf, 2, members=both)
    buf.update_priorities(np.array([0]), np.array([[1]]), np.array([[9.0]]))
    fill(buf, 1, start=2, members=both)
    assert buf.trees[0][2] == pytest.approx(9.0 + 1e-6)
    assert buf.trees[1][2] == 1.0  # member 1 never saw the large TD error
    assert buf.max_priority == pytest.approx([9.0 + 1e-6, 1.0])


def test_update_priorities_duplicates_and_validation() -> None:
    buf = make(PrioritizedReplayBuffer, capacity=8, batch_size=2, alpha=1.0)
    fill(buf, 5)
    eps = buf.priority_eps[0]
    buf.update_priorities(M0, np.array([[2, 2, 2]]), np.array([[1.0, 6.0, 3.0]]))
    assert buf.trees[0][2] == pytest.approx(3.0 + eps)  # the last duplicate wins
    with pytest.raises(IndexError):
        buf.update_priorities(M0, np.array([[5]]), np.array([[1.0]]))  # not yet written
    with pytest.raises(IndexError):
        buf.update_priorities(M0, np.array([[-1]]), np.array([[1.0]]))
    with pytest.raises(ValueError, match="non-finite"):
        buf.update_priorities(M0, np.array([[0, 1]]), np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="non-finite"):
        buf.update_priorities(M0, np.array([[0]]), np.array([[np.inf]]))
    with pytest.raises(ValueError):
        buf.update_priorities(M0, np.array([[0, 1]]), np.array([[1.0]]))
    assert buf.trees[0][0] == buf.trees[0][1] == 1.0  # rejected updates changed nothing
    buf.update_priorities(M0, np.array([[0]]), np.array([[[2.0]]]))  # (m, B, 1) is fine
    assert buf.trees[0][0] == pytest.approx(2.0 + eps)
    buf.update_priorities(M0, np.array([1]), np.array([4.0]))  # flat (B,) for one member
    assert buf.trees[0][1] == pytest.approx(4.0 + eps)


def test_update_priorities_rows_follow_members() -> None:
    """Row j of indices/td_errors belongs to members[j], whatever the members' order."""
    buf = PrioritizedReplayBuffer(
        4, 2, OBS_SHAPE, rngs(0, 1, 2), alpha=[1.0, 0.5, 2.0], priority_eps=0.25
    )
    fill(buf, 4, members=np.arange(3))
    buf.update_priorities(np.array([2, 0]), np.array([[1, 3], [0, 0]]), [[1.75, 0.75], [3, 5]])
    np.testing.assert_allclose(buf.trees[0].values(), [5.25, 1, 1, 1])
    np.testing.assert_array_equal(buf.trees[1].values(), np.ones(4))
    np.testing.assert_allclose(buf.trees[2].values(), [1, 4, 1, 1])
    assert buf.max_priority == pytest.approx([5.25, 1.0, 2.0])


def test_prioritized_samples_only_written_slots_and_rows_match() -> None:
    buf = make(PrioritizedReplayBuffer, capacity=100, batch_size=8, seed=1)
    fill(buf, 10)
    buf.update_priorities(M0, np.arange(10)[None], np.linspace(0, 5, 10)[None])
    for _ in range(200):
        s = buf.sample(M0)
        assert s.indices.max() < 10
        assert_rows_match_storage(buf, M0, s)


def test_prioritized_sample_and_update_are_bitwise_the_numpy_computation() -> None:
    """Against the numpy code the kernels replaced, for two members (capacities 300 and
    1024 = 32**2, their own alpha, eps and annealed beta): the same draws of each member's
    generator, stratified points, descent and IS weights; after update_priorities the same
    leaves ``(|td| + eps) ** alpha`` (numpy's power; duplicates: the last wins) and sums."""
    batch, members = 32, np.arange(2)
    alpha, eps = [0.6, 1.0], [1e-6, 1e-2]
    buf = PrioritizedReplayBuffer(
        [300, 1024],
        batch,
        OBS_SHAPE,
        rngs(3, 4),
        alpha=alpha,
        beta_start=[0.4, 0.7],
        priority_eps=eps,
    )
    fill(buf, 1100, members=members)
    drive = np.random.default_rng(0)
    for step in range(40):
        buf.set_progress(members, np.array([step / 30, step / 60]))
        twins = copy.deepcopy(buf.rngs)
        s = buf.sample(members)
        for k in members:
            tree = buf.trees[k]
            points = (np.arange(batch, dtype=np.float64) + twins[k].random(batch)) * (
                tree.total / batch
            )
            idx = numpy_find(numpy_levels(tree), points)
            mass = tree.values()[idx]
            assert_bitwise(s.indices[k], idx)
            assert_bitwise(s.weights[k], ((mass / mass.min()) ** (-buf.beta[k])).astype(np.float32))
        td = drive.standard_normal(s.indices.shape) * 10.0 ** drive.integers(-3, 3)
        want = [tree.values() for tree in buf.trees]
        buf.update_priorities(members, s.indices, td)
        for k in members:
            mass = (np.abs(td[k]) + eps[k]) ** alpha[k]
            for i, m in zip(s.indices[k], mass, strict=True):
                want[k][i] = m
            assert_bitwise(buf.trees[k].values(), want[k])
            for got, ref in zip(buf.trees[k]._levels, numpy_levels(buf.trees[k]), strict=True):
                assert_bitwise(got, ref)
    for k in members:  # each generator was drawn from exactly as its twin
        assert_bitwise(buf.rngs[k].random(3), twins[k].random(3))


def test_prioritized_sampling_distribution_over_a_three_level_tree() -> None:
    """1100 leaves (three levels of 32), priorities over a decade: each leaf's share of
    128,000 draws follows ``p**alpha`` (chi-square), and the weights stay in (0, 1]."""
    n, alpha = 1100, 0.7
    tds = np.random.default_rng(1).uniform(0.1, 1.0, n)
    buf = prioritized_with_tds(tds, alpha=alpha, batch_size=64, seed=2)
    assert buf.trees[0].depth == 3
    counts = np.zeros(n)
    for _ in range(2000):
        s = buf.sample(M0)
        counts += np.bincount(s.indices[0], minlength=n)
        assert 0 < s.weights.min() and s.weights.max() == 1.0
    expected = (tds + buf.priority_eps[0]) ** alpha
    # df = 1099: sd ~47; 1350 is ~5 sd out (stratified draws only lower the statistic).
    assert chi_square(counts, expected / expected.sum()) < 1350


# --------------------------------------------------------------------------- population


@pytest.mark.parametrize("cls", [UniformReplayBuffer, PrioritizedReplayBuffer])
def test_per_member_capacity_wraps_independently(cls) -> None:
    both = np.array([0, 1])
    buf = cls([3, 5], 2, OBS_SHAPE, rngs(0, 1))
    assert buf.capacity.tolist() == [3, 5]
    assert buf.observations.shape == (2, 5, 3)  # allocated for the largest ring
    fill(buf, 4, members=both)
    assert buf.size.tolist() == [3, 4] and buf.pos.tolist() == [1, 4]
    fill(buf, 3, start=4, members=both)
    assert buf.size.tolist() == [3, 5] and buf.pos.tolist() == [1, 2]
    np.testing.assert_array_equal(buf.observations[0, :, 0], [6, 4, 5, 0, 0])  # 3, 4 unused
    np.testing.assert_array_equal(buf.observations[1, :, 0], [1005, 1006, 1002, 1003, 1004])
    np.testing.assert_array_equal(buf.rewards[0, :3], [3.0, 2.0, 2.5])
    assert len(buf) == 3  # member 0
    if cls is PrioritizedReplayBuffer:
        assert [len(t) for t in buf.trees] == [3, 5]
    for _ in range(100):
        s = buf.sample(both)
        assert s.indices[0].max() < 3 and s.indices[1].max() < 5
        assert_rows_match_storage(buf, both, s)


def test_add_to_a_subset_of_members() -> None:
    buf = UniformReplayBuffer(4, 1, OBS_SHAPE, rngs(0, 1, 2))
    buf.add(np.array([2, 0]), *stacked([20, 0]))  # rows follow the members' order
    assert buf.size.tolist() == [1, 0, 1] and buf.pos.tolist() == [1, 0, 1]
    np.testing.assert_array_equal(buf.observations[:, 0, 0], [0, 0, 20])
    np.testing.assert_array_equal(buf.actions[:, 0], [0, 0, 0])
    np.testing.assert_array_equal(buf.rewards[:, 0], [0, 0, 10])
    np.testing.assert_array_equal(buf.terminated[:, 0], [1, 0, 0])
    assert buf.can_sample(np.arange(3)).tolist() == [True, False, True]
    assert buf.can_sample(np.array([1, 2])).tolist() == [False, True]


PER_MEMBER_PARAMS = {
    UniformReplayBuffer: {},
    PrioritizedReplayBuffer: {
        "alpha": [0.6, 1.5, 0.0],
        "beta_start": [0.4, 0.1, 1.0],
        "priority_eps": [1e-6, 1e-2, 0.5],
    },
}


@pytest.mark.parametrize("cls", [UniformReplayBuffer, PrioritizedReplayBuffer])
def test_population_members_sample_exactly_what_they_would_alone(cls) -> None:
    """Member k of a K=3 population (own capacity, seed, PER hyperparameters, transitions)
    samples bitwise what a K=1 buffer with the same seed and the same history samples, also
    when a subset of members is sampled or updated: the population changes nobody."""
    seeds, capacities, batch = [11, 22, 33], [8, 5, 12], 4
    params = PER_MEMBER_PARAMS[cls]
    pop = cls(capacities, batch, OBS_SHAPE, rngs(*seeds), **params)
    alone = [
        cls(c, batch, OBS_SHAPE, np.random.default_rng(s), **{n: v[k] for n, v in params.items()})
        for k, (c, s) in enumerate(zip(capacities, seeds))
    ]
    step = 0

    def add(members: np.ndarray) -> None:
        nonlocal step
        ids = [1000 * k + step for k in members]  # every member gets its own transitions
        step += 1
        pop.add(members, *stacked(ids))
        for k, i in zip(members, ids):
            alone[k].add(M0, *stacked([i]))

    def sample_and_compare(members: np.ndarray) -> ReplaySamples:
        s = pop.sample(members)
        assert s.indices.shape == s.weights.shape == (len(members), batch)
        for j, k in enumerate(members):
            assert_same_samples(row(s, j), alone[k].sample(M0))
        return s

    every = np.arange(3)
    for t in range(14):  # member 1 misses every third add; member 2 comes first sometimes
        add(every if t % 3 else np.array([2, 0]))
    for t in range(12):
        members = [every, np.array([0, 2]), np.array([2, 1]), np.array([1])][t % 4]
        s = sample_and_compare(members)
        td = np.sin(s.indices + 3.0 * t) * (t + 1)  # signs and duplicates included
        pop.update_priorities(members, s.indices, td)
        fractions = (t + members) / 12
        pop.set_progress(members, fractions)
        for j, k in enumerate(members):
            alone[k].update_priorities(M0, s.indices[j : j + 1], td[j : j + 1])
            alone[k].set_progress(M0, fractions[j : j + 1])
        add(every if t % 2 else np.array([1]))

    for k in range(3):  # the histories themselves match too
        cap = capacities[k]
        assert (pop.size[k], pop.pos[k]) == (alone[k].size[0], alone[k].pos[0])
        for name in ("observations", "next_observations", "actions", "rewards", "terminated"):
            np.testing.assert_array_equal(getattr(pop, name)[k, :cap], getattr(alone[k], name)[0])
        if cls is PrioritizedReplayBuffer:
            np.testing.assert_array_equal(pop.trees[k].values(), alone[k].trees[0].values())
            assert pop.max_priority[k] == alone[k].max_priority[0]
            assert pop.beta[k] == alone[k].beta[0]
    assert pop.size.tolist() == [8, 5, 12]  # every ring has wrapped or filled


def test_sampling_a_subset_returns_those_members_rows() -> None:
    pop = UniformReplayBuffer(6, 3, OBS_SHAPE, rngs(5, 5, 5))  # same seed: only data differs
    fill(pop, 6, members=np.arange(3))
    s = pop.sample(np.array([0, 2]))
    assert s.observations.shape == (2, 3, 3)
    np.testing.assert_array_equal(s.indices[0], s.indices[1])  # same generator state
    np.testing.assert_array_equal(s.observations[0, :, 0], s.indices[0])
    np.testing.assert_array_equal(s.observations[1, :, 0], 2000 + s.indices[1])
    assert_rows_match_storage(pop, [0, 2], s)
    # Member 1 was not sampled, so its generator did not advance; members 0 and 2 did.
    s = pop.sample(np.array([2, 1, 0]))
    np.testing.assert_array_equal(s.indices[0], s.indices[2])
    ref = UniformReplayBuffer(6, 3, OBS_SHAPE, np.random.default_rng(5))
    fill(ref, 6)
    np.testing.assert_array_equal(s.indices[1], ref.sample(M0).indices[0])
    np.testing.assert_array_equal(s.observations[0, :, 0], 2000 + s.indices[0])
    np.testing.assert_array_equal(s.observations[1, :, 0], 1000 + s.indices[1])


@pytest.mark.parametrize("cls", [UniformReplayBuffer, PrioritizedReplayBuffer])
def test_reset_member_empties_only_that_member(cls) -> None:
    every = np.arange(3)
    pop = cls(6, 2, OBS_SHAPE, rngs(1, 2, 3), **PER_MEMBER_PARAMS[cls])
    fill(pop, 8, members=every)
    pop.update_priorities(every, np.array([[0, 1]] * 3), np.array([[5.0, 1.0]] * 3))
    pop.set_progress(every, np.full(3, 0.5))
    before = copy.deepcopy(pop)

    pop.reset_member(1, np.random.default_rng(99))
    assert pop.size.tolist() == [6, 0, 6] and pop.pos.tolist() == [2, 0, 2]
    assert pop.can_sample(every).tolist() == [True, False, True]
    with pytest.raises(RuntimeError, match="empty"):
        pop.sample(np.array([1]))
    with pytest.raises(RuntimeError, match="empty"):
        pop.sample(every)
    if cls is PrioritizedReplayBuffer:
        assert before.max_priority[1] == 5.01 and before.beta[1] == pytest.approx(0.55)
        assert pop.trees[1].total == 0.0 and pop.max_priority[1] == 1.0
        assert pop.beta[1] == pop.beta_start[1] == 0.1 and pop.alpha[1] == 1.5
        for k in (0, 2):
            np.testing.assert_array_equal(pop.trees[k].values(), before.trees[k].values())
            assert pop.max_priority[k] == before.max_priority[k]
        np.testing.assert_array_equal(pop.beta[[0, 2]], before.beta[[0, 2]])
    # Members 0 and 2 are untouched: same storage, and they sample what they would have.
    assert_same_samples(pop.sample(np.array([0, 2])), before.sample(np.array([0, 2])))
    # Member 1 now behaves exactly like a fresh buffer with the new generator.
    member1 = {name: values[1] for name, values in PER_MEMBER_PARAMS[cls].items()}
    fresh = cls(6, 2, OBS_SHAPE, np.random.default_rng(99), **member1)
    for i in range(3):
        pop.add(np.array([1]), *stacked([500 + i]))
        fresh.add(M0, *stacked([500 + i]))
    assert pop.size.tolist() == [6, 3, 6] and pop.pos.tolist() == [2, 3, 2]
    for _ in range(3):
        assert_same_samples(row(pop.sample(np.array([1])), 0), fresh.sample(M0))
    np.testing.assert_array_equal(pop.observations[[0, 2]], before.observations[[0, 2]])


def test_reset_member_parameters() -> None:
    pop = PrioritizedReplayBuffer([8, 8], 2, OBS_SHAPE, rngs(0, 1))
    both = np.array([0, 1])
    fill(pop, 8, members=both)
    pop.reset_member(
        1, np.random.default_rng(5), capacity=3, alpha=1.0, beta_start=0.2, priority_eps=0.01
    )
    assert pop.capacity.tolist() == [8, 3] and len(pop.trees[1]) == 3
    assert pop.alpha == [0.6, 1.0] and pop.beta_start == [0.4, 0.2]
    assert pop.priority_eps == [1e-6, 0.01] and pop.beta.tolist() == [0.4, 0.2]
    fill(pop, 5, members=np.array([1]))  # wraps at the new capacity
    assert pop.size.tolist() == [8, 3] and pop.pos.tolist() == [0, 2]
    np.testing.assert_array_equal(pop.observations[1, :3, 0], [1003, 1004, 1002])
    for _ in range(50):
        assert pop.sample(np.array([1])).indices.max() < 3
    pop.update_priorities(np.array([1]), np.array([[0]]), np.array([[2.0]]))
    assert pop.trees[1][0] == pytest.approx(2.01)
    # Back up to the allocated size (the largest capacity the population was built with).
    pop.reset_member(1, np.random.default_rng(6), capacity=8.0)
    assert pop.capacity.tolist() == [8, 8] and len(pop.trees[1]) == 8

    fill(pop, 2, members=np.array([1]))
    snapshot = (pop.capacity.tolist(), pop.size.tolist(), pop.pos.tolist(), list(pop.alpha))
    with pytest.raises(ValueError, match=r"buffer\.capacity \(1\) must be >= buffer\.batch_size"):
        pop.reset_member(1, np.random.default_rng(7), capacity=1)
    with pytest.raises(ValueError, match=r"buffer\.capacity must be >= 1"):
        pop.reset_member(1, np.random.default_rng(7), capacity=0)
    with pytest.raises(ValueError, match=r"buffer\.alpha must be >= 0"):
        pop.reset_member(1, np.random.default_rng(7), alpha=-1.0)
    with pytest.raises(ValueError, match=r"buffer\.beta_start must be in \[0, 1\]"):
        pop.reset_member(1, np.random.default_rng(7), beta_start=2.0)
    with pytest.raises(TypeError, match="unexpected buffer parameters"):
        pop.reset_member(1, np.random.default_rng(7), gamma=0.9)
    # A rejected reset leaves the member as it was.
    assert (pop.capacity.tolist(), pop.size.tolist(), pop.pos.tolist(), pop.alpha) == snapshot
    # A larger capacity than allocated grows every ring; member 0 keeps its transitions.
    kept = pop.observations[0].copy()
    pop.reset_member(1, np.random.default_rng(7), capacity=12)
    assert pop.capacity.tolist() == [8, 12] and pop.observations.shape[1] == 12
    np.testing.assert_array_equal(pop.observations[0, :8], kept)
    fill(pop, 12, members=np.array([1]))
    assert pop.size.tolist() == [8, 12] and len(pop.trees[1]) == 12

    uniform = UniformReplayBuffer(4, 2, OBS_SHAPE, rngs(0, 1))
    with pytest.raises(TypeError, match=r"unexpected buffer parameters \['alpha'\]"):
        uniform.reset_member(0, np.random.default_rng(1), alpha=0.5)


@pytest.mark.parametrize("cls", [UniformReplayBuffer, PrioritizedReplayBuffer])
def test_a_reset_rejected_for_unknown_parameters_changes_nothing(cls) -> None:
    buf = cls(8, 2, OBS_SHAPE, rngs(0, 1))
    fill(buf, 6, members=np.array([0, 1]))
    with pytest.raises(TypeError, match="unexpected buffer parameters"):
        buf.reset_member(1, np.random.default_rng(2), capacity=3, gamma=0.9)
    assert buf.capacity.tolist() == [8, 8]
    assert buf.size.tolist() == [6, 6] and buf.pos.tolist() == [6, 6]


# --------------------------------------------------------------------------- latest only


def test_latest_buffer_returns_exactly_the_last_transition() -> None:
    buf = LatestTransitionBuffer(obs_shape=OBS_SHAPE, rng=np.random.default_rng(0))
    assert buf.can_sample(M0).tolist() == [False] and len(buf) == 0
    with pytest.raises(RuntimeError):
        buf.sample(M0)
    for i in range(5):
        buf.add(M0, *stacked([i]))
        s = buf.sample(M0)
        obs, action, reward, next_obs, terminated = transition(i)
        np.testing.assert_array_equal(s.observations, obs[None, None])
        np.testing.assert_array_equal(s.next_observations, next_obs[None, None])
        assert s.actions.tolist() == [[action]] and s.rewards.tolist() == [[reward]]
        assert s.terminated.tolist() == [[float(terminated)]]
        assert s.weights.tolist() == [[1.0]] and s.indices.tolist() == [[0]]
        assert s.actions.dtype == np.int64 and s.weights.dtype == np.float32
        assert len(buf) == 1 and buf.can_sample(M0).tolist() == [True]


def test_latest_buffer_ignores_larger_capacity_and_batch_size() -> None:
    buf = LatestTransitionBuffer(10_000, 64, OBS_SHAPE, np.random.default_rng(0))
    assert (buf.capacity.tolist(), buf.batch_size) == ([1], 1)
    assert (buf.requested_capacity, buf.requested_batch_size) == ([10_000], 64)
    assert buf.observations.shape == (1, 1, 3)
    fill(buf, 3)
    s = buf.sample(M0)
    assert s.observations.shape == (1, 1, 3) and s.observations[0, 0, 0] == 2.0
    buf.update_priorities(M0, s.indices, np.ones((1, 1)))  # no-ops keep the agent branch-free
    buf.set_progress(M0, np.array([0.5]))


def test_latest_buffer_population() -> None:
    buf = LatestTransitionBuffer([100, 200, 300], 32, OBS_SHAPE, rngs(0, 1, 2))
    assert buf.requested_capacity == [100, 200, 300] and buf.capacity.tolist() == [1, 1, 1]
    fill(buf, 4, members=np.arange(3))
    fill(buf, 2, start=4, members=np.array([1]))
    s = buf.sample(np.array([2, 1, 0]))
    assert s.observations.shape == (3, 1, 3)
    np.testing.assert_array_equal(s.observations[:, 0, 0], [2003, 1005, 3])
    np.testing.assert_array_equal(s.rewards[:, 0], [1001.5, 502.5, 1.5])
    buf.reset_member(1, np.random.default_rng(3), capacity=50)
    assert buf.requested_capacity == [100, 50, 300] and buf.capacity.tolist() == [1, 1, 1]
    assert buf.can_sample(np.arange(3)).tolist() == [True, False, True]
    with pytest.raises(RuntimeError, match="empty"):
        buf.sample(np.array([1]))
    np.testing.assert_array_equal(buf.sample(np.array([0, 2])).observations[:, 0, 0], [3, 2003])


def test_latest_buffer_default_is_scalar_observations() -> None:
    """obs_shape defaults to () and is never inferred from the data."""
    buf = LatestTransitionBuffer()
    assert buf.obs_shape == () and buf.members == 1
    buf.add(M0, np.array([4.0]), [1], [0.5], np.array([5.0]), [True])
    s = buf.sample(M0)
    assert s.observations.shape == (1, 1) and s.observations[0, 0] == 4.0
    with pytest.raises(ValueError, match="obs_shape"):
        buf.add(M0, np.zeros((1, 2, 2)), [0], [0.0], np.zeros((1, 2, 2)), [False])


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("cls", [UniformReplayBuffer, PrioritizedReplayBuffer])
def test_constructor_validation(cls) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"buffer\.capacity must be >= 1, got 0"):
        cls(0, 1, OBS_SHAPE, rng)
    with pytest.raises(ValueError, match=r"buffer\.batch_size must be >= 1, got 0"):
        cls(8, 0, OBS_SHAPE, rng)
    with pytest.raises(
        ValueError, match=r"buffer\.capacity \(32\) must be >= buffer\.batch_size \(64\)"
    ):
        cls(32, 64, OBS_SHAPE, rng)
    with pytest.raises(ValueError, match=r"buffer\.capacity must be an integer"):
        cls(10.5, 4, OBS_SHAPE, rng)
    with pytest.raises(TypeError, match="Generator"):
        cls(8, 4, OBS_SHAPE, [rng, np.random.RandomState(0)])
    with pytest.raises(ValueError, match="at least one member"):
        cls(8, 4, OBS_SHAPE, [])
    with pytest.raises(ValueError, match=r"buffer\.capacity: 2 values for 3 members"):
        cls([8, 8], 4, OBS_SHAPE, rngs(0, 1, 2))
    with pytest.raises(
        ValueError, match=r"buffer\.capacity \(2\) must be >= buffer\.batch_size \(4\)"
    ):
        cls([8, 2], 4, OBS_SHAPE, rngs(0, 1))
    buf = cls(1e4, 64.0, [3], rng)  # YAML-ish floats and lists are accepted
    assert (buf.capacity.tolist(), buf.batch_size, buf.obs_shape) == ([10_000], 64, (3,))
    assert buf.members == 1
    buf = cls([4, 6.0], 2, 3, rngs(0, 1))  # per-member capacities; an int obs_shape
    assert (buf.capacity.tolist(), buf.obs_shape, buf.members) == ([4, 6], (3,), 2)


@pytest.mark.parametrize("cls", [UniformReplayBuffer, PrioritizedReplayBuffer])
@pytest.mark.parametrize("bad", [np.random.RandomState(0), 0, None])
def test_a_lone_non_generator_rng_is_named_in_the_error(cls, bad) -> None:
    with pytest.raises(TypeError, match="must be a numpy.random.Generator"):
        cls(8, 4, OBS_SHAPE, bad)


def test_prioritized_constructor_validation() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"buffer\.alpha must be >= 0, got -0\.1"):
        PrioritizedReplayBuffer(8, 4, OBS_SHAPE, rng, alpha=-0.1)
    with pytest.raises(ValueError, match=r"buffer\.alpha must be >= 0, got nan"):
        PrioritizedReplayBuffer(8, 4, OBS_SHAPE, rng, alpha=float("nan"))
    for beta_start in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"buffer\.beta_start must be in \[0, 1\]"):
            PrioritizedReplayBuffer(8, 4, OBS_SHAPE, rng, beta_start=beta_start)
    with pytest.raises(ValueError, match=r"buffer\.priority_eps must be > 0"):
        PrioritizedReplayBuffer(8, 4, OBS_SHAPE, rng, priority_eps=0.0)
    buf = PrioritizedReplayBuffer(8, 4, OBS_SHAPE, rng, alpha=0.0, beta_start=1.0)
    assert buf.alpha == [0.0] and buf.beta.tolist() == [1.0]
    # Per member: every value is checked, and the lengths must match the population.
    with pytest.raises(ValueError, match=r"buffer\.alpha must be >= 0, got -1\.0"):
        PrioritizedReplayBuffer(8, 4, OBS_SHAPE, rngs(0, 1), alpha=[0.5, -1.0])
    with pytest.raises(ValueError, match=r"buffer\.beta_start: 3 values for 2 members"):
        PrioritizedReplayBuffer(8, 4, OBS_SHAPE, rngs(0, 1), beta_start=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"buffer\.priority_eps: 1 values for 2 members"):
        PrioritizedReplayBuffer(8, 4, OBS_SHAPE, rngs(0, 1), priority_eps=[0.1])
    buf = PrioritizedReplayBuffer(8, 4, OBS_SHAPE, rngs(0, 1), alpha=[0.5, 1.0], beta_start=0.3)
    assert buf.alpha == [0.5, 1.0] and buf.beta.tolist() == [0.3, 0.3]


def test_latest_constructor_validation() -> None:
    with pytest.raises(ValueError, match=r"buffer\.capacity must be >= 1"):
        LatestTransitionBuffer(0)
    with pytest.raises(ValueError, match=r"buffer\.batch_size must be >= 1"):
        LatestTransitionBuffer(1, 0)
    with pytest.raises(ValueError, match=r"buffer\.capacity: 1 values for 2 members"):
        LatestTransitionBuffer([4], 1, OBS_SHAPE, rngs(0, 1))
