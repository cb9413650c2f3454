"""``sweeper eval``: load a saved agent and play greedy episodes (RL Zoo's ``enjoy``).

A run is found by its directory, its MLflow run id or a config-hash prefix; its
``config.yaml`` rebuilds the agent and env (one member, as at training time), its
``model.pt`` (DQN: the online network's ``state_dict``) or ``model.npy`` (a Q-table) fills
it in, and the episodes are played greedily from seeds no training evaluation used
(``seed + 2_000_003 + i``). Printed: the returns' mean with its 95% bootstrap CI, std, min,
max and n, and on the GridWorld the greedy policy as arrows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Episode ``i`` of ``sweeper eval`` starts from ``reset(seed=seed + this + i)``: seeds the
#: training loop's own evaluations (``training.EVAL_SEED_OFFSET``) never reach.
EVAL_SEED_OFFSET = 2_000_003
ARROWS = "↑↓←→"  # GridWorld actions 0 up, 1 down, 2 left, 3 right


class EvalError(RuntimeError):
    """A one-line reason why there is nothing to evaluate."""


@dataclass
class Saved:
    run_dir: Path
    cfg: Any  # DictConfig
    model: Path


def find_run_dir(target: str, tracking_uri: str | None = None) -> Path:
    """The run directory of ``target``: a directory, an MLflow run id or a hash prefix."""
    path = Path(target)
    if path.is_dir():
        return path
    if not re.fullmatch(r"[0-9a-f]{1,64}", target):
        raise EvalError(f"{target!r} is neither a run directory, an MLflow run id nor a hash")
    from sweeper.tracking import store

    client = store.client(store.resolve_tracking_uri(tracking_uri))
    run = None
    if len(target) == 32:  # an MLflow run id (a config hash prefix may look alike)
        try:
            run = store.retry(client.get_run, target)
        except Exception:  # noqa: BLE001 - not a run id: try it as a hash prefix
            run = None
    if run is None:
        try:
            run, _ = store.find_original(client, target)
        except LookupError as err:
            raise EvalError(str(err)) from None
    out = run.data.tags.get("output_dir")
    if not out or not Path(out).is_dir():
        raise EvalError(f"run {run.info.run_id}: its output directory {out!r} is not here")
    return Path(out)


def load(run_dir: Path) -> Saved:
    from omegaconf import OmegaConf

    config = run_dir / "config.yaml"
    if not config.is_file():
        raise EvalError(f"{run_dir}: no config.yaml (not a run directory)")
    cfg = OmegaConf.load(config)
    if cfg.get("trial", {}).get("seeds"):
        raise EvalError(
            f"{run_dir} is a replicate group: evaluate one of its seed_<s>/ runs "
            f"({', '.join(p.name for p in sorted(run_dir.glob('seed_*')))})"
        )
    models = [p for p in (run_dir / "model.pt", run_dir / "model.npy") if p.is_file()]
    if not models:
        raise EvalError(f"{run_dir}: no saved model (the run had train.save_model=false)")
    return Saved(run_dir, cfg, models[0])


def _agent(saved: Saved, episodes: int):
    """The run's agent (one member) with its saved parameters, and an eval env of
    ``episodes`` sub-envs."""
    from omegaconf import open_dict

    from sweeper.train import build

    cfg = saved.cfg.copy()
    with open_dict(cfg):
        cfg.eval.episodes = int(episodes)
    agent, _, eval_env = build(cfg)
    if saved.model.suffix == ".npy":
        table = np.load(saved.model)
        if table.shape != agent.q_table.shape[1:]:
            raise EvalError(
                f"{saved.model}: Q-table {table.shape}, the config's is {agent.q_table.shape[1:]}"
            )
        agent.q_table[0] = table
    else:
        from sweeper.agents.saved import q_network

        on = agent.online
        agent.online.load(
            0, q_network(saved.model, on.obs_dim, agent.n_actions, on.hidden_sizes, on.dueling)
        )
    return cfg, agent, eval_env


def evaluate(saved: Saved, episodes: int, seed_offset: int = EVAL_SEED_OFFSET) -> dict[str, Any]:
    """Greedy returns of the saved agent over ``episodes`` episodes (episode ``i`` reset with
    ``seed + seed_offset + i``), with their statistics, and (GridWorld) its greedy action per
    state. With the training loop's offset (``training.EVAL_SEED_OFFSET``) and its number of
    evaluation episodes this replays the run's last evaluation exactly."""
    from sweeper.statistics import estimate
    from sweeper.training import evaluation

    cfg, agent, eval_env = _agent(saved, episodes)
    seed = int(cfg.seed) + seed_offset
    results = evaluation(agent, eval_env, np.array([0]), [seed], [episodes])
    returns = results["return"][0, :episodes].astype(float)
    est = estimate(returns.tolist(), "mean")
    out: dict[str, Any] = {
        "run_dir": str(saved.run_dir),
        "model": saved.model.name,
        "agent": str(cfg.agent.name),
        "env": str(cfg.env.name),
        "episodes": episodes,
        "seeds": [seed, seed + episodes - 1],
        "returns": returns.tolist(),
        "mean": est.value,
        "ci": (est.low, est.high),
        "std": float(returns.std()),
        "min": float(returns.min()),
        "max": float(returns.max()),
    }
    if cfg.env.id == "sweeper/GridWorld-v0":
        out["policy"] = gridworld_policy(cfg, agent)
    return out


def gridworld_policy(cfg, agent) -> list[str]:
    """The greedy action of every GridWorld cell as arrows (W wall, G goal, T trap), one
    string per row, as the seed notebook's heatmap draws them."""
    from omegaconf import OmegaConf

    from sweeper.envs.gridworld import GridWorld

    kwargs = OmegaConf.to_container(cfg.env.kwargs, resolve=True)
    grid = GridWorld(**kwargs)
    size = grid.size
    n = grid.n_states
    if grid.obs_mode == "index":
        obs = np.arange(n)
    elif grid.obs_mode == "onehot":
        obs = np.eye(n, dtype=np.float32)
    else:
        cells = np.array([(i // size, i % size) for i in range(n)], dtype=np.float32)
        obs = cells / max(1, size - 1)
    q = agent.greedy_q(obs[None], np.array([0]))[0]
    rows = []
    for r in range(size):
        row = []
        for c in range(size):
            s = grid.state_index(r, c)
            if s in grid.wall_states:
                row.append("W")
            elif s in grid.terminal_states:
                row.append("G" if (r, c) == tuple(grid.goal) else "T")
            else:
                row.append(ARROWS[int(np.argmax(q[s]))])
        rows.append(" ".join(row))
    return rows


def print_evaluation(result: dict[str, Any]) -> None:
    from rich.table import Table

    from sweeper.console import console

    low, high = result["ci"]
    ci = f" [{low:.4g}, {high:.4g}]" if low is not None else ""
    table = Table(title=f"greedy {result['agent']} on {result['env']}", show_header=False)
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("")
    table.add_row("run", f"{result['run_dir']} ({result['model']})")
    table.add_row(
        "return",
        f"mean {result['mean']:.4g}{ci} (95% bootstrap CI, n={result['episodes']} episodes), "
        f"std {result['std']:.4g}, min {result['min']:.4g}, max {result['max']:.4g}",
    )
    table.add_row("reset seeds", f"{result['seeds'][0]}..{result['seeds'][1]}")
    if "policy" in result:
        table.add_row("greedy policy", "\n".join(result["policy"]))
    console().print(table)
