"""Tabular TD control: exact update formulas, and learning checked against value iteration."""

from __future__ import annotations

import numpy as np
import pytest

from sweeper.agents.base import Agent
from sweeper.agents.tabular import SARSA, ExpectedSARSA, QLearning, TabularAgent
from sweeper.envs import make_env

# ---------------------------------------------------------------- the oracle
# The seed's layout, written out here so that the oracle shares no code with the env.
SIZE, GOAL, WALLS, TRAPS = 4, (0, 3), {(1, 1)}, {(2, 3)}
STEP_R, GOAL_R, TRAP_R, GAMMA = -0.04, 1.0, -1.0, 0.9
MOVES = {0: (-1, 0), 1: (1, 0), 2: (0, -1), 3: (0, 1)}  # up, down, left, right
SLIPS = {0: (2, 3), 1: (2, 3), 2: (0, 1), 3: (0, 1)}  # perpendicular moves
CELLS = [(r, c) for r in range(SIZE) for c in range(SIZE)]
TERMINAL = {GOAL} | TRAPS
DECISION_CELLS = [c for c in CELLS if c not in TERMINAL and c not in WALLS]


def _move(cell: tuple[int, int], action: int) -> tuple[int, int]:
    r, c = cell[0] + MOVES[action][0], cell[1] + MOVES[action][1]
    inside = 0 <= r < SIZE and 0 <= c < SIZE
    return (r, c) if inside and (r, c) not in WALLS else cell


def _outcomes(cell: tuple[int, int], action: int, slip: float) -> list[tuple[float, tuple]]:
    out = [(1.0 - slip, _move(cell, action))]
    return out + [(slip / 2, _move(cell, a)) for a in SLIPS[action]] if slip else out


def _reward(cell: tuple[int, int]) -> float:
    return GOAL_R if cell == GOAL else TRAP_R if cell in TRAPS else STEP_R


def value_iteration(slip: float) -> dict[tuple[int, int], np.ndarray]:
    """Q* for every decision cell (terminal cells are worth 0 after their entry reward)."""
    v = dict.fromkeys(CELLS, 0.0)
    while True:
        q = {
            cell: np.array(
                [
                    sum(p * (_reward(n) + GAMMA * v[n]) for p, n in _outcomes(cell, a, slip))
                    for a in range(4)
                ]
            )
            for cell in DECISION_CELLS
        }
        delta = max(abs(q[c].max() - v[c]) for c in DECISION_CELLS)
        v.update({c: q[c].max() for c in DECISION_CELLS})
        if delta < 1e-12:
            return q


def _index(cell: tuple[int, int]) -> int:
    return cell[0] * SIZE + cell[1]


def test_oracle_matches_closed_form() -> None:
    # Deterministic grid: 6 moves from the start, the last one into the goal.
    q = value_iteration(slip=0.0)
    expected = STEP_R * sum(GAMMA**k for k in range(5)) + GAMMA**5 * GOAL_R
    assert q[(3, 0)].max() == pytest.approx(expected, abs=1e-10)
    assert q[(1, 3)][0] == pytest.approx(GOAL_R) and q[(1, 3)][1] == pytest.approx(TRAP_R)


# ---------------------------------------------------------------- training loop
def train(
    agent: TabularAgent, seed: int, episodes: int, slip: float, exploring_starts: bool
) -> TabularAgent:
    """The training loop's contract: reset / act / step / observe / end_episode.

    ``exploring_starts`` draws the start cell and first action uniformly: on-policy agents
    otherwise lock in the pessimistic values they learned while epsilon was high (the
    epsilon-soft optimum differs from the optimum at (2,1) for epsilon >= ~0.6) and rarely
    retry the optimal action afterwards.
    """
    env = make_env("sweeper/GridWorld-v0", slip=slip)  # TimeLimit(200) gives truncation
    env.reset(seed=seed)
    loop_rng = np.random.default_rng([seed, 1])
    for _ in range(episodes):
        if exploring_starts:
            start = DECISION_CELLS[loop_rng.integers(len(DECISION_CELLS))]
            obs, _ = env.reset(options={"start": start})
            action = int(loop_rng.integers(4))
        else:
            obs, _ = env.reset()
            action = agent.act(obs)
        while True:
            next_obs, reward, terminated, truncated, _ = env.step(action)
            agent.observe(obs, action, reward, next_obs, terminated, truncated)
            if terminated or truncated:
                break
            obs = next_obs
            action = agent.act(obs)
        agent.end_episode()
    return agent


def _make(cls: type[TabularAgent], seed: int, **kwargs) -> TabularAgent:
    return cls(n_states=SIZE * SIZE, n_actions=4, rng=np.random.default_rng([seed, 0]), **kwargs)


def _non_optimal_cells(q_table: np.ndarray, q_star: dict) -> list:
    """Cells whose greedy action is not among the optimal ones (ties up to 1e-9 allowed)."""
    bad = []
    for cell in DECISION_CELLS:
        greedy = int(np.argmax(q_table[_index(cell)]))
        if q_star[cell][greedy] < q_star[cell].max() - 1e-9:
            bad.append((cell, greedy, np.round(q_table[_index(cell)], 3).tolist()))
    return bad


# ---------------------------------------------------------------- learning (slow)
@pytest.mark.slow
@pytest.mark.parametrize("cls", [QLearning, SARSA, ExpectedSARSA])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learns_the_optimal_policy_on_the_deterministic_grid(
    cls: type[TabularAgent], seed: int
) -> None:
    # The seed's schedule (1.0, x0.995 per episode) with a lower floor so that SARSA's
    # sampled bootstrap stops jittering near the trap. Validated on 100 seeds per agent.
    agent = _make(cls, seed, alpha=0.1, gamma=GAMMA, epsilon_end=0.001)
    train(agent, seed, episodes=2500, slip=0.0, exploring_starts=True)
    assert _non_optimal_cells(agent.q_table, value_iteration(slip=0.0)) == []


@pytest.mark.slow
def test_q_learning_converges_to_q_star_on_the_greedy_path() -> None:
    agent = train(_make(QLearning, 0), 0, episodes=2500, slip=0.0, exploring_starts=True)
    q_star = value_iteration(slip=0.0)
    for cell in [(3, 0), (2, 0), (1, 0), (0, 0), (0, 1), (0, 2)]:
        assert agent.max_q(_index(cell)) == pytest.approx(q_star[cell].max(), abs=0.02)


@pytest.mark.slow
def test_sarsa_is_more_cautious_next_to_the_trap_than_q_learning() -> None:
    """The seed's claim: on-policy values price in the agent's own exploration near danger."""
    next_to_trap = [_index(c) for c in [(1, 3), (2, 2), (3, 3)]]
    seeds = range(5)
    q_means, sarsa_means = [], []
    for seed in seeds:
        for cls, out in ((QLearning, q_means), (SARSA, sarsa_means)):
            agent = _make(cls, seed, alpha=0.1, gamma=GAMMA, epsilon_end=0.1)
            train(agent, seed, episodes=2000, slip=0.1, exploring_starts=False)
            out.append(np.mean([agent.max_q(s) for s in next_to_trap]))
    q_means, sarsa_means = np.array(q_means), np.array(sarsa_means)
    assert q_means.mean() > sarsa_means.mean() + 0.03  # ~0.14 on average over 60 seeds
    assert np.sum(q_means > sarsa_means) >= 3  # a majority; 93% of single seeds agree


# ---------------------------------------------------------------- update formulas
Q0 = np.array([[1.0, 2.0], [3.0, 5.0]])  # state 1: greedy action 1 (5.0), other 3.0


def _agent(cls: type[TabularAgent], epsilon: float, seed: int = 0) -> TabularAgent:
    agent = cls(
        n_states=2,
        n_actions=2,
        rng=np.random.default_rng(seed),
        alpha=0.5,
        gamma=0.9,
        epsilon_start=epsilon,
        epsilon_end=epsilon,
    )
    agent.q_table[:] = Q0
    return agent


@pytest.mark.parametrize("cls", [QLearning, SARSA, ExpectedSARSA])
def test_terminated_cuts_the_bootstrap(cls: type[TabularAgent]) -> None:
    agent = _agent(cls, epsilon=0.3)
    err = agent.observe(0, 1, 4.0, 1, terminated=True, truncated=False)
    assert agent.q_table[0, 1] == pytest.approx(2.0 + 0.5 * (4.0 - 2.0))
    assert err == pytest.approx((4.0 - 2.0) ** 2)
    assert agent.q_table[1].tolist() == Q0[1].tolist()


@pytest.mark.parametrize("truncated", [False, True])
def test_q_learning_target_bootstraps_on_the_max(truncated: bool) -> None:
    agent = _agent(QLearning, epsilon=1.0)  # behaviour is irrelevant to the target
    err = agent.observe(0, 0, 1.0, 1, terminated=False, truncated=truncated)
    target = 1.0 + 0.9 * 5.0
    assert agent.q_table[0, 0] == pytest.approx(1.0 + 0.5 * (target - 1.0))
    assert err == pytest.approx((target - 1.0) ** 2)


@pytest.mark.parametrize("epsilon", [0.0, 0.2, 1.0])
@pytest.mark.parametrize("truncated", [False, True])
def test_expected_sarsa_target_is_the_policy_average(epsilon: float, truncated: bool) -> None:
    agent = _agent(ExpectedSARSA, epsilon=epsilon)
    agent.observe(0, 0, 1.0, 1, terminated=False, truncated=truncated)
    expected_next = (epsilon / 2) * (3.0 + 5.0) + (1 - epsilon) * 5.0
    target = 1.0 + 0.9 * expected_next
    assert agent.q_table[0, 0] == pytest.approx(1.0 + 0.5 * (target - 1.0))


def test_expected_sarsa_ties_follow_the_lowest_index_like_act() -> None:
    agent = _agent(ExpectedSARSA, epsilon=0.0)
    agent.q_table[1] = [4.0, 4.0]
    agent.observe(0, 0, 0.0, 1, terminated=False, truncated=False)
    assert agent.q_table[0, 0] == pytest.approx(1.0 + 0.5 * (0.9 * 4.0 - 1.0))


def test_sarsa_target_uses_the_action_it_then_takes() -> None:
    seen = set()
    for seed in range(40):
        agent = _agent(SARSA, epsilon=1.0, seed=seed)  # uniform a2: both branches occur
        agent.observe(0, 0, 1.0, 1, terminated=False, truncated=False)
        a2 = agent.act(1)  # must be the action the update bootstrapped on
        target = 1.0 + 0.9 * Q0[1, a2]
        assert agent.q_table[0, 0] == pytest.approx(1.0 + 0.5 * (target - 1.0))
        seen.add(a2)
    assert seen == {0, 1}


def test_sarsa_cache_is_consumed_once_and_ignored_by_greedy_acts() -> None:
    agent = _agent(SARSA, epsilon=1.0, seed=3)
    agent.observe(0, 0, 1.0, 1, terminated=False, truncated=False)
    # Q[0,0] moved to 1 + 0.5 * (1 + 0.9 * Q0[1, a2] - 1): recover which a2 was drawn.
    a2 = 0 if agent.q_table[0, 0] == pytest.approx(2.35) else 1
    assert agent.act(1, greedy=True) == 1  # greedy: argmax, cache untouched
    assert agent.act(1) == a2
    # Once consumed, acting draws fresh epsilon-greedy actions from the rng.
    draws = {agent.act(1) for _ in range(50)}
    assert draws == {0, 1}


def test_sarsa_cache_is_only_used_in_the_state_it_was_drawn_for() -> None:
    agent = _agent(SARSA, epsilon=0.0)
    agent.q_table[1] = [9.0, 0.0]  # a2 drawn greedily in state 1 -> 0
    agent.observe(0, 1, 0.0, 1, terminated=False, truncated=False)
    assert agent.act(0) == 1  # state 0's greedy action, not the cached 0


@pytest.mark.parametrize("how", ["truncated", "end_episode"])
def test_sarsa_cache_is_dropped_when_the_episode_ends(how: str) -> None:
    agent = _agent(SARSA, epsilon=0.0)
    agent.observe(0, 0, 1.0, 1, terminated=False, truncated=how == "truncated")
    if how == "end_episode":
        agent.end_episode()
    # Truncation still bootstraps on Q[s2, a2] (a2 greedy with epsilon 0).
    assert agent.q_table[0, 0] == pytest.approx(1.0 + 0.5 * (1.0 + 0.9 * 5.0 - 1.0))
    agent.q_table[1] = [7.0, 0.0]  # greedy in state 1 is now 0; a stale cache would say 1
    assert agent.act(1) == 0


# ---------------------------------------------------------------- acting, schedules, protocol
def test_greedy_ties_break_to_lowest_index() -> None:
    agent = QLearning(n_states=3, n_actions=4, rng=np.random.default_rng(0), epsilon_start=0.0)
    agent.q_table[2] = [0.0, 1.0, 1.0, 1.0]
    assert agent.act(2) == 1 and agent.act(2, greedy=True) == 1
    assert agent.act(0) == 0


def test_exploration_rate_and_rng_determinism() -> None:
    def draws(seed: int) -> list[int]:
        rng = np.random.default_rng(seed)
        agent = QLearning(n_states=1, n_actions=4, rng=rng, epsilon_start=0.4, epsilon_end=0.4)
        agent.q_table[0] = [0.0, 0.0, 9.0, 0.0]
        return [agent.act(0) for _ in range(4000)]

    actions = np.array(draws(1))
    assert draws(1) == actions.tolist() and draws(2) != actions.tolist()
    # P(non-greedy) = eps * 3/4 = 0.3
    assert np.mean(actions != 2) == pytest.approx(0.3, abs=0.03)


def test_epsilon_follows_episodes_exponentially_and_steps_linearly() -> None:
    exp = QLearning(n_states=2, n_actions=2, rng=np.random.default_rng(0))
    assert exp.epsilon == 1.0
    for _ in range(3):
        exp.end_episode()
    assert exp.epsilon == pytest.approx(0.995**3)
    lin = SARSA(
        n_states=2,
        n_actions=2,
        rng=np.random.default_rng(0),
        epsilon_start=1.0,
        epsilon_end=0.0,
        epsilon_schedule="linear",
        epsilon_decay_steps=10,
    )
    for _ in range(4):
        lin.observe(0, 0, 0.0, 1, terminated=False, truncated=False)
    assert lin.steps == 4 and lin.epsilon == pytest.approx(0.6)
    with pytest.raises(ValueError, match="epsilon_schedule"):
        QLearning(n_states=2, n_actions=2, rng=np.random.default_rng(0), epsilon_schedule="x")


@pytest.mark.parametrize("cls", [QLearning, SARSA, ExpectedSARSA])
def test_agent_protocol(cls: type[TabularAgent], tmp_path) -> None:
    agent: Agent = _agent(cls, epsilon=0.1)
    assert agent.learns_from_replay is False
    assert agent.update() is None
    agent.set_progress(0.5)
    assert agent.max_q(1) == 5.0 and agent.max_q(np.int64(0)) == 2.0
    path = agent.save(tmp_path / "run" / "qtable")
    assert path == tmp_path / "run" / "qtable.npy"
    np.testing.assert_array_equal(np.load(path), Q0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"n_states": 0}, "n_states"), ({"alpha": 0.0}, "alpha"), ({"gamma": 1.5}, "gamma")],
)
def test_constructor_validation(kwargs: dict, name: str) -> None:
    args = {"n_states": 2, "n_actions": 2, "rng": np.random.default_rng(0)} | kwargs
    with pytest.raises(ValueError, match=name):
        QLearning(**args)
