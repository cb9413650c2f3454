"""The seed's questions, answered from a finished study: one verdict line and the figures.

Why a module: a ready-made sweep exists to answer one claim of the seed notebook, and the
answer must come from the data the sweep produced, with its uncertainty, whether or not the
claim holds (``sweeper.verdicts`` decides from bootstrap CIs; ``sweeper.figures`` draws the
evidence). Each sweep names its claim in ``hydra.sweeper.summary.claim``:

* ``sensitivity`` (Exercise 3): which hyperparameter matters most, from the fANOVA ranking
  and its bootstrap (``sweeper.analysis.importance``); marginal effects of the objective and of
  the seed's own measure (mean episode length over the last 50 episodes) with CI bands;
* ``ablation`` (section 7): full DQN vs no replay vs no target network, on the seed's measure;
  learning curves (episode length, smoothed over 20 episodes as in the seed) with CI bands;
* ``overestimation`` (section 8): DQN vs Double DQN, predicted max-Q at the start states minus
  the discounted return the same greedy policy collects, per seed; curves of both;
* ``conservative`` (section 2): Q-learning vs SARSA, state values next to the trap from each
  seed's Q-table; at each exploration floor swept, the seed's first; heatmaps with arrows;
* ``wet_caution`` (section 2 on the seed's own race): at a drying Spa, does SARSA stay on
  inters longer than Q-learning? Each seed's greedy policy drives races no run saw
  (``sweeper.envs.f1_policies``): laps per race on wet-weather tyres on a dry track, and
  points;
* ``safety_car_replay`` (prioritized replay, on the seed's race): at Singapore, where safety
  cars upset the pit window, does DQN with prioritized replay score more points per race
  than with uniform replay? The same unseen races per seed.

Every sweep also gets grouped learning curves and, when it re-tested its best configs,
tuning vs test values. The figures are PNGs under ``<sweep dir>/figures``.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from sweeper import (
    analysis,
    decomposition_figure,
    decomposition_verdict,
    figures,
    verdicts,
)

log = logging.getLogger("sweeper.sweeps")

CLAIMS = (
    "sensitivity",
    "ablation",
    "overestimation",
    "conservative",
    "wet_caution",
    "safety_car_replay",
)
SEED_MEASURE = "last50_length"  # the seed's measure: mean episode length, last 50 episodes
SEED_MEASURE_LABEL = "episode length, mean of the last 50 episodes"
RACES = 100  # unseen races per seed for the F1 claims (f1_policies.RACE_SEED_OFFSET on)


def answer(
    claim: str | None,
    study: optuna.Study,
    sweep_dir: Path,
    *,
    group_by: Sequence[str] = (),
    params: Sequence[str] = (),
    env_kwargs: Mapping[str, Any] | None = None,
    retest: Mapping[str, Any] | None = None,
    importance: analysis.Importance | None = None,
) -> dict[str, Any]:
    """``{"verdict": {...} | None, "figures": [paths]}`` for ``claim`` (None: figures only)."""
    if claim is not None and claim not in CLAIMS:
        raise ValueError(f"hydra.sweeper.summary.claim must be one of {CLAIMS}, got {claim!r}")
    out_dir = Path(sweep_dir) / "figures"
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    paths: list[Path] = []
    verdict: verdicts.Verdict | None = None
    if not complete:
        return {"verdict": None, "figures": []}
    arms = _arms(complete, group_by) if group_by else _top(study, complete)
    curves = {label: _curves(ts, "evals.csv", "eval_return_mean") for label, ts in arms.items()}
    if any(curves.values()):
        paths.append(
            figures.learning_curves(
                {k: v for k, v in curves.items() if v},
                out_dir / "learning_curves.png",
                ylabel="greedy evaluation return",
                title=f"{study.study_name}: learning curves over seeds",
            )
        )
    if retest and retest.get("configs"):
        paths.append(
            figures.tuning_vs_test(
                [
                    {
                        "label": f"trial {r['number']}",
                        "tuning": _tuning_values(study, r["number"]),
                        "test": [v for v in r["test_per_seed"] if v is not None],
                    }
                    for r in retest["configs"]
                ],
                out_dir / "tuning_vs_test.png",
                title="best configs: tuning seeds vs unseen test seeds",
            )
        )
    if claim == "sensitivity":
        verdict = _sensitivity(study, params, importance, out_dir, paths)
    elif claim == "ablation":
        verdict = _ablation(arms, group_by, out_dir, paths)
    elif claim == "overestimation":
        verdict = _overestimation(arms, group_by, out_dir, paths)
    elif claim == "conservative":
        verdict = _conservative(arms, group_by, env_kwargs or {}, out_dir, paths)
    elif claim == "wet_caution":
        verdict = _wet_caution(arms)
    elif claim == "safety_car_replay":
        verdict = _safety_car_replay(arms)
    return {
        "verdict": None
        if verdict is None
        else {"claim": verdict.claim, "holds": verdict.holds, "line": verdict.line},
        "figures": [str(p) for p in paths],
    }


# -- data of trials ------------------------------------------------------------------------------


def _label(t: FrozenTrial, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={t.params.get(k)}" for k in keys)


def _arms(trials: Sequence[FrozenTrial], group_by: Sequence[str]) -> dict[str, list[FrozenTrial]]:
    arms: dict[str, list[FrozenTrial]] = {}
    for t in sorted(trials, key=lambda t: t.number):
        arms.setdefault(_label(t, group_by), []).append(t)
    return arms


def _top(study: optuna.Study, trials: Sequence[FrozenTrial], k: int = 3) -> dict[str, list]:
    ranked = [t for t in analysis.ranked_trials(study) if t in trials][:k]
    return {f"trial {t.number}: {_label(t, list(t.params))}": [t] for t in ranked}


def _seed_dirs(t: FrozenTrial) -> list[Path]:
    root = t.user_attrs.get(analysis.OUTPUT_DIR_ATTR)
    if not root:
        return []
    seeds = t.user_attrs.get(analysis.SEEDS_ATTR)
    if seeds:
        return [Path(root) / f"seed_{s}" for s in seeds]
    return [Path(root)]


def _read(path: Path) -> list[dict[str, str]]:
    try:
        with path.open() as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def _curves(
    trials: Sequence[FrozenTrial], file: str, column: str
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per seed of the trials, ``(episode, column)`` from each seed's CSV."""
    out = []
    for t in trials:
        for d in _seed_dirs(t):
            rows = [r for r in _read(d / file) if r.get(column) not in (None, "")]
            if rows:
                x = np.array([float(r["episode"]) for r in rows])
                y = np.array([float(r[column]) for r in rows])
                out.append((x, y))
    return out


def _values(trials: Sequence[FrozenTrial], metric: str) -> list[float]:
    return [v for t in trials for v in analysis.replicates(t, metric)]


def _tuning_values(study: optuna.Study, number: int) -> list[float]:
    for t in study.get_trials(deepcopy=False):
        if t.number == number:
            return analysis.replicates(t)
    return []


def _value_of(label: str, key: str) -> str:
    for part in label.split(", "):
        k, _, v = part.partition("=")
        if k == key:
            return v
    return ""


def importance_metrics(claim: str | None) -> list[str]:
    """The metrics, besides the objective, whose importances ``claim``'s verdict ranks."""
    return [SEED_MEASURE] if claim == "sensitivity" else []


# -- the claims ----------------------------------------------------------------------------------


def _sensitivity(study, params, importance, out_dir: Path, paths: list[Path]):
    params = list(params)
    log_params = [p for p in params if p.endswith(("lr", "capacity"))]
    if importance is None:
        importance = analysis.importance(study, params)
    for metric, name, label in (
        (analysis.OBJECTIVE, "marginal_effects.png", "greedy evaluation return"),
        (SEED_MEASURE, "marginal_effects_last50_length.png", SEED_MEASURE_LABEL),
    ):
        effects = analysis.effect_replicates(study, params, metric=metric)
        if any(effects.values()):
            paths.append(
                figures.marginal_effects(
                    {k: v for k, v in effects.items() if v},
                    out_dir / name,
                    ylabel=label,
                    title=f"marginal effects: {label} per hyperparameter value",
                    log_params=log_params,
                )
            )
    # The seed's question is asked of its own measure (Exercise 3: "returns the average
    # episode length over the last 50 episodes"); the greedy evaluation's answer follows.
    on_seed_measure = analysis.importance(study, params, metric=SEED_MEASURE)
    if on_seed_measure.decomposition is not None:  # a full grid: its exact decomposition
        for imp, name, label in (
            (on_seed_measure, "variance_decomposition_last50_length.png", SEED_MEASURE_LABEL),
            (importance, "variance_decomposition.png", "greedy evaluation return"),
        ):
            if imp.decomposition is not None:
                paths.append(
                    decomposition_figure.plot(
                        imp.decomposition, out_dir / name, ylabel=label, log_params=log_params
                    )
                )
        verdict = decomposition_verdict.answer(
            on_seed_measure.decomposition, f"the seed's measure, {SEED_MEASURE_LABEL}"
        )
        if importance.decomposition is not None:
            other = decomposition_verdict.answer(importance.decomposition).line
            other = other.removeprefix("verdict: ")
        else:
            other = importance.verdict
        line = f"{verdict.line}; on the greedy evaluation return: {other}"
        return verdicts.Verdict(verdict.claim, verdict.holds, line, verdict.details)
    ranking = on_seed_measure.ranking()
    if not ranking:
        return None
    complete = [t for t in study.get_trials(deepcopy=False) if analysis.is_complete(t)]
    seeds = {len(analysis.seeds_of(t)) for t in complete}
    verdict = verdicts.importance_ranking(
        ranking,
        min_trials=analysis.MIN_TRIALS_TO_RANK,
        n_configs=len(complete),
        n_seeds=seeds.pop() if len(seeds) == 1 else None,
    )
    line = verdict.line.replace(
        "verdict: ", f"verdict (on the seed's measure, {SEED_MEASURE_LABEL}): ", 1
    )
    line += f"; on the greedy evaluation return: {importance.verdict}"
    return verdicts.Verdict(verdict.claim, verdict.holds, line, verdict.details)


def _ablation(arms, group_by, out_dir: Path, paths: list[Path]):
    named: dict[str, list[FrozenTrial]] = {}
    for label, trials in arms.items():
        replay = _value_of(label, "buffer") != "none"
        target = _value_of(label, "agent.target_update") != "none"
        name = {
            (True, True): "full DQN",
            (False, True): "no replay",
            (True, False): "no target network",
            (False, False): "neither",
        }[(replay, target)]
        named[name] = trials
    lengths = {n: _curves(ts, "episodes.csv", "length") for n, ts in named.items()}
    if any(lengths.values()):
        paths.append(
            figures.learning_curves(
                {k: v for k, v in lengths.items() if v},
                out_dir / "ablation_episode_length.png",
                ylabel="episode length (smoothed over 20 episodes)",
                title="seed section 7: ablation, episode length over seeds",
                smooth=20,
            )
        )
    if "full DQN" not in named:
        return None
    verdict = verdicts.ablation(
        {n: _values(ts, SEED_MEASURE) for n, ts in named.items()},
        full="full DQN",
        metric=SEED_MEASURE_LABEL,
    )
    # the same question asked of the greedy evaluation return (the sweep's objective)
    greedy = verdicts.ablation(
        {n: _values(ts, analysis.OBJECTIVE) for n, ts in named.items()},
        full="full DQN",
        metric="greedy evaluation return",
    )
    line = f"{verdict.line}; on the greedy evaluation return: {greedy.line.split(': ', 2)[-1]}"
    return verdicts.Verdict(verdict.claim, verdict.holds, line, verdict.details)


def _overestimation(arms, group_by, out_dir: Path, paths: list[Path]):
    named = {
        ("Double DQN" if _value_of(label, "agent.double") == "True" else "DQN"): ts
        for label, ts in arms.items()
    }
    groups = {
        n: {
            "max_q": _curves(ts, "evals.csv", "eval_start_max_q"),
            "return": _curves(ts, "evals.csv", "eval_discounted_return"),
        }
        for n, ts in named.items()
    }
    if all(g["max_q"] for g in groups.values()):
        paths.append(
            figures.overestimation(
                groups,
                out_dir / "overestimation.png",
                title="seed section 8: predicted max-Q vs measured discounted return",
            )
        )
    if set(named) != {"DQN", "Double DQN"}:
        return None
    return verdicts.overestimation(
        _values(named["DQN"], "overestimation"), _values(named["Double DQN"], "overestimation")
    )


def _conservative(arms, group_by, env_kwargs, out_dir: Path, paths: list[Path]):
    layout = figures.gridworld_layout(**dict(env_kwargs))
    size, traps, walls = layout["size"], layout["traps"], layout["walls"]
    cells = sorted(
        {
            (r + dr, c + dc)
            for r, c in traps
            for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))
            if 0 <= r + dr < size and 0 <= c + dc < size
        }
        - {tuple(w) for w in walls}
        - {tuple(t) for t in traps}
        - {tuple(g) for g in layout["goals"]}
    )
    levels: dict[str, dict[str, list[FrozenTrial]]] = {}
    for label, trials in arms.items():
        agent = _value_of(label, "agent")
        rest = ", ".join(p for p in label.split(", ") if not p.startswith("agent="))
        levels.setdefault(rest, {})[agent] = trials
    results = []
    for rest, by_agent in sorted(levels.items()):  # the seed's epsilon_end 0.01 first
        if set(by_agent) < {"q_learning", "sarsa"}:
            continue
        tables = {a: _q_tables(by_agent[a]) for a in ("q_learning", "sarsa")}
        near = {
            a: [float(np.mean([np.max(q[r * size + c]) for r, c in cells])) for q in qs]
            for a, qs in tables.items()
        }
        desc = ", ".join(f"({r},{c})" for r, c in cells)
        verdict = verdicts.conservative_near_trap(
            near["q_learning"],
            near["sarsa"],
            f"{desc} next to the trap" + (f" at {rest}" if rest else ""),
        )
        results.append((rest, verdict))
        suffix = "".join(ch if ch.isalnum() else "_" for ch in rest) or "all"
        if all(tables.values()):
            paths.append(
                figures.q_heatmaps(
                    {a: {"q_tables": qs, "layout": layout} for a, qs in tables.items()},
                    out_dir / f"q_values_{suffix}.png",
                    title=f"learned values (max over actions), IQM over seeds {rest}".strip(),
                )
            )
        returns = {a: _curves(by_agent[a], "episodes.csv", "return") for a in by_agent}
        if any(returns.values()):
            paths.append(
                figures.learning_curves(
                    {k: v for k, v in returns.items() if v},
                    out_dir / f"returns_{suffix}.png",
                    ylabel="return (smoothed over 100 episodes)",
                    title=f"Q-learning vs SARSA {rest}".strip(),
                    smooth=100,
                )
            )
    if not results:
        return None
    first, verdict = results[0]
    others = [f"{rest}: {v.status}" for rest, v in results[1:]]
    if not others:
        return verdict
    line = verdict.line + "; elsewhere: " + "; ".join(others)
    return verdicts.Verdict(verdict.claim, verdict.holds, line, verdict.details)


def _q_tables(trials: Sequence[FrozenTrial]) -> list[np.ndarray]:
    tables = []
    for t in trials:
        for d in _seed_dirs(t):
            path = d / "model.npy"
            if path.exists():
                tables.append(np.load(path))
    return tables


# -- the seed's race (sweeper.envs.f1) ---------------------------------------------------------


def _races(trials: Sequence[FrozenTrial]) -> list[list[Any]]:
    """Per seed of the trials: :data:`RACES` unseen races of its saved greedy policy."""
    from omegaconf import OmegaConf

    from sweeper.agents.saved import q_function
    from sweeper.envs import f1_policies as pol
    from sweeper.envs import make_env

    out = []
    for d in (d for t in trials for d in _seed_dirs(t)):
        models = [p for p in (d / "model.npy", d / "model.pt") if p.is_file()]
        if not models or not (d / "config.yaml").is_file():
            continue
        cfg = OmegaConf.load(d / "config.yaml")
        env = make_env(str(cfg.env.id), **OmegaConf.to_container(cfg.env.kwargs, resolve=True))
        env = env.unwrapped
        q = q_function(
            models[0],
            int(np.prod(env.observation_space.shape or (1,))),
            int(env.action_space.n),
            list(cfg.agent.get("hidden_sizes", [])),
            bool(cfg.agent.get("dueling", False)),
        )
        out.append(pol.races(env, pol.greedy(q), RACES))
        env.close()
    return out


def _per_seed(races: list[list[Any]], field: str) -> list[float]:
    """Per seed, the mean of ``field`` over its races (NaN for a seed with none)."""
    return [float(np.mean([getattr(r, field) for r in rs])) if rs else math.nan for rs in races]


def _also(verdict: verdicts.Verdict, other: verdicts.Verdict, key: str) -> verdicts.Verdict:
    """``verdict`` with ``other``'s finding appended to its line (and details under ``key``)."""
    line = f"{verdict.line}; {other.claim}: {other.line.split(': ', 2)[-1]}"
    return verdicts.Verdict(
        verdict.claim, verdict.holds, line, {**verdict.details, key: other.details}
    )


def _wet_caution(arms):
    by_agent = {_value_of(label, "agent"): ts for label, ts in arms.items()}
    if not {"q_learning", "sarsa"} <= set(by_agent):
        return None
    races = {a: _races(by_agent[a]) for a in ("sarsa", "q_learning")}
    names = {"sarsa": "SARSA", "q_learning": "Q-learning"}
    unseen = f"{RACES} unseen races per seed"
    laps = verdicts.greater(
        verdicts.WET_CLAIM,
        *((names[a], _per_seed(races[a], "dry_laps_on_wet_tyres")) for a in races),
        f"laps per race on inters or wets while the track is dry ({unseen})",
        reasons=("SARSA stays on them longer", "Q-learning stays on them longer"),
    )
    slicks = verdicts.greater(
        "Q-learning takes slicks on a wet track more",
        *((names[a], _per_seed(races[a], "wet_laps_on_slicks")) for a in ("q_learning", "sarsa")),
        f"laps per race on slicks while the track is damp or wet ({unseen})",
        reasons=("Q-learning's policies do", "SARSA's policies do"),
    )
    points = verdicts.greater(
        "SARSA scores more points",
        *((names[a], _per_seed(races[a], "points")) for a in races),
        f"points per race ({unseen})",
        reasons=("SARSA's policies score more", "Q-learning's policies score more"),
    )
    return _also(_also(laps, slicks, "slicks_in_the_wet"), points, "points")


def _safety_car_replay(arms):
    by_buffer = {_value_of(label, "buffer"): ts for label, ts in arms.items()}
    if not {"prioritized", "uniform"} <= set(by_buffer):
        return None
    races = {b: _races(by_buffer[b]) for b in ("prioritized", "uniform")}
    unseen = f"{RACES} unseen races per seed"
    points = verdicts.greater(
        verdicts.SC_REPLAY_CLAIM,
        *((b, _per_seed(races[b], "points")) for b in races),
        f"points per race ({unseen})",
        reasons=("prioritized replay's policies score more", "uniform replay's score more"),
    )
    sc_only = [
        [[r for r in rs if r.safety_car] for rs in races[b]] for b in ("prioritized", "uniform")
    ]
    in_sc = verdicts.greater(
        "prioritized replay scores more in safety-car races",
        *((b, _per_seed(rs, "points")) for b, rs in zip(races, sc_only, strict=True)),
        "points per race in the races with a safety car",
        reasons=("prioritized replay's policies score more", "uniform replay's score more"),
    )
    return _also(points, in_sc, "safety_car_races")
