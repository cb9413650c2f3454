"""Vector envs: sub-env k is bit-identical, step for step, to a scalar make_env env."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import pytest

from sweeper.envs import make_env, vector
from sweeper.envs.vector import (
    SyncVectorEnv,
    VectorCartPoleSimple,
    VectorEnv,
    VectorGridWorld,
    make_vector_env,
)

CARTPOLE = "sweeper/CartPoleSimple-v0"
GRIDWORLD = "sweeper/GridWorld-v0"
K = 5
GRID_5X5 = {
    "size": 5,
    "goal": [4, 4],  # lists, as Hydra passes them
    "walls": [[1, 1], [2, 2], [3, 1], [1, 3]],
    "traps": [[0, 4], [3, 3]],
    "start": [0, 0],
    "step_reward": -0.1,
    "goal_reward": 2.0,
    "trap_reward": -0.5,
    "slip": 0.3,
}


def _bits(values: list[Any], dtype: np.dtype) -> np.ndarray:
    """What the vector env should return for these scalar outputs."""
    return np.array([np.asarray(v) for v in values], dtype=dtype)


def _assert_same(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert got.dtype == expected.dtype, (what, got.dtype, expected.dtype)
    assert got.shape == expected.shape, (what, got.shape, expected.shape)
    assert got.tobytes() == expected.tobytes(), (what, got, expected)  # bitwise, -0.0 too


def _assert_same_obs(got: np.ndarray, scalar_obs: list[Any]) -> None:
    expected = np.array(scalar_obs)
    if expected.dtype.kind == "i":
        expected = expected.astype(np.int64)  # Discrete obs: Python ints
    _assert_same(got, expected, "obs")


def _drive(
    vec: VectorEnv,
    env_id: str,
    kwargs: dict[str, Any],
    steps: int,
    *,
    max_episode_steps: int | None = None,
    seed: int = 0,
) -> dict[str, int]:
    """Drive ``vec`` and K scalar envs identically; compare every output bitwise."""
    n = vec.num_envs
    scalars = [make_env(env_id, max_episode_steps=max_episode_steps, **kwargs) for _ in range(n)]
    rng = np.random.default_rng(seed)
    n_actions = int(vec.single_action_space.n)
    counts = {"terminated": 0, "truncated": 0, "both": 0, "seeded": 0, "continued": 0}

    seeds = [100 + 7 * k for k in range(n)]  # distinct seeds
    obs = vec.reset(np.arange(n), seeds)
    _assert_same_obs(obs, [env.reset(seed=s)[0] for env, s in zip(scalars, seeds)])
    done = np.zeros(n, dtype=bool)
    for _ in range(steps):
        if done.any() and rng.random() < 0.9:  # sometimes step done envs on, as scalar ones do
            idx = rng.permutation(np.flatnonzero(done))
            seeds = [int(rng.integers(2**31)) if rng.random() < 0.3 else None for _ in idx]
            counts["seeded"] += sum(s is not None for s in seeds)
            counts["continued"] += sum(s is None for s in seeds)
            obs = vec.reset(idx, seeds)
            _assert_same_obs(obs, [scalars[k].reset(seed=s)[0] for k, s in zip(idx, seeds)])
            done[idx] = False
        if rng.random() < 0.5:
            indices = None
            idx = np.arange(n)
        else:  # a random subset in random order
            idx = rng.permutation(n)[: rng.integers(1, n + 1)]
            indices = idx
        actions = rng.integers(n_actions, size=len(idx))
        obs, rewards, terminated, truncated = vec.step(actions, indices)
        outs = [scalars[k].step(int(a)) for k, a in zip(idx, actions)]
        _assert_same_obs(obs, [o[0] for o in outs])
        _assert_same(rewards, _bits([o[1] for o in outs], np.float64), "rewards")
        _assert_same(terminated, _bits([o[2] for o in outs], bool), "terminated")
        _assert_same(truncated, _bits([o[3] for o in outs], bool), "truncated")
        done[idx] = terminated | truncated
        counts["terminated"] += int(terminated.sum())
        counts["truncated"] += int(truncated.sum())
        counts["both"] += int((terminated & truncated).sum())
        if isinstance(vec, VectorCartPoleSimple):  # the float64 state too, not just float32 obs
            expected = np.array([env.unwrapped.state for env in scalars])
            _assert_same(vec.state, expected, "state")

    if isinstance(vec, VectorCartPoleSimple | VectorGridWorld):  # same generator draws
        for k, env in enumerate(scalars):
            expected_rng = env.unwrapped.np_random.bit_generator.state
            assert vec.np_randoms[k].bit_generator.state == expected_rng
    for env in scalars:
        env.close()
    vec.close()
    assert counts["seeded"] and counts["continued"]
    return counts


CASES = [
    pytest.param(CARTPOLE, {}, VectorCartPoleSimple, id="cartpole_simple"),
    pytest.param(GRIDWORLD, {"slip": 0.1}, VectorGridWorld, id="gridworld"),
    pytest.param(GRIDWORLD, {"obs_mode": "onehot"}, VectorGridWorld, id="gridworld_onehot"),
    pytest.param(GRIDWORLD, {"obs_mode": "coords"}, VectorGridWorld, id="gridworld_coords"),
    pytest.param(GRIDWORLD, GRID_5X5, VectorGridWorld, id="gridworld_5x5"),
    pytest.param(GRIDWORLD, {**GRID_5X5, "obs_mode": "coords"}, VectorGridWorld, id="grid_5x5_xy"),
    pytest.param(GRIDWORLD, {"slip": 0.0}, VectorGridWorld, id="gridworld_no_slip"),
    pytest.param(GRIDWORLD, {"slip": 1.0}, VectorGridWorld, id="gridworld_always_slip"),
]


@pytest.mark.parametrize(("env_id", "kwargs", "cls"), CASES)
def test_numpy_class_matches_scalar_envs(env_id: str, kwargs: dict, cls: type) -> None:
    counts = _drive(cls(K, **kwargs), env_id, kwargs, 4000)
    assert counts["terminated"] > 20


def test_cartpole_math_by_element_matches_scalar_envs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vector, "_numpy_math_matches_python", lambda: False)
    vec = VectorCartPoleSimple(K)
    assert vec._cos is not np.cos  # the per-element fallback is in use
    _drive(vec, CARTPOLE, {}, 1000)


@pytest.mark.filterwarnings("ignore:.*already returned terminated")  # steps done envs on
@pytest.mark.parametrize(
    ("env_id", "kwargs", "steps", "limit"),
    [
        (CARTPOLE, {}, 2000, None),
        (GRIDWORLD, {"slip": 0.1}, 2000, None),
        ("CartPole-v1", {}, 2000, None),
        ("Acrobot-v1", {}, 400, 40),  # RK4 steps are slow; random play rarely terminates
    ],
)
def test_loop_matches_scalar_envs(env_id: str, kwargs: dict, steps: int, limit: int | None) -> None:
    vec = SyncVectorEnv(env_id, K, max_episode_steps=limit, **kwargs)
    counts = _drive(vec, env_id, kwargs, steps, max_episode_steps=limit)
    assert counts["terminated"] + counts["truncated"] > 10


@pytest.mark.parametrize(
    ("env_id", "cls"),
    [(CARTPOLE, VectorCartPoleSimple), (GRIDWORLD, VectorGridWorld), ("CartPole-v1", None)],
)
@pytest.mark.filterwarnings("ignore:.*already returned terminated")
def test_small_time_limit_truncates_like_time_limit(env_id: str, cls: type | None) -> None:
    if cls is None:
        vec = SyncVectorEnv(env_id, K, max_episode_steps=6)
    else:
        vec = cls(K, max_episode_steps=6)
    assert vec.max_episode_steps == 6
    counts = _drive(vec, env_id, {}, 1500, max_episode_steps=6, seed=1)
    assert counts["truncated"] > 50


def test_truncated_and_terminated_together() -> None:
    # Always pushing right: find the step at which the scalar env fails, limit it there.
    env = make_env(CARTPOLE)
    env.reset(seed=3)
    fail_step = next(t for t in range(1, 500) if env.step(1)[2])
    vec = VectorCartPoleSimple(2, max_episode_steps=fail_step)
    vec.reset(np.arange(2), [3, 4])
    for t in range(1, fail_step + 1):
        _, rewards, terminated, truncated = vec.step(np.ones(2, dtype=np.int64))
        assert truncated.tolist() == [t == fail_step] * 2
    assert terminated[0] and truncated[0] and rewards[0] == 0.0
    # Stepping on without a reset keeps truncating, as TimeLimit does.
    assert vec.step(np.ones(2, dtype=np.int64))[3].all()
    # A reset restarts the count of that sub-env only.
    vec.reset(np.array([1]), [None])
    assert vec.step(np.ones(2, dtype=np.int64))[3].tolist() == [True, False]


# States where Python's ``v**2`` (libm pow, not always correctly rounded) and ``v*v`` (what
# ``arr**2`` computes) lead to different next states on glibc: 13 in a million random ones.
POW_SENSITIVE_STATES = [
    "-0x1.4e7a25a485428p+0 0x1.d5f85548a4900p-5 -0x1.7b6dd15af7323p-3 -0x1.cbf305e83fee6p+1",
    "0x1.9878314059c10p-1 -0x1.32f0aaeb1cde0p-2 -0x1.a30550a52e748p-5 -0x1.2e61ae804d0f4p+1",
    "0x1.b40d3a40a618cp-1 0x1.d0e294fa3006cp+0 -0x1.810aabfa0bbcfp-4 -0x1.347e2a6d412f8p-1",
    "0x1.db7b8e5397da0p-2 -0x1.737b7dd431584p+1 0x1.940ceb7f3f86cp-5 0x1.55a296bb5f840p+1",
    "-0x1.26e49f91eb3ccp-1 0x1.7e551163b8568p+0 0x1.3d776d45ff079p-3 0x1.3a1067d947920p-3",
    "0x1.69c63c5a7ba18p-2 0x1.42875aa45cc00p-4 -0x1.7efae4c2b5804p-5 -0x1.4f41e395ca0d6p+1",
]
POW_SENSITIVE_ACTIONS = [1, 1, 1, 1, 0, 1]


@pytest.mark.parametrize("numpy_math", [True, False], ids=["numpy_math", "math_by_element"])
def test_cartpole_squares_round_like_python(
    numpy_math: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # math_by_element: the fallback for numpy builds whose cos/sin/pow differ from libm's.
    monkeypatch.setattr(vector, "_numpy_math_matches_python", lambda: numpy_math)
    states = np.array([[float.fromhex(v) for v in row.split()] for row in POW_SENSITIVE_STATES])
    vec = VectorCartPoleSimple(len(states))
    vec.reset(np.arange(len(states)), [None] * len(states))
    vec.state = states
    vec.step(np.array(POW_SENSITIVE_ACTIONS))
    expected = []
    for row, action in zip(states, POW_SENSITIVE_ACTIONS):
        env = make_env(CARTPOLE)
        env.reset(seed=0)
        env.unwrapped.state = tuple(row.tolist())
        env.step(action)
        expected.append(env.unwrapped.state)
    _assert_same(vec.state, np.array(expected), "state")


def test_registered_time_limits_are_kept() -> None:
    assert VectorCartPoleSimple(K).max_episode_steps == 500
    assert VectorGridWorld(K).max_episode_steps == 200
    assert SyncVectorEnv("CartPole-v1", 2).max_episode_steps == 500


@pytest.mark.parametrize("env_id", [CARTPOLE, GRIDWORLD, "CartPole-v1"])
@pytest.mark.parametrize("num_envs", [1, 4, 16])
def test_step_before_reset_raises(env_id: str, num_envs: int) -> None:
    vec = make_vector_env(env_id, num_envs)
    vec.reset(np.array([0]), [0])
    vec.step(np.zeros(1, dtype=np.int64), np.array([0]))  # the reset one steps fine
    if num_envs > 1:
        with pytest.raises(gymnasium.error.ResetNeeded, match=r"\[1\]"):
            vec.step(np.zeros(1, dtype=np.int64), np.array([1]))
        with pytest.raises(gymnasium.error.ResetNeeded):
            vec.step(np.zeros(num_envs, dtype=np.int64))
        vec.reset(np.arange(1, num_envs), [None] * (num_envs - 1))
    vec.step(np.zeros(num_envs, dtype=np.int64))


def test_make_vector_env_picks_numpy_for_our_ids() -> None:
    assert isinstance(
        make_vector_env(CARTPOLE, VectorCartPoleSimple.min_envs), VectorCartPoleSimple
    )
    assert isinstance(make_vector_env(CARTPOLE, 64), VectorCartPoleSimple)
    assert isinstance(make_vector_env(GRIDWORLD, 64, obs_mode="onehot"), VectorGridWorld)
    if VectorCartPoleSimple.min_envs > 1:  # few sub-envs: a loop is faster
        assert isinstance(make_vector_env(CARTPOLE, 1), SyncVectorEnv)
    assert isinstance(make_vector_env("CartPole-v1", 64), SyncVectorEnv)
    vec = make_vector_env(GRIDWORLD, 64, max_episode_steps=9, **GRID_5X5)
    assert vec.max_episode_steps == 9
    assert vec.single_observation_space == gymnasium.spaces.Discrete(25)
    assert vec.single_action_space == gymnasium.spaces.Discrete(4)


def test_unknown_id_and_unsupported_spaces_raise_naming_the_id() -> None:
    with pytest.raises(ValueError, match="NoSuchEnv-v0"):
        make_vector_env("NoSuchEnv-v0", 4)
    with pytest.raises(ValueError, match="Pendulum-v1"):
        make_vector_env("Pendulum-v1", 4)
    with pytest.raises(ValueError, match="slip"):  # kwargs validated by the scalar env
        make_vector_env(GRIDWORLD, 16, slip=2.0)
    with pytest.raises(ValueError, match="num_envs"):
        make_vector_env(CARTPOLE, 0)


@pytest.mark.parametrize("num_envs", [2, 16])
def test_bad_indices_actions_and_seeds_raise(num_envs: int) -> None:
    vec = make_vector_env(GRIDWORLD, num_envs)
    vec.reset(np.arange(num_envs), list(range(num_envs)))
    with pytest.raises(ValueError, match="distinct"):
        vec.step(np.zeros(2, dtype=np.int64), np.array([1, 1]))
    with pytest.raises(ValueError, match="lie in"):
        vec.step(np.zeros(1, dtype=np.int64), np.array([num_envs]))
    with pytest.raises(ValueError, match="lie in"):
        vec.step(np.full(num_envs, 4))
    with pytest.raises(ValueError, match="lie in"):
        vec.step(np.full(num_envs, -1))
    with pytest.raises(ValueError, match="shape"):
        vec.step(np.zeros(num_envs + 1, dtype=np.int64))
    with pytest.raises(ValueError, match="seeds"):
        vec.reset(np.array([0, 1]), [1])
    # Empty index sets are no-ops with well-shaped outputs.
    obs, rewards, terminated, truncated = vec.step(np.zeros(0, dtype=np.int64), np.array([], int))
    assert obs.shape == rewards.shape == terminated.shape == truncated.shape == (0,)
    assert vec.reset(np.array([], dtype=int), []).shape == (0,)


def test_numpy_seeds_accepted_and_match_python_ints() -> None:
    vec = VectorCartPoleSimple(3)
    a = vec.reset(np.arange(3), np.array([5, 6, 7]))
    b = VectorCartPoleSimple(3).reset(np.arange(3), [5, 6, 7])
    _assert_same(a, b, "obs")
    assert a.shape == (3, 4) and a.dtype == np.float32
