"""The honest oracle for :class:`~sweeper.envs.f1.F1PitStrategy`: the optimal pit strategy.

With the noise, safety cars and weather switched off (``noise_std=0``, ``sc_prob=0``,
``weather_change_prob=0``) a race is a deterministic planning problem over (lap, compound,
tyre age, dry compounds used): dynamic programming over that state gives the best return a
policy can reach, and the strategy (the action per lap) that reaches it. It uses the env's
own lap-time formula (``F1PitStrategy.lap_seconds``), so it cannot drift from the env.

What it optimizes is the env's return when that return depends on the car's own time only:
the per-lap time shaping and the two-compound rule, with the points either switched off
(``points_scale=0``) or constant (no rivals: always P1). Learning tests compare an agent's
greedy race against it, as the GridWorld tests compare against value iteration.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

from sweeper.envs.f1 import DRY, F1PitStrategy


@dataclass(frozen=True)
class Strategy:
    value: float  # the best return
    actions: tuple[int, ...]  # one per lap: 0 stay out, 1 + i pit for compounds[i]

    def pits(self, env: F1PitStrategy) -> list[tuple[int, str]]:
        """(lap, compound) of each stop, laps 0-based."""
        return [(lap, env.compounds[a - 1]) for lap, a in enumerate(self.actions) if a]


def check_deterministic(env: F1PitStrategy) -> None:
    """ValueError unless the race is deterministic and its return is the car's own time."""
    if env.noise_std or env.sc_prob or env.weather_change_prob:
        raise ValueError("the oracle needs noise_std=0, sc_prob=0, weather_change_prob=0")
    if env.rivals and (env.points_scale or env.pass_cost):
        raise ValueError("with rivals the oracle needs points_scale=0 and pass_cost=0")


def optimal_strategy(env: F1PitStrategy) -> Strategy:
    """Dynamic programming over (lap, compound, tyre age, dry compounds used)."""
    check_deterministic(env)
    compounds, laps = env.compounds, env.laps
    weather = env.weather_start
    dry_bit = {c: 1 << i for i, c in enumerate(DRY)}
    end_points = env.points_scale * env.points_for(1) if not env.rivals else 0.0

    def lap_reward(compound: str, age: int, lap: int, stop: bool) -> float:
        seconds = env.lap_seconds(compound, age, lap, weather)
        seconds += env.pit_seconds(False) if stop else 0.0
        return -env.time_shaping * (seconds - env.base_lap_time) if env.time_shaping else 0.0

    @functools.cache
    def value(lap: int, compound: str, age: int, used: int) -> tuple[float, int]:
        if lap == laps:
            broken = weather == "dry" and bin(used).count("1") < 2
            return end_points - (env.rule_penalty if broken else 0.0), 0
        best, best_action = -float("inf"), 0
        for action in range(1 + len(compounds)):
            new = compounds[action - 1] if action else compound
            new_age = 0 if action else age
            reward = lap_reward(new, new_age, lap, bool(action))
            rest, _ = value(lap + 1, new, new_age + 1, used | dry_bit.get(new, 0))
            if reward + rest > best + 1e-12:
                best, best_action = reward + rest, action
        return best, best_action

    actions, state = [], (0, env.start_compound, 0, dry_bit.get(env.start_compound, 0))
    total, _ = value(*state)
    for _ in range(laps):
        lap, compound, age, used = state
        _, action = value(*state)
        actions.append(action)
        new = compounds[action - 1] if action else compound
        new_age = 0 if action else age
        state = (lap + 1, new, new_age + 1, used | dry_bit.get(new, 0))
    return Strategy(float(total), tuple(actions))


def race_return(env: F1PitStrategy, actions: tuple[int, ...], seed: int = 0) -> float:
    """The env's return for a fixed sequence of actions (one per lap)."""
    env.reset(seed=seed)
    total = 0.0
    for action in actions:
        _, reward, terminated, _, _ = env.step(action)
        total += reward
        if terminated:
            break
    return total


def brute_force(env: F1PitStrategy) -> Strategy:
    """Every action sequence, simulated: for small races only (actions ** laps)."""
    best = None
    for actions in itertools.product(range(env.action_space.n), repeat=env.laps):
        ret = race_return(env, actions)
        if best is None or ret > best.value + 1e-12:
            best = Strategy(ret, tuple(actions))
    assert best is not None
    return best
