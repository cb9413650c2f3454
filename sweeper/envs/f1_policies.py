"""Strategies on the F1 race (``sweeper.envs.f1``) and what their races say.

Why a module: "DQN beats every fixed strategy" and "SARSA stays on inters" are statements
about races a policy drives, on race seeds the training never saw, measured in the race's own
units (championship points, laps on each tyre), whatever the reward's scaling or shaping.
Both the seed comparisons (``sweeper.claims``) and the learning tests read them from here.

A policy is ``policy(obs, info) -> action``: the env's observation and its ``info`` (lap,
compound, weather, ...). Two kinds:

* :func:`fixed_strategy`: a rival's plan (start compound, stops at fractions of the race, the
  weather's tyre when it rains: :func:`sweeper.envs.f1.planned_stop`) driven by the car;
* :func:`greedy`: the greedy policy of a Q-function ``q(obs batch) -> (n, actions)``, ties to
  the lowest action as the agents' own greedy choice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sweeper.envs.f1 import DEFAULT_RIVALS, DRY, F1PitStrategy, planned_stop

Policy = Callable[[Any, Mapping[str, Any]], int]
#: race ``i`` of a measurement starts from ``reset(seed=RACE_SEED_OFFSET + i)``: seeds no
#: training run uses (runs train on their own seed, evaluate from seed + 1_000_003)
RACE_SEED_OFFSET = 500_000_000


@dataclass(frozen=True)
class Race:
    """One race's result, in the race's units."""

    points: float  # championship points of the finishing place, minus the rule penalty
    position: int
    safety_car: bool  # a safety car came out
    pits: int
    dry_laps_on_wet_tyres: int  # laps on inters or wets while the track was dry
    wet_laps_on_slicks: int  # laps on dry compounds while it was damp or wet


def fixed_strategy(env: F1PitStrategy, plan: Sequence[tuple[float, str]]) -> Policy:
    """The policy that drives ``plan`` ((race fraction, compound) stops) from the race's
    start compound, switching to the weather's tyre as the rivals do."""
    planned = {"compound": env.start_compound}

    def policy(obs: Any, info: Mapping[str, Any]) -> int:
        if info["lap"] == 0:
            planned["compound"] = env.start_compound
        planned["compound"], stop = planned_stop(
            plan, info["lap"], env.laps, planned["compound"], info["compound"], info["weather"]
        )
        return 0 if stop is None else 1 + env.compounds.index(stop)

    return policy


def greedy(q: Callable[[np.ndarray], np.ndarray]) -> Policy:
    def policy(obs: Any, info: Mapping[str, Any]) -> int:
        return int(np.argmax(np.asarray(q(np.asarray([obs])))[0]))

    return policy


def races(env: F1PitStrategy, policy: Policy, n: int, offset: int = RACE_SEED_OFFSET) -> list[Race]:
    """``n`` races of ``policy``, race ``i`` from ``reset(seed=offset + i)``."""
    out = []
    for i in range(n):
        obs, info = env.reset(seed=offset + i)
        terminated = False
        while not terminated:
            obs, _, terminated, _, info = env.step(policy(obs, info))
        trace = env.trace()
        out.append(
            Race(
                points=env.result_points(),
                position=env.position(),
                safety_car=any(t["safety_car"] for t in trace),
                pits=sum(t["pit"] for t in trace),
                dry_laps_on_wet_tyres=sum(
                    t["weather"] == "dry" and t["compound"] not in DRY for t in trace
                ),
                wet_laps_on_slicks=sum(
                    t["weather"] != "dry" and t["compound"] in DRY for t in trace
                ),
            )
        )
    return out


def rival_strategies(
    env_kwargs: Mapping[str, Any], n: int, offset: int = RACE_SEED_OFFSET
) -> dict[str, list[Race]]:
    """Each distinct rival plan of the race (``env_kwargs``' ``rivals``, else the default
    field) driven by the car from that plan's start compound, on the same ``n`` race seeds.
    Keys read like ``"medium -> hard@50%"``."""
    rivals = env_kwargs.get("rivals") or DEFAULT_RIVALS
    out: dict[str, list[Race]] = {}
    for _, start, plan in rivals:
        label = " -> ".join([start, *(f"{c}@{f:.0%}" for f, c in plan)])
        if label in out:
            continue
        env = F1PitStrategy(**{**env_kwargs, "start_compound": start})
        out[label] = races(env, fixed_strategy(env, plan), n, offset)
        env.close()
    return out
