"""Tabular TD control (Q-learning, SARSA, Expected SARSA), the seed notebook's section 2, for
a population of K agents: one stacked Q-table of shape (K, states, actions).

The three differ only in the bootstrap value of the next state, so the shared base class owns
the Q-tables, epsilon-greedy acting, step/episode counting and the TD update, and each
subclass supplies ``_next_value``. They learn online in ``observe`` (no replay). Every
hyperparameter may be one value or one per member; each member acts with its own generator,
so member ``k`` of a population does exactly what it would do alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.agents.schedules import EpsilonSchedules
from sweeper.buffers.uniform import per_member
from sweeper.schema import UNIT, TabularAgentConfig, defaults

#: The per-member hyperparameters and their defaults: the schema's (``sweeper.schema``)
HYPERPARAMETERS: dict[str, Any] = defaults(TabularAgentConfig)


class TabularAgent:
    """K Q-tables with epsilon-greedy exploration; subclasses define the TD target.

    Randomness comes only from the injected ``rngs`` (one per member). Greedy ties go to the
    lowest action index (``argmax``), like the seed. Epsilon is ``schedule(env steps,
    episodes)``, where steps are counted in ``observe`` and episodes in ``end_episode``.
    """

    learns_from_replay = False

    def __init__(
        self,
        n_states: int,
        n_actions: int,
        rngs: Sequence[np.random.Generator],
        **hyperparameters: Any,
    ) -> None:
        unknown = set(hyperparameters) - set(HYPERPARAMETERS)
        if unknown:
            raise TypeError(f"unexpected agent parameters {sorted(unknown)}")
        if n_states < 1 or n_actions < 1:
            raise ValueError(f"n_states and n_actions must be >= 1, got {n_states}, {n_actions}")
        self.size = k = len(rngs)
        self.n_states, self.n_actions = int(n_states), int(n_actions)
        self.rngs = list(rngs)
        self.alpha = np.zeros(k)
        self.gamma = np.zeros(k)
        self.schedule = EpsilonSchedules(k)
        self.q_table = np.zeros((k, self.n_states, self.n_actions))
        self.steps = np.zeros(k, dtype=np.int64)
        self.episodes = np.zeros(k, dtype=np.int64)
        values = {
            name: per_member(f"agent.{name}", hyperparameters.get(name, default), k)
            for name, default in HYPERPARAMETERS.items()
        }
        for member in range(k):
            self.reset_member(
                member, self.rngs[member], **{n: v[member] for n, v in values.items()}
            )

    def reset_member(self, member: int, rng: np.random.Generator, **hyperparameters: Any) -> None:
        """Member ``member`` becomes a fresh agent (a population slot taking a new trial)."""
        hp: Mapping[str, Any] = {**HYPERPARAMETERS, **hyperparameters}
        alpha, gamma = float(hp["alpha"]), float(hp["gamma"])
        for name, value in (("alpha", alpha), ("gamma", gamma)):
            if value not in UNIT:
                raise ValueError(f"{name} must lie in {UNIT}, got {value}")
        self.rngs[member], self.alpha[member], self.gamma[member] = rng, alpha, gamma
        self.schedule.set_member(
            member,
            hp["epsilon_start"],
            hp["epsilon_end"],
            hp["epsilon_decay"],
            hp["epsilon_schedule"],
            hp["epsilon_decay_steps"],
        )
        self.q_table[member] = 0.0
        self.steps[member] = self.episodes[member] = 0
        self._forget(np.array([member]))

    def epsilon(self, members: np.ndarray) -> np.ndarray:
        if not self.schedule.any_linear:
            return self.schedule.value[members]
        return self.schedule(members, self.steps[members], self.episodes[members])

    def _explore(self, k: int, s: int, eps: float) -> int:
        """Epsilon-greedy draw: ``rng.random() < eps`` then a uniform action, else argmax."""
        rng = self.rngs[k]
        if rng.random() < eps:
            return int(rng.integers(self.n_actions))
        return int(np.argmax(self.q_table[k, s]))

    def act(self, obs: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Epsilon-greedy actions of ``members`` in states ``obs``, and the Q-rows of those
        states (the max-Q probe reads them)."""
        q = self.q_table[members, obs]
        eps = self.epsilon(members)
        actions = np.empty(len(members), dtype=np.int64)
        for row, (k, s) in enumerate(zip(members.tolist(), obs.tolist(), strict=True)):
            actions[row] = self._choose(k, s, float(eps[row]))
        return actions, q

    def _choose(self, k: int, s: int, eps: float) -> int:
        return self._explore(k, s, eps)

    def greedy_q(self, obs: np.ndarray, members: np.ndarray) -> np.ndarray:
        """Q-values of ``members`` in a batch of states each: (m, E) -> (m, E, actions)."""
        return self.q_table[members[:, None], obs]

    def observe(
        self, members, obs, actions, rewards, next_obs, terminated, truncated
    ) -> np.ndarray:
        """TD update of Q[obs, action] per member; returns the squared TD errors.

        Only ``terminated`` cuts the bootstrap: a time-limit truncation is not a real end.
        """
        self.steps[members] += 1
        target = np.asarray(rewards, dtype=np.float64).copy()
        boot = ~np.asarray(terminated, dtype=bool)
        if boot.any():
            target[boot] += self.gamma[members[boot]] * self._next_value(
                members[boot], next_obs[boot]
            )
        ended = ~boot | np.asarray(truncated, dtype=bool)
        if ended.any():
            self._forget(members[ended])
        td_error = target - self.q_table[members, obs, actions]
        self.q_table[members, obs, actions] += self.alpha[members] * td_error
        return td_error * td_error

    def _next_value(self, members: np.ndarray, s2: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _forget(self, members: np.ndarray) -> None:
        """Hook for agents holding per-episode state (SARSA's cached next action)."""

    def update(self, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tabular agents learn in ``observe``; nothing to do here."""
        return np.full(len(members), np.nan), np.zeros(len(members), dtype=bool)

    def end_episode(self, members: np.ndarray) -> None:
        self.episodes[members] += 1
        self.schedule.episodes_ended(members, self.episodes[members])
        self._forget(members)

    def set_progress(self, members: np.ndarray, fractions: np.ndarray) -> None:
        """No progress-dependent hyperparameters."""

    def nonfinite(self, member: int) -> str | None:
        """Reports a NaN or inf Q-value (rewards near the float maximum overflow the table)."""
        return None if np.isfinite(self.q_table[member]).all() else "non-finite Q-table"

    def save(self, member: int, path: Path | str) -> Path:
        """Write member ``member``'s Q-table as ``path.npy``."""
        out = Path(path).with_suffix(".npy")
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, self.q_table[member])
        return out

    def nbytes(self) -> int:
        return self.q_table.nbytes


class QLearning(TabularAgent):
    """Off-policy: bootstraps on ``max_a Q[s2, a]``, the greedy policy's value."""

    def _next_value(self, members: np.ndarray, s2: np.ndarray) -> np.ndarray:
        return self.q_table[members, s2].max(axis=1)


class SARSA(TabularAgent):
    """On-policy: bootstraps on ``Q[s2, a2]`` for the action ``a2`` it will actually take.

    ``a2`` is drawn (epsilon-greedy) inside ``observe`` and cached, so the next ``act(s2)``
    returns it and the update matches behaviour. The cache is dropped at episode end and is
    never used or disturbed by greedy evaluation (``greedy_q``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._next_state: np.ndarray | None = None
        self._next_action: np.ndarray | None = None
        super().__init__(*args, **kwargs)

    def _forget(self, members: np.ndarray) -> None:
        if self._next_state is None:
            self._next_state = np.full(self.size, -1, dtype=np.int64)
            self._next_action = np.zeros(self.size, dtype=np.int64)
        self._next_state[members] = -1

    def _choose(self, k: int, s: int, eps: float) -> int:
        if self._next_state[k] == s:
            self._next_state[k] = -1
            return int(self._next_action[k])
        self._next_state[k] = -1
        return self._explore(k, s, eps)

    def _next_value(self, members: np.ndarray, s2: np.ndarray) -> np.ndarray:
        eps = self.epsilon(members)
        a2 = np.array(
            [
                self._explore(k, s, float(e))
                for k, s, e in zip(members.tolist(), s2.tolist(), eps.tolist(), strict=True)
            ],
            dtype=np.int64,
        )
        self._next_state[members], self._next_action[members] = s2, a2
        return self.q_table[members, s2, a2]


class ExpectedSARSA(TabularAgent):
    """Bootstraps on ``sum_a pi(a|s2) Q[s2, a]`` under the current epsilon-greedy policy.

    Same fixed point as SARSA without the sampling noise of ``a2``.
    """

    def _next_value(self, members: np.ndarray, s2: np.ndarray) -> np.ndarray:
        q = self.q_table[members, s2]
        eps = self.epsilon(members)
        # eps spread uniformly, 1 - eps on the argmax (lowest index on ties, as act does).
        best = np.take_along_axis(q, q.argmax(axis=1)[:, None], axis=1)[:, 0]
        return eps * q.mean(axis=1) + (1.0 - eps) * best
