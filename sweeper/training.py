"""The training loop: K agents of one kind, K envs, per-member budgets, periodic greedy
evaluation. A single run is the population of one.

Reads top to bottom like cleanrl's ``dqn.py``, with a member axis: every env step, all
members still training act, step their env, store and learn in one batched call each
(``sweeper.agents``, ``sweeper.envs.vector``). Members end on their own (budget spent,
solved, diverged, pruned by their own callback) and then cost nothing. Everything the loop
learns about member ``k`` goes out through its callback (``sweeper.callbacks``); the loop
yields after each of its greedy evaluations (:class:`EvalPoint`) and when it ends
(:class:`Ended`), so a driver can aggregate replicates or prune one member.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from sweeper.callbacks import Callback
from sweeper.choices import Objective
from sweeper.schema import EvalConfig, TrainConfig

OBJECTIVES = tuple(Objective)
#: Evaluation episode ``i`` of a member with seed ``s`` starts from ``reset(seed=s + this + i)``.
EVAL_SEED_OFFSET = 1_000_003


class DivergenceError(RuntimeError):
    """Training produced a NaN or inf (loss, max-Q probe or the agent's parameters).

    Why an error: a diverged agent still acts (argmax of NaNs is action 0), so its greedy
    evaluations return numbers and a sweep would rank it like any other trial. The message is
    one line: where the divergence was first seen and what was non-finite.
    """

    def __init__(self, episode: int, step: int, what: str) -> None:
        super().__init__(f"training diverged at episode {episode} (env step {step}): {what}")
        self.episode, self.step, self.what = episode, step, what

    def __reduce__(self):  # joblib workers send it back pickled: rebuild from the fields
        return type(self), (self.episode, self.step, self.what)


@dataclass(frozen=True)
class Budget:
    """When to stop and when to learn: a run's ``train`` and ``eval`` config nodes as the loop
    reads them (``sweeper.schema.TrainConfig`` / ``EvalConfig``: each field and default stated
    there once). Either or both of ``train.episodes`` / ``train.total_steps`` bound the run."""

    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @classmethod
    def of(cls, train: Mapping[str, Any], eval: Mapping[str, Any]) -> Budget:
        """From the config nodes (composed, or read back from a run's ``config.yaml``)."""
        return cls(_node(TrainConfig, train), _node(EvalConfig, eval))

    def bounds(self) -> dict[str, int | None]:
        """What a callback's ``on_train_start`` gets: the run's episode and step bounds."""
        return {"episodes": self.train.episodes, "total_steps": self.train.total_steps}

    def fraction(self, episode: int, step: int) -> float:
        t = self.train
        fracs = [episode / t.episodes] if t.episodes else []
        fracs += [step / t.total_steps] if t.total_steps else []
        return min(1.0, max(fracs))

    def done(self, episode: int, step: int) -> bool:
        t = self.train
        return bool(
            (t.episodes and episode >= t.episodes) or (t.total_steps and step >= t.total_steps)
        )


def _node(schema: type, node: Mapping[str, Any]):
    return schema(**{f.name: node[f.name] for f in fields(schema) if f.name in node})


@dataclass(frozen=True)
class Member:
    """One member of a population as the loop sees it: its budget, its seed (envs), and the
    callback its metrics go to."""

    budget: Budget
    seed: int
    callback: Callback


@dataclass(frozen=True)
class EvalPoint:
    """What the loop yields after each greedy evaluation of ``member``."""

    index: int
    episode: int
    step: int
    metrics: dict[str, float]
    member: int = 0


@dataclass(frozen=True)
class Ended:
    """What the loop yields when ``member`` stops: its objective, or the error that ended it
    (a :class:`DivergenceError`, or what its callback raised, e.g. ``optuna.TrialPruned``)."""

    member: int
    objective: float
    error: BaseException | None = None


def objective_of(eval_means: list[float], kind: str) -> float:
    if not eval_means:
        return math.nan
    if kind == "final_eval_mean":
        return eval_means[-1]
    if kind == "best_eval_mean":
        return max(eval_means)
    if kind == "mean_eval":
        return float(np.mean(eval_means))
    raise ValueError(f"eval.objective must be one of {OBJECTIVES}, got {kind!r}")


def advance(steps: Generator) -> tuple[object | None, float]:
    """Run a training generator to its next event: ``(event, nan)``, or ``(None, value)``
    once it has finished.

    Overflow and NaN arithmetic is what divergence looks like; it is reported once, as a
    DivergenceError, instead of as a burst of numpy RuntimeWarnings. The error state is set
    around each advance, not inside the generator: a ``with`` that stays open across a
    ``yield`` would leak into the caller.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            return next(steps), math.nan
        except StopIteration as done:
            return None, done.value


class Population:
    """The loop over K members (``agent.size``) in ``env`` (K sub-envs); ``eval_env`` has
    ``K * max(eval_episodes)`` sub-envs, member ``k``'s evaluation episodes in row ``k``.

    Iterate :meth:`events`; call :meth:`stop` to end a member (pruned by its driver).
    """

    def __init__(
        self,
        agent,
        env,
        eval_env,
        members: Sequence[Member],
        probe_max_q: bool = True,
    ) -> None:
        self.agent, self.env, self.eval_env = agent, env, eval_env
        self.members = list(members)
        self.probe_max_q = probe_max_q
        k = len(self.members)
        if agent.size != k or env.num_envs != k:
            raise ValueError(f"{k} members, {agent.size} agents, {env.num_envs} envs")
        self.alive = np.zeros(k, dtype=bool)
        self.step = np.zeros(k, dtype=np.int64)
        self.episode = np.zeros(k, dtype=np.int64)
        self.ep_return = np.zeros(k)
        self.ep_len = np.zeros(k, dtype=np.int64)
        self.loss_sum, self.loss_n = np.zeros(k), np.zeros(k, dtype=np.int64)
        self.q_sum, self.q_n = np.zeros(k), np.zeros(k, dtype=np.int64)
        self.eval_means: list[list[float]] = [[] for _ in range(k)]
        #: Bumped when a slot takes a new member (:meth:`assign`): events of the old one are
        #: dropped.
        self.generation = np.zeros(k, dtype=np.int64)
        self.obs: np.ndarray | None = None
        self._budget_arrays()

    def _budget_arrays(self) -> None:
        budgets = [m.budget for m in self.members]
        self.learning_starts = np.array([b.train.learning_starts for b in budgets], dtype=np.int64)
        self.train_freq = np.array([max(1, b.train.train_freq) for b in budgets], dtype=np.int64)
        self.gradient_steps = np.array([b.train.gradient_steps for b in budgets], dtype=np.int64)
        self.step_cap = np.array(
            [b.train.total_steps or np.iinfo(np.int64).max for b in budgets], dtype=np.int64
        )

    def stop(self, member: int) -> None:
        """End ``member`` now (its driver pruned it); it yields nothing more."""
        self.alive[member] = False

    def assign(self, slot: int, member: Member) -> None:
        """Slot ``slot`` (a stopped or ended member) takes ``member`` and trains it from the
        next step: a packed sweep's next trial. The caller has made the agent's member
        ``slot`` a fresh agent (``reset_member``); here its env, counters and budget are.
        """
        if self.alive[slot]:
            raise RuntimeError(f"population slot {slot} is still training")
        self.members[slot] = member
        self.generation[slot] += 1
        self.step[slot] = self.episode[slot] = self.ep_len[slot] = 0
        self.ep_return[slot] = self.loss_sum[slot] = self.q_sum[slot] = 0
        self.loss_n[slot] = self.q_n[slot] = 0
        self.eval_means[slot] = []
        self._budget_arrays()
        b = member.budget
        member.callback.on_train_start(b.bounds())
        self.obs[slot] = self.env.reset(np.array([slot]), [member.seed])[0]
        self.alive[slot] = True

    # --- the loop ------------------------------------------------------------------------
    def events(self) -> Generator[EvalPoint | Ended, None, None]:
        agent, env = self.agent, self.env
        everyone = np.arange(len(self.members))
        for m in self.members:
            b = m.budget
            m.callback.on_train_start(b.bounds())
        self.obs = env.reset(everyone, [m.seed for m in self.members])
        self.alive[:] = True
        n_alive = len(everyone)
        while n_alive:
            # Every member training: slices (views, in place); else index arrays.
            full = n_alive == len(everyone)
            members = everyone if full else np.flatnonzero(self.alive)
            at = slice(None) if full else members
            obs = self.obs if full else self.obs[members]
            actions, q = agent.act(obs, members)
            if self.probe_max_q:
                self.q_sum[at] += q.max(axis=1)
                self.q_n[at] += 1
            next_obs, rewards, terminated, truncated = env.step(actions, None if full else members)
            losses = agent.observe(members, obs, actions, rewards, next_obs, terminated, truncated)
            self.step[at] += 1
            step = self.step[at]
            if agent.learns_from_replay:
                learn = step > self.learning_starts[at]
                learn &= step % self.train_freq[at] == 0
                learners = members[learn] if not learn.all() else members
                if learners.size:
                    gradient_steps = self.gradient_steps[learners]
                    for g in range(int(gradient_steps.max())):
                        sub = learners if g == 0 else learners[gradient_steps > g]
                        self._add_losses(sub, *agent.update(sub))
            else:
                self._add_losses(members, losses, None)
            self.ep_return[at] += rewards
            self.ep_len[at] += 1
            self.obs[at] = next_obs
            done = terminated | truncated
            done |= step >= self.step_cap[at]
            if done.any():
                yield from self._end_episodes(members[done])
                n_alive = int(np.count_nonzero(self.alive))

    def _add_losses(
        self, members: np.ndarray, losses: np.ndarray, learned: np.ndarray | None
    ) -> None:
        if learned is not None and not learned.all():
            members, losses = members[learned], losses[learned]
        self.loss_sum[members] += losses
        self.loss_n[members] += 1

    def _episode_metrics(self, k: int, epsilon: float) -> tuple[dict[str, float], str | None]:
        """Member ``k``'s episode row, and what was non-finite in it (a divergence)."""
        mean_loss = self.loss_sum[k] / self.loss_n[k] if self.loss_n[k] else math.nan
        mean_max_q = self.q_sum[k] / self.q_n[k] if self.q_n[k] else math.nan
        metrics = {
            "return": float(self.ep_return[k]),
            "length": int(self.ep_len[k]),
            "epsilon": epsilon,
            "loss": float(mean_loss),
            "max_q": float(mean_max_q),
        }
        # A mean is non-finite when one of its items is (or their sum overflows): the sums
        # are the whole check, nothing is added per step.
        bad = None
        for name, n, mean in (
            ("loss", self.loss_n[k], mean_loss),
            ("max-Q", self.q_n[k], mean_max_q),
        ):
            if n and not math.isfinite(mean):
                bad = f"non-finite {name} ({mean})"
                break
        self.ep_return[k] = self.ep_len[k] = 0
        self.loss_sum[k] = self.loss_n[k] = self.q_sum[k] = self.q_n[k] = 0
        return metrics, bad

    def _end_episodes(self, finished: np.ndarray) -> Generator[EvalPoint | Ended, None, None]:
        """Episode ends of ``finished``: their rows, then evaluations, ends and resets."""
        self.episode[finished] += 1
        self.agent.end_episode(finished)
        fractions = [
            self.members[k].budget.fraction(int(self.episode[k]), int(self.step[k]))
            for k in finished.tolist()
        ]
        self.agent.set_progress(finished, np.array(fractions))
        epsilons = self.agent.epsilon(finished).tolist()
        generation = self.generation.copy()

        def current(k: int) -> bool:  # not stopped nor replaced while we yielded
            return bool(self.alive[k]) and self.generation[k] == generation[k]

        to_eval: list[int] = []
        ended: list[Ended] = []
        restart: list[int] = []
        for k, eps in zip(finished.tolist(), epsilons, strict=True):
            budget = self.members[k].budget
            episode, step = int(self.episode[k]), int(self.step[k])
            metrics, bad = self._episode_metrics(k, float(eps))
            try:
                self.members[k].callback.on_episode_end(episode, step, metrics)
            except BaseException as err:  # a callback ends its own member only
                ended.append(Ended(k, math.nan, err))
                continue
            # The episode's row is already out (CSV, MLflow): the record shows the first
            # non-finite value.
            if bad is not None:
                ended.append(Ended(k, math.nan, DivergenceError(episode, step, bad)))
            elif budget.eval.every and episode % budget.eval.every == 0:
                to_eval.append(k)
            elif budget.done(episode, step):
                to_eval.append(k)  # the final evaluation (none fell on the last episode)
            else:
                restart.append(k)
        for k, point, error in self._evaluate(to_eval, current):
            if error is not None:
                ended.append(Ended(k, math.nan, error))
                continue
            budget = self.members[k].budget
            solved = (
                budget.eval.stop_return is not None
                and point.metrics["eval_return_mean"] >= budget.eval.stop_return
            )
            if solved or budget.done(int(self.episode[k]), int(self.step[k])):
                ended.append(Ended(k, objective_of(self.eval_means[k], budget.eval.objective)))
            else:
                restart.append(k)
            yield point  # the driver may stop(k) here
        for end in ended:
            if current(end.member):
                self.alive[end.member] = False
                yield end
        again = np.array(sorted(k for k in restart if current(k)), dtype=np.int64)
        if again.size:
            self.obs[again] = self.env.reset(again, [None] * again.size)

    # --- greedy evaluation ---------------------------------------------------------------
    def _evaluate(self, due: list[int], current: Callable[[int], bool]):
        """Evaluate the ``due`` members greedily, together: ``(member, EvalPoint, None)``, or
        ``(member, None, error)`` when its parameters are non-finite or its callback raised.

        Per member: ``eval_episodes`` episodes, episode ``i`` reset with seed ``seed + 1_000_003
        + i``, so every evaluation of the same policy sees the same start states. Metrics:
        the mean and std of the returns, the mean discounted return (the agent's gamma, from
        the start state) and, with the probe, ``eval_start_max_q``: the agent's own estimate
        of that discounted return, max_a Q(s0, a). Their difference is the overestimation of
        seed section 8, measured on the same policy and the same start states.
        """
        ready = []
        for k in due:
            bad = self.agent.nonfinite(k)  # NaN weights still act: check before evaluating
            if bad is None:
                ready.append(k)
            else:
                yield k, None, DivergenceError(int(self.episode[k]), int(self.step[k]), bad)
        if not ready:
            return
        results = evaluation(
            self.agent,
            self.eval_env,
            np.array(ready, dtype=np.int64),
            [self.members[k].seed + EVAL_SEED_OFFSET for k in ready],
            [self.members[k].budget.eval.episodes for k in ready],
            self.probe_max_q,
        )
        for row, k in enumerate(ready):
            episodes = self.members[k].budget.eval.episodes
            returns = results["return"][row, :episodes]
            self.eval_means[k].append(float(returns.mean()))
            metrics = {
                "eval_return_mean": self.eval_means[k][-1],
                "eval_return_std": float(returns.std()),
                "eval_discounted_return": float(
                    results["discounted_return"][row, :episodes].mean()
                ),
            }
            if self.probe_max_q:
                metrics["eval_start_max_q"] = float(results["start_max_q"][row, :episodes].mean())
            index, episode, step = (
                len(self.eval_means[k]) - 1,
                int(self.episode[k]),
                int(self.step[k]),
            )
            if not current(k):  # stopped or replaced while an earlier point was out
                continue
            try:
                self.members[k].callback.on_eval(index, episode, step, metrics)
            except BaseException as err:  # e.g. its pruner: ends this member only
                yield k, None, err
                continue
            yield k, EvalPoint(index, episode, step, metrics, member=k), None


def evaluation(
    agent,
    eval_env,
    members: np.ndarray,
    seeds: Sequence[int],
    episodes: Sequence[int],
    probe_max_q: bool = False,
) -> dict[str, np.ndarray]:
    """Greedy episodes of ``members``, all stepped together: member ``members[r]`` plays
    ``episodes[r]`` episodes in row ``members[r]`` of ``eval_env`` (``width`` sub-envs per
    member), episode ``i`` reset with seed ``seeds[r] + i``.

    Returns (m, width) arrays, NaN-free only in the first ``episodes[r]`` columns: ``return``,
    ``discounted_return`` (with the member's gamma, from the start state) and ``start_max_q``
    (max_a Q(s0, a) with ``probe_max_q``, else NaN).
    """
    m = len(members)
    width = eval_env.num_envs // agent.size
    wanted = np.asarray(episodes)
    if wanted.max(initial=0) > width:
        raise ValueError(f"{wanted.max()} evaluation episodes, but {width} eval envs per member")
    slots = (members[:, None] * width + np.arange(width)).ravel()
    seeds_flat = [int(s) + i for s in seeds for i in range(width)]
    obs = eval_env.reset(slots, seeds_flat)
    obs = obs.reshape(m, width, *obs.shape[1:])
    flat_obs = obs.reshape(m * width, *obs.shape[2:])  # a view: rows are updated in place
    done = np.arange(width)[None, :] >= wanted[:, None]
    returns, discounted = np.zeros((m, width)), np.zeros((m, width))
    discount = np.ones((m, width))
    gamma = np.broadcast_to(
        np.asarray(agent.gamma, dtype=np.float64)[members][:, None], (m, width)
    ).ravel()
    q = agent.greedy_q(obs, members)
    start_max_q = q.max(axis=-1).astype(np.float64) if probe_max_q else np.full((m, width), np.nan)
    flat_done, flat_ret, flat_disc, flat_discount = (
        done.ravel(),
        returns.ravel(),
        discounted.ravel(),
        discount.ravel(),
    )
    while not flat_done.all():
        live = np.flatnonzero(~flat_done)
        actions = q.argmax(axis=-1).ravel()[live]
        next_obs, rewards, terminated, truncated = eval_env.step(actions, slots[live])
        flat_ret[live] += rewards
        flat_disc[live] += flat_discount[live] * rewards
        flat_discount[live] *= gamma[live]
        flat_obs[live] = next_obs
        flat_done[live] = terminated | truncated
        if not flat_done.all():
            q = agent.greedy_q(obs, members)
    return {"return": returns, "discounted_return": discounted, "start_max_q": start_max_q}


def single(steps: Generator[EvalPoint | Ended, None, None]) -> Generator[EvalPoint, None, float]:
    """A population of one as a generator of its evaluations that returns its objective and
    raises what ended it (a DivergenceError, or its callback's exception)."""
    for event in steps:
        if isinstance(event, Ended):
            if event.error is not None:
                raise event.error
            return event.objective
        yield event
    raise RuntimeError("the population ended without ending its member")


def training(
    agent, env, eval_env, budget: Budget, seed: int, callback: Callback, probe_max_q: bool = True
) -> Generator[EvalPoint, None, float]:
    """One agent (a population of one): yields after each evaluation, returns the objective
    (drive it with :func:`advance`)."""
    population = Population(agent, env, eval_env, [Member(budget, seed, callback)], probe_max_q)
    return single(population.events())


def train(
    agent, env, eval_env, budget: Budget, seed: int, callback: Callback, probe_max_q: bool = True
) -> float:
    """Train one agent within ``budget``; return the objective named by the budget.

    Raises :class:`DivergenceError` at the end of the first episode whose loss or max-Q probe
    is non-finite, or at an evaluation (or the end) where the agent's parameters are: a
    divergence is reported within one evaluation period.
    """
    steps = training(agent, env, eval_env, budget, seed, callback, probe_max_q)
    while True:
        point, objective = advance(steps)
        if point is None:
            return objective
