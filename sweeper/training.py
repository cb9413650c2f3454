"""The training loop: one agent, one env, a budget, periodic greedy evaluation.

Reads top to bottom like cleanrl's ``dqn.py``. Everything it learns about the run goes out
through the callbacks (``sweeper.callbacks``); it returns the single objective a sweep
optimizes, or raises :class:`DivergenceError` once the learning has blown up.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from sweeper.agents.base import Agent
from sweeper.callbacks import Callback

OBJECTIVES = ("final_eval_mean", "best_eval_mean", "mean_eval")


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
    """When to stop and when to learn. Either or both of episodes / total_steps bound the run."""

    episodes: int | None = 500
    total_steps: int | None = None
    learning_starts: int = 0
    train_freq: int = 1
    gradient_steps: int = 1
    eval_every: int = 50
    eval_episodes: int = 10
    objective: str = "final_eval_mean"
    stop_return: float | None = None  # a "solved" criterion: stop once an eval mean reaches it

    def fraction(self, episode: int, step: int) -> float:
        fracs = [episode / self.episodes] if self.episodes else []
        fracs += [step / self.total_steps] if self.total_steps else []
        return min(1.0, max(fracs))

    def done(self, episode: int, step: int) -> bool:
        return bool(
            (self.episodes and episode >= self.episodes)
            or (self.total_steps and step >= self.total_steps)
        )


def evaluate(agent: Agent, env: gym.Env, episodes: int, seed: int) -> np.ndarray:
    """Returns of ``episodes`` greedy episodes; the env is reseeded so every evaluation
    of the same policy sees the same start states."""
    return evaluation(agent, env, episodes, seed)["return"]


def evaluation(
    agent: Agent, env: gym.Env, episodes: int, seed: int, probe_max_q: bool = False
) -> dict[str, np.ndarray]:
    """Per greedy episode: ``return``, ``discounted_return`` (with the agent's gamma, from the
    start state) and, with ``probe_max_q``, ``start_max_q``, the agent's own estimate of that
    discounted return (max_a Q(s0, a)). Their difference is the overestimation of seed
    section 8, measured on the same policy and the same start states."""
    gamma = float(getattr(agent, "gamma", 1.0))
    out = {k: np.empty(episodes) for k in ("return", "discounted_return", "start_max_q")}
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        out["start_max_q"][i] = agent.max_q(obs) if probe_max_q else math.nan
        total, discounted, discount, done = 0.0, 0.0, 1.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(agent.act(obs, greedy=True))
            total += float(reward)
            discounted += discount * float(reward)
            discount *= gamma
            done = terminated or truncated
        out["return"][i], out["discounted_return"][i] = total, discounted
    return out


@dataclass(frozen=True)
class EvalPoint:
    """What :func:`training` yields after each greedy evaluation."""

    index: int
    episode: int
    step: int
    metrics: dict[str, float]


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


def train(
    agent: Agent,
    env: gym.Env,
    eval_env: gym.Env,
    budget: Budget,
    seed: int,
    callback: Callback,
    probe_max_q: bool = True,
) -> float:
    """Train ``agent`` on ``env`` within ``budget``; return the objective named by the budget.

    Raises :class:`DivergenceError` at the end of the first episode whose loss or max-Q probe
    is non-finite, or at an evaluation (or the end) where the agent's parameters are: a
    divergence is reported within one evaluation period.
    """
    steps = training(agent, env, eval_env, budget, seed, callback, probe_max_q)
    while True:
        point, objective = advance(steps)
        if point is None:
            return objective


def advance(steps: Generator[EvalPoint, None, float]) -> tuple[EvalPoint | None, float]:
    """Run a :func:`training` generator to its next evaluation: ``(point, nan)``, or
    ``(None, objective)`` once it has finished.

    Overflow and NaN arithmetic is what divergence looks like; it is reported once, as a
    DivergenceError, instead of as a burst of numpy RuntimeWarnings. The error state is set
    around each advance, not inside the generator: a ``with`` that stays open across a
    ``yield`` would leak into the caller, and several generators interleave.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            return next(steps), math.nan
        except StopIteration as done:
            return None, done.value


def training(
    agent: Agent,
    env: gym.Env,
    eval_env: gym.Env,
    budget: Budget,
    seed: int,
    callback: Callback,
    probe_max_q: bool = True,
) -> Generator[EvalPoint, None, float]:
    """:func:`train` as a generator: it yields after each evaluation and returns the objective
    (drive it with :func:`advance`).

    Why: replicates of one config (``sweeper.replicates``) advance in lockstep, one evaluation
    period at a time, so that what a pruner sees after each period is their aggregate.
    """
    callback.on_train_start({"episodes": budget.episodes, "total_steps": budget.total_steps})
    eval_means: list[float] = []

    def run_eval(episode: int, step: int) -> Generator[EvalPoint, None, bool]:
        """Evaluate greedily; True when the run is solved (``budget.stop_return`` reached)."""
        bad_params = agent.nonfinite()  # NaN weights still act: check before evaluating
        if bad_params is not None:
            raise DivergenceError(episode, step, bad_params)
        ev = evaluation(agent, eval_env, budget.eval_episodes, seed + 1_000_003, probe_max_q)
        eval_means.append(float(ev["return"].mean()))
        metrics = {
            "eval_return_mean": eval_means[-1],
            "eval_return_std": float(ev["return"].std()),
            "eval_discounted_return": float(ev["discounted_return"].mean()),
        }
        if probe_max_q:
            metrics["eval_start_max_q"] = float(ev["start_max_q"].mean())
        callback.on_eval(len(eval_means) - 1, episode, step, metrics)
        yield EvalPoint(len(eval_means) - 1, episode, step, metrics)
        return budget.stop_return is not None and eval_means[-1] >= budget.stop_return

    step = episode = 0
    obs, _ = env.reset(seed=seed)
    while not budget.done(episode, step):
        ep_return, ep_len, losses, max_qs = 0.0, 0, [], []
        done = False
        while not done:
            if probe_max_q:
                max_qs.append(agent.max_q(obs))
            action = agent.act(obs)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            loss = agent.observe(obs, action, float(reward), next_obs, terminated, truncated)
            step += 1
            if agent.learns_from_replay:
                if step > budget.learning_starts and step % budget.train_freq == 0:
                    for _ in range(budget.gradient_steps):
                        loss = agent.update()
                        if loss is not None:
                            losses.append(loss)
            elif loss is not None:
                losses.append(loss)
            ep_return += float(reward)
            ep_len += 1
            obs = next_obs
            done = terminated or truncated
            if budget.total_steps and step >= budget.total_steps:
                break
        episode += 1
        agent.end_episode()
        agent.set_progress(budget.fraction(episode, step))
        mean_loss = float(np.mean(losses)) if losses else math.nan
        mean_max_q = float(np.mean(max_qs)) if max_qs else math.nan
        callback.on_episode_end(
            episode,
            step,
            {
                "return": ep_return,
                "length": ep_len,
                "epsilon": agent.epsilon,
                "loss": mean_loss,
                "max_q": mean_max_q,
            },
        )
        # A mean is non-finite when one of its items is (or their sum overflows): the means
        # above are the whole check, nothing is added per step. The episode's row is already
        # out (CSV, MLflow), so the record shows the first non-finite value.
        for name, values, mean in (("loss", losses, mean_loss), ("max-Q", max_qs, mean_max_q)):
            if values and not math.isfinite(mean):
                raise DivergenceError(episode, step, f"non-finite {name} ({mean})")
        if budget.eval_every and episode % budget.eval_every == 0:
            if (yield from run_eval(episode, step)):
                return objective_of(eval_means, budget.objective)
        obs, _ = env.reset()
    if not eval_means or budget.eval_every == 0 or episode % budget.eval_every:
        yield from run_eval(episode, step)
    return objective_of(eval_means, budget.objective)
