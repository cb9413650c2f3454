"""The Hydra app: ``python -m sweeper.train [overrides]`` (console script ``sweeper-train``).

This is the edge of the program: the only place where config nodes become objects
(``hydra.utils.instantiate``). Library classes receive plain keywords.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from sweeper import replicates
from sweeper.callbacks import Callback, CallbackList, CsvWriter, ProgressBar
from sweeper.config import (
    ConfigError,
    check_grammar,
    check_group_choices,
    check_output_dir,
    check_overrides,
    is_tabular,
    register_configs,
    validate,
    validate_trial,
)
from sweeper.envs.factory import is_discrete_obs, obs_shape
from sweeper.messages import one_line
from sweeper.secrets import mask_text, mask_values
from sweeper.seeding import component_rngs, seed_everything
from sweeper.statistics import aggregate
from sweeper.training import Budget, DivergenceError, Ended, EvalPoint, Member, Population, advance

register_configs()


class History(Callback):
    """Keeps the run's metrics in memory for the plot, the summary and result.json."""

    def __init__(self) -> None:
        self.returns: list[float] = []
        self.lengths: list[float] = []
        self.max_qs: list[float] = []
        self.eval_episodes: list[int] = []
        self.eval_means: list[float] = []
        self.eval_stds: list[float] = []
        self.overestimates: list[float] = []
        self.steps = 0

    def on_episode_end(self, episode: int, step: int, metrics) -> None:
        self.steps = step
        self.returns.append(metrics["return"])
        self.lengths.append(metrics["length"])
        self.max_qs.append(metrics["max_q"])

    def on_eval(self, index: int, episode: int, step: int, metrics) -> None:
        self.eval_episodes.append(episode)
        self.eval_means.append(metrics["eval_return_mean"])
        self.eval_stds.append(metrics["eval_return_std"])
        if "eval_start_max_q" in metrics:
            self.overestimates.append(
                metrics["eval_start_max_q"] - metrics["eval_discounted_return"]
            )

    def summary(self) -> dict[str, float | None]:
        """The run's metrics beyond the objective (``result.json`` ``metrics``):

        * ``last50_length``: mean episode length over the last 50 training episodes (the
          seed's Exercise 3 measure);
        * ``mean_max_q`` / ``final_max_q``: the seed's max-Q probe (section 8), the mean over
          training episodes of the per-episode mean max-Q, and its last value;
        * ``overestimation``: mean over evaluations of the predicted max-Q at the start
          states minus the measured discounted return of the same greedy policy.
        """
        max_qs = [q for q in self.max_qs if math.isfinite(q)]
        return {
            "last50_length": float(np.mean(self.lengths[-50:])) if self.lengths else None,
            "mean_max_q": float(np.mean(max_qs)) if max_qs else None,
            "final_max_q": max_qs[-1] if max_qs else None,
            "overestimation": (float(np.mean(self.overestimates)) if self.overestimates else None),
        }


def _kwargs(node: DictConfig) -> dict[str, Any]:
    """A config node as constructor keywords (``name`` labels the option, it is no keyword)."""
    kw = OmegaConf.to_container(node, resolve=True)
    kw.pop("name", None)
    return kw


#: What all members of one population share: they set array shapes or the code path.
SHARED_KEYS = (
    "env.id",
    "env.kwargs",
    "env.max_episode_steps",
    "agent._target_",
    "agent.hidden_sizes",
    "agent.dueling",
    "buffer._target_",
    "buffer.batch_size",
)


class Built(NamedTuple):
    """What :func:`build` makes: K agents in one object, their K envs and the eval envs."""

    agent: Any
    env: Any
    eval_env: Any


def _shared(cfgs: Sequence[DictConfig]) -> None:
    """ConfigError naming the first key on which the members of a population differ."""
    for key in SHARED_KEYS:
        values = [OmegaConf.select(c, key, default=None) for c in cfgs]
        values = [OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for v in values]
        if any(v != values[0] for v in values[1:]):
            raise ConfigError(f"{key}: one population needs one value, got {values}")


def shape_key(cfg: DictConfig) -> tuple:
    """The values of :data:`SHARED_KEYS`: configs with equal keys can share a population."""
    values = [OmegaConf.select(cfg, key, default=None) for key in SHARED_KEYS]
    return tuple(
        json.dumps(OmegaConf.to_container(v) if OmegaConf.is_config(v) else v, sort_keys=True)
        for v in values
    )


def reset_member(built: Built, slot: int, cfg: DictConfig) -> None:
    """Member ``slot`` of a built population becomes a fresh agent of ``cfg`` (its config,
    seed and generators), as :func:`build` would have made it; ``cfg`` must have the
    population's :func:`shape_key`."""
    agent_rng, buffer_rng = component_rngs(cfg.seed, 2)
    if is_tabular(cfg):
        built.agent.reset_member(slot, agent_rng, **_per_member([cfg.agent], ()))
        return
    hp = _per_member([cfg.agent], ("hidden_sizes", "dueling"))
    buffer = _per_member([cfg.buffer], ("batch_size",))
    built.agent.reset_member(slot, int(cfg.seed), agent_rng, buffer_rng, buffer, **hp)


def _per_member(nodes: Sequence[DictConfig], drop: Sequence[str]) -> dict[str, Any]:
    """Constructor keywords with one value per member (a shared value once)."""
    kws = [_kwargs(n) for n in nodes]
    out: dict[str, Any] = {}
    for name in kws[0]:
        if name in drop or name == "_target_":
            continue
        values = [kw[name] for kw in kws]
        out[name] = values[0] if all(v == values[0] for v in values) else values
    return out


def build(cfgs: DictConfig | Sequence[DictConfig]) -> Built:
    """Seed and build one population from its members' composed configs (one config: a
    single agent, K=1). Member ``k`` gets the generators and network seed of ``cfgs[k]``."""
    from hydra.utils import get_class

    from sweeper.envs.vector import make_vector_env

    cfgs = [cfgs] if isinstance(cfgs, DictConfig) else list(cfgs)
    _shared(cfgs)
    first = cfgs[0]
    seed_everything(first.seed)
    env_kwargs = OmegaConf.to_container(first.env.kwargs, resolve=True)
    width = max(int(c.eval.episodes) for c in cfgs)
    try:
        env = make_vector_env(
            first.env.id, len(cfgs), max_episode_steps=first.env.max_episode_steps, **env_kwargs
        )
        eval_env = make_vector_env(
            first.env.id,
            len(cfgs) * width,
            max_episode_steps=first.env.max_episode_steps,
            **env_kwargs,
        )
    except (ValueError, TypeError) as err:
        raise ConfigError(f"env.id {first.env.id!r}: {err}") from err
    n_actions = int(env.single_action_space.n)
    space = env.single_observation_space
    rngs = [component_rngs(c.seed, 2) for c in cfgs]
    agent_rngs, buffer_rngs = [r[0] for r in rngs], [r[1] for r in rngs]
    agent_cls = get_class(first.agent._target_)
    if is_tabular(first):
        if not is_discrete_obs(space):
            raise ConfigError(
                f"agent {first.agent.name!r} is tabular and needs a discrete observation space; "
                f"env.id {first.env.id!r} observes {space} (use a DQN agent)"
            )
        hp = _per_member([c.agent for c in cfgs], ())
        agent = agent_cls(int(space.n), n_actions, agent_rngs, **hp)
    else:
        if is_discrete_obs(space):
            modes = _other_obs_modes(first.env.id, env_kwargs.get("obs_mode"))
            hint = f"set env.kwargs.obs_mode={' or '.join(modes)}" if modes else "use another env"
            raise ConfigError(
                f"agent {first.agent.name!r} needs vector observations; env {first.env.name!r} "
                f"observes a discrete index ({hint})"
            )
        shape = obs_shape(space)
        buffer_cls = get_class(first.buffer._target_)
        buffer_kw = _per_member([c.buffer for c in cfgs], ())
        buffer = buffer_cls(obs_shape=shape, rng=buffer_rngs, **buffer_kw)
        hp = _per_member([c.agent for c in cfgs], ("hidden_sizes", "dueling"))
        agent = agent_cls(
            int(np.prod(shape)),
            n_actions,
            buffer,
            [int(c.seed) for c in cfgs],
            agent_rngs,
            hidden_sizes=list(first.agent.hidden_sizes),
            dueling=bool(first.agent.dueling),
            **hp,
        )
    return Built(agent, env, eval_env)


def _other_obs_modes(env_id: str, current: Any) -> list[str]:
    """The ``obs_mode`` values of ``env_id`` other than ``current`` (its module's
    ``OBS_MODES``; none known: empty): what to suggest when an agent needs the other kind."""
    import importlib

    import gymnasium

    try:
        entry = gymnasium.spec(env_id).entry_point
        module = entry.split(":")[0] if isinstance(entry, str) else entry.__module__
        modes = getattr(importlib.import_module(module), "OBS_MODES", ())
    except Exception:  # noqa: BLE001 - a hint only
        return []
    return [str(m) for m in modes if m != current]


def budget_of(cfg: DictConfig) -> Budget:
    return Budget.of(cfg.train, cfg.eval)


def status_of(exc: BaseException) -> str:
    import optuna

    if isinstance(exc, optuna.TrialPruned):
        return "PRUNED"
    if isinstance(exc, KeyboardInterrupt):
        return "KILLED"
    return "FAILED"


def integrations(
    cfg: DictConfig, output_dir: Path, tracking_mode: str = "process"
) -> list[Callback]:
    """Callbacks of the optional integrations: Optuna pruning inside a trial, MLflow tracking
    (``tracking_mode``: where its calls run, ``sweeper.tracking.tracker.MlflowTracker``)."""
    callbacks: list[Callback] = []
    # Tracking first: it must see an evaluation before the pruner raises from it.
    if cfg.tracking.enabled:
        from sweeper.tracking import tracking_callback

        callbacks.append(tracking_callback(cfg, output_dir, tracking_mode))
    if cfg.trial.number is not None:
        from sweeper.pruning import pruning_callback

        callbacks.append(pruning_callback(cfg.trial))
    return callbacks


def replicate_callbacks(
    cfg: DictConfig, group: Sequence[Callback]
) -> Callable[[DictConfig, Path], list[Callback]]:
    """Callbacks of each replicate's run: an MLflow run nested under the group's run."""

    def make(seed_cfg: DictConfig, output_dir: Path) -> list[Callback]:
        if not cfg.tracking.enabled:
            return []
        from sweeper.tracking.tracker import MlflowTracker, replicate_tracker

        parents = [cb for cb in group if isinstance(cb, MlflowTracker)]
        tracker = replicate_tracker(seed_cfg, output_dir, parents[0]) if parents else None
        return [tracker] if tracker is not None else []

    return make


def prepare(cfg: DictConfig):
    """Validate and build: every ConfigError surfaces here, before anything is written."""
    validate(cfg)
    return build(cfg)


def write_config(cfg: DictConfig, output_dir: Path) -> None:
    """``output_dir/config.yaml``: the resolved config, passwords masked."""
    output_dir.mkdir(parents=True, exist_ok=True)
    resolved = mask_values(OmegaConf.to_container(cfg, resolve=True))
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))


class Run:
    """One seed's training run and the files it leaves in ``output_dir``: ``config.yaml`` at
    once, ``episodes.csv``/``evals.csv`` as it trains (through :attr:`stream`, the member's
    callback), then the model, the plot and ``result.json`` (also when it fails or is
    pruned). The run is member ``member`` of ``agent``'s population; :meth:`finish` or
    :meth:`fail` ends the run and closes its callbacks.
    """

    def __init__(
        self,
        cfg: DictConfig,
        output_dir: Path,
        agent: Any,
        member: int = 0,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.cfg, self.output_dir = cfg, Path(output_dir)
        self.agent, self.member = agent, member
        write_config(cfg, self.output_dir)
        self.history = History()
        self.callbacks = list(callbacks)
        self.csv = CsvWriter(self.output_dir)
        self.stream = CallbackList(
            [self.csv, self.history, ProgressBar(cfg.train.progress), *callbacks]
        )
        self.status: str | None = None

    def spec(self) -> Member:
        """The member as the training loop sees it."""
        return Member(budget_of(self.cfg), int(self.cfg.seed), self.stream)

    def finish(self, objective: float) -> str:
        status = "FINISHED" if math.isfinite(objective) else "FAILED"
        error = None if status == "FINISHED" else f"the objective is {objective}"
        self._write(objective, status, error)
        self.stream.on_train_end(objective, status)
        self.status = status
        self._close(None)
        return status

    def fail(self, exc: BaseException) -> str:
        status = status_of(exc)
        error = None if status == "PRUNED" else mask_text(f"{type(exc).__name__}: {exc}")
        self.stream.on_train_end(math.nan, status)
        self._write(math.nan, status, error)
        self.status = status
        self._close(exc)
        return status

    def _write(self, objective: float, status: str, error: str | None) -> None:
        self.csv.flush()  # the figure reads what episodes.csv holds
        _finish(self.cfg, self.output_dir, self, objective, status, error)

    def _close(self, exc: BaseException | None) -> None:
        for cb in self.callbacks:  # e.g. log the files _finish wrote after on_train_end
            cb.close(exc)


def seed_config(cfg: DictConfig, seed: int) -> DictConfig:
    """The config of one replicate: ``cfg`` with ``seed`` set and no ``trial.seeds``, so its
    ``config.yaml`` (and config hash) is that of a plain single run of that seed."""
    one = cfg.copy()
    with read_write(one), open_dict(one):
        one.seed = int(seed)
        one.trial.seeds = None
    return one


class Group:
    """One trial as members of a population: its config on each seed of ``trial.seeds`` (a
    replicate group, ``sweeper.replicates``), or its one run.

    A replicate group trains each seed as a :class:`Run` in ``output_dir/seed_<s>/`` with
    ``seed_callbacks(cfg, dir)``; ``callbacks`` (the trial's tracker and pruner) see the
    group: after each round of evaluations the aggregate of each metric over the seeds, at
    the end the aggregate objective, and ``output_dir/result.json`` holds the group's record
    (:func:`replicates.group_result`). A single run is one :class:`Run` in ``output_dir``
    with ``callbacks``.

    :meth:`start` places it in population slots, :meth:`handle` takes its members' events
    (and raises what ends the group, e.g. its pruner's ``TrialPruned``), :meth:`fail` ends
    it on an error; :attr:`value` is its objective once :meth:`handle` returned True.
    """

    def __init__(
        self,
        cfg: DictConfig,
        output_dir: Path,
        callbacks: Sequence[Callback] = (),
        seed_callbacks: Callable[[DictConfig, Path], Sequence[Callback]] = lambda c, d: (),
    ) -> None:
        self.cfg, self.output_dir = cfg, Path(output_dir)
        self.replicate = bool(cfg.trial.seeds)
        if self.replicate:
            validate_trial(cfg.trial)
        self.seeds = [int(s) for s in cfg.trial.seeds] if self.replicate else [int(cfg.seed)]
        self.how = str(cfg.trial.aggregate)
        self.configs = [seed_config(cfg, s) for s in self.seeds] if self.replicate else [cfg]
        self.callbacks, self.seed_callbacks = list(callbacks), seed_callbacks
        self.group = CallbackList(self.callbacks)
        self.runs: list[Run] = []
        self.slots: list[int] = []
        self.objectives: list[float | None] = [None] * len(self.seeds)
        self.rounds = replicates.Rounds(len(self.seeds), self.how)
        self.value: float | None = None

    def start(self, agent: Any, slots: Sequence[int]) -> list[Member]:
        """Write the runs' first files; their members as the loop sees them."""
        self.slots = [int(s) for s in slots]
        if self.replicate:
            write_config(self.cfg, self.output_dir)
            t = self.cfg.train
            self.group.on_train_start({"episodes": t.episodes, "total_steps": t.total_steps})
        for c, s, slot in zip(self.configs, self.seeds, self.slots, strict=True):
            if self.replicate:
                d = self.output_dir / f"seed_{s}"
                self.runs.append(Run(c, d, agent, slot, self.seed_callbacks(c, d)))
            else:
                self.runs.append(Run(c, self.output_dir, agent, slot, self.callbacks))
        return [r.spec() for r in self.runs]

    def handle(self, event: EvalPoint | Ended) -> bool:
        """Take one of its members' events; True once the group has finished."""
        row = self.slots.index(event.member)
        if isinstance(event, Ended):
            if event.error is not None:
                raise self._named(event.error, row)
            self.objectives[row] = event.objective
            rounds = self.rounds.end(row)
        else:
            rounds = self.rounds.add(row, event)
        if self.replicate:
            for r in rounds:  # the pruner may raise here
                self.group.on_eval(r.index, r.episode, r.step, r.metrics)
        if any(o is None for o in self.objectives):
            return False
        self.value = self._finish()
        return True

    def _named(self, err: BaseException, row: int) -> BaseException:
        if not self.replicate:
            return err
        seed = self.seeds[row]
        if isinstance(err, DivergenceError):
            named = DivergenceError(err.episode, err.step, f"{err.what} (seed {seed})")
            named.__cause__ = err
            return named
        err.add_note(f"in the replicate with seed {seed}")
        return err

    def _finish(self) -> float:
        objectives = [float(o) for o in self.objectives]  # type: ignore[arg-type]
        for one, objective in zip(self.runs, objectives, strict=True):
            one.finish(objective)
        if not self.replicate:
            return objectives[0]
        value = aggregate(objectives, self.how)
        status = "FINISHED" if math.isfinite(value) else "FAILED"
        self._record(
            objectives, status, None if status == "FINISHED" else f"the objective is {value}"
        )
        self.group.on_train_end(value, status)
        return value

    def fail(self, exc: BaseException) -> None:
        """End the group (and its runs still open) on ``exc``."""
        for one in self.runs:
            if one.status is None:
                one.fail(exc)
        if not self.replicate:
            return
        status = status_of(exc)
        error = None if status == "PRUNED" else mask_text(f"{type(exc).__name__}: {exc}")
        self._record([None] * len(self.seeds), status, error)
        self.group.on_train_end(math.nan, status)

    def _record(self, objectives, status: str, error: str | None = None) -> None:
        summaries = (
            [r.history.summary() for r in self.runs] if len(self.runs) == len(self.seeds) else []
        )
        metrics = {k: [s[k] for s in summaries] for k in summaries[0]} if summaries else {}
        result = {
            "objective": None,
            "objective_name": self.cfg.eval.objective,
            "status": status,
            "error": error,
            "runs": [f"seed_{s}" for s in self.seeds],
            **replicates.group_result(self.seeds, objectives, metrics, self.how),
        }
        if status == "FINISHED":
            result["objective"] = result[f"objective_{self.how}"]
        (self.output_dir / "result.json").write_text(json.dumps(result, indent=2))
        if self.cfg.train.plot and len(self.runs) == len(self.seeds):
            from sweeper.plotting import plot_group

            cfg = self.cfg
            plot_group(
                [r.output_dir for r in self.runs],
                self.output_dir / "learning_curve.png",
                f"{cfg.agent.name} on {cfg.env.name}",
                how=self.how,
                **_goal(cfg),
            )
        self.group.on_result(result)


def drive(group: Group, built: Built) -> float:
    """Train ``group`` alone, as a population of its own members; return its objective."""
    agent, env, eval_env = built
    try:
        members = group.start(agent, range(len(group.configs)))
        population = Population(agent, env, eval_env, members, group.cfg.train.probe_max_q)
        events = population.events()
        while True:
            event, _ = advance(events)
            if event is None:
                raise RuntimeError("the population ended before its trial")
            if group.handle(event):
                return float(group.value)  # type: ignore[arg-type]
    except BaseException as exc:
        group.fail(exc)
        raise


def run(cfg: DictConfig, output_dir: Path, callbacks: Sequence[Callback] = (), built=None) -> float:
    """Train one agent (a population of one) and leave the run's files in ``output_dir``;
    return the objective. ``built``: what :func:`prepare` returned, else it is called here
    (ConfigError for bad values, before anything is written)."""
    built = built if built is not None else prepare(cfg)
    return drive(Group(cfg, output_dir, callbacks), built)


def run_replicates(
    cfg: DictConfig,
    output_dir: Path,
    callbacks: Sequence[Callback] = (),
    seed_callbacks: Callable[[DictConfig, Path], Sequence[Callback]] = lambda c, d: (),
) -> float:
    """Train ``cfg`` on each seed of ``trial.seeds`` as one population (a :class:`Group`);
    return the aggregate objective."""
    group = Group(cfg, output_dir, callbacks, seed_callbacks)
    for c in group.configs:
        validate(c)
    built = build(group.configs)  # every ConfigError before anything is written
    return drive(group, built)


def execute(
    cfg: DictConfig, output_dir: Path, callbacks: Sequence[Callback] = (), built=None
) -> float:
    """Train ``cfg`` (its replicates when ``trial.seeds`` is set) with ``callbacks``, then
    close every callback with the error that ended the run, or None: the one place where a
    run's callbacks end (the MLflow run logs the files written after ``on_train_end`` and
    ends), for the app and for ``sweeper reproduce`` alike. Returns the objective."""
    try:
        if cfg.trial.seeds:
            seed_callbacks = replicate_callbacks(cfg, callbacks)
            objective = run_replicates(cfg, output_dir, callbacks, seed_callbacks)
        else:
            objective = run(cfg, output_dir, callbacks, built)
    except BaseException as exc:
        for cb in callbacks:
            cb.close(exc)
        raise
    for cb in callbacks:
        cb.close(None)
    return objective


def _strategy_figures(cfg, output_dir: Path, record: Run) -> dict[str, str]:
    """On the F1 env: the learned policy's pit decision map and one greedy race's trace
    (``sweeper.strategy_figures``), next to the learning curve."""
    if not str(cfg.env.id).startswith("sweeper/F1"):
        return {}
    from sweeper import strategy_figures as sf
    from sweeper.envs import make_env

    env = make_env(
        str(cfg.env.id), **OmegaConf.to_container(cfg.env.kwargs, resolve=True)
    ).unwrapped
    members = np.array([record.member])

    def greedy_q(obs: np.ndarray) -> np.ndarray:
        return record.agent.greedy_q(obs[None, ...], members)[0]

    title = f"{cfg.agent.name} on {cfg.env.name} (seed {cfg.seed})"
    sf.plot_pit_map(sf.pit_map(greedy_q, env), env, output_dir / "pit_strategy.png", title)
    trace = sf.greedy_race(greedy_q, env, seed=int(cfg.seed))
    sf.plot_race_trace(trace, output_dir / "race_trace.png", f"greedy race: {title}")
    env.close()
    return {"pit_strategy": "pit_strategy.png", "race_trace": "race_trace.png"}


def _goal(cfg) -> dict[str, Any]:
    """The env's solved return (gymnasium's ``reward_threshold``; the seed's 200 steps on
    CartPoleSimple) for the figure's goal line, on the length panel too where a return is
    one per step (CartPole)."""
    import gymnasium

    try:
        goal = gymnasium.spec(str(cfg.env.id)).reward_threshold
    except Exception:  # noqa: BLE001 - an env id gymnasium does not know: no goal line
        goal = None
    return {"goal": goal, "goal_on_length": "CartPole" in str(cfg.env.id)}


def _finish(
    cfg,
    output_dir: Path,
    record: Run,
    objective: float,
    status: str,
    error: str | None = None,
) -> None:
    """Write the model, the learning curve and result.json (also for failed or pruned runs);
    ``error`` is why a run failed, kept next to its status."""
    files = {}
    if cfg.train.save_model:
        files["model"] = record.agent.save(record.member, output_dir / "model").name
    history = record.history
    if cfg.train.plot and history.returns:
        from sweeper.plotting import plot_run

        title = f"{cfg.agent.name} on {cfg.env.name} (seed {cfg.seed})"
        plot_run(output_dir, output_dir / "learning_curve.png", title, **_goal(cfg))
        files["learning_curve"] = "learning_curve.png"
        files.update(_strategy_figures(cfg, output_dir, record))
    result = {
        "objective": objective if math.isfinite(objective) else None,
        "objective_name": cfg.eval.objective,
        "status": status,
        "error": error,
        "episodes": len(history.returns),
        "steps": history.steps,
        "eval_episodes": int(cfg.eval.episodes),
        "eval_means": history.eval_means,
        "eval_stds": history.eval_stds,
        "metrics": history.summary(),
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


def _summarize(cfg: DictConfig, output_dir: Path, callbacks, started: float, single: bool):
    """The run's summary: printed as a table for a single run, and into its log file."""
    from sweeper import run_summary
    from sweeper.config_hash import config_hash
    from sweeper.secrets import mask

    try:
        result = json.loads((output_dir / "result.json").read_text())
    except (OSError, ValueError):
        return
    from sweeper.tracking.tracker import MlflowTracker

    trackers = [cb for cb in callbacks if isinstance(cb, MlflowTracker)]
    run_id, tracking, digest = None, "tracking off", config_hash(cfg)
    if trackers:
        digest = trackers[0].config_hash
        try:
            run_id = trackers[0].run_id
            tracking = mask(str(trackers[0].tracking_uri))
        except Exception as err:  # noqa: BLE001 - the run was not created: say why
            tracking = f"no MLflow run ({one_line(err)})"
    overrides = [mask_text(o) for o in HydraConfig.get().overrides.task]
    rows = run_summary.single_run_rows(
        result,
        output_dir=output_dir,
        wall_s=time.perf_counter() - started,
        config_hash=digest,
        run_id=run_id,
        tracking=tracking,
        reproduce=run_summary.reproduce_command(overrides),
    )
    title = f"run {cfg.agent.name} on {cfg.env.name}"
    if single:
        run_summary.print_single_run(rows, title)
    else:
        run_summary.to_log_file([f"{title}: {key}: {value}" for key, value in rows])


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    output_dir = Path(hc.runtime.output_dir)
    started = time.perf_counter()
    built = None  # replicates: each seed's config is built in run_replicates
    try:
        if cfg.trial.seeds:
            validate(cfg)
        else:
            built = prepare(cfg)
            if cfg.tracking.enabled and cfg.tracking.skip_existing:
                from sweeper.tracking import reuse_existing

                reused = reuse_existing(cfg, output_dir)
                if reused is not None:
                    return reused
        callbacks = integrations(cfg, output_dir)
        objective = execute(cfg, output_dir, callbacks, built)
        if cfg.trial.number is None:  # a sweep's trial: the sweeper summarizes the study
            _summarize(cfg, output_dir, callbacks, started, hc.mode == RunMode.RUN)
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
    try:
        check_grammar(sys.argv[1:])
        check_group_choices(sys.argv[1:])
        check_output_dir(sys.argv[1:])
        check_overrides(sys.argv[1:])
    except ConfigError as err:
        print(f"sweeper: config error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    _hydra_main()


if __name__ == "__main__":
    main()
