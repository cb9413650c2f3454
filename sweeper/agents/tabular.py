"""Tabular TD control (Q-learning, SARSA, Expected SARSA), the seed notebook's section 2, for
a population of K agents: one stacked Q-table of shape (K, states, actions).

The three differ only in the bootstrap value of the next state, so the shared base class owns
the Q-tables, epsilon-greedy acting, step/episode counting and the TD update, and each
subclass names its bootstrap (``_kind``). They learn online in ``observe`` (no replay). Every
hyperparameter may be one value or one per member; each member acts with its own generator,
so member ``k`` of a population does exactly what it would do alone.

The per-step work (``act``, ``observe``, ``end_episode``'s counting) is one compiled call for
all stepped members (``sweeper.agents.tabular_update``, bit-identical to the numpy code it
replaced, so a K=1 agent costs little Python); construction, the epsilon schedule and greedy
evaluation stay numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sweeper.agents import tabular_update as kernels
from sweeper.agents.schedules import EpsilonSchedules
from sweeper.buffers.uniform import per_member
from sweeper.schema import UNIT, TabularAgentConfig, defaults

#: The per-member hyperparameters and their defaults: the schema's (``sweeper.schema``)
HYPERPARAMETERS: dict[str, Any] = defaults(TabularAgentConfig)


class TabularAgent:
    """K Q-tables with epsilon-greedy exploration; subclasses define the TD target.

    Randomness comes only from the injected ``rngs`` (one per member; replace one with
    ``reset_member``). Greedy ties go to the lowest action index (``argmax``), like the seed.
    Epsilon is ``schedule(env steps, episodes)``, where steps are counted in ``observe`` and
    episodes in ``end_episode``.
    """

    learns_from_replay = False
    #: the next-state value the TD target bootstraps on (``tabular_update.Q_LEARNING`` ...)
    _kind: int

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
        #: per-member floats the kernels read, one row each (``tabular_update.ALPHA`` ...):
        #: alpha, gamma, and a copy of the epsilon schedule's parameters (``_sync_schedule``)
        self._params = np.zeros((kernels.N_PARAMS, k))
        #: per-member counters the kernels update (``tabular_update.STEPS`` ...): env steps,
        #: SARSA's cached next action (the state it was drawn for, -1 for none; the action)
        self._counters = np.zeros((kernels.N_COUNTERS, k), dtype=np.int64)
        self.schedule = EpsilonSchedules(k)
        self.q_table = np.zeros((k, self.n_states, self.n_actions))
        self.episodes = np.zeros(k, dtype=np.int64)
        #: the kernels' bit-generator table (``tabular_update.bitgen_pointers`` of each
        #: member's generator) and the generators it was read from (see ``_bitgens``)
        self._bitgen_table = np.zeros((k, 3), dtype=np.uint64)
        self._bound: list[np.random.Generator] = []
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
        self._sync_schedule()
        self.q_table[member] = 0.0
        self.episodes[member] = 0
        self._counters[:, member] = 0
        self._counters[kernels.NEXT_STATE, member] = -1  # no cached next action

    @property
    def alpha(self) -> np.ndarray:
        """Each member's learning rate (a view: assign items to change them)."""
        return self._params[kernels.ALPHA]

    @property
    def gamma(self) -> np.ndarray:
        """Each member's discount (a view)."""
        return self._params[kernels.GAMMA]

    @property
    def steps(self) -> np.ndarray:
        """Each member's env steps since its reset, counted in ``observe`` (a view)."""
        return self._counters[kernels.STEPS]

    def _sync_schedule(self) -> None:
        """Copy the schedule's parameters to the rows the kernels read; after every change
        of the schedule (``set_member``, ``episodes_ended``)."""
        sched, p = self.schedule, self._params
        p[kernels.EPS_VALUE] = sched.value
        p[kernels.EPS_START] = sched.start
        p[kernels.EPS_END] = sched.end
        p[kernels.EPS_DECAY_STEPS] = sched.decay_steps
        p[kernels.EPS_LINEAR] = sched.linear

    def epsilon(self, members: np.ndarray) -> np.ndarray:
        if not self.schedule.any_linear:
            return self.schedule.value[members]
        return self.schedule(members, self.steps[members], self.episodes[members])

    def _bitgens(self) -> np.ndarray:
        """The bit-generator table of ``rngs``, re-read whenever a generator was replaced
        (``reset_member``, or an agent unpickled in another process)."""
        if self.rngs != self._bound:  # identity per element: generators have no __eq__
            self._bitgen_table[:] = [kernels.bitgen_pointers(rng) for rng in self.rngs]
            self._bound = list(self.rngs)
        return self._bitgen_table

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_bound"] = []  # the addresses are this process's: re-read them after a copy
        return state

    def act(self, obs: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Epsilon-greedy actions of ``members`` in states ``obs``, and the Q-rows of those
        states (the max-Q probe reads them)."""
        m = len(members)
        actions, q = np.empty(m, dtype=np.int64), np.empty((m, self.n_actions))
        kernels.act(
            self._kind,
            self.q_table,
            members,
            obs,
            self._counters,
            self._params,
            self._bitgens(),
            actions,
            q,
        )
        return actions, q

    def greedy_q(self, obs: np.ndarray, members: np.ndarray) -> np.ndarray:
        """Q-values of ``members`` in a batch of states each: (m, E) -> (m, E, actions)."""
        return self.q_table[members[:, None], obs]

    def observe(
        self,
        members: np.ndarray,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> np.ndarray:
        """TD update of Q[obs, action] per member; returns the squared TD errors.

        Only ``terminated`` cuts the bootstrap: a time-limit truncation is not a real end.
        """
        errors = np.empty(len(members))
        kernels.observe(
            self._kind,
            self.q_table,
            members,
            obs,
            actions,
            np.asarray(rewards, dtype=np.float64),
            next_obs,
            np.asarray(terminated, dtype=bool),
            np.asarray(truncated, dtype=bool),
            self._counters,
            self._params,
            self._bitgens(),
            errors,
        )
        return errors

    def update(self, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tabular agents learn in ``observe``; nothing to do here."""
        return np.full(len(members), np.nan), np.zeros(len(members), dtype=bool)

    def end_episode(self, members: np.ndarray) -> None:
        """Count an episode of ``members``, refresh their epsilon, drop SARSA's cache."""
        kernels.end_episodes(members, self.episodes, self._counters)
        self.schedule.episodes_ended(members, self.episodes[members])
        self._params[kernels.EPS_VALUE] = self.schedule.value

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

    _kind = kernels.Q_LEARNING


class SARSA(TabularAgent):
    """On-policy: bootstraps on ``Q[s2, a2]`` for the action ``a2`` it will actually take.

    ``a2`` is drawn (epsilon-greedy) inside ``observe`` and cached, so the next ``act(s2)``
    returns it and the update matches behaviour. The cache is dropped at episode end and is
    never used or disturbed by greedy evaluation (``greedy_q``).
    """

    _kind = kernels.SARSA


class ExpectedSARSA(TabularAgent):
    """Bootstraps on ``sum_a pi(a|s2) Q[s2, a]`` under the current epsilon-greedy policy:
    ``eps * mean_a Q[s2, a] + (1 - eps) * Q[s2, argmax]`` (lowest index on ties, as act).

    Same fixed point as SARSA without the sampling noise of ``a2``.
    """

    _kind = kernels.EXPECTED_SARSA
