"""Tabular TD control (Q-learning, SARSA, Expected SARSA), the seed notebook's section 2.

The three differ only in the bootstrap value of the next state, so the shared base class owns
the Q-table, epsilon-greedy acting, step/episode counting and the TD update, and each
subclass supplies ``_next_value``. They learn online in ``observe`` (no replay).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sweeper.agents.schedules import EpsilonSchedule


class TabularAgent:
    """Q-table agent with epsilon-greedy exploration; subclasses define the TD target.

    Randomness comes only from the injected ``rng``. Greedy ties go to the lowest action
    index (``np.argmax``), like the seed. Epsilon is ``schedule(env steps, episodes)``, where
    steps are counted in ``observe`` and episodes in ``end_episode``.
    """

    learns_from_replay = False

    def __init__(
        self,
        n_states: int,
        n_actions: int,
        rng: np.random.Generator,
        alpha: float = 0.1,
        gamma: float = 0.9,
        epsilon_start: float = 1.0,
        epsilon_end: float = 0.01,
        epsilon_decay: float = 0.995,
        epsilon_schedule: str = "exponential",
        epsilon_decay_steps: int = 10_000,
    ) -> None:
        if n_states < 1 or n_actions < 1:
            raise ValueError(f"n_states and n_actions must be >= 1, got {n_states}, {n_actions}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
        self.n_states = int(n_states)
        self.n_actions = int(n_actions)
        self.rng = rng
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.schedule = EpsilonSchedule(
            start=epsilon_start,
            end=epsilon_end,
            decay=epsilon_decay,
            kind=epsilon_schedule,
            decay_steps=epsilon_decay_steps,
        )
        self.q_table = np.zeros((self.n_states, self.n_actions))
        self.steps = 0
        self.episodes = 0

    @property
    def epsilon(self) -> float:
        return self.schedule(self.steps, self.episodes)

    def _explore(self, s: int) -> int:
        """Epsilon-greedy draw: ``rng.random() < eps`` then a uniform action, else argmax."""
        if self.rng.random() < self.epsilon:
            return int(self.rng.integers(self.n_actions))
        return int(np.argmax(self.q_table[s]))

    def act(self, obs: np.ndarray | int, greedy: bool = False) -> int:
        s = int(obs)
        if greedy:
            return int(np.argmax(self.q_table[s]))
        return self._explore(s)

    def observe(
        self,
        obs: np.ndarray | int,
        action: int,
        reward: float,
        next_obs: np.ndarray | int,
        terminated: bool,
        truncated: bool,
    ) -> float:
        """TD update of Q[obs, action]; returns the squared TD error.

        Only ``terminated`` cuts the bootstrap: a time-limit truncation is not a real end.
        """
        self.steps += 1
        s, s2 = int(obs), int(next_obs)
        target = float(reward)
        if not terminated:
            target += self.gamma * self._next_value(s2)
        if terminated or truncated:
            self._end_of_episode_transition()
        td_error = target - self.q_table[s, action]
        self.q_table[s, action] += self.alpha * td_error
        return float(td_error * td_error)

    def _next_value(self, s2: int) -> float:
        raise NotImplementedError

    def _end_of_episode_transition(self) -> None:
        """Hook for agents holding per-episode state (SARSA's cached next action)."""

    def update(self) -> None:
        """Tabular agents learn in ``observe``; nothing to do here."""
        return None

    def end_episode(self) -> None:
        self.episodes += 1
        self._end_of_episode_transition()

    def set_progress(self, fraction: float) -> None:
        """No progress-dependent hyperparameters."""

    def max_q(self, obs: np.ndarray | int) -> float:
        return float(np.max(self.q_table[int(obs)]))

    def nonfinite(self) -> str | None:
        """Reports a NaN or inf Q-value (rewards near the float maximum overflow the table)."""
        return None if np.isfinite(self.q_table).all() else "non-finite Q-table"

    def save(self, path: Path | str) -> Path:
        """Write the Q-table as ``path.npy``."""
        out = Path(path).with_suffix(".npy")
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, self.q_table)
        return out


class QLearning(TabularAgent):
    """Off-policy: bootstraps on ``max_a Q[s2, a]``, the greedy policy's value."""

    def _next_value(self, s2: int) -> float:
        return float(np.max(self.q_table[s2]))


class SARSA(TabularAgent):
    """On-policy: bootstraps on ``Q[s2, a2]`` for the action ``a2`` it will actually take.

    ``a2`` is drawn (epsilon-greedy) inside ``observe`` and cached, so the next
    ``act(s2)`` returns it and the update matches behaviour. The cache is dropped at episode
    end and is never used or disturbed by ``act(..., greedy=True)``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._next: tuple[int, int] | None = None  # (s2, a2) promised to the next act

    def act(self, obs: np.ndarray | int, greedy: bool = False) -> int:
        s = int(obs)
        if greedy:
            return int(np.argmax(self.q_table[s]))
        cached, self._next = self._next, None
        if cached is not None and cached[0] == s:
            return cached[1]
        return self._explore(s)

    def _next_value(self, s2: int) -> float:
        a2 = self._explore(s2)
        self._next = (s2, a2)  # dropped again by observe if the episode is over
        return float(self.q_table[s2, a2])

    def _end_of_episode_transition(self) -> None:
        self._next = None


class ExpectedSARSA(TabularAgent):
    """Bootstraps on ``sum_a pi(a|s2) Q[s2, a]`` under the current epsilon-greedy policy.

    Same fixed point as SARSA without the sampling noise of ``a2``.
    """

    def _next_value(self, s2: int) -> float:
        q = self.q_table[s2]
        eps = self.epsilon
        # eps spread uniformly, 1 - eps on the argmax (lowest index on ties, as act does).
        return float(eps * q.mean() + (1.0 - eps) * q[np.argmax(q)])
