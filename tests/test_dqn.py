"""DQN: the TD target, loss, target-network modes on hand-made inputs; learning on CartPole."""

import numpy as np
import pytest
import torch

from sweeper.agents.dqn import DQNAgent, loss_and_grad, td_target
from sweeper.buffers import LatestTransitionBuffer, PrioritizedReplayBuffer, UniformReplayBuffer
from sweeper.callbacks import Callback
from sweeper.config import compose_config
from sweeper.train import budget_of, build
from sweeper.training import evaluate, train

R = np.array([1.0, 0.5, -1.0], np.float32)
TERM = np.array([0.0, 1.0, 0.0], np.float32)
NEXT_TARGET = np.array([[1.0, 4.0], [2.0, 3.0], [5.0, 0.0]], np.float32)
NEXT_ONLINE = np.array([[9.0, 0.0], [0.0, 9.0], [0.0, 9.0]], np.float32)


def test_dqn_target_takes_max_of_target_net():
    y = td_target(R, TERM, 0.9, NEXT_TARGET)
    np.testing.assert_allclose(y, [1.0 + 0.9 * 4.0, 0.5, -1.0 + 0.9 * 5.0], rtol=1e-6)


def test_double_dqn_target_selects_online_evaluates_target():
    y = td_target(R, TERM, 0.9, NEXT_TARGET, NEXT_ONLINE)
    # online argmax: a=0, a=1, a=1 -> target values 1.0, (terminated), 0.0
    np.testing.assert_allclose(y, [1.0 + 0.9 * 1.0, 0.5, -1.0 + 0.9 * 0.0], rtol=1e-6)


def test_double_target_is_never_above_vanilla_target():
    rng = np.random.default_rng(0)
    nt, no = rng.standard_normal((100, 4)), rng.standard_normal((100, 4))
    r, d = rng.standard_normal(100), (rng.random(100) < 0.2).astype(float)
    assert np.all(td_target(r, d, 0.99, nt, no) <= td_target(r, d, 0.99, nt) + 1e-12)


@pytest.mark.parametrize("kind", ["mse", "huber"])
def test_loss_gradient_matches_autograd(kind):
    td = np.array([-3.0, -0.5, 0.2, 2.5], np.float32)
    w = np.array([1.0, 0.5, 0.25, 1.0], np.float32)
    loss, grad = loss_and_grad(td, w, kind, huber_delta=1.0)
    t = torch.tensor(td, requires_grad=True)
    wt = torch.tensor(w)
    if kind == "mse":
        ref = (wt * t * t).mean()
    else:
        ref = (wt * torch.nn.functional.huber_loss(t, torch.zeros(4), reduction="none")).mean()
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-6)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-6)


def make_agent(buffer=None, **kw):
    rng = np.random.default_rng(0)
    if buffer is None:
        buffer = UniformReplayBuffer(100, 4, (2,), np.random.default_rng(1))
    return DQNAgent(2, 2, buffer, rng, hidden_sizes=[8], **kw)


def fill(agent, n=8, terminated=False):
    for i in range(n):
        obs = np.array([i, -i], np.float32) / n
        agent.observe(obs, i % 2, 1.0, obs + 0.1, terminated, False)


def test_hard_target_copy_every_n_updates():
    agent = make_agent(target_update="hard", target_update_freq=3)
    fill(agent)
    before = [p.copy() for p in agent.target.params]
    agent.update()
    agent.update()
    assert all(np.array_equal(a, b) for a, b in zip(before, agent.target.params))
    assert not all(np.array_equal(a, b) for a, b in zip(agent.online.params, agent.target.params))
    agent.update()
    assert all(np.array_equal(a, b) for a, b in zip(agent.online.params, agent.target.params))


def test_soft_target_update_moves_by_tau():
    agent = make_agent(target_update="soft", tau=0.25)
    fill(agent)
    old_target = [p.copy() for p in agent.target.params]
    agent.update()
    for t_new, t_old, p in zip(agent.target.params, old_target, agent.online.params):
        np.testing.assert_allclose(t_new, t_old + 0.25 * (p - t_old), rtol=1e-5, atol=1e-7)


def test_no_target_network_bootstraps_from_online_net():
    agent = make_agent(target_update="none")
    assert agent.target is None and agent.target_net is None
    fill(agent)
    assert np.isfinite(agent.update())


def test_update_minimises_td_error_on_a_fixed_batch():
    """Repeated updates on one terminal transition drive Q(s,a) to r."""
    buf = LatestTransitionBuffer(obs_shape=(2,), rng=np.random.default_rng(0))
    agent = make_agent(buffer=buf, lr=1e-2, target_update="none", grad_clip=0.0)
    obs = np.array([0.3, -0.2], np.float32)
    agent.observe(obs, 1, 2.0, obs, True, False)
    losses = [agent.update() for _ in range(300)]
    assert losses[-1] < 1e-4 < losses[0]
    assert agent.online.q_values(obs)[1] == pytest.approx(2.0, abs=1e-2)


def test_truncation_is_not_stored_as_termination():
    agent = make_agent()
    obs = np.zeros(2, np.float32)
    agent.observe(obs, 0, 1.0, obs, terminated=False, truncated=True)
    agent.observe(obs, 0, 1.0, obs, terminated=True, truncated=False)
    assert list(agent.buffer.terminated[:2]) == [0.0, 1.0]


def test_prioritized_buffer_receives_td_errors():
    buf = PrioritizedReplayBuffer(16, 4, (2,), np.random.default_rng(0), alpha=1.0)
    agent = make_agent(buffer=buf)
    fill(agent, 8)
    agent.update()
    leaf = buf.tree.get(np.arange(8))
    assert len(set(np.round(leaf, 6))) > 1  # priorities now differ: set from |TD error|


def test_epsilon_schedules():
    agent = make_agent(epsilon_start=1.0, epsilon_end=0.1, epsilon_decay=0.5)
    for _ in range(3):
        agent.end_episode()
    assert agent.epsilon == pytest.approx(0.125)
    agent.end_episode()
    assert agent.epsilon == pytest.approx(0.1)
    lin = make_agent(epsilon_schedule="linear", epsilon_decay_steps=4, epsilon_end=0.2)
    fill(lin, 2)
    assert lin.epsilon == pytest.approx(0.6)
    fill(lin, 4)
    assert lin.epsilon == pytest.approx(0.2)


class _Silent(Callback):
    pass


# A stated config that solves CartPoleSimple within ~100-150 episodes: the seed's DQN with a
# faster epsilon decay, evaluated every 10 episodes and stopped once a greedy evaluation
# reaches 450 (a "solved" criterion). Budget: <= 200 episodes, ~20 s per seed on 2 cores.
SOLVE_CARTPOLE = [
    "env=cartpole_simple",
    "agent=dqn",
    "train.episodes=200",
    "agent.epsilon_decay=0.97",
    "eval.every=10",
    "eval.episodes=10",
    "eval.stop_return=450",
]


@pytest.mark.slow
def test_dqn_solves_cartpole_simple_for_two_of_three_seeds():
    solved = []
    lengths_by_seed = {}
    for seed in (0, 1, 2):
        cfg = compose_config([*SOLVE_CARTPOLE, f"seed={seed}"])
        agent, env, eval_env = build(cfg)
        train(agent, env, eval_env, budget_of(cfg), cfg.seed, _Silent())
        # Judge on 20 fresh greedy episodes, with start states the run never evaluated on.
        returns = evaluate(agent, eval_env, 20, seed=10_000 + seed)
        # CartPoleSimple pays 1 per step but 0 on the failing step: length = return (+1 if failed)
        lengths = np.where(returns >= 500, returns, returns + 1)
        lengths_by_seed[seed] = float(lengths.mean())
        solved.append(lengths.mean() >= 195)
    assert sum(solved) >= 2, lengths_by_seed
