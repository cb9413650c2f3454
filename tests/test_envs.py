"""Environments: Gymnasium API conformance, seed-faithful dynamics, registration and make_env."""

from __future__ import annotations

import math
import re
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from sweeper.envs import CartPoleSimple, GridWorld, is_discrete_obs, make_env, obs_shape

UP, DOWN, LEFT, RIGHT = 0, 1, 2, 3


def _rollout(env: gymnasium.Env, seed: int, actions: list[int]) -> list:
    obs, _ = env.reset(seed=seed)
    trace = [np.asarray(obs).tolist()]
    for a in actions:
        obs, r, term, trunc, _ = env.step(a)
        trace.append((np.asarray(obs).tolist(), r, term, trunc))
        if term or trunc:
            obs, _ = env.reset()
            trace.append(np.asarray(obs).tolist())
    return trace


# ---------------------------------------------------------------- API conformance
@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("sweeper/GridWorld-v0", {}),
        ("sweeper/GridWorld-v0", {"obs_mode": "onehot"}),
        ("sweeper/GridWorld-v0", {"obs_mode": "coords"}),
        ("sweeper/CartPoleSimple-v0", {}),
    ],
)
def test_check_env_passes_without_warnings(env_id: str, kwargs: dict) -> None:
    env = make_env(env_id, **kwargs).unwrapped  # unwrapped but with a spec (render/close checks)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Unbounded velocities, exactly as gymnasium's own CartPole (which warns the same way).
        warnings.filterwarnings("ignore", message=".*infinity")
        check_env(env)


@pytest.mark.parametrize("env_id", ["sweeper/GridWorld-v0", "sweeper/CartPoleSimple-v0"])
def test_same_seed_same_trajectory(env_id: str) -> None:
    actions = [int(a) for a in np.random.default_rng(0).integers(2, size=300)]
    first = _rollout(make_env(env_id), 123, actions)
    assert first == _rollout(make_env(env_id), 123, actions)
    assert first != _rollout(make_env(env_id), 124, actions)


# ---------------------------------------------------------------- GridWorld
def test_gridworld_layout_helpers() -> None:
    env = GridWorld()
    assert env.n_states == 16
    assert env.state_index(2, 3) == 11
    assert env.terminal_states == {3, 11}
    assert env.wall_states == {5}
    assert env.observation_space == spaces.Discrete(16)
    assert env.action_space == spaces.Discrete(4)
    obs, info = env.reset(seed=0)
    assert obs == env.state_index(3, 0) and isinstance(obs, int) and info == {}


def test_gridworld_deterministic_moves_walls_edges_and_rewards() -> None:
    env = GridWorld(slip=0.0)

    def walk(start: tuple[int, int], action: int) -> tuple[int, float, bool]:
        env.reset(options={"start": start})
        obs, r, term, trunc, _ = env.step(action)
        assert trunc is False
        return obs, r, term

    idx = env.state_index
    assert walk((3, 0), UP) == (idx(2, 0), -0.04, False)
    assert walk((3, 0), RIGHT) == (idx(3, 1), -0.04, False)
    assert walk((3, 0), DOWN) == (idx(3, 0), -0.04, False)  # bottom edge: stay
    assert walk((3, 0), LEFT) == (idx(3, 0), -0.04, False)  # left edge: stay
    assert walk((0, 1), UP) == (idx(0, 1), -0.04, False)  # top edge: stay
    assert walk((1, 0), RIGHT) == (idx(1, 0), -0.04, False)  # wall (1,1): stay
    assert walk((2, 1), UP) == (idx(2, 1), -0.04, False)  # wall from below
    assert walk((1, 3), RIGHT) == (idx(1, 3), -0.04, False)  # right edge: stay
    assert walk((0, 2), RIGHT) == (idx(0, 3), 1.0, True)  # goal
    assert walk((1, 3), UP) == (idx(0, 3), 1.0, True)
    assert walk((1, 3), DOWN) == (idx(2, 3), -1.0, True)  # trap
    assert walk((2, 2), RIGHT) == (idx(2, 3), -1.0, True)
    assert walk((3, 3), UP) == (idx(2, 3), -1.0, True)


def test_gridworld_shortest_path_return() -> None:
    env = GridWorld(slip=0.0)
    env.reset(seed=0)
    rewards = [env.step(a)[1] for a in (UP, UP, UP, RIGHT, RIGHT)]
    obs, r, term, _, _ = env.step(RIGHT)
    assert rewards == [-0.04] * 5 and (obs, r, term) == (3, 1.0, True)


def test_gridworld_slip_is_perpendicular_at_the_configured_rate() -> None:
    # Open 5x5 grid, start in the middle, always push UP: outcomes up / left / right only.
    env = GridWorld(size=5, goal=(0, 0), walls=[], traps=[], start=[2, 2], slip=0.1)
    env.reset(seed=7)
    n = 6000
    counts = {"up": 0, "left": 0, "right": 0}
    where = {env.state_index(1, 2): "up", env.state_index(2, 1): "left"}
    where[env.state_index(2, 3)] = "right"
    for _ in range(n):
        env.reset()
        obs, *_ = env.step(UP)
        counts[where[obs]] += 1  # KeyError would mean a non-perpendicular outcome
    slipped = counts["left"] + counts["right"]
    tol = 4 * math.sqrt(0.1 * 0.9 / n)
    assert abs(slipped / n - 0.1) < tol
    assert abs(counts["left"] - counts["right"]) < 4 * math.sqrt(slipped / 4) + 1


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"goal": (4, 0)}, "goal"),
        ({"walls": [(0, -1)]}, "walls"),
        ({"traps": [[9, 9]]}, "traps"),
        ({"start": (1, 1)}, "start"),  # a wall
        ({"start": (2, 3)}, "start"),  # a trap
        ({"start": (0, 3)}, "start"),  # the goal
        ({"slip": 1.5}, "slip"),
        ({"slip": -0.1}, "slip"),
        ({"obs_mode": "pixels"}, "obs_mode"),
        ({"size": 1, "goal": (0, 0), "walls": [], "traps": [], "start": (0, 0)}, "size"),
    ],
)
def test_gridworld_validation_names_the_keyword(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        GridWorld(**kwargs)


def test_gridworld_accepts_lists_like_hydra() -> None:
    env = GridWorld(goal=[0, 3], walls=[[1, 1]], traps=[[2, 3]], start=[3, 0])
    assert env.goal == (0, 3) and env.walls == {(1, 1)} and env.start == (3, 0)


def test_gridworld_observation_modes() -> None:
    onehot = GridWorld(obs_mode="onehot")
    obs, _ = onehot.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (16,) and obs[12] == 1.0 and obs.sum() == 1
    coords = GridWorld(obs_mode="coords")
    obs, _ = coords.reset(seed=0)
    np.testing.assert_allclose(obs, [1.0, 0.0])
    assert coords.observation_space.contains(obs)


def test_gridworld_ansi_render() -> None:
    env = make_env("sweeper/GridWorld-v0", render_mode="ansi")
    env.reset(seed=0)
    assert env.render() == ". . . G\n. W . .\n. . . T\nA . . .\n"


# ---------------------------------------------------------------- CartPoleSimple
def _seed_cartpole_step(state: list[float], action: int) -> tuple[list[float], float, bool]:
    """Transcription of the seed notebook's CartPoleSimple.step (numpy, float64)."""
    gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    total_mass = masscart + masspole
    polemass_length = masspole * length
    x, x_dot, theta, theta_dot = state
    force = force_mag if action == 1 else -force_mag
    cos_theta, sin_theta = np.cos(theta), np.sin(theta)
    temp = (force + polemass_length * theta_dot**2 * sin_theta) / total_mass
    theta_acc = (gravity * sin_theta - cos_theta * temp) / (
        length * (4.0 / 3.0 - masspole * cos_theta**2 / total_mass)
    )
    x_acc = temp - polemass_length * theta_acc * cos_theta / total_mass
    x += tau * x_dot
    x_dot += tau * x_acc
    theta += tau * theta_dot
    theta_dot += tau * theta_acc
    done = bool(abs(x) > 2.4 or abs(theta) > 12 * np.pi / 180)
    return [x, x_dot, theta, theta_dot], (1.0 if not done else 0.0), done


@pytest.mark.parametrize(
    "state",
    [
        [0.0, 0.0, 0.0, 0.0],
        [0.03, -0.02, 0.04, -0.01],
        [1.0, 1.5, -0.15, 2.0],
        [2.39, 0.8, 0.1, 0.3],  # crosses the x threshold
        [-0.5, -0.3, -0.2, -1.0],  # already past the angle threshold
    ],
)
@pytest.mark.parametrize("action", [0, 1])
def test_cartpole_step_matches_seed_formula(state: list[float], action: int) -> None:
    env = CartPoleSimple()
    env.reset(seed=0)
    env.state = tuple(state)
    obs, reward, term, trunc, info = env.step(action)
    expected, exp_reward, exp_done = _seed_cartpole_step(state, action)
    np.testing.assert_allclose(env.state, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(obs, np.array(expected, dtype=np.float32))
    assert obs.dtype == np.float32 and obs.shape == (4,)
    assert (reward, term, trunc, info) == (exp_reward, exp_done, False, {})
    assert isinstance(reward, float) and isinstance(term, bool)


def test_cartpole_reset_distribution_and_spaces() -> None:
    env = CartPoleSimple()
    starts = np.array([env.reset(seed=s)[0] for s in range(200)])
    assert np.all(np.abs(starts) <= 0.05) and starts.std(axis=0).min() > 0.02
    assert env.action_space == spaces.Discrete(2)
    high = env.observation_space.high
    assert env.observation_space.dtype == np.float32
    np.testing.assert_allclose(high, [4.8, np.inf, 24 * math.pi / 180, np.inf], rtol=1e-6)


def test_cartpole_invalid_action_raises() -> None:
    env = CartPoleSimple()
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(2)


# ---------------------------------------------------------------- registration and time limits
def _balance(obs: np.ndarray) -> int:
    """A PD controller that keeps the pole up for 500+ steps."""
    return int(obs[2] + 0.5 * obs[3] > 0)


def test_registered_specs() -> None:
    assert gymnasium.spec("sweeper/GridWorld-v0").max_episode_steps == 200
    assert gymnasium.spec("sweeper/CartPoleSimple-v0").max_episode_steps == 500
    import importlib

    import sweeper.envs

    importlib.reload(sweeper.envs)  # registering twice is harmless
    assert gymnasium.spec("sweeper/GridWorld-v0").max_episode_steps == 200


def _steps_until_done(env: gymnasium.Env, policy) -> tuple[int, bool, bool]:
    obs, _ = env.reset(seed=3)
    for t in range(1, 10_000):
        obs, _, term, trunc, _ = env.step(policy(obs))
        if term or trunc:
            return t, term, trunc
    raise AssertionError("episode never ended")


def test_gridworld_truncates_at_200() -> None:
    env = make_env("sweeper/GridWorld-v0", slip=0.0)
    assert _steps_until_done(env, lambda obs: LEFT) == (200, False, True)  # stuck in a corner


def test_cartpole_truncates_at_500() -> None:
    env = make_env("sweeper/CartPoleSimple-v0")
    assert _steps_until_done(env, _balance) == (500, False, True)


def test_custom_max_episode_steps() -> None:
    env = make_env("sweeper/CartPoleSimple-v0", max_episode_steps=37)
    assert _steps_until_done(env, _balance) == (37, False, True)
    assert _steps_until_done(make_env("CartPole-v1", max_episode_steps=25), _balance) == (
        25,
        False,
        True,
    )


def test_cartpole_falls_and_terminates_with_zero_reward() -> None:
    env = make_env("sweeper/CartPoleSimple-v0")
    env.reset(seed=0)
    rewards = []
    while True:
        _, r, term, trunc, _ = env.step(1)  # always push right: falls within ~10 steps
        rewards.append(r)
        if term or trunc:
            break
    assert term and not trunc and len(rewards) < 50
    assert rewards[-1] == 0.0 and set(rewards[:-1]) == {1.0}


# ---------------------------------------------------------------- make_env
@pytest.mark.parametrize(
    ("env_id", "shape"),
    [
        ("CartPole-v1", (4,)),
        ("Acrobot-v1", (6,)),
        ("MountainCar-v0", (2,)),
        ("sweeper/CartPoleSimple-v0", (4,)),
        ("sweeper/GridWorld-v0", (16,)),
    ],
)
def test_make_env_builds_supported_envs(env_id: str, shape: tuple[int, ...]) -> None:
    env = make_env(env_id)
    assert isinstance(env.action_space, spaces.Discrete)
    assert obs_shape(env.observation_space) == shape
    assert is_discrete_obs(env.observation_space) == (env_id == "sweeper/GridWorld-v0")
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    env.close()


def test_make_env_skips_passive_checker() -> None:
    env = make_env("sweeper/CartPoleSimple-v0")
    wrappers = []
    while isinstance(env, gymnasium.Wrapper):
        wrappers.append(type(env).__name__)
        env = env.env
    assert "PassiveEnvChecker" not in wrappers and "TimeLimit" in wrappers


@pytest.mark.parametrize("env_id", ["NoSuchEnv-v0", "CartPole-v99", "sweeper/Nope-v0"])
def test_make_env_unknown_id(env_id: str) -> None:
    with pytest.raises(ValueError, match=re.escape(env_id)) as err:
        make_env(env_id)
    assert "\n" not in str(err.value)


def test_make_env_rejects_continuous_actions() -> None:
    with pytest.raises(ValueError, match="Pendulum-v1.*Discrete"):
        make_env("Pendulum-v1")


def test_make_env_passes_constructor_kwargs() -> None:
    env = make_env("sweeper/GridWorld-v0", obs_mode="coords", slip=0.0)
    assert env.observation_space.shape == (2,) and env.unwrapped.slip == 0.0
    with pytest.raises(ValueError, match="slip"):
        make_env("sweeper/GridWorld-v0", slip=2.0)


def test_obs_shape_rejects_other_spaces() -> None:
    with pytest.raises(ValueError):
        obs_shape(spaces.MultiBinary(3))
