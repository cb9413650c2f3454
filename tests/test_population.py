"""The population engine: K agents trained as one batched computation.

Real training (DQN on CartPoleSimple, tabular agents on the GridWorld), no mocks. The
oracle for every member is the same config and seed trained alone (K=1, the single run):
member k must match it bit for bit, whatever the other members do or when they stop.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sweeper.callbacks import Callback
from sweeper.config import compose_config
from sweeper.train import budget_of, build
from sweeper.training import DivergenceError, Ended, EvalPoint, Member, Population, train

DQN = [
    "train.episodes=16",
    "eval.every=8",
    "eval.episodes=3",
    "buffer.batch_size=16",
    "agent.target_update_freq=20",
]
TABULAR = ["env=gridworld", "train.episodes=60", "eval.every=20", "eval.episodes=4"]


class Recorder(Callback):
    """Every row and evaluation a member publishes."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []
        self.evals: list[tuple] = []

    def on_episode_end(self, episode, step, metrics) -> None:
        self.rows.append((episode, step, tuple(sorted(metrics.items()))))

    def on_eval(self, index, episode, step, metrics) -> None:
        self.evals.append((index, episode, step, tuple(sorted(metrics.items()))))


def _state(agent, k: int) -> np.ndarray:
    return agent.q_table[k] if hasattr(agent, "q_table") else agent.online.flat[k]


def solo(overrides: list[str]) -> tuple[Recorder, np.ndarray, float]:
    """The oracle: this config and seed trained alone (K=1)."""
    cfg = compose_config(overrides)
    agent, env, eval_env = build(cfg)
    rec = Recorder()
    objective = train(agent, env, eval_env, budget_of(cfg), cfg.seed, rec)
    return rec, _state(agent, 0).copy(), objective


def population(members: list[list[str]], on_point=None):
    """Train the members' configs as one population; returns recorders, the agent and the
    Ended event of each member."""
    cfgs = [compose_config(m) for m in members]
    agent, env, eval_env = build(cfgs)
    recs = [Recorder() for _ in cfgs]
    pop = Population(
        agent, env, eval_env, [Member(budget_of(c), c.seed, r) for c, r in zip(cfgs, recs)]
    )
    ended: dict[int, Ended] = {}
    with np.errstate(over="ignore", invalid="ignore"):
        for event in pop.events():
            if isinstance(event, Ended):
                ended[event.member] = event
            elif on_point is not None:
                on_point(pop, event)
    return recs, agent, ended


def assert_same(rec: Recorder, oracle: Recorder) -> None:
    assert rec.rows == oracle.rows
    assert rec.evals == oracle.evals


DQN_MEMBERS = [
    [*DQN, "seed=1"],
    [*DQN, "seed=2", "agent.lr=3e-3"],
    [*DQN, "seed=3", "agent.gamma=0.9", "agent.target_update=soft"],
    [*DQN, "seed=4", "agent.double=true", "agent.loss=huber"],
    [*DQN, "seed=5", "agent.target_update=none", "agent.grad_clip=0"],
    [*DQN, "seed=6", "buffer.capacity=100", "train.learning_starts=50"],
    [*DQN, "seed=7", "agent.epsilon_schedule=linear", "agent.epsilon_decay_steps=300"],
    [*DQN, "seed=8", "train.episodes=8"],  # ends early: its slot must stop costing anything
]


def test_every_dqn_member_is_bit_identical_to_its_solo_run():
    """Eight members (the numpy-vectorized CartPole: K >= 8) with per-member lr, gamma,
    target mode, double, loss, clip, capacity, learning_starts, schedule and budget."""
    recs, agent, ended = population(DQN_MEMBERS)
    assert sorted(ended) == list(range(len(DQN_MEMBERS)))
    for k, overrides in enumerate(DQN_MEMBERS):
        oracle, params, objective = solo(overrides)
        assert_same(recs[k], oracle)
        np.testing.assert_array_equal(_state(agent, k), params)
        assert ended[k].error is None and ended[k].objective == objective
    assert len(recs[7].rows) == 8 and len(recs[0].rows) == 16


@pytest.mark.parametrize("agent", ["q_learning", "sarsa", "expected_sarsa"])
def test_every_tabular_member_is_bit_identical_to_its_solo_run(agent):
    members = [
        [*TABULAR, f"agent={agent}", "seed=1"],
        [*TABULAR, f"agent={agent}", "seed=2", "agent.alpha=0.5"],
        [*TABULAR, f"agent={agent}", "seed=3", "agent.epsilon_end=0.2", "agent.gamma=0.99"],
    ]
    recs, pop_agent, ended = population(members)
    for k, overrides in enumerate(members):
        oracle, table, objective = solo(overrides)
        assert_same(recs[k], oracle)
        np.testing.assert_array_equal(pop_agent.q_table[k], table)
        assert ended[k].objective == objective


def test_per_member_hyperparameters_take_effect():
    """Same seed, lr 0 and 1e-3: only the second member's network moves."""
    members = [[*DQN, "seed=1", "agent.lr=0"], [*DQN, "seed=1"]]
    cfgs = [compose_config(m) for m in members]
    before = build(cfgs).agent.online.flat.copy()
    _, agent, _ = population(members)
    np.testing.assert_array_equal(agent.online.flat[0], before[0])
    assert not np.array_equal(agent.online.flat[1], before[1])
    np.testing.assert_array_equal(before[0], before[1])  # same seed, same init


def test_a_stopped_member_stops_changing_and_the_others_are_unaffected():
    members = [[*DQN, "seed=1"], [*DQN, "seed=2"], [*DQN, "seed=3"]]
    frozen: dict[str, np.ndarray] = {}

    def prune_member_1(pop: Population, point: EvalPoint) -> None:
        if point.member == 1 and point.index == 0:
            pop.stop(1)
            frozen["params"] = pop.agent.online.flat[1].copy()
            frozen["steps"] = int(pop.agent.steps[1])

    recs, agent, ended = population(members, prune_member_1)
    assert 1 not in ended  # stopped by its driver: nothing more from it
    assert len(recs[1].evals) == 1 and len(recs[1].rows) == 8
    np.testing.assert_array_equal(agent.online.flat[1], frozen["params"])
    assert int(agent.steps[1]) == frozen["steps"]
    for k in (0, 2):
        oracle, params, _ = solo(members[k])
        assert_same(recs[k], oracle)
        np.testing.assert_array_equal(agent.online.flat[k], params)


def test_a_diverging_member_ends_alone_with_a_divergence_error():
    members = [[*DQN, "seed=1", "agent.lr=1e5", "agent.grad_clip=0"], [*DQN, "seed=2"]]
    recs, agent, ended = population(members)
    assert isinstance(ended[0].error, DivergenceError)
    assert math.isnan(ended[0].objective)
    assert ended[1].error is None
    oracle, params, _ = solo(members[1])
    assert_same(recs[1], oracle)
    np.testing.assert_array_equal(agent.online.flat[1], params)


def test_a_raising_callback_ends_only_its_member():
    class Pruner(Recorder):
        def on_eval(self, index, episode, step, metrics) -> None:
            super().on_eval(index, episode, step, metrics)
            raise KeyboardInterrupt("pruned")  # any exception, even a BaseException

    cfgs = [compose_config([*DQN, f"seed={s}"]) for s in (1, 2)]
    agent, env, eval_env = build(cfgs)
    recs = [Pruner(), Recorder()]
    pop = Population(
        agent, env, eval_env, [Member(budget_of(c), c.seed, r) for c, r in zip(cfgs, recs)]
    )
    events = list(pop.events())
    ends = {e.member: e for e in events if isinstance(e, Ended)}
    assert isinstance(ends[0].error, KeyboardInterrupt) and ends[1].error is None
    assert len(recs[0].evals) == 1 and len(recs[1].evals) == 2


def test_members_must_share_what_sets_the_shapes():
    from sweeper.config import ConfigError

    with pytest.raises(ConfigError, match="agent.hidden_sizes"):
        build([compose_config(DQN), compose_config([*DQN, "agent.hidden_sizes=[32]"])])
    with pytest.raises(ConfigError, match="env.id"):
        build([compose_config(DQN), compose_config([*DQN, "env=cartpole_v1"])])


def test_the_same_config_and_seed_give_bit_identical_populations():
    a, agent_a, _ = population(DQN_MEMBERS[:3])
    b, agent_b, _ = population(DQN_MEMBERS[:3])
    for ra, rb in zip(a, b):
        assert_same(ra, rb)
    np.testing.assert_array_equal(agent_a.online.flat, agent_b.online.flat)
