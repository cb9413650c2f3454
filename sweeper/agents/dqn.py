"""DQN and its variants for a population of K agents: Double DQN, dueling heads,
hard/soft/no target network.

The seed notebook's DQNAgent, DQNNoReplay, DQNNoTarget and DoubleDQNAgent are one class here:
the replay ablation is a buffer (``LatestTransitionBuffer``), the others are switches. The TD
target is computed in exactly one place, ``sweeper.agents.member_update.td_target``, inside
the compiled update (:mod:`sweeper.agents.member_update`) that is the only update path.

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
from typing import Any

import numpy as np
import torch

from sweeper.agents import member_update
from sweeper.agents.networks import ALL, Members, QNetwork, StackedMLP
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
        self._gamma32 = np.zeros(k, dtype=np.float32)  # the update's (float32) copy
        self.double = np.zeros(k, dtype=bool)
        self.target_mode = np.zeros(k, dtype=np.int64)  # index into TARGET_UPDATES
        self.target_update_freq = np.ones(k, dtype=np.int64)
        self.tau = np.zeros(k, dtype=np.float32)
        self.huber = np.zeros(k, dtype=bool)
        self.huber_delta = np.ones(k, dtype=np.float32)
        self.grad_clip = np.full(k, np.inf)
        # Adam (torch.optim.Adam's defaults but lr and eps, per member): moments, step count
        self.lr = np.zeros(k)
        self.adam_eps = np.full(k, 1e-8)
        self.adam_m = np.zeros_like(self.online.flat)
        self.adam_v = np.zeros_like(self.online.flat)
        self.adam_t = np.zeros(k, dtype=np.int64)
        #: (offset, in, out) of each parameter block of a member's row (the compiled update's)
        self.layout = np.array(
            [(a, i, o) for (a, _), (i, o) in zip(self.online.bounds, self.online.blocks)],
            dtype=np.int64,
        )
        self._scratch: dict[int, tuple[np.ndarray, ...]] = {}
        self.schedule = EpsilonSchedules(k)
        self.steps = np.zeros(k, dtype=np.int64)
        self.episodes = np.zeros(k, dtype=np.int64)
        self.updates = np.zeros(k, dtype=np.int64)
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
        self._gamma32[k] = hp["gamma"]
        self.double[k] = bool(hp["double"])
        self.target_mode[k] = TARGET_UPDATES.index(hp["target_update"])
        self.target_update_freq[k] = max(1, int(hp["target_update_freq"]))
        self.tau[k] = hp["tau"]
        self.huber[k] = hp["loss"] == Loss.huber
        self.huber_delta[k] = hp["huber_delta"]
        self.grad_clip[k] = hp["grad_clip"] if hp["grad_clip"] else np.inf
        self.lr[k], self.adam_eps[k], self.adam_t[k] = float(hp["lr"]), float(hp["adam_eps"]), 0
        self.adam_m[k] = self.adam_v[k] = 0.0
        self.schedule.set_member(
            k,
            hp["epsilon_start"],
            hp["epsilon_end"],
            hp["epsilon_decay"],
            hp["epsilon_schedule"],
            hp["epsilon_decay_steps"],
        )
        self.steps[k] = self.episodes[k] = self.updates[k] = 0

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

    def update(self, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One gradient step for each of ``members`` whose ring holds a batch (one compiled
        call for all of them, :func:`sweeper.agents.member_update.update`); returns the loss
        per member and which members learned (the others' loss is NaN)."""
        ready = self.buffer.can_sample(members)
        if ready.all():
            learners = members
        elif not ready.any():
            return np.full(len(members), np.nan), ready
        else:
            learners = members[ready]
        batch = self.buffer.sample(learners)
        loss = np.empty(len(learners), dtype=np.float32)
        abs_td = np.empty(batch.actions.shape, dtype=np.float32)
        member_update.update(
            learners,
            self.online.flat,
            self.target.flat,
            self.adam_m,
            self.adam_v,
            self.adam_t,
            self.lr,
            self.adam_eps,
            self.layout,
            self.online.dueling,
            self._gamma32,
            self.double,
            self.target_mode,
            self.target_update_freq,
            self.tau,
            self.huber,
            self.huber_delta,
            self.grad_clip,
            self.updates,
            batch.observations,
            batch.actions,
            batch.rewards,
            batch.next_observations,
            batch.terminated,
            batch.weights,
            *self._scratch_for(batch.actions.shape[1]),
            loss,
            abs_td,
        )
        self.buffer.update_priorities(learners, batch.indices, abs_td)
        if len(learners) == len(members):
            return loss, ready
        losses = np.full(len(members), np.nan)
        losses[ready] = loss
        return losses, ready

    def _scratch_for(self, batch: int) -> tuple[np.ndarray, ...]:
        """The compiled update's working arrays for a batch size, made once: each layer's
        input buffer (B, widest input + 1) for s and for s', the heads' outputs and Q-values
        of the three forwards, the head gradient, two hidden gradients, the transposed
        weights, the gradient row and the per-sample losses."""
        scratch = self._scratch.get(batch)
        if scratch is None:
            net = self.online
            f32 = np.float32
            width = max(i for i, _ in net.blocks) + 1
            hidden = max(net.hidden_sizes)
            n_out = net.blocks[-1][1]
            layers = len(net.blocks)
            w_t = max([i * o for i, o in net.blocks[1:]] or [1])
            scratch = self._scratch[batch] = (
                np.zeros((layers, batch, width), f32),
                np.zeros((layers, batch, width), f32),
                np.zeros((3, batch, n_out), f32),
                np.zeros((3, batch, self.n_actions), f32),
                np.zeros((batch, n_out), f32),
                np.zeros((batch, hidden), f32),
                np.zeros((batch, hidden), f32),
                np.zeros(w_t, f32),
                np.zeros(net.flat.shape[1], f32),
                np.zeros(batch, f32),
            )
        return scratch

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
        opt = self.adam_m.nbytes + self.adam_v.nbytes
        return self.online.nbytes() + self.target.nbytes() + opt + self.buffer.nbytes()


def _selector(members: np.ndarray, size: int) -> Members:
    """:data:`ALL` (views, in place) when ``members`` is every member (member index arrays
    are sorted and distinct, so that is when there are ``size`` of them)."""
    return ALL if len(members) == size else members


def load_compiled_update() -> None:
    """Load the compiled update (``sweeper.agents.member_update``) into this process: from
    numba's disk cache, or compiled and cached there when this machine has not compiled it
    yet. One tiny update of a one-member agent fixes the argument types the training loop
    uses (sizes do not matter), so the training's first update finds it loaded. The sweeps'
    fork server runs this (``sweeper.agents.preload``) so that no worker loads it again."""
    from sweeper.buffers.uniform import UniformReplayBuffer

    rng = np.random.default_rng(0)
    buffer = UniformReplayBuffer(2, 1, (1,), [rng])
    agent = DQNAgent(1, 2, buffer, [0], [rng], hidden_sizes=[2])
    one = np.arange(1)
    buffer.add(one, np.zeros((1, 1), np.float32), [0], [0.0], np.zeros((1, 1), np.float32), [0.0])
    agent.update(one)
