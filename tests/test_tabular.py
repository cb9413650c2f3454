"""Tabular TD control: exact update formulas, learning checked against value iteration, and
populations (member k of K learns exactly what it learns alone)."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from sweeper.agents import tabular_update as kernels
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


# ---------------------------------------------------------------- driving one agent
ONE = np.array([0])


def act(agent: TabularAgent, obs: int, member: int = 0) -> int:
    """Member ``member``'s epsilon-greedy action in state ``obs``."""
    return int(agent.act(np.array([obs]), np.array([member]))[0][0])


def observe(
    agent: TabularAgent,
    obs: int,
    action: int,
    reward: float,
    next_obs: int,
    terminated: bool,
    truncated: bool,
    member: int = 0,
) -> float:
    """One transition of member ``member``; its squared TD error."""
    err = agent.observe(
        np.array([member]),
        np.array([obs]),
        np.array([action]),
        np.array([reward]),
        np.array([next_obs]),
        np.array([terminated]),
        np.array([truncated]),
    )
    assert err.shape == (1,)
    return float(err[0])


def max_q(agent: TabularAgent, state: int, member: int = 0) -> float:
    return float(agent.greedy_q(np.array([[state]]), np.array([member]))[0, 0].max())


# ---------------------------------------------------------------- training loop
def train(
    agent: TabularAgent, seeds: list[int], episodes: int, slip: float, exploring_starts: bool
) -> TabularAgent:
    """The training loop's contract, for member ``k`` of ``agent`` on its own grid seeded
    ``seeds[k]``: reset / act / step / observe / end_episode, all members in lockstep (each
    resets its grid when its episode ends, and stops after ``episodes`` episodes). Member
    ``k`` does exactly what a K=1 agent does alone (see the population tests below).

    ``exploring_starts`` draws the start cell and first action uniformly: on-policy agents
    otherwise lock in the pessimistic values they learned while epsilon was high (the
    epsilon-soft optimum differs from the optimum at (2,1) for epsilon >= ~0.6) and rarely
    retry the optimal action afterwards.
    """
    k = len(seeds)
    assert agent.size == k
    # TimeLimit(200) gives truncation
    envs = [make_env("sweeper/GridWorld-v0", slip=slip) for _ in seeds]
    loop_rngs = [np.random.default_rng([seed, 1]) for seed in seeds]
    obs = np.zeros(k, dtype=np.int64)
    chosen = np.full(k, -1)  # the first action of an exploring start, else -1: ask the agent
    left = np.full(k, episodes)

    def start(member: int) -> None:
        if exploring_starts:
            rng = loop_rngs[member]
            cell = DECISION_CELLS[rng.integers(len(DECISION_CELLS))]
            obs[member] = envs[member].reset(options={"start": cell})[0]
            chosen[member] = int(rng.integers(4))
        else:
            obs[member] = envs[member].reset()[0]

    for member, (env, seed) in enumerate(zip(envs, seeds)):
        env.reset(seed=seed)
        start(member)
    members = np.arange(k)
    while members.size:
        actions = chosen[members]
        ask = actions < 0
        if ask.any():
            actions[ask] = agent.act(obs[members[ask]], members[ask])[0]
        chosen[members] = -1
        steps = [envs[m].step(int(a)) for m, a in zip(members.tolist(), actions.tolist())]
        next_obs = np.array([s[0] for s in steps])
        terminated = np.array([s[2] for s in steps])
        truncated = np.array([s[3] for s in steps])
        rewards = np.array([s[1] for s in steps])
        agent.observe(members, obs[members], actions, rewards, next_obs, terminated, truncated)
        obs[members] = next_obs
        done = members[terminated | truncated]
        if done.size:
            agent.end_episode(done)
            left[done] -= 1
            for member in done.tolist():
                if left[member]:
                    start(member)
            members = np.flatnonzero(left > 0)
    return agent


def _make(cls: type[TabularAgent], seeds: list[int], **kwargs) -> TabularAgent:
    rngs = [np.random.default_rng([seed, 0]) for seed in seeds]
    return cls(n_states=SIZE * SIZE, n_actions=4, rngs=rngs, **kwargs)


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
def test_learns_the_optimal_policy_on_the_deterministic_grid(cls: type[TabularAgent]) -> None:
    # The seed's schedule (1.0, x0.995 per episode) with a lower floor so that SARSA's
    # sampled bootstrap stops jittering near the trap. Validated on 100 seeds per agent.
    # Seeds 0, 1, 2 as one population: member k is the run of seed k.
    seeds = [0, 1, 2]
    agent = _make(cls, seeds, alpha=0.1, gamma=GAMMA, epsilon_end=0.001)
    train(agent, seeds, episodes=2500, slip=0.0, exploring_starts=True)
    q_star = value_iteration(slip=0.0)
    bad = {seed: _non_optimal_cells(agent.q_table[k], q_star) for k, seed in enumerate(seeds)}
    assert bad == dict.fromkeys(seeds, [])


@pytest.mark.slow
def test_q_learning_converges_to_q_star_on_the_greedy_path() -> None:
    agent = train(_make(QLearning, [0]), [0], episodes=2500, slip=0.0, exploring_starts=True)
    q_star = value_iteration(slip=0.0)
    for cell in [(3, 0), (2, 0), (1, 0), (0, 0), (0, 1), (0, 2)]:
        assert max_q(agent, _index(cell)) == pytest.approx(q_star[cell].max(), abs=0.02)


@pytest.mark.slow
def test_sarsa_is_more_cautious_next_to_the_trap_than_q_learning() -> None:
    """The seed's claim: on-policy values price in the agent's own exploration near danger."""
    next_to_trap = np.array([[_index(c) for c in [(1, 3), (2, 2), (3, 3)]]] * 5)
    seeds = list(range(5))
    means = {}
    for cls in (QLearning, SARSA):
        agent = _make(cls, seeds, alpha=0.1, gamma=GAMMA, epsilon_end=0.1)
        train(agent, seeds, episodes=2000, slip=0.1, exploring_starts=False)
        means[cls] = agent.greedy_q(next_to_trap, np.arange(5)).max(axis=2).mean(axis=1)
    q_means, sarsa_means = means[QLearning], means[SARSA]
    assert q_means.mean() > sarsa_means.mean() + 0.03  # ~0.14 on average over 60 seeds
    assert np.sum(q_means > sarsa_means) >= 3  # a majority; 93% of single seeds agree


# ---------------------------------------------------------------- update formulas
Q0 = np.array([[1.0, 2.0], [3.0, 5.0]])  # state 1: greedy action 1 (5.0), other 3.0


def _agent(cls: type[TabularAgent], epsilon: float, seed: int = 0) -> TabularAgent:
    agent = cls(
        n_states=2,
        n_actions=2,
        rngs=[np.random.default_rng(seed)],
        alpha=0.5,
        gamma=0.9,
        epsilon_start=epsilon,
        epsilon_end=epsilon,
    )
    agent.q_table[0] = Q0
    return agent


@pytest.mark.parametrize("cls", [QLearning, SARSA, ExpectedSARSA])
def test_terminated_cuts_the_bootstrap(cls: type[TabularAgent]) -> None:
    agent = _agent(cls, epsilon=0.3)
    err = observe(agent, 0, 1, 4.0, 1, terminated=True, truncated=False)
    assert agent.q_table[0, 0, 1] == pytest.approx(2.0 + 0.5 * (4.0 - 2.0))
    assert err == pytest.approx((4.0 - 2.0) ** 2)
    assert agent.q_table[0, 1].tolist() == Q0[1].tolist()


@pytest.mark.parametrize("truncated", [False, True])
def test_q_learning_target_bootstraps_on_the_max(truncated: bool) -> None:
    agent = _agent(QLearning, epsilon=1.0)  # behaviour is irrelevant to the target
    err = observe(agent, 0, 0, 1.0, 1, terminated=False, truncated=truncated)
    target = 1.0 + 0.9 * 5.0
    assert agent.q_table[0, 0, 0] == pytest.approx(1.0 + 0.5 * (target - 1.0))
    assert err == pytest.approx((target - 1.0) ** 2)


@pytest.mark.parametrize("epsilon", [0.0, 0.2, 1.0])
@pytest.mark.parametrize("truncated", [False, True])
def test_expected_sarsa_target_is_the_policy_average(epsilon: float, truncated: bool) -> None:
    agent = _agent(ExpectedSARSA, epsilon=epsilon)
    observe(agent, 0, 0, 1.0, 1, terminated=False, truncated=truncated)
    expected_next = (epsilon / 2) * (3.0 + 5.0) + (1 - epsilon) * 5.0
    target = 1.0 + 0.9 * expected_next
    assert agent.q_table[0, 0, 0] == pytest.approx(1.0 + 0.5 * (target - 1.0))


def test_expected_sarsa_ties_follow_the_lowest_index_like_act() -> None:
    agent = _agent(ExpectedSARSA, epsilon=0.0)
    agent.q_table[0, 1] = [4.0, 4.0]
    observe(agent, 0, 0, 0.0, 1, terminated=False, truncated=False)
    assert agent.q_table[0, 0, 0] == pytest.approx(1.0 + 0.5 * (0.9 * 4.0 - 1.0))


def test_sarsa_target_uses_the_action_it_then_takes() -> None:
    seen = set()
    for seed in range(40):
        agent = _agent(SARSA, epsilon=1.0, seed=seed)  # uniform a2: both branches occur
        observe(agent, 0, 0, 1.0, 1, terminated=False, truncated=False)
        a2 = act(agent, 1)  # must be the action the update bootstrapped on
        target = 1.0 + 0.9 * Q0[1, a2]
        assert agent.q_table[0, 0, 0] == pytest.approx(1.0 + 0.5 * (target - 1.0))
        seen.add(a2)
    assert seen == {0, 1}


def test_sarsa_cache_is_consumed_once_and_ignored_by_greedy_evaluation() -> None:
    agent = _agent(SARSA, epsilon=1.0, seed=3)
    observe(agent, 0, 0, 1.0, 1, terminated=False, truncated=False)
    # Q[0,0] moved to 1 + 0.5 * (1 + 0.9 * Q0[1, a2] - 1): recover which a2 was drawn.
    a2 = 0 if agent.q_table[0, 0, 0] == pytest.approx(2.35) else 1
    q = agent.greedy_q(np.array([[1, 1]]), ONE)  # greedy evaluation: cache untouched
    assert q.shape == (1, 2, 2) and q[0].argmax(axis=1).tolist() == [1, 1]
    assert act(agent, 1) == a2
    # Once consumed, acting draws fresh epsilon-greedy actions from the rng.
    draws = {act(agent, 1) for _ in range(50)}
    assert draws == {0, 1}


def test_sarsa_cache_is_only_used_in_the_state_it_was_drawn_for() -> None:
    agent = _agent(SARSA, epsilon=0.0)
    agent.q_table[0, 1] = [9.0, 0.0]  # a2 drawn greedily in state 1 -> 0
    observe(agent, 0, 1, 0.0, 1, terminated=False, truncated=False)
    assert act(agent, 0) == 1  # state 0's greedy action, not the cached 0


@pytest.mark.parametrize("how", ["truncated", "end_episode"])
def test_sarsa_cache_is_dropped_when_the_episode_ends(how: str) -> None:
    agent = _agent(SARSA, epsilon=0.0)
    observe(agent, 0, 0, 1.0, 1, terminated=False, truncated=how == "truncated")
    if how == "end_episode":
        agent.end_episode(ONE)
    # Truncation still bootstraps on Q[s2, a2] (a2 greedy with epsilon 0).
    assert agent.q_table[0, 0, 0] == pytest.approx(1.0 + 0.5 * (1.0 + 0.9 * 5.0 - 1.0))
    agent.q_table[0, 1] = [7.0, 0.0]  # greedy in state 1 is now 0; a stale cache would say 1
    assert act(agent, 1) == 0


# ---------------------------------------------------------------- acting, schedules, interface
def test_greedy_ties_break_to_lowest_index() -> None:
    agent = QLearning(n_states=3, n_actions=4, rngs=[np.random.default_rng(0)], epsilon_start=0.0)
    agent.q_table[0, 2] = [0.0, 1.0, 1.0, 1.0]
    assert act(agent, 2) == 1
    assert agent.greedy_q(np.array([[2, 0]]), ONE)[0].argmax(axis=1).tolist() == [1, 0]
    assert act(agent, 0) == 0


def test_exploration_rate_and_rng_determinism() -> None:
    def draws(seed: int) -> list[int]:
        rng = np.random.default_rng(seed)
        agent = QLearning(n_states=1, n_actions=4, rngs=[rng], epsilon_start=0.4, epsilon_end=0.4)
        agent.q_table[0, 0] = [0.0, 0.0, 9.0, 0.0]
        return [act(agent, 0) for _ in range(4000)]

    actions = np.array(draws(1))
    assert draws(1) == actions.tolist() and draws(2) != actions.tolist()
    # P(non-greedy) = eps * 3/4 = 0.3
    assert np.mean(actions != 2) == pytest.approx(0.3, abs=0.03)


def test_epsilon_follows_episodes_exponentially_and_steps_linearly() -> None:
    exp = QLearning(n_states=2, n_actions=2, rngs=[np.random.default_rng(0)])
    assert exp.epsilon(ONE)[0] == 1.0
    for _ in range(3):
        exp.end_episode(ONE)
    assert exp.epsilon(ONE)[0] == pytest.approx(0.995**3)
    lin = SARSA(
        n_states=2,
        n_actions=2,
        rngs=[np.random.default_rng(0)],
        epsilon_start=1.0,
        epsilon_end=0.0,
        epsilon_schedule="linear",
        epsilon_decay_steps=10,
    )
    for _ in range(4):
        observe(lin, 0, 0, 0.0, 1, terminated=False, truncated=False)
    assert lin.steps[0] == 4 and lin.epsilon(ONE)[0] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="epsilon_schedule"):
        QLearning(n_states=2, n_actions=2, rngs=[np.random.default_rng(0)], epsilon_schedule="x")


@pytest.mark.parametrize("cls", [QLearning, SARSA, ExpectedSARSA])
def test_agent_interface(cls: type[TabularAgent], tmp_path) -> None:
    """What the training loop calls: no replay, update() learns nothing, set_progress is a
    no-op, greedy_q probes, save(k) writes member k's table, nonfinite(k) checks it."""
    agent = _agent(cls, epsilon=0.1)
    assert agent.learns_from_replay is False
    losses, learned = agent.update(ONE)
    assert np.isnan(losses).all() and learned.tolist() == [False]
    agent.set_progress(ONE, np.array([0.5]))
    assert max_q(agent, 1) == 5.0 and max_q(agent, np.int64(0)) == 2.0
    path = agent.save(0, tmp_path / "run" / "qtable")
    assert path == tmp_path / "run" / "qtable.npy"
    np.testing.assert_array_equal(np.load(path), Q0)
    assert agent.nonfinite(0) is None
    agent.q_table[0, 1, 1] = np.inf
    assert agent.nonfinite(0) == "non-finite Q-table"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_states": 0}, "n_states"),
        ({"alpha": 0.0}, "alpha"),
        ({"gamma": 1.5}, "gamma"),
        ({"alpha": [0.1, 1.5]}, "alpha"),
        ({"alpha": [0.1, 0.2, 0.3]}, "alpha"),
    ],
)
def test_constructor_validation(kwargs: dict, name: str) -> None:
    rngs = [np.random.default_rng(0), np.random.default_rng(1)]
    args = {"n_states": 2, "n_actions": 2, "rngs": rngs} | kwargs
    with pytest.raises(ValueError, match=name):
        QLearning(**args)


def test_unknown_hyperparameters_are_rejected() -> None:
    with pytest.raises(TypeError, match="lr"):
        QLearning(n_states=2, n_actions=2, rngs=[np.random.default_rng(0)], lr=0.1)


# ---------------------------------------------------------------- populations
MIXED = {
    "alpha": [0.1, 0.5, 1.0],
    "gamma": [0.9, 0.99, 0.5],
    "epsilon_start": [1.0, 0.3, 0.8],
    "epsilon_end": [0.01, 0.3, 0.05],
    "epsilon_decay": [0.9, 0.995, 0.995],
    "epsilon_schedule": ["exponential", "exponential", "linear"],
    "epsilon_decay_steps": [10_000, 10_000, 300],
}


@pytest.mark.parametrize("cls", [QLearning, SARSA, ExpectedSARSA])
def test_member_of_a_population_learns_what_it_learns_alone(cls: type[TabularAgent]) -> None:
    """Three members with different alphas, gammas and epsilon schedules, each on its own
    slippery grid and acting in varying subsets (a member that sits a step out keeps its
    state, SARSA's cached action included), end with the Q-table of a K=1 agent with the
    same generator fed the same transitions: bitwise, step for step."""
    seeds = [0, 1, 2]
    population = cls(16, 4, [np.random.default_rng([s, 0]) for s in seeds], **MIXED)
    alone = [
        cls(16, 4, [np.random.default_rng([s, 0])], **{n: [v[k]] for n, v in MIXED.items()})
        for k, s in enumerate(seeds)
    ]
    envs = [make_env("sweeper/GridWorld-v0", slip=0.2, max_episode_steps=30) for _ in seeds]
    state = np.array([env.reset(seed=100 + s)[0] for env, s in zip(envs, seeds)])
    schedule = [np.arange(3), np.array([0, 2]), np.arange(3), np.array([1]), np.array([1, 2])]
    ended = 0
    for t in range(1500):
        members = schedule[t % len(schedule)]
        obs = state[members]
        actions, q = population.act(obs, members)
        steps = [envs[k].step(int(a)) for k, a in zip(members.tolist(), actions.tolist())]
        next_obs = np.array([s[0] for s in steps])
        rewards = np.array([s[1] for s in steps])
        terminated = np.array([s[2] for s in steps])
        truncated = np.array([s[3] for s in steps])
        errors = population.observe(members, obs, actions, rewards, next_obs, terminated, truncated)
        done = terminated | truncated
        population.end_episode(members[done])
        for row, k in enumerate(members.tolist()):
            one = alone[k]
            a1, q1 = one.act(obs[row : row + 1], ONE)
            assert a1[0] == actions[row] and np.array_equal(q1[0], q[row])
            e1 = one.observe(
                ONE,
                obs[row : row + 1],
                a1,
                rewards[row : row + 1],
                next_obs[row : row + 1],
                terminated[row : row + 1],
                truncated[row : row + 1],
            )
            assert e1[0] == errors[row]
            if done[row]:
                one.end_episode(ONE)
                next_obs[row] = envs[k].reset()[0]
                ended += 1
        state[members] = next_obs
    assert ended > 30
    for k in range(3):
        assert np.array_equal(population.q_table[k], alone[k].q_table[0])
        assert population.steps[k] == alone[k].steps[0]
        assert population.episodes[k] == alone[k].episodes[0]
        assert population.epsilon(np.array([k]))[0] == alone[k].epsilon(ONE)[0]
        assert population.rngs[k].bit_generator.state == alone[k].rngs[0].bit_generator.state
    assert len({population.q_table[k].tobytes() for k in range(3)}) == 3


def test_sarsa_caches_one_next_action_per_member() -> None:
    """Members 0 and 1 act greedily (epsilon 0), member 2 uniformly (epsilon 1). Each acts
    on its own cached a2; ending member 0's episode drops its cache only."""
    agent = SARSA(
        2,
        2,
        [np.random.default_rng(s) for s in range(3)],
        alpha=0.5,
        gamma=0.9,
        epsilon_start=[0.0, 0.0, 1.0],
        epsilon_end=[0.0, 0.0, 1.0],
    )
    agent.q_table[:] = Q0
    everyone = np.arange(3)
    zeros, ones = np.zeros(3, dtype=np.int64), np.ones(3, dtype=np.int64)
    no = np.zeros(3, dtype=bool)
    agent.observe(everyone, zeros, zeros, np.ones(3), ones, no, no)
    # Q[0,0] = 1 + 0.5 * (1 + 0.9 * Q0[1, a2] - 1): 2.35 for a2 = 0, 3.25 for a2 = 1.
    a2 = [0 if agent.q_table[k, 0, 0] == pytest.approx(2.35) else 1 for k in range(3)]
    assert a2[:2] == [1, 1]
    agent.q_table[:, 1] = [7.0, 0.0]  # greedy in state 1 is now 0: a cache says otherwise
    assert act(agent, 1, member=2) == a2[2]
    agent.end_episode(np.array([0]))
    actions, _ = agent.act(np.array([1, 1]), np.array([0, 1]))
    assert actions.tolist() == [0, 1]  # member 0: fresh greedy draw; member 1: its cache

    # Many members with uniform a2: every member bootstraps on the action it then takes.
    k = 40
    many = SARSA(
        2,
        2,
        [np.random.default_rng(s) for s in range(k)],
        alpha=0.5,
        gamma=0.9,
        epsilon_start=1.0,
        epsilon_end=1.0,
    )
    many.q_table[:] = Q0
    members = np.arange(k)
    zeros, ones, no = np.zeros(k, np.int64), np.ones(k, np.int64), np.zeros(k, dtype=bool)
    many.observe(members, zeros, zeros, np.ones(k), ones, no, no)
    order = np.random.default_rng(0).permutation(k)
    taken = np.empty(k, dtype=np.int64)
    for half in (np.sort(order[: k // 2]), np.sort(order[k // 2 :])):
        taken[half] = many.act(ones[: len(half)], half)[0]
    np.testing.assert_allclose(many.q_table[:, 0, 0], 1.0 + 0.5 * 0.9 * Q0[1, taken])
    assert set(taken.tolist()) == {0, 1}


def test_reset_member_makes_a_fresh_agent_in_its_slot() -> None:
    agent = _make(SARSA, [0, 1], alpha=0.1)
    train(agent, [0, 1], episodes=5, slip=0.0, exploring_starts=False)
    member0 = agent.q_table[0].copy()
    agent.reset_member(1, np.random.default_rng([5, 0]), alpha=0.5, epsilon_end=0.2)
    assert not agent.q_table[1].any() and agent.steps[1] == agent.episodes[1] == 0
    assert agent.alpha.tolist() == [0.1, 0.5] and np.array_equal(agent.q_table[0], member0)
    fresh = _make(SARSA, [5], alpha=0.5, epsilon_end=0.2)
    for a, b in ((agent, 1), (fresh, 0)):
        for s, s2 in ((14, 13), (13, 9)):
            observe(a, s, act(a, s, member=b), -0.04, s2, False, False, member=b)
    assert np.array_equal(agent.q_table[1], fresh.q_table[0])
    assert np.array_equal(agent.q_table[0], member0)


def test_population_save_and_nonfinite_are_per_member(tmp_path) -> None:
    agent = QLearning(4, 2, [np.random.default_rng(s) for s in range(3)])
    agent.q_table[1] = np.arange(8.0).reshape(4, 2)
    agent.q_table[2, 0, 0] = np.nan
    np.testing.assert_array_equal(np.load(agent.save(1, tmp_path / "q")), agent.q_table[1])
    assert [agent.nonfinite(k) for k in range(3)] == [None, None, "non-finite Q-table"]


# ---------------------------------------------------------------- the compiled kernels
# ``act`` and ``observe`` run compiled (``sweeper.agents.tabular_update``). Below, a plain
# Python reference of each agent's step (floats, lists, a twin generator for the draws) must
# give the same bits: the same Q-table, errors, actions and generator state.
def _reference_explore(q: list[list[float]], s: int, eps: float, twin) -> int:
    if twin.random() < eps:
        return int(twin.integers(len(q[s])))
    row = q[s]
    return row.index(max(row))  # the first maximum (no NaNs here)


def _reference_observe(kind: str, q, transition, alpha, gamma, eps, twin) -> tuple[float, int]:
    """One TD update of the Python table ``q`` (in place); the squared error and SARSA's a2."""
    s, a, r, s2, terminated = transition
    a2 = -1
    target = r
    if not terminated:
        row = q[s2]
        if kind == "q":
            next_value = max(row)
        elif kind == "sarsa":
            a2 = _reference_explore(q, s2, eps, twin)
            next_value = row[a2]
        else:
            total = 0.0  # numpy's pairwise sum is sequential below 8 terms
            for v in row:
                total += v
            best = row[row.index(max(row))]
            next_value = eps * (total / len(row)) + (1.0 - eps) * best
        target = r + gamma * next_value
    td = target - q[s][a]
    q[s][a] = q[s][a] + alpha * td
    return td * td, a2


KINDS = {QLearning: "q", SARSA: "sarsa", ExpectedSARSA: "expected"}
# Irregular values (no two updates round alike), ties in state 2, a negative row in state 3.
Q_START = [
    [0.1, -0.37, 2.5, 1.0 / 3.0],
    [5.0, 4.999999, -1e-3, 7.25],
    [1.5, 0.2, 1.5, -0.9],
    [-2.0, -1.7, -3.1, -1.7],
]
# (s, a, r, s2, terminated, truncated)
TRANSITIONS = [
    (0, 2, -0.04, 1, False, False),
    (1, 3, 0.3, 2, False, False),
    (2, 0, 1.0 / 7.0, 3, False, True),
    (3, 1, -1.0, 0, True, False),
    (0, 0, 0.0, 0, False, False),
    (2, 2, 1e-9, 2, False, False),
    (1, 1, -0.04, 3, False, False),
    (3, 3, 2.5, 1, True, True),
]


@pytest.mark.parametrize("cls", [QLearning, SARSA, ExpectedSARSA])
@pytest.mark.parametrize("epsilon", [0.0, 0.35, 1.0])
def test_compiled_update_equals_a_plain_python_reference(
    cls: type[TabularAgent], epsilon: float
) -> None:
    alpha, gamma = 0.3, 0.97
    agent = cls(
        4,
        4,
        [np.random.default_rng(11)],
        alpha=alpha,
        gamma=gamma,
        epsilon_start=epsilon,
        epsilon_end=epsilon,
    )
    agent.q_table[0] = Q_START
    q = [row[:] for row in Q_START]
    twin = np.random.default_rng(11)
    for s, a, r, s2, terminated, truncated in TRANSITIONS:
        err = observe(agent, s, a, r, s2, terminated, truncated)
        ref_err, a2 = _reference_observe(
            KINDS[cls], q, (s, a, r, s2, terminated), alpha, gamma, epsilon, twin
        )
        assert err == ref_err
        assert agent.q_table[0].tolist() == q
        if a2 >= 0 and not truncated:  # SARSA then acts on the a2 it bootstrapped on
            assert act(agent, s2) == a2
        else:  # a fresh epsilon-greedy draw
            assert act(agent, s2) == _reference_explore(q, s2, epsilon, twin)
    assert agent.rngs[0].bit_generator.state == twin.bit_generator.state


@pytest.mark.parametrize("cls", [QLearning, SARSA, ExpectedSARSA])
def test_compiled_update_follows_the_linear_schedule_step_by_step(cls: type[TabularAgent]) -> None:
    """epsilon at an update is the linear schedule after counting that step."""
    alpha, gamma, start, end, decay_steps = 0.5, 0.9, 0.9, 0.1, 5
    agent = cls(
        4,
        4,
        [np.random.default_rng(5)],
        alpha=alpha,
        gamma=gamma,
        epsilon_start=start,
        epsilon_end=end,
        epsilon_schedule="linear",
        epsilon_decay_steps=decay_steps,
    )
    agent.q_table[0] = Q_START
    q = [row[:] for row in Q_START]
    twin = np.random.default_rng(5)
    for step, (s, a, r, s2, terminated, _) in enumerate(TRANSITIONS * 2, start=1):
        eps = start + min(1.0, step / decay_steps) * (end - start)
        err = observe(agent, s, a, r, s2, terminated, True)  # truncated: no SARSA cache
        assert (
            err
            == _reference_observe(
                KINDS[cls], q, (s, a, r, s2, terminated), alpha, gamma, eps, twin
            )[0]
        )
        assert act(agent, s) == _reference_explore(q, s, eps, twin)
    assert agent.q_table[0].tolist() == q


@pytest.mark.parametrize("n_actions", [1, 2, 3, 5, 1000])
def test_compiled_draws_are_the_generators_own(n_actions: int) -> None:
    """``rng.random()`` then ``rng.integers(n)``: the same numbers, the same final state."""
    agent = QLearning(1, n_actions, [np.random.default_rng(3)], epsilon_start=0.5, epsilon_end=0.5)
    agent.q_table[0, 0, -1] = 1.0
    twin = np.random.default_rng(3)
    greedy = n_actions - 1
    drawn = [act(agent, 0) for _ in range(3000)]
    expected = [int(twin.integers(n_actions)) if twin.random() < 0.5 else greedy for _ in drawn]
    assert drawn == expected
    assert agent.rngs[0].bit_generator.state == twin.bit_generator.state


@pytest.mark.parametrize("n", [2**31 + 1, 3 * 2**30, 2**32 - 1, 2**32])
def test_bounded_integers_match_numpy_for_wide_ranges(n: int) -> None:
    """Ranges where Lemire's method rejects often (or draws raw 32-bit values)."""
    rng, twin = np.random.default_rng(7), np.random.default_rng(7)
    table = np.array([kernels.bitgen_pointers(rng)], dtype=np.uint64)
    drawn = [kernels._integers(table, 0, n) for _ in range(2000)]
    assert drawn == [int(twin.integers(n)) for _ in range(2000)]
    assert rng.bit_generator.state == twin.bit_generator.state


def test_max_and_argmax_are_numpys() -> None:
    rows = [
        [1.0, 3.0, 3.0, 2.0],
        [np.nan, 1.0, 2.0, 0.0],
        [1.0, np.nan, 5.0, np.nan],
        [-np.inf, -np.inf, -1e308, -np.inf],
        [np.inf, 0.0, np.inf, 1.0],
        [0.0, -0.0, 0.0, -0.0],
        [-0.0, 0.0],
        [7.0],
    ]
    for row in map(np.array, rows):
        assert kernels._argmax(row) == np.argmax(row)
        got, want = kernels._max(row), np.max(row[None], axis=1)[0]
        assert np.array_equal(got, want, equal_nan=True) and np.signbit(got) == np.signbit(want)


@pytest.mark.parametrize("cls", [QLearning, SARSA, ExpectedSARSA])
def test_a_copied_agent_draws_from_its_own_generators(cls: type[TabularAgent]) -> None:
    """The kernels reach each generator by address: a deep copy, an unpickled agent or a
    generator replaced in ``rngs`` must be re-read, never draw from the original."""
    agent = _agent(cls, epsilon=0.5, seed=9)
    observe(agent, 0, 0, 1.0, 1, terminated=False, truncated=False)
    for clone in (copy.deepcopy(agent), pickle.loads(pickle.dumps(agent))):
        before = agent.rngs[0].bit_generator.state
        twin = copy.deepcopy(clone.rngs[0])
        for _ in range(20):
            act(clone, 1)
            observe(clone, 0, 1, 0.5, 1, terminated=False, truncated=False)
        assert agent.rngs[0].bit_generator.state == before
        assert clone.rngs[0].bit_generator.state != twin.bit_generator.state
    fresh = np.random.default_rng(123)
    agent.rngs[0] = fresh
    state = copy.deepcopy(fresh.bit_generator.state)
    act(agent, 0)
    assert fresh.bit_generator.state != state  # the replacement drew


@pytest.mark.parametrize(
    ("obs", "action", "next_obs"),
    [(2, 0, 0), (0, 2, 0), (0, 0, 2), (-3, 0, 0)],
)
def test_compiled_update_checks_indices(obs: int, action: int, next_obs: int) -> None:
    agent = _agent(QLearning, epsilon=0.0)
    with pytest.raises(IndexError, match="out of range"):
        observe(agent, obs, action, 0.0, next_obs, terminated=False, truncated=False)
    with pytest.raises(IndexError, match="out of range"):
        agent.act(np.array([5]), ONE)
    assert agent.q_table[0].tolist() == Q0.tolist()
    # Negative indices wrap, as numpy's fancy indexing did.
    observe(agent, -1, -1, 1.0, -2, terminated=False, truncated=False)
    assert agent.q_table[0, 1, 1] == 5.0 + 0.5 * (1.0 + 0.9 * 2.0 - 5.0)
