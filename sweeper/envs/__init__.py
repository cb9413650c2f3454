"""Environments: the seed's GridWorld, CartPoleSimple and F1 pit strategy, registered with
Gymnasium on import.

Registering lets every env, ours or Gymnasium's, be built the same way (``make_env``), with
the step limit applied by ``TimeLimit`` and reported as truncation.
"""

from __future__ import annotations

import gymnasium

from sweeper.envs.cartpole_simple import CartPoleSimple
from sweeper.envs.f1 import TRACKS, F1PitStrategy
from sweeper.envs.gridworld import GridWorld

#: id -> (entry point, max_episode_steps). 200 is the seed's per-episode cap on GridWorld.
_SPECS: dict[str, tuple[str, int]] = {
    "sweeper/GridWorld-v0": ("sweeper.envs.gridworld:GridWorld", 200),
    "sweeper/CartPoleSimple-v0": ("sweeper.envs.cartpole_simple:CartPoleSimple", 500),
}

#: The seed's goal line: "Goal (200 steps)" on CartPoleSimple (a return of one per step).
_SOLVED = {"sweeper/CartPoleSimple-v0": 200.0}

for _env_id, (_entry_point, _max_steps) in _SPECS.items():
    if _env_id not in gymnasium.registry:  # idempotent: re-imports and reloads are harmless
        gymnasium.register(
            id=_env_id,
            entry_point=_entry_point,
            max_episode_steps=_max_steps,
            reward_threshold=_SOLVED.get(_env_id),
        )

# A race ends itself after its laps (terminated, never truncated): no step limit.
_F1 = {"sweeper/F1PitStrategy-v0": None} | {
    f"sweeper/F1-{track.capitalize()}-v0": track for track in TRACKS
}
for _env_id, _track in _F1.items():
    if _env_id not in gymnasium.registry:
        gymnasium.register(
            id=_env_id,
            entry_point="sweeper.envs.f1:F1PitStrategy",
            kwargs={} if _track is None else {"track": _track},
        )

from sweeper.envs.factory import is_discrete_obs, make_env, obs_shape  # noqa: E402

__all__ = [
    "CartPoleSimple",
    "F1PitStrategy",
    "GridWorld",
    "is_discrete_obs",
    "make_env",
    "obs_shape",
]
