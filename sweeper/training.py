"""The training loop: one agent, one env, a budget, periodic greedy evaluation.

Reads top to bottom like cleanrl's ``dqn.py``. Everything it learns about the run goes out
through the callbacks (``sweeper.callbacks``); it returns the single objective a sweep
optimizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from sweeper.agents.base import Agent
from sweeper.callbacks import Callback

OBJECTIVES = ("final_eval_mean", "best_eval_mean", "mean_eval")


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
    returns = np.empty(episodes)
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(agent.act(obs, greedy=True))
            total += float(reward)
            done = terminated or truncated
        returns[i] = total
    return returns


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
    """Train ``agent`` on ``env`` within ``budget``; return the objective named by the budget."""
    callback.on_train_start({"episodes": budget.episodes, "total_steps": budget.total_steps})
    eval_means: list[float] = []

    def run_eval(episode: int, step: int) -> bool:
        """Evaluate greedily; True when the run is solved (``budget.stop_return`` reached)."""
        returns = evaluate(agent, eval_env, budget.eval_episodes, seed=seed + 1_000_003)
        eval_means.append(float(returns.mean()))
        metrics = {"eval_return_mean": eval_means[-1], "eval_return_std": float(returns.std())}
        callback.on_eval(len(eval_means) - 1, episode, step, metrics)
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
        callback.on_episode_end(
            episode,
            step,
            {
                "return": ep_return,
                "length": ep_len,
                "epsilon": agent.epsilon,
                "loss": float(np.mean(losses)) if losses else math.nan,
                "max_q": float(np.mean(max_qs)) if max_qs else math.nan,
            },
        )
        if budget.eval_every and episode % budget.eval_every == 0:
            if run_eval(episode, step):
                return objective_of(eval_means, budget.objective)
        obs, _ = env.reset()
    if not eval_means or budget.eval_every == 0 or episode % budget.eval_every:
        run_eval(episode, step)
    return objective_of(eval_means, budget.objective)
