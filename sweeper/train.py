"""The Hydra app: ``python -m sweeper.train [overrides]`` (console script ``sweeper-train``).

This is the edge of the program: the only place where config nodes become objects
(``hydra.utils.instantiate``). Library classes receive plain keywords.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sweeper.callbacks import Callback, CallbackList, CsvWriter, ProgressBar
from sweeper.config import ConfigError, is_tabular, register_configs, validate
from sweeper.envs import make_env
from sweeper.envs.factory import is_discrete_obs, obs_shape
from sweeper.secrets import mask_text, mask_values
from sweeper.seeding import component_rngs, seed_everything
from sweeper.training import Budget, DivergenceError, train

register_configs()


class History(Callback):
    """Keeps the run's metrics in memory for the plot and the summary."""

    def __init__(self) -> None:
        self.returns: list[float] = []
        self.eval_episodes: list[int] = []
        self.eval_means: list[float] = []

    def on_episode_end(self, episode: int, step: int, metrics) -> None:
        self.returns.append(metrics["return"])

    def on_eval(self, index: int, episode: int, step: int, metrics) -> None:
        self.eval_episodes.append(episode)
        self.eval_means.append(metrics["eval_return_mean"])


def _kwargs(node: DictConfig) -> dict[str, Any]:
    """A config node as constructor keywords (``name`` labels the option, it is no keyword)."""
    kw = OmegaConf.to_container(node, resolve=True)
    kw.pop("name", None)
    return kw


def build(cfg: DictConfig):
    """Seed everything and build (agent, env, eval_env) from a composed config."""
    seed_everything(cfg.seed)
    env_kwargs = OmegaConf.to_container(cfg.env.kwargs, resolve=True)
    try:
        env = make_env(cfg.env.id, max_episode_steps=cfg.env.max_episode_steps, **env_kwargs)
        eval_env = make_env(cfg.env.id, max_episode_steps=cfg.env.max_episode_steps, **env_kwargs)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"env.id {cfg.env.id!r}: {err}") from err
    n_actions = int(env.action_space.n)
    agent_rng, buffer_rng = component_rngs(cfg.seed, 2)
    if is_tabular(cfg):
        if not is_discrete_obs(env.observation_space):
            raise ConfigError(
                f"agent {cfg.agent.name!r} is tabular and needs a discrete observation space; "
                f"env.id {cfg.env.id!r} observes {env.observation_space} (use a DQN agent)"
            )
        agent = instantiate(
            _kwargs(cfg.agent),
            n_states=int(env.observation_space.n),
            n_actions=n_actions,
            rng=agent_rng,
        )
    else:
        if is_discrete_obs(env.observation_space):
            raise ConfigError(
                f"agent {cfg.agent.name!r} needs vector observations; env {cfg.env.name!r} "
                "observes a discrete index (set env.kwargs.obs_mode=onehot or coords)"
            )
        shape = obs_shape(env.observation_space)
        buffer = instantiate(_kwargs(cfg.buffer), obs_shape=shape, rng=buffer_rng)
        agent = instantiate(
            _kwargs(cfg.agent),
            obs_dim=int(np.prod(shape)),
            n_actions=n_actions,
            buffer=buffer,
            rng=agent_rng,
            seed=cfg.seed,
            _convert_="all",
        )
    return agent, env, eval_env


def budget_of(cfg: DictConfig) -> Budget:
    t, e = cfg.train, cfg.eval
    return Budget(
        episodes=t.episodes,
        total_steps=t.total_steps,
        learning_starts=t.learning_starts,
        train_freq=t.train_freq,
        gradient_steps=t.gradient_steps,
        eval_every=e.every,
        eval_episodes=e.episodes,
        objective=e.objective,
        stop_return=e.stop_return,
    )


def status_of(exc: BaseException) -> str:
    import optuna

    if isinstance(exc, optuna.TrialPruned):
        return "PRUNED"
    if isinstance(exc, KeyboardInterrupt):
        return "KILLED"
    return "FAILED"


def integrations(cfg: DictConfig, output_dir: Path) -> list[Callback]:
    """Callbacks of the optional integrations: Optuna pruning inside a trial, MLflow tracking."""
    callbacks: list[Callback] = []
    # Tracking first: it must see an evaluation before the pruner raises from it.
    if cfg.tracking.enabled:
        from sweeper.tracking import tracking_callback

        callbacks.append(tracking_callback(cfg, output_dir))
    if cfg.trial.number is not None:
        from sweeper.sweeps.trial import pruning_callback

        callbacks.append(pruning_callback(cfg.trial))
    return callbacks


def prepare(cfg: DictConfig):
    """Validate and build: every ConfigError surfaces here, before anything is written."""
    validate(cfg)
    return build(cfg)


def run(cfg: DictConfig, output_dir: Path, callbacks: Sequence[Callback] = (), built=None) -> float:
    """Train and leave the run's files in ``output_dir``; return the objective.

    ``built``: what :func:`prepare` returned, else it is called here (ConfigError for bad
    values, before anything is written).
    """
    agent, env, eval_env = built if built is not None else prepare(cfg)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    resolved = mask_values(OmegaConf.to_container(cfg, resolve=True))  # no password in a file
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
    history = History()
    writer = CsvWriter(output_dir)
    stream = CallbackList([writer, history, ProgressBar(cfg.train.progress), *callbacks])
    try:
        objective = train(
            agent, env, eval_env, budget_of(cfg), cfg.seed, stream, cfg.train.probe_max_q
        )
    except BaseException as exc:
        status = status_of(exc)
        error = None if status == "PRUNED" else mask_text(f"{type(exc).__name__}: {exc}")
        stream.on_train_end(math.nan, status)
        _finish(cfg, output_dir, agent, history, math.nan, status, error)
        raise
    status = "FINISHED" if math.isfinite(objective) else "FAILED"
    error = None if status == "FINISHED" else f"the objective is {objective}"
    _finish(cfg, output_dir, agent, history, objective, status, error)
    stream.on_train_end(objective, status)
    return objective


def _finish(
    cfg,
    output_dir: Path,
    agent,
    history: History,
    objective: float,
    status: str,
    error: str | None = None,
) -> None:
    """Write the model, the learning curve and result.json (also for failed or pruned runs);
    ``error`` is why a run failed, kept next to its status."""
    files = {}
    if cfg.train.save_model:
        files["model"] = agent.save(output_dir / "model").name
    if cfg.train.plot and history.returns:
        from sweeper.plotting import plot_learning_curve

        title = f"{cfg.agent.name} on {cfg.env.name} (seed {cfg.seed})"
        plot_learning_curve(
            history.returns,
            history.eval_episodes,
            history.eval_means,
            output_dir / "learning_curve.png",
            title,
        )
        files["learning_curve"] = "learning_curve.png"
    result = {
        "objective": objective if math.isfinite(objective) else None,
        "objective_name": cfg.eval.objective,
        "status": status,
        "error": error,
        "episodes": len(history.returns),
        "eval_means": history.eval_means,
        "files": files,
    }
    (output_dir / "result.json").write_text(json.dumps(result, indent=2))


def _remove_run_dir(output_dir: Path) -> None:
    """Undo the run directory Hydra made for a run that never started, and the dated
    folders above it that it leaves empty (only inside the working directory)."""
    shutil.rmtree(output_dir, ignore_errors=True)
    cwd = Path.cwd().resolve()
    for parent in output_dir.resolve().parents:
        if parent == cwd or cwd not in parent.parents or any(parent.iterdir()):
            break
        parent.rmdir()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    output_dir = Path(hc.runtime.output_dir)
    try:
        built = prepare(cfg)
        if cfg.tracking.enabled and cfg.tracking.skip_existing:
            from sweeper.tracking import reuse_existing

            reused = reuse_existing(cfg, output_dir)
            if reused is not None:
                return reused
        callbacks = integrations(cfg, output_dir)
        try:
            objective = run(cfg, output_dir, callbacks, built)
        except BaseException as exc:
            for cb in callbacks:  # e.g. log the files run() wrote after on_train_end
                if hasattr(cb, "close"):
                    cb.close(exc)
            raise
        for cb in callbacks:
            if hasattr(cb, "close"):
                cb.close(None)
        return objective
    except ConfigError as err:
        print(f"sweeper: config error: {err}", file=sys.stderr)
        if hc.mode == RunMode.RUN:
            _remove_run_dir(output_dir)
        raise SystemExit(2) from None
    except DivergenceError as err:
        # A single run: one line and exit 1, the files and the MLflow run say FAILED. In a
        # multirun the error goes on to the sweeper, which fails this trial with it and goes on.
        if hc.mode != RunMode.RUN:
            raise
        print(f"sweeper: {err}", file=sys.stderr)
        raise SystemExit(1) from None


def main() -> None:
    _hydra_main()


if __name__ == "__main__":
    main()
