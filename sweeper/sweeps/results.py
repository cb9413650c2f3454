"""The end of a sweep: summary table, ``optimization_results.yaml``, study hooks.

The best params are written as ready-to-paste overrides: the difference between the best
trial's composed task config and the app's default config (group choices first, then values),
so ``python -m sweeper.train <overrides>`` reproduces the best trial's config without the sweep
config (which would start a sweep again).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shlex
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.trial import TrialState

from sweeper.statistics import estimate
from sweeper.sweeps.search_space import format_value

if TYPE_CHECKING:
    from sweeper.sweeps._impl import OptunaSweeperImpl, _Plan
    from sweeper.sweeps.hooks import StudyHook, StudyInfo

log = logging.getLogger("sweeper.sweeps")

RESULTS_FILE = "optimization_results.yaml"
IGNORED_KEYS = ("trial",)  # filled by the sweeper, not part of a reproducible config


def run_metrics(out_dir: Path) -> dict[str, Any]:
    """Extra per-trial metrics read from the run's files (kept as trial user attrs).

    ``mean_max_q``: the mean over training episodes of the per-episode mean max-Q probe
    (seed section 8), when episodes.csv has a ``max_q`` column.
    """
    metrics: dict[str, Any] = {}
    path = Path(out_dir) / "episodes.csv"
    if path.exists():
        try:
            with path.open() as f:
                values = [float(r["max_q"]) for r in csv.DictReader(f) if r.get("max_q")]
            values = [v for v in values if math.isfinite(v)]
            if values:
                metrics["mean_max_q"] = statistics.fmean(values)
                metrics["final_max_q"] = values[-1]
        except (OSError, ValueError, KeyError):
            pass
    return metrics


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(node, Mapping):
        if not node and prefix:
            out[prefix] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    else:
        out[prefix] = node
    return out


def _task_container(cfg: DictConfig) -> dict[str, Any]:
    cfg = cfg.copy()
    with open_dict(cfg):
        for key in ("hydra", *IGNORED_KEYS):
            cfg.pop(key, None)
    return OmegaConf.to_container(cfg, resolve=True)


def reproduce_overrides(sweeper: OptunaSweeperImpl, trial_overrides: Sequence[str]) -> list[str]:
    """Overrides that make the app's default config equal to a trial's task config."""
    loader = sweeper.hydra_context.config_loader
    master = sweeper.config
    trial_cfg = loader.load_sweep_config(master, list(trial_overrides))
    choices = dict(OmegaConf.select(trial_cfg, "hydra.runtime.choices") or {})
    config_name = master.hydra.job.config_name
    default = loader.load_configuration(config_name=config_name, overrides=[], run_mode=RunMode.RUN)
    default_choices = dict(OmegaConf.select(default, "hydra.runtime.choices") or {})
    groups = [
        f"{g}={choices[g]}"
        for g in default_choices
        if not g.startswith("hydra/") and g in choices and choices[g] != default_choices[g]
    ]
    base = loader.load_configuration(
        config_name=config_name, overrides=groups, run_mode=RunMode.RUN
    )
    want, have = flatten(_task_container(trial_cfg)), flatten(_task_container(base))
    values = []
    for key, value in want.items():
        if key not in have:
            values.append(f"+{key}={format_value(value)}")
        elif have[key] != value:
            values.append(f"{key}={format_value(value)}")
    removed = [k for k in have if k not in want]
    for key in removed:
        values.append(f"~{key}")
    return groups + values


def _app_command() -> str:
    """How the app was started: ``python -m sweeper.train`` or ``python <script>``."""
    argv0 = sys.argv[0] if sys.argv else ""
    if not argv0 or Path(argv0).resolve() == Path(__file__).resolve().parents[1] / "train.py":
        return "python -m sweeper.train"
    if Path(argv0).name in ("sweeper-train",):
        return "sweeper-train"
    return f"python {argv0}"


def importances(study: optuna.Study, params: Sequence[str]) -> dict[str, float] | str:
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if len(params) < 2:
        return "needs at least two parameters"
    if len(complete) < 3:
        return f"needs at least 3 complete trials, got {len(complete)}"
    try:
        imp = optuna.importance.get_param_importances(study, params=list(params))
    except Exception as err:  # e.g. a parameter that never varied
        return f"unavailable: {type(err).__name__}: {' '.join(str(err).split())}"
    return {k: round(float(v), 4) for k, v in imp.items()}


def groups_table(
    study: optuna.Study, group_by: Sequence[str], metrics: Sequence[str]
) -> list[dict[str, Any]]:
    """Complete trials grouped by the values of ``group_by`` params (e.g. the arms of the
    ablation, DQN vs Double DQN): per group n, the objective's IQM with its 95% bootstrap CI
    over the group's trials (``sweeper.statistics``), and the same for each user-attr metric
    (e.g. ``mean_max_q``)."""
    rows: dict[tuple, list[optuna.trial.FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        key = tuple(t.params.get(g) for g in group_by)
        rows.setdefault(key, []).append(t)
    out = []
    for key, trials in sorted(rows.items(), key=lambda kv: str(kv[0])):
        row: dict[str, Any] = {g: k for g, k in zip(group_by, key, strict=True)}
        est = estimate([float(t.value) for t in trials])
        row["n"] = est.n
        row.update(_rounded(est.as_dict("objective_")))
        for m in metrics:
            values = [float(t.user_attrs[m]) for t in trials if m in t.user_attrs]
            if values:
                row.update(_rounded(estimate(values).as_dict(f"{m}_")))
            else:
                row[f"{m}_iqm"] = None
        row.pop("objective_n", None)
        out.append({k: v for k, v in row.items() if not (k.endswith("_n") and k != "n")})
    return out


def _rounded(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}


def finish(
    sweeper: OptunaSweeperImpl, plan: _Plan, hooks: Sequence[StudyHook], info: StudyInfo
) -> dict[str, Any]:
    from sweeper.sweeps._impl import tally

    study = plan.study
    counts = tally(study.get_trials(deepcopy=False))
    summary: dict[str, Any] = {
        "study_name": study.study_name,
        "storage": info.storage,
        "direction": sweeper.direction,
        "sampler": plan.sampler_name,
        "pruner": plan.pruner,
        "n_trials": plan.n_trials,
        "trials": counts,
        "search_space": dict(plan.space.describe()),
        "fixed_overrides": list(plan.space.fixed),
    }
    if sweeper.max_failures is not None and sweeper._failures >= sweeper.max_failures:
        summary["stopped"] = (
            f"stopped after {sweeper._failures} failed trial(s) in this run "
            f"(hydra.sweeper.max_failures={sweeper.max_failures}); last error: "
            f"{sweeper._last_error}"
        )
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = None
    if complete:
        best_trial = study.best_trial
        overrides = best_trial.user_attrs.get("sweeper:overrides")
        best = {
            "number": best_trial.number,
            "value": best_trial.value,
            "params": {k: _yamlable(v) for k, v in best_trial.params.items()},
        }
        if overrides:
            try:
                repro = reproduce_overrides(sweeper, overrides)
                best["overrides"] = repro
                best["command"] = f"{_app_command()} {shlex.join(repro)}"
            except Exception as err:
                log.warning("could not derive reproducing overrides: %s", err)
                best["overrides"] = list(overrides)
        for key in ("sweeper:output_dir", "mean_max_q"):
            if key in best_trial.user_attrs:
                best[key.split(":")[-1]] = best_trial.user_attrs[key]
        summary["importance"] = importances(study, list(plan.space.distributions))
        if isinstance(summary["importance"], dict) and summary["importance"]:
            summary["most_important"] = next(iter(summary["importance"]))
    else:
        errors = [
            t.user_attrs.get("sweeper:error")
            for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if t.user_attrs.get("sweeper:error")
        ]
        summary["message"] = (
            f"no trial of study {study.study_name!r} completed "
            f"({counts['failed']} failed, {counts['pruned']} pruned)"
            + (f"; last error: {errors[-1]}" if errors else "")
        )
    summary["best"] = best
    failures = {
        t.number: t.user_attrs["sweeper:error"]
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        if "sweeper:error" in t.user_attrs
    }
    if failures:  # the last 20, with the error each failed trial keeps as a user attr
        summary["failures"] = dict(list(failures.items())[-20:])
    group_by = list(sweeper.summary_cfg.get("group_by") or [])
    if group_by and complete:
        summary["groups"] = groups_table(
            study, group_by, list(sweeper.summary_cfg.get("metrics") or [])
        )
    path = plan.sweep_dir / RESULTS_FILE
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(_yamlable(summary))))
    summary["results_file"] = str(path)
    print_summary(summary)
    for hook in hooks:
        try:
            hook.on_study_end(info, {**summary, "study": study})
        except Exception as err:
            log.warning("study hook %s failed: %s", type(hook).__name__, err)
    return summary


def _yamlable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _yamlable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_yamlable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.loads(json.dumps(value, default=str))


def print_summary(summary: Mapping[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False, soft_wrap=True)
    c = summary["trials"]
    table = Table(title=f"study {summary['study_name']}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row(
        "trials",
        (
            f"{c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed"
            + (f", {c['running']} running" if c["running"] else "")
            + (f", {c['waiting']} queued" if c.get("waiting") else "")
            + (f" ({c['uncounted']} stale/surplus not counted)" if c["uncounted"] else "")
            + f" / n_trials {summary['n_trials']}"
        ),
    )
    best = summary.get("best")
    if best:
        table.add_row("best value", f"{best['value']:.4g} (trial {best['number']})")
        table.add_row(
            "best params", ", ".join(f"{k}={format_value(v)}" for k, v in best["params"].items())
        )
        if "overrides" in best:
            table.add_row("reproduce", best.get("command", " ".join(best["overrides"])))
        imp = summary.get("importance")
        if isinstance(imp, Mapping):
            table.add_row("importance", ", ".join(f"{k} {v:.2f}" for k, v in imp.items()))
            table.add_row("matters most", str(summary.get("most_important")))
        elif imp:
            table.add_row("importance", str(imp))
    else:
        table.add_row("result", summary.get("message", "no complete trial"))
    if summary.get("stopped"):
        table.add_row("stopped", summary["stopped"])
    table.add_row("results", str(summary.get("results_file", "")))
    console.print(table)
    groups = summary.get("groups")
    if groups:
        params = [k for k in groups[0] if k not in _STAT_KEYS(groups[0])]
        measures = [k[: -len("_iqm")] for k in groups[0] if k.endswith("_iqm")]
        gt = Table(title="by " + ", ".join(params) + " (complete trials)")
        for key in params:
            gt.add_column(key)
        gt.add_column("n", justify="right")
        for m in measures:
            gt.add_column(f"{m} IQM [95% CI]", justify="right")
        for row in groups:
            cells = [str(row[k]) for k in params] + [str(row["n"])]
            cells += [_with_ci(row, m) for m in measures]
            gt.add_row(*cells)
        console.print(gt)


def _with_ci(row: Mapping[str, Any], measure: str) -> str:
    value, low, high = (row.get(f"{measure}_{k}") for k in ("iqm", "ci_low", "ci_high"))
    if value is None:
        return "-"
    if low is None or high is None:
        return f"{value:.4g} [no CI: n=1]"
    return f"{value:.4g} [{low:.4g}, {high:.4g}]"


def _STAT_KEYS(row: Mapping[str, Any]) -> set[str]:  # noqa: N802
    return {k for k in row if k == "n" or k.endswith(("_iqm", "_ci_low", "_ci_high"))}
