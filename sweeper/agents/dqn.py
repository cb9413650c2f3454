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

from sweeper.agents.networks import Adam, MLPKernel, QNetwork, clip_grad_norm
from sweeper.agents.schedules import EpsilonSchedule

TARGET_UPDATES = ("hard", "soft", "none")
LOSSES = ("mse", "huber")


def td_target(
    rewards: np.ndarray,
    terminated: np.ndarray,
    gamma: float,
    next_q_target: np.ndarray,
    next_q_online: np.ndarray | None = None,
) -> np.ndarray:
    """r + gamma * (1 - terminated) * Q_target(s', a*).

    a* = argmax_a Q_target(s', a) (DQN), or argmax_a Q_online(s', a) when ``next_q_online`` is
    given (Double DQN: the online net selects, the target net evaluates). Only termination
    cuts the bootstrap; a time-limit truncation is stored as not terminated.
    """
    if next_q_online is None:
        next_v = next_q_target.max(axis=1)
    else:
        best = next_q_online.argmax(axis=1)
        next_v = next_q_target[np.arange(len(best)), best]
    return rewards + np.float32(gamma) * (1.0 - terminated) * next_v


def loss_and_grad(
    td: np.ndarray, weights: np.ndarray, kind: str, huber_delta: float = 1.0
) -> tuple[float, np.ndarray]:
    """Importance-weighted mean loss of TD errors ``td = Q(s,a) - y``, and its gradient wrt
    Q(s,a). ``mse`` is the seed's F.mse_loss; ``huber`` is smooth L1 with ``huber_delta``."""
    n = td.shape[0]
    if kind == "mse":
        return float(np.mean(weights * td * td)), weights * td * np.float32(2.0 / n)
    abs_td = np.abs(td)
    quad = np.minimum(abs_td, huber_delta)
    loss = weights * (0.5 * quad * quad + huber_delta * (abs_td - quad))
    grad = weights * np.clip(td, -huber_delta, huber_delta) / np.float32(n)
    return float(np.mean(loss)), grad


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
            raise ValueError(
                f"agent.target_update must be one of {TARGET_UPDATES}, got {target_update!r}"
            )
        if loss not in LOSSES:
            raise ValueError(f"agent.loss must be one of {LOSSES}, got {loss!r}")
        self.n_actions, self.gamma, self.double = n_actions, gamma, double
        self.target_update, self.target_update_freq, self.tau = (
            target_update,
            target_update_freq,
            tau,
        )
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
        self.online = MLPKernel(self.q_net)
        self.target = MLPKernel(self.target_net) if self.target_net is not None else None
        self.optimizer = Adam(self.online.params, lr=lr, eps=adam_eps)
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
        return self.online.q_values(obs)

    def max_q(self, obs: np.ndarray) -> float:
        self._probe_obs, self._probe_q = obs, self.online.q_values(obs)
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
        n = batch.actions.shape[0]
        rows = np.arange(n)
        if self.target is None or self.double:
            # The online net is needed on s' too: one forward over the stacked states.
            stacked = np.concatenate((batch.observations, batch.next_observations))
            q_all, acts = self.online.forward(stacked)
            q, next_online = q_all[:n], q_all[n:]
        else:
            q_all, acts = self.online.forward(batch.observations)
            q, next_online = q_all, None
        if self.target is None:
            next_target = next_online
        else:
            next_target, _ = self.target.forward(batch.next_observations)
        y = td_target(
            batch.rewards,
            batch.terminated,
            self.gamma,
            next_target,
            next_online if self.double else None,
        )
        td = q[rows, batch.actions] - y
        loss, grad_td = loss_and_grad(td, batch.weights, self.loss_kind, self.huber_delta)
        grad_q = np.zeros_like(q_all)
        grad_q[rows, batch.actions] = grad_td
        grads = self.online.backward(acts, grad_q)
        if self.grad_clip:
            clip_grad_norm(grads, self.grad_clip)
        self.optimizer.step(grads)
        self.buffer.update_priorities(batch.indices, np.abs(td))
        self.updates += 1
        self._sync_target()
        return loss

    def _sync_target(self) -> None:
        if self.target is None:
            return
        if self.target_update == "soft":
            for t, p in zip(self.target.params, self.online.params):
                t += (p - t) * np.float32(self.tau)
        elif self.updates % self.target_update_freq == 0:
            for t, p in zip(self.target.params, self.online.params):
                np.copyto(t, p)

    def nonfinite(self) -> str | None:
        """Names the first network with a NaN or inf weight (a few thousand floats: ~15 us)."""
        for name, kernel in (("online network", self.online), ("target network", self.target)):
            if kernel is not None and not all(np.isfinite(p).all() for p in kernel.params):
                return f"non-finite {name} weights"
        return None

    def save(self, path: Path) -> Path:
        out = Path(path).with_suffix(".pt")
        torch.save({"q_net": self.q_net.state_dict(), "updates": self.updates}, out)
        return out
