"""Replay buffers and the sum tree, on real numpy data (no mocks)."""

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


def transition(i: int, obs_shape: tuple[int, ...] = OBS_SHAPE) -> tuple:
    """A transition whose every field encodes ``i``, so stored rows can be identified."""
    obs = np.full(obs_shape, float(i), dtype=np.float32)
    return obs, i % 4, float(i) / 2, obs + 0.5, i % 3 == 0


def fill(buffer: UniformReplayBuffer, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        buffer.add(*transition(i, buffer.obs_shape))


def make(cls, capacity: int = 8, batch_size: int = 4, seed: int = 0, **kwargs):
    return cls(capacity, batch_size, OBS_SHAPE, np.random.default_rng(seed), **kwargs)


def assert_rows_match_storage(buffer: UniformReplayBuffer, s: ReplaySamples) -> None:
    i = s.indices
    np.testing.assert_array_equal(s.observations, buffer.observations[i])
    np.testing.assert_array_equal(s.next_observations, buffer.next_observations[i])
    np.testing.assert_array_equal(s.actions, buffer.actions[i])
    np.testing.assert_array_equal(s.rewards, buffer.rewards[i])
    np.testing.assert_array_equal(s.terminated, buffer.terminated[i])


def chi_square(counts: np.ndarray, expected_probs: np.ndarray) -> float:
    expected = counts.sum() * expected_probs
    return float(((counts - expected) ** 2 / expected).sum())


# --------------------------------------------------------------------------- ring storage


@pytest.mark.parametrize("cls", [UniformReplayBuffer, PrioritizedReplayBuffer])
def test_ring_wraps_and_overwrites_oldest(cls) -> None:
    buf = make(cls, capacity=5, batch_size=2)
    assert (len(buf), buf.pos, buf.full, buf.can_sample()) == (0, 0, False, False)
    fill(buf, 1)
    assert (len(buf), buf.pos, buf.full, buf.can_sample()) == (1, 1, False, False)
    fill(buf, 4, start=1)
    assert (len(buf), buf.pos, buf.full, buf.can_sample()) == (5, 0, True, True)
    fill(buf, 2, start=5)  # overwrites transitions 0 and 1
    assert (len(buf), buf.pos, buf.full) == (5, 2, True)
    np.testing.assert_array_equal(buf.observations[:, 0], [5, 6, 2, 3, 4])
    np.testing.assert_array_equal(buf.rewards, [2.5, 3.0, 1.0, 1.5, 2.0])
    np.testing.assert_array_equal(buf.actions, [1, 2, 2, 3, 0])


def test_can_sample_needs_batch_size_transitions() -> None:
    buf = make(UniformReplayBuffer, capacity=10, batch_size=4)
    fill(buf, 3)
    assert not buf.can_sample()
    fill(buf, 1, start=3)
    assert buf.can_sample()


@pytest.mark.parametrize("cls", [UniformReplayBuffer, PrioritizedReplayBuffer])
def test_storage_and_sample_dtypes_and_shapes(cls) -> None:
    obs_shape = (2, 3)
    buf = cls(6, 4, obs_shape, np.random.default_rng(0))
    fill(buf, 6)
    assert buf.observations.shape == (6, 2, 3) and buf.observations.dtype == np.float32
    assert buf.next_observations.shape == (6, 2, 3)
    assert buf.actions.dtype == np.int64
    assert buf.rewards.dtype == np.float32 and buf.terminated.dtype == np.float32
    s = buf.sample()
    assert isinstance(s, ReplaySamples)
    assert s.observations.shape == s.next_observations.shape == (4, 2, 3)
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
        assert getattr(s, name).shape == (4,), name
    assert_rows_match_storage(buf, s)


def test_uint8_observations_are_stored_compactly_and_sampled_as_float32() -> None:
    buf = UniformReplayBuffer(4, 2, (2, 2), np.random.default_rng(0), obs_dtype=np.uint8)
    obs = np.full((2, 2), 255, dtype=np.uint8)
    buf.add(obs, 1, 0.0, obs, False)
    assert buf.observations.dtype == np.uint8
    s = buf.sample()
    assert s.observations.dtype == np.float32 and s.observations.max() == 255.0


def test_only_termination_is_stored_as_done() -> None:
    """A time-limit truncation is added with terminated=False: its target bootstraps."""
    buf = make(UniformReplayBuffer, capacity=2, batch_size=1)
    obs = np.zeros(OBS_SHAPE, dtype=np.float32)
    buf.add(obs, 0, 1.0, obs, terminated=False)  # truncated by the time limit
    buf.add(obs, 0, 1.0, obs, terminated=True)
    np.testing.assert_array_equal(buf.terminated, [0.0, 1.0])
    buf.add(obs, 0, 1.0, obs, terminated=np.bool_(True))  # gymnasium returns np.bool_
    assert buf.terminated[0] == 1.0


def test_samples_are_copies() -> None:
    buf = make(UniformReplayBuffer)
    fill(buf, 8)
    s = buf.sample()
    before = buf.observations.copy()
    s.observations[:] = -1
    s.rewards[:] = -1
    np.testing.assert_array_equal(buf.observations, before)
    assert (buf.rewards >= 0).all()


def test_add_rejects_wrong_observation_shape() -> None:
    buf = make(UniformReplayBuffer)
    with pytest.raises(ValueError, match="obs_shape"):
        buf.add(np.zeros(4), 0, 0.0, np.zeros(4), False)
    with pytest.raises(ValueError, match="obs_shape"):
        buf.add(0.0, 0, 0.0, 0.0, False)  # would otherwise broadcast silently


@pytest.mark.parametrize("cls", [UniformReplayBuffer, PrioritizedReplayBuffer])
def test_sampling_an_empty_buffer_raises(cls) -> None:
    with pytest.raises(RuntimeError, match="empty"):
        make(cls).sample()


def test_uniform_priority_hooks_are_noops_and_weights_are_one() -> None:
    buf = make(UniformReplayBuffer)
    fill(buf, 8)
    s = buf.sample()
    buf.update_priorities(s.indices, np.arange(4.0))
    buf.set_progress(0.5)
    np.testing.assert_array_equal(s.weights, np.ones(4, dtype=np.float32))


@pytest.mark.parametrize("cls", [UniformReplayBuffer, PrioritizedReplayBuffer])
def test_same_seed_same_samples(cls) -> None:
    a, b = make(cls, seed=123), make(cls, seed=123)
    fill(a, 8)
    fill(b, 8)
    for _ in range(5):
        sa, sb = a.sample(), b.sample()
        for x, y in zip(sa, sb, strict=True):
            np.testing.assert_array_equal(x, y)
        td = np.arange(4.0) + sa.indices
        a.update_priorities(sa.indices, td)
        b.update_priorities(sb.indices, td)
    c = make(cls, seed=124)
    fill(c, 8)
    assert not np.array_equal(a.sample().indices, c.sample().indices)


def test_uniform_sampling_frequencies() -> None:
    buf = make(UniformReplayBuffer, capacity=20, batch_size=20, seed=7)
    fill(buf, 20)
    counts = np.zeros(20)
    for _ in range(1500):
        counts += np.bincount(buf.sample().indices, minlength=20)
    # df = 19: mean 19, sd ~6.2; 50 is ~5 sd out.
    assert chi_square(counts, np.full(20, 1 / 20)) < 50


def test_uniform_samples_only_written_slots() -> None:
    buf = make(UniformReplayBuffer, capacity=100, batch_size=4)
    fill(buf, 6)
    for _ in range(200):
        assert buf.sample().indices.max() < 6


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


def test_prioritized_buffer_survives_deepcopy() -> None:
    buf = make(PrioritizedReplayBuffer, capacity=8, batch_size=2, alpha=1.0)
    fill(buf, 8)
    clone = copy.deepcopy(buf)
    clone.update_priorities(np.array([3]), np.array([10.0]))
    assert clone.tree.total == pytest.approx(7 + 10 + clone.priority_eps)
    assert buf.tree.total == 8.0


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


# --------------------------------------------------------------------------- prioritized


def prioritized_with_tds(tds, alpha: float, batch_size: int = 4, seed: int = 0, **kwargs):
    buf = PrioritizedReplayBuffer(
        len(tds), batch_size, OBS_SHAPE, np.random.default_rng(seed), alpha=alpha, **kwargs
    )
    fill(buf, len(tds))
    buf.update_priorities(np.arange(len(tds)), np.asarray(tds, dtype=float))
    return buf


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_prioritized_sampling_frequencies_follow_p_alpha(alpha: float) -> None:
    tds = np.array([1.0, -2.0, 3.0, -4.0])  # the sign must not matter
    buf = prioritized_with_tds(tds, alpha=alpha)
    counts = np.zeros(4)
    for _ in range(5000):
        counts += np.bincount(buf.sample().indices, minlength=4)
    expected = (np.abs(tds) + buf.priority_eps) ** alpha
    expected /= expected.sum()
    np.testing.assert_allclose(counts / counts.sum(), expected, atol=0.01)


def test_prioritized_alpha_zero_is_uniform() -> None:
    buf = prioritized_with_tds([0.1, 5.0, 20.0, 0.0, 3.0, 1.0, 2.0, 9.0], alpha=0.0)
    np.testing.assert_array_equal(buf.tree.values(), np.ones(8))
    counts = np.zeros(8)
    for _ in range(2000):
        s = buf.sample()
        np.testing.assert_array_equal(s.weights, np.ones(4, dtype=np.float32))
        counts += np.bincount(s.indices, minlength=8)
    assert chi_square(counts, np.full(8, 1 / 8)) < 30  # df = 7


@pytest.mark.parametrize("alpha", [1.0, 0.5])
@pytest.mark.parametrize("progress", [0.0, 0.5, 1.0])
def test_prioritized_importance_weights_match_formula(alpha: float, progress: float) -> None:
    tds = np.array([1.0, 2.0, 3.0, 4.0])
    buf = prioritized_with_tds(tds, alpha=alpha, batch_size=4, beta_start=0.4)
    buf.set_progress(progress)
    beta = 0.4 + progress * 0.6
    p = (tds + buf.priority_eps) ** alpha
    probs = p / p.sum()
    for _ in range(20):
        s = buf.sample()
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
    buf.update_priorities(np.array([0, 1]), np.array([1.0, 4.0]))
    # With stratified sampling over 2 segments of mass 2.5 each, segment one always hits
    # transition 0 (mass [0, 1)) or 1, segment two always hits transition 1.
    seen_both = False
    for _ in range(50):
        s = buf.sample()
        expected = {0: 1.0, 1: 0.5} if 0 in s.indices else {1: 1.0}
        seen_both |= 0 in s.indices
        for i, w in zip(s.indices, s.weights, strict=True):
            assert w == pytest.approx(expected[int(i)], rel=1e-6)
    assert seen_both


def test_beta_annealing() -> None:
    buf = make(PrioritizedReplayBuffer, beta_start=0.4)
    assert buf.beta == 0.4
    buf.set_progress(0.5)
    assert buf.beta == pytest.approx(0.7)
    buf.set_progress(1.0)
    assert buf.beta == 1.0
    buf.set_progress(3.0)
    assert buf.beta == 1.0
    buf.set_progress(-1.0)
    assert buf.beta == 0.4
    with pytest.raises(ValueError):
        buf.set_progress(float("nan"))


def test_new_transitions_get_max_priority() -> None:
    buf = make(PrioritizedReplayBuffer, capacity=6, batch_size=2, alpha=0.5)
    fill(buf, 3)
    np.testing.assert_array_equal(buf.tree.values()[:3], 1.0)  # initial max priority 1
    buf.update_priorities(np.array([0, 1]), np.array([8.0, 0.5]))
    fill(buf, 1, start=3)
    expected = (8.0 + buf.priority_eps) ** 0.5
    assert buf.tree[3] == pytest.approx(expected)
    buf.update_priorities(np.array([0]), np.array([0.1]))  # max priority never decreases
    fill(buf, 3, start=4)  # wraps: slot 0 is overwritten and gets the max priority again
    assert buf.tree[0] == pytest.approx(expected)
    assert buf.max_priority == pytest.approx(8.0 + buf.priority_eps)


def test_update_priorities_duplicates_and_validation() -> None:
    buf = make(PrioritizedReplayBuffer, capacity=8, batch_size=2, alpha=1.0)
    fill(buf, 5)
    buf.update_priorities(np.array([2, 2, 2]), np.array([1.0, 6.0, 3.0]))
    assert buf.tree[2] == pytest.approx(3.0 + buf.priority_eps)
    with pytest.raises(IndexError):
        buf.update_priorities(np.array([5]), np.array([1.0]))  # not yet written
    with pytest.raises(ValueError, match="non-finite"):
        buf.update_priorities(np.array([0, 1]), np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="non-finite"):
        buf.update_priorities(np.array([0]), np.array([np.inf]))
    with pytest.raises(ValueError):
        buf.update_priorities(np.array([0, 1]), np.array([1.0]))
    buf.update_priorities(np.array([0]), np.array([[2.0]]))  # (B, 1) column is fine
    assert buf.tree[0] == pytest.approx(2.0 + buf.priority_eps)


def test_prioritized_samples_only_written_slots_and_rows_match() -> None:
    buf = make(PrioritizedReplayBuffer, capacity=100, batch_size=8, seed=1)
    fill(buf, 10)
    buf.update_priorities(np.arange(10), np.linspace(0, 5, 10))
    for _ in range(200):
        s = buf.sample()
        assert s.indices.max() < 10
        assert_rows_match_storage(buf, s)


# --------------------------------------------------------------------------- latest only


def test_latest_buffer_returns_exactly_the_last_transition() -> None:
    buf = LatestTransitionBuffer(obs_shape=OBS_SHAPE, rng=np.random.default_rng(0))
    assert not buf.can_sample() and len(buf) == 0
    with pytest.raises(RuntimeError):
        buf.sample()
    for i in range(5):
        buf.add(*transition(i))
        s = buf.sample()
        obs, action, reward, next_obs, terminated = transition(i)
        np.testing.assert_array_equal(s.observations, obs[None])
        np.testing.assert_array_equal(s.next_observations, next_obs[None])
        assert s.actions.tolist() == [action] and s.rewards.tolist() == [reward]
        assert s.terminated.tolist() == [float(terminated)]
        assert s.weights.tolist() == [1.0] and s.indices.tolist() == [0]
        assert s.actions.dtype == np.int64 and s.weights.dtype == np.float32
        assert len(buf) == 1 and buf.can_sample()


def test_latest_buffer_ignores_larger_capacity_and_batch_size() -> None:
    buf = LatestTransitionBuffer(10_000, 64, OBS_SHAPE, np.random.default_rng(0))
    assert (buf.capacity, buf.batch_size) == (1, 1)
    assert (buf.requested_capacity, buf.requested_batch_size) == (10_000, 64)
    fill(buf, 3)
    s = buf.sample()
    assert s.observations.shape == (1, 3) and s.observations[0, 0] == 2.0
    buf.update_priorities(s.indices, np.ones(1))  # no-ops keep the agent branch-free
    buf.set_progress(0.5)


def test_latest_buffer_infers_obs_shape_when_omitted() -> None:
    buf = LatestTransitionBuffer()
    buf.add(*transition(4, (2, 2)))
    assert buf.obs_shape == (2, 2)
    assert buf.sample().observations.shape == (1, 2, 2)


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
        cls(8, 4, OBS_SHAPE, np.random.RandomState(0))
    buf = cls(1e4, 64.0, [3], rng)  # YAML-ish floats and lists are accepted
    assert (buf.capacity, buf.batch_size, buf.obs_shape) == (10_000, 64, (3,))


def test_prioritized_constructor_validation() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"buffer\.alpha must be >= 0, got -0\.1"):
        PrioritizedReplayBuffer(8, 4, OBS_SHAPE, rng, alpha=-0.1)
    for beta_start in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"buffer\.beta_start must be in \[0, 1\]"):
            PrioritizedReplayBuffer(8, 4, OBS_SHAPE, rng, beta_start=beta_start)
    with pytest.raises(ValueError, match=r"buffer\.priority_eps must be > 0"):
        PrioritizedReplayBuffer(8, 4, OBS_SHAPE, rng, priority_eps=0.0)
    buf = PrioritizedReplayBuffer(8, 4, OBS_SHAPE, rng, alpha=0.0, beta_start=1.0)
    assert buf.alpha == 0.0 and buf.beta == 1.0


def test_latest_constructor_validation() -> None:
    with pytest.raises(ValueError, match=r"buffer\.capacity must be >= 1"):
        LatestTransitionBuffer(0)
    with pytest.raises(ValueError, match=r"buffer\.batch_size must be >= 1"):
        LatestTransitionBuffer(1, 0)
