"""DQN and its variants: Double DQN, dueling heads, hard/soft/no target network.

The seed notebook's DQNAgent, DQNNoReplay, DQNNoTarget and DoubleDQNAgent are one class here:
the replay ablation is a buffer (``LatestTransitionBuffer``), the others are switches. The TD
target is computed in exactly one place, :func:`td_target`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sweeper.agents.networks import NumpyPolicy, QNetwork
from sweeper.agents.schedules import EpsilonSchedule

TARGET_UPDATES = ("hard", "soft", "none")
LOSSES = ("mse", "huber")


def td_target(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    next_q_target: torch.Tensor,
    next_q_online: torch.Tensor | None = None,
) -> torch.Tensor:
    """r + gamma * (1 - terminated) * Q_target(s', a*).

    a* = argmax_a Q_target(s', a) (DQN), or argmax_a Q_online(s', a) when ``next_q_online`` is
    given (Double DQN: the online net selects, the target net evaluates). Only termination
    cuts the bootstrap; a time-limit truncation is stored as not terminated.
    """
    if next_q_online is None:
        next_v = next_q_target.amax(dim=1)
    else:
        next_v = next_q_target.gather(1, next_q_online.argmax(dim=1, keepdim=True)).squeeze(1)
    return rewards + gamma * (1.0 - terminated) * next_v


def loss_and_grad(
    td: torch.Tensor, weights: torch.Tensor, kind: str, huber_delta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance-weighted mean loss of TD errors ``td = Q(s,a) - y`` and its gradient wrt Q(s,a)."""
    n = td.shape[0]
    if kind == "mse":
        return (weights * td * td).mean(), weights * td * (2.0 / n)
    abs_td = td.abs()
    quad = abs_td.clamp(max=huber_delta)
    loss = weights * (0.5 * quad * quad + huber_delta * (abs_td - quad))
    return loss.mean(), weights * td.clamp(-huber_delta, huber_delta) / n


class DQNAgent:
    """Deep Q-learning with a replay buffer (any of ``sweeper.buffers``).

    Every hyperparameter is a constructor keyword; ``buffer`` and ``rng`` are injected.
    ``target_update``: "hard" copies the online net every ``target_update_freq`` gradient
    steps, "soft" moves the target by ``tau`` each step, "none" bootstraps from the online
    net itself (the seed's no-target ablation).
    """

    learns_from_replay = True

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        buffer: Any,
        rng: np.random.Generator,
        seed: int = 0,
        lr: float = 1e-3,
        gamma: float = 0.99,
        hidden_sizes: Sequence[int] = (64, 64),
        double: bool = False,
        dueling: bool = False,
        target_update: str = "hard",
        target_update_freq: int = 100,
        tau: float = 0.005,
        loss: str = "mse",
        huber_delta: float = 1.0,
        grad_clip: float | None = 1.0,
        adam_eps: float = 1e-8,
        epsilon_start: float = 1.0,
        epsilon_end: float = 0.01,
        epsilon_decay: float = 0.995,
        epsilon_schedule: str = "exponential",
        epsilon_decay_steps: int = 10_000,
    ) -> None:
        if target_update not in TARGET_UPDATES:
            raise ValueError(f"agent.target_update must be one of {TARGET_UPDATES}, got {target_update!r}")
        if loss not in LOSSES:
            raise ValueError(f"agent.loss must be one of {LOSSES}, got {loss!r}")
        self.n_actions, self.gamma, self.double = n_actions, gamma, double
        self.target_update, self.target_update_freq, self.tau = target_update, target_update_freq, tau
        self.loss_kind, self.huber_delta, self.grad_clip = loss, huber_delta, grad_clip
        self.buffer, self.rng = buffer, rng
        self.schedule = EpsilonSchedule(
            epsilon_start, epsilon_end, epsilon_decay, epsilon_schedule, epsilon_decay_steps
        )
        self.q_net = QNetwork(obs_dim, n_actions, hidden_sizes, dueling, seed=seed)
        self.target_net: QNetwork | None = None
        if target_update != "none":
            self.target_net = QNetwork(obs_dim, n_actions, hidden_sizes, dueling, seed=seed)
            self.target_net.load_state_dict(self.q_net.state_dict())
        self.params = list(self.q_net.parameters())
        self.optimizer = torch.optim.Adam(self.params, lr=lr, eps=adam_eps, foreach=True)
        self.policy = NumpyPolicy(self.q_net)
        self.steps = self.episodes = self.updates = 0
        self._epsilon = self.schedule(0, 0)
        self._probe_obs: object = None
        self._probe_q: np.ndarray | None = None

    # --- acting -------------------------------------------------------------------------
    @property
    def epsilon(self) -> float:
        return self._epsilon

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        if obs is self._probe_obs:
            return self._probe_q
        return self.policy(obs)

    def max_q(self, obs: np.ndarray) -> float:
        self._probe_obs, self._probe_q = obs, self.policy(obs)
        return float(self._probe_q.max())

    def act(self, obs: np.ndarray, greedy: bool = False) -> int:
        if not greedy and self.rng.random() < self._epsilon:
            return int(self.rng.integers(self.n_actions))
        return int(self.q_values(obs).argmax())

    # --- learning -----------------------------------------------------------------------
    def observe(self, obs, action, reward, next_obs, terminated, truncated) -> None:
        self.buffer.add(obs, action, reward, next_obs, terminated)
        self.steps += 1
        self._probe_obs = None
        self._epsilon = self.schedule(self.steps, self.episodes)

    def end_episode(self) -> None:
        self.episodes += 1
        self._epsilon = self.schedule(self.steps, self.episodes)

    def set_progress(self, fraction: float) -> None:
        self.buffer.set_progress(fraction)

    def update(self) -> float | None:
        """One gradient step on a sampled batch; returns the loss."""
        if not self.buffer.can_sample():
            return None
        batch = self.buffer.sample()
        obs = torch.from_numpy(batch.observations)
        next_obs = torch.from_numpy(batch.next_observations)
        actions = torch.from_numpy(batch.actions).unsqueeze(1)
        n = obs.shape[0]
        if self.target_net is None or self.double:
            # The online net is needed on s' too: one forward over the stacked states.
            q_all, acts = self.q_net.forward_train(torch.cat((obs, next_obs)))
            q, next_online = q_all[:n], q_all[n:]
        else:
            q_all, acts = self.q_net.forward_train(obs)
            q, next_online = q_all, None
        next_target = next_online if self.target_net is None else self.target_net(next_obs)
        y = td_target(
            torch.from_numpy(batch.rewards),
            torch.from_numpy(batch.terminated),
            self.gamma,
            next_target,
            next_online if self.double else None,
        )
        td = q.gather(1, actions).squeeze(1) - y
        loss, grad_td = loss_and_grad(
            td, torch.from_numpy(batch.weights), self.loss_kind, self.huber_delta
        )
        grad_q = torch.zeros_like(q_all)
        grad_q[:n].scatter_(1, actions, grad_td.unsqueeze(1))
        self.q_net.backward(acts, grad_q)
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
        self.optimizer.step()
        self.buffer.update_priorities(batch.indices, td.abs().numpy())
        self.updates += 1
        self._sync_target()
        return loss.item()

    def _sync_target(self) -> None:
        if self.target_net is None:
            return
        target = list(self.target_net.parameters())
        if self.target_update == "soft":
            torch._foreach_lerp_(target, self.params, self.tau)
        elif self.updates % self.target_update_freq == 0:
            torch._foreach_copy_(target, self.params)

    def save(self, path: Path) -> Path:
        out = Path(path).with_suffix(".pt")
        torch.save({"q_net": self.q_net.state_dict(), "updates": self.updates}, out)
        return out
