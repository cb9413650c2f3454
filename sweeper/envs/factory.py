"""One entry point that builds any supported env and rejects the ones our agents cannot use.

Value-based agents need a Discrete action space and a Box or Discrete observation; checking
here turns a late, cryptic failure inside an agent into an early one-line error naming the id.
"""

from __future__ import annotations

from typing import Any

import gymnasium
from gymnasium import spaces

from sweeper.messages import one_line

# Importing this module runs sweeper/envs/__init__.py first, which registers our ids.


def check_env_id(env_id: str) -> None:
    """ValueError naming ``env_id`` when Gymnasium has no such id; builds nothing, so a sweep
    can check every trial's env before the first one starts."""
    try:
        gymnasium.spec(env_id)
    except gymnasium.error.Error as err:
        raise ValueError(f"unknown environment id {env_id!r}: {one_line(err)}") from err


def make_env(env_id: str, *, max_episode_steps: int | None = None, **kwargs: Any) -> gymnasium.Env:
    """``gymnasium.make`` without the passive checker (it slows the hot loop), plus validation.

    ``max_episode_steps=None`` keeps the registered limit; ``kwargs`` go to the constructor.
    Raises ValueError naming ``env_id`` when it is unknown or its spaces are unsupported.
    """
    try:
        env = gymnasium.make(
            env_id, max_episode_steps=max_episode_steps, disable_env_checker=True, **kwargs
        )
    except (gymnasium.error.UnregisteredEnv, gymnasium.error.DeprecatedEnv) as err:
        raise ValueError(f"unknown environment id {env_id!r}: {one_line(err)}") from err
    if not isinstance(env.action_space, spaces.Discrete):
        env.close()
        raise ValueError(
            f"environment {env_id!r} has action space {env.action_space}; "
            "value-based agents need Discrete actions"
        )
    if not isinstance(env.observation_space, spaces.Box | spaces.Discrete):
        env.close()
        raise ValueError(
            f"environment {env_id!r} has observation space {env.observation_space}; "
            "only Box and Discrete observations are supported"
        )
    return env


def is_discrete_obs(space: spaces.Space) -> bool:
    """True for a Discrete observation space (a tabular state index)."""
    return isinstance(space, spaces.Discrete)


def obs_shape(space: spaces.Space) -> tuple[int, ...]:
    """Shape of the observation as a network's input sees it.

    Box: its shape. Discrete(n): ``(n,)``, the one-hot encoding (what
    ``gymnasium.spaces.flatten_space`` gives); tabular agents use ``space.n`` instead.
    """
    if isinstance(space, spaces.Box):
        return tuple(int(d) for d in space.shape)
    if isinstance(space, spaces.Discrete):
        return (int(space.n),)
    raise ValueError(f"unsupported observation space {space}; expected Box or Discrete")
