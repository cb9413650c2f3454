"""DQN and its variants for a population of K agents: Double DQN, dueling heads,
hard/soft/no target network.

The seed notebook's DQNAgent, DQNNoReplay, DQNNoTarget and DoubleDQNAgent are one class here:
the replay ablation is a buffer (``LatestTransitionBuffer``), the others are switches. The TD
target is computed in exactly one place, :func:`td_target`.

One object trains K agents of one architecture (obs/action spaces, hidden sizes, dueling,
batch size, buffer kind) in lockstep: every other hyperparameter is per member (a scalar is
shared, a sequence gives one value per member), so a sweep's trials, or one trial's seeds,
run as one batched computation. A single agent is ``K=1``; there is no second code path.
Each member has its own seed (network init), its own generators (acting, sampling) and its
own replay ring, and the math of one member never depends on the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from sweeper.agents.networks import ALL, Adam, Members, QNetwork, StackedMLP, clip_grad_norm
from sweeper.agents.schedules import EpsilonSchedules
from sweeper.buffers.uniform import per_member
from sweeper.choices import Loss, TargetUpdate
from sweeper.schema import DQNAgentConfig, defaults

TARGET_UPDATES = tuple(TargetUpdate)  # in target_mode index order
LOSSES = tuple(Loss)

#: The per-member hyperparameters and their defaults (the seed notebook's DQN): the schema's
#: (``sweeper.schema``) but the architecture, which members share (``hidden_sizes``, ``dueling``)
HYPERPARAMETERS: dict[str, Any] = defaults(
    DQNAgentConfig, exclude=("_target_", "name", "hidden_sizes", "dueling")
)


def td_target(
    rewards: np.ndarray,
    terminated: np.ndarray,
    gamma: np.ndarray,
    next_q_target: np.ndarray,
    next_q_online: np.ndarray | None = None,
    double: np.ndarray | None = None,
) -> np.ndarray:
    """r + gamma * (1 - terminated) * Q_target(s', a*), per member (leading axis).

    a* = argmax_a Q_target(s', a) (DQN), or argmax_a Q_online(s', a) for the members where
    ``double`` is set (Double DQN: the online net selects, the target net evaluates). Only
    termination cuts the bootstrap; a time-limit truncation is stored as not terminated.
    ``gamma`` is (m,) float32.
    """
    if double is None or not double.any():
        next_v = _max_last(next_q_target)
    else:
        best = next_q_target.argmax(axis=-1)
        best[double] = next_q_online[double].argmax(axis=-1)
        next_v = np.take_along_axis(next_q_target, best[..., None], axis=-1)[..., 0]
    return rewards + gamma[:, None] * (1.0 - terminated) * next_v


def _max_last(q: np.ndarray) -> np.ndarray:
    """``q.max(axis=-1)`` by elementwise maxima over the few actions (exact, and several
    times faster than a reduction along a length-2 axis)."""
    out = q[..., 0].copy()
    for a in range(1, q.shape[-1]):
        np.maximum(out, q[..., a], out=out)
    return out


def loss_and_grad(
    td: np.ndarray, weights: np.ndarray, huber: np.ndarray | None, huber_delta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per member (rows): importance-weighted mean loss of TD errors ``td = Q(s,a) - y``, and
    its gradient wrt Q(s,a). ``mse`` is the seed's F.mse_loss; where ``huber`` is set, smooth
    L1 with that member's ``huber_delta`` (``huber`` None: no member)."""
    n = td.shape[1]
    loss = weights * td * td
    grad = weights * td * np.float32(2.0 / n)
    if huber is not None and huber.any():
        delta = huber_delta[:, None]
        abs_td = np.abs(td)
        quad = np.minimum(abs_td, delta)
        h_loss = weights * (0.5 * quad * quad + delta * (abs_td - quad))
        h_grad = weights * np.clip(td, -delta, delta) / np.float32(n)
        loss = np.where(huber[:, None], h_loss, loss)
        grad = np.where(huber[:, None], h_grad, grad).astype(np.float32)
    return loss.mean(axis=1), grad


class DQNAgent:
    """K deep Q-learners with replay (any of ``sweeper.buffers``, one ring per member).

    ``seeds`` (one per member) seed the networks; ``rngs`` (one per member) drive acting.
    ``target_update``: "hard" copies the online net every ``target_update_freq`` gradient
    steps, "soft" moves the target by ``tau`` each step, "none" bootstraps from the online
    net itself (the seed's no-target ablation). Every keyword of :data:`HYPERPARAMETERS` may
    be one value or one per member.
    """

    learns_from_replay = True

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        buffer: Any,
        seeds: Sequence[int],
        rngs: Sequence[np.random.Generator],
        hidden_sizes: Sequence[int] = (64, 64),
        dueling: bool = False,
        **hyperparameters: Any,
    ) -> None:
        unknown = set(hyperparameters) - set(HYPERPARAMETERS)
        if unknown:
            raise TypeError(f"unexpected agent parameters {sorted(unknown)}")
        self.size = k = len(seeds)
        if len(rngs) != k or buffer.members != k:
            raise ValueError(f"{k} seeds, {len(rngs)} rngs and {buffer.members} buffer rings")
        self.n_actions, self.buffer = int(n_actions), buffer
        self.online = StackedMLP(k, obs_dim, n_actions, hidden_sizes, dueling)
        self.target = StackedMLP(k, obs_dim, n_actions, hidden_sizes, dueling)
        self.rngs = list(rngs)
        self.seeds = [int(s) for s in seeds]
        self.gamma = np.zeros(k)
        self.double = np.zeros(k, dtype=bool)
        self.target_mode = np.zeros(k, dtype=np.int64)  # index into TARGET_UPDATES
        self.target_update_freq = np.ones(k, dtype=np.int64)
        self.tau = np.zeros(k, dtype=np.float32)
        self.huber = np.zeros(k, dtype=bool)
        self.huber_delta = np.ones(k, dtype=np.float32)
        self.grad_clip = np.full(k, np.inf)
        self.optimizer = Adam(self.online.flat, lr=np.zeros(k))
        self.schedule = EpsilonSchedules(k)
        self.steps = np.zeros(k, dtype=np.int64)
        self.episodes = np.zeros(k, dtype=np.int64)
        self.updates = np.zeros(k, dtype=np.int64)
        self._all: _Switches | None = None
        self._row_index = np.arange(0)
        values = {
            name: per_member(f"agent.{name}", hyperparameters.get(name, default), k)
            for name, default in HYPERPARAMETERS.items()
        }
        for member in range(k):
            one = {name: v[member] for name, v in values.items()}
            self._set_member(member, self.seeds[member], self.rngs[member], one)

    # --- members -------------------------------------------------------------------------
    def _set_member(
        self, k: int, seed: int, rng: np.random.Generator, hp: Mapping[str, Any]
    ) -> None:
        hp = {**HYPERPARAMETERS, **hp}
        if hp["target_update"] not in TARGET_UPDATES:
            raise ValueError(
                f"agent.target_update must be one of {TARGET_UPDATES}, got {hp['target_update']!r}"
            )
        if hp["loss"] not in LOSSES:
            raise ValueError(f"agent.loss must be one of {LOSSES}, got {hp['loss']!r}")
        self.seeds[k], self.rngs[k] = int(seed), rng
        net = QNetwork(
            self.online.obs_dim,
            self.n_actions,
            self.online.hidden_sizes,
            self.online.dueling,
            seed=int(seed),
        )
        self.online.load(k, net)
        self.target.load(k, net)
        self.gamma[k] = hp["gamma"]
        self.double[k] = bool(hp["double"])
        self.target_mode[k] = TARGET_UPDATES.index(hp["target_update"])
        self.target_update_freq[k] = max(1, int(hp["target_update_freq"]))
        self.tau[k] = hp["tau"]
        self.huber[k] = hp["loss"] == Loss.huber
        self.huber_delta[k] = hp["huber_delta"]
        self.grad_clip[k] = hp["grad_clip"] if hp["grad_clip"] else np.inf
        self.optimizer.reset_member(k, float(hp["lr"]), float(hp["adam_eps"]))
        self.schedule.set_member(
            k,
            hp["epsilon_start"],
            hp["epsilon_end"],
            hp["epsilon_decay"],
            hp["epsilon_schedule"],
            hp["epsilon_decay_steps"],
        )
        self.steps[k] = self.episodes[k] = self.updates[k] = 0
        self._all = None  # the switches of all members changed

    def reset_member(
        self,
        member: int,
        seed: int,
        rng: np.random.Generator,
        buffer_rng: np.random.Generator,
        buffer_params: Mapping[str, Any] | None = None,
        **hyperparameters: Any,
    ) -> None:
        """Member ``member`` becomes a fresh agent (a population slot taking a new trial)."""
        self._set_member(member, seed, rng, hyperparameters)
        self.buffer.reset_member(member, buffer_rng, **dict(buffer_params or {}))

    # --- acting --------------------------------------------------------------------------
    def epsilon(self, members: np.ndarray) -> np.ndarray:
        if not self.schedule.any_linear:
            return self.schedule.value[members]
        return self.schedule(members, self.steps[members], self.episodes[members])

    def act(self, obs: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Epsilon-greedy actions of ``members`` in ``obs`` (one row each), and the greedy
        Q-values they were chosen from (the max-Q probe reads them)."""
        sel = _selector(members, self.size)
        q = self.online.forward(obs[:, None, :], sel)[0][:, 0, :]
        actions = q.argmax(axis=1)
        eps = self.epsilon(members)
        for row, k in enumerate(members.tolist()):
            rng = self.rngs[k]
            if rng.random() < eps[row]:
                actions[row] = rng.integers(self.n_actions)
        return actions, q

    def greedy_q(self, obs: np.ndarray, members: np.ndarray) -> np.ndarray:
        """Q-values of ``members`` on a batch of observations each: (m, E, obs_dim)."""
        return self.online.forward(obs, _selector(members, self.size))[0]

    # --- learning ------------------------------------------------------------------------
    def observe(self, members, obs, actions, rewards, next_obs, terminated, truncated) -> None:
        """Store the transitions (learning happens in :meth:`update`)."""
        self.buffer.add(members, obs, actions, rewards, next_obs, terminated)
        self.steps[members] += 1

    def end_episode(self, members: np.ndarray) -> None:
        self.episodes[members] += 1
        self.schedule.episodes_ended(members, self.episodes[members])

    def set_progress(self, members: np.ndarray, fractions: np.ndarray) -> None:
        self.buffer.set_progress(members, fractions)

    def _switches(self, idx: Members) -> _Switches:
        """The per-member switches of ``idx`` (cached for all members: they change only when
        a member is set)."""
        if isinstance(idx, slice) and self._all is not None:
            return self._all
        modes = self.target_mode[idx]
        double, huber = self.double[idx], self.huber[idx]
        clip = self.grad_clip[idx]
        out = _Switches(
            gamma=self.gamma[idx].astype(np.float32),
            double=double if double.any() else None,
            no_target=modes == 2,
            any_no_target=bool((modes == 2).any()),
            all_no_target=bool((modes == 2).all()),
            huber=huber,
            any_huber=bool(huber.any()),
            huber_delta=self.huber_delta[idx],
            clip=clip if np.isfinite(clip).any() else None,
            hard=modes == 0,
            any_soft=bool((modes == 1).any()),
        )
        if isinstance(idx, slice):
            self._all = out
        return out

    def update(self, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One gradient step for each of ``members`` whose ring holds a batch; returns the
        loss per member and which members learned (the others' loss is NaN)."""
        ready = self.buffer.can_sample(members)
        if ready.all():
            learners = members
        elif not ready.any():
            return np.full(len(members), np.nan), ready
        else:
            learners = members[ready]
        sel = _selector(learners, self.size)
        sw = self._switches(sel)
        batch = self.buffer.sample(learners)
        q, acts = self.online.forward(batch.observations, sel)
        next_online = None
        if sw.any_no_target or sw.double is not None:
            next_online = self.online.forward(batch.next_observations, sel, slot=1)[0]
        if sw.all_no_target:
            next_target = next_online
        else:
            next_target = self.target.forward(batch.next_observations, sel)[0]
            if sw.any_no_target:
                next_target = np.where(sw.no_target[:, None, None], next_online, next_target)
        y = td_target(
            batch.rewards, batch.terminated, sw.gamma, next_target, next_online, sw.double
        )
        # Q(s, a) of the chosen actions: flat indices into (m * B, n_actions).
        rows = self._rows(batch.actions.size)
        chosen = batch.actions.ravel()
        td = q.reshape(-1, self.n_actions)[rows, chosen].reshape(batch.actions.shape)
        td -= y
        loss, grad_td = loss_and_grad(
            td, batch.weights, sw.huber if sw.any_huber else None, sw.huber_delta
        )
        grad_q = np.zeros_like(q)
        grad_q.reshape(-1, self.n_actions)[rows, chosen] = grad_td.ravel()
        grads = self.online.backward(acts, grad_q, sel)
        if sw.clip is not None:
            clip_grad_norm(grads, sw.clip)
        self.optimizer.step(grads, sel)
        self.buffer.update_priorities(learners, batch.indices, np.abs(td))
        self.updates[sel] += 1
        self._sync_target(learners, sel, sw)
        if sel is ALL or len(learners) == len(members):
            return loss, ready
        losses = np.full(len(members), np.nan)
        losses[ready] = loss
        return losses, ready

    def _rows(self, n: int) -> np.ndarray:
        rows = self._row_index
        if rows.size != n:
            rows = self._row_index = np.arange(n)
        return rows

    def _sync_target(self, learners: np.ndarray, sel: Members, sw: _Switches) -> None:
        due = sw.hard & (self.updates[sel] % self.target_update_freq[sel] == 0)
        if due.any():
            hard = learners[due]
            self.target.copy_from(self.online, _selector(hard, self.size))
        if sw.any_soft:
            soft = learners[self.target_mode[sel] == 1]
            sel = _selector(soft, self.size)
            target = self.target.flat[sel]
            target += (self.online.flat[sel] - target) * self.tau[soft][:, None]
            if not isinstance(sel, slice):
                self.target.flat[sel] = target

    # --- checks and files ----------------------------------------------------------------
    def nonfinite(self, member: int) -> str | None:
        """Names the first network of ``member`` with a NaN or inf weight."""
        if self.online.nonfinite(member):
            return "non-finite online network weights"
        if self.target_mode[member] != 2 and self.target.nonfinite(member):
            return "non-finite target network weights"
        return None

    def save(self, member: int, path: Path) -> Path:
        out = Path(path).with_suffix(".pt")
        state = self.online.module(member).state_dict()
        torch.save({"q_net": state, "updates": int(self.updates[member])}, out)
        return out

    def nbytes(self) -> int:
        opt = self.optimizer.m.nbytes + self.optimizer.v.nbytes
        return self.online.nbytes() + self.target.nbytes() + opt + self.buffer.nbytes()


class _Switches(NamedTuple):
    """Per-member switches of the members being updated, in the update's dtypes."""

    gamma: np.ndarray  # float32
    double: np.ndarray | None  # None: no member is double
    no_target: np.ndarray
    any_no_target: bool
    all_no_target: bool
    huber: np.ndarray
    any_huber: bool
    huber_delta: np.ndarray
    clip: np.ndarray | None  # None: no member clips
    hard: np.ndarray
    any_soft: bool


def _selector(members: np.ndarray, size: int) -> Members:
    """:data:`ALL` (views, in place) when ``members`` is every member (member index arrays
    are sorted and distinct, so that is when there are ``size`` of them)."""
    return ALL if len(members) == size else members
