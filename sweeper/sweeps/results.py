"""The end of a sweep: summary table, ``optimization_results.yaml``, study hooks.

What the study says (counts, best trial with its CI over seeds, importance with its
uncertainty, marginal effects, grouped arms) is computed by :mod:`sweeper.analysis`; this module
orchestrates: it derives the reproducing overrides with the sweeper's own Hydra config loader,
writes ``optimization_results.yaml``, prints the summary and calls the study hooks (which get
the same numbers, so the MLflow parent run computes nothing again).

The best params are written as ready-to-paste overrides: the difference between the best
trial's composed task config and the app's default config (group choices first, then values),
so ``python -m sweeper.train <overrides>`` reproduces the best trial's config without the sweep
config (which would start a sweep again).
"""

from __future__ import annotations

import json
import logging
import math
import shlex
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.trial import TrialState

from sweeper import analysis, claims
from sweeper.analysis import RETEST_ATTR, retest_lines
from sweeper.overrides import format_value

if TYPE_CHECKING:
    from sweeper.sweeps._impl import OptunaSweeperImpl
    from sweeper.sweeps.hooks import StudyHook, StudyInfo
    from sweeper.sweeps.plan import Plan

log = logging.getLogger("sweeper.sweeps")

RESULTS_FILE = "optimization_results.yaml"
IGNORED_KEYS = ("trial",)  # filled by the sweeper, not part of a reproducible config


def _task_container(cfg: DictConfig) -> dict[str, Any]:
    cfg = cfg.copy()
    with open_dict(cfg):
        for key in ("hydra", *IGNORED_KEYS):
            cfg.pop(key, None)
    return OmegaConf.to_container(cfg, resolve=True)


def reproduce_overrides(sweeper: OptunaSweeperImpl, trial_overrides: Sequence[str]) -> list[str]:
    """Overrides that make the app's default config equal to a trial's task config (composed
    with the sweeper's Hydra config loader, so any app works; the diff is
    :func:`sweeper.analysis.diff_overrides`)."""
    loader = sweeper.hydra_context.config_loader
    master = sweeper.config
    trial_cfg = loader.load_sweep_config(master, list(trial_overrides))
    choices = dict(OmegaConf.select(trial_cfg, "hydra.runtime.choices") or {})
    config_name = master.hydra.job.config_name
    default = loader.load_configuration(config_name=config_name, overrides=[], run_mode=RunMode.RUN)
    default_choices = dict(OmegaConf.select(default, "hydra.runtime.choices") or {})
    groups = analysis.group_overrides(choices, default_choices)
    base = loader.load_configuration(
        config_name=config_name, overrides=groups, run_mode=RunMode.RUN
    )
    want = analysis.flatten(_task_container(trial_cfg))
    have = analysis.flatten(_task_container(base))
    return groups + analysis.diff_overrides(want, have)


def with_swept(overrides: Sequence[str], params: Mapping[str, Any]) -> list[str]:
    """``overrides`` with every swept parameter in it: the diff against the defaults leaves
    out a parameter whose value happens to be its default, and a reader of the line should
    see every value the study chose (a group choice first, as Hydra users write them)."""
    present = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    missing = [
        f"{key}={format_value(value)}"
        for key, value in params.items()
        if key not in present and key not in analysis.SEED_PARAMS
    ]
    groups = [o for o in missing if "." not in o.split("=", 1)[0]]
    return groups + list(overrides) + [o for o in missing if o not in groups]


def _app_command() -> str:
    """How the app was started: ``python -m sweeper.train`` or ``python <script>``."""
    argv0 = sys.argv[0] if sys.argv else ""
    if not argv0 or Path(argv0).resolve() == Path(__file__).resolve().parents[1] / "train.py":
        return "python -m sweeper.train"
    if Path(argv0).name in ("sweeper-train",):
        return "sweeper-train"
    return f"python {argv0}"


def _claim_params(sweeper: OptunaSweeperImpl, plan: Plan) -> list[str]:
    group_by = list(sweeper.summary_cfg.get("group_by") or [])
    return [p for p in plan.space.distributions if p not in group_by]


def prefetch(sweeper: OptunaSweeperImpl, plan: Plan) -> threading.Thread:
    """Start computing the importances :func:`finish` will show (the objective's, and those
    the claim's verdict ranks) in a background thread: called before the re-test, whose runs
    train in worker processes, so the bootstrap's seconds of refits overlap them."""
    claim = sweeper.summary_cfg.get("claim")
    requests = [(list(plan.space.distributions), analysis.OBJECTIVE)]
    requests += [(_claim_params(sweeper, plan), m) for m in claims.importance_metrics(claim)]
    return analysis.prefetch_importance(plan.study, requests)


def finish(
    sweeper: OptunaSweeperImpl,
    plan: Plan,
    hooks: Sequence[StudyHook],
    info: StudyInfo,
    stopped: str | None = None,
) -> dict[str, Any]:
    """Summarize the study (``stopped``: why this run gave up, from the trial ledger), write
    ``optimization_results.yaml``, print the summary and tell the hooks."""
    study = plan.study
    counts = analysis.tally(study.get_trials(deepcopy=False))
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
    if stopped:
        summary["stopped"] = stopped
    best = analysis.best_summary(study)
    importance = None
    if best is not None:
        best_trial = study.best_trial
        overrides = best_trial.user_attrs.get(analysis.OVERRIDES_ATTR)
        if overrides:
            try:
                repro = with_swept(
                    reproduce_overrides(sweeper, overrides), best_trial.params
                ) + replicate_overrides(best)
                best["overrides"] = repro
                best["command"] = f"{_app_command()} {shlex.join(repro)}"
            except Exception as err:
                log.warning("could not derive reproducing overrides: %s", err)
                best["overrides"] = list(overrides)
        for key in (analysis.OUTPUT_DIR_ATTR, "mean_max_q"):
            if key in best_trial.user_attrs:
                best[key.split(":")[-1]] = best_trial.user_attrs[key]
        imp = analysis.importance(study, list(plan.space.distributions))
        importance = imp
        summary["importance"] = imp.as_dict()
        summary["most_important"] = imp.most_important
        summary["marginal_effects"] = analysis.marginal_effects(
            study, imp.params or analysis.importance_params(study, list(plan.space.distributions))
        )
    else:
        errors = [
            t.user_attrs.get(analysis.ERROR_ATTR)
            for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if t.user_attrs.get(analysis.ERROR_ATTR)
        ]
        summary["message"] = (
            f"no trial of study {study.study_name!r} completed "
            f"({counts['failed']} failed, {counts['pruned']} pruned)"
            + (f"; last error: {errors[-1]}" if errors else "")
        )
    summary["best"] = best
    failures = {
        t.number: t.user_attrs[analysis.ERROR_ATTR]
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        if analysis.ERROR_ATTR in t.user_attrs
    }
    if failures:  # the last 20, with the error each failed trial keeps as a user attr
        summary["failures"] = dict(list(failures.items())[-20:])
    group_by = list(sweeper.summary_cfg.get("group_by") or [])
    if group_by and best is not None:
        summary["groups"] = analysis.groups_table(
            study, group_by, list(sweeper.summary_cfg.get("metrics") or [])
        )
    retest = study.user_attrs.get(RETEST_ATTR)
    if retest:
        summary["retest"] = retest
    if best is not None:
        try:
            answered = claims.answer(
                sweeper.summary_cfg.get("claim"),
                study,
                plan.sweep_dir,
                group_by=group_by,
                params=_claim_params(sweeper, plan),
                env_kwargs=OmegaConf.to_container(plan.base_cfg.env.kwargs, resolve=True)
                if OmegaConf.select(plan.base_cfg, "env.kwargs") is not None
                else None,
                retest=retest,
                importance=importance,
            )
        except Exception as err:  # noqa: BLE001 - the figures never cost the sweep's results
            log.warning("could not draw the study's figures: %s", f"{type(err).__name__}: {err}")
        else:
            summary["figures"] = answered["figures"]
            if answered["verdict"] is not None:
                summary["verdict"] = answered["verdict"]
    path = plan.sweep_dir / RESULTS_FILE
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(_yamlable(summary))))
    summary["results_file"] = str(path)
    print_summary(summary)
    for hook in hooks:
        try:
            hook.on_study_end(info, {**summary, "study": study})
            failed = None
        except Exception as err:  # noqa: BLE001 - the results are kept: the exit code says it
            failed = f"study hook {type(hook).__name__}: {' '.join(str(err).split())[:200]}"
        lost = getattr(hook, "lost", None)
        said = lost() if callable(lost) else None  # the first failure, as it was said
        if said or failed:
            summary["tracking_lost"] = said or failed
    return summary


def replicate_overrides(best: Mapping[str, Any]) -> list[str]:
    """The trial's seeds (and aggregate) as overrides: the trial is the config on its seeds,
    so that is what reproduces it (a plain run would train one other seed)."""
    if not best.get("seeds"):
        return []
    out = [f"trial.seeds=[{','.join(str(s) for s in best['seeds'])}]"]
    if best.get("aggregate") not in (None, "iqm"):
        out.append(f"trial.aggregate={best['aggregate']}")
    return out


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


def best_value_text(best: Mapping[str, Any]) -> str:
    """``IQM 205.3, 95% CI [190.1, 220.4] (n=5 seeds)``, or the value of a one-run trial."""
    return analysis.format_estimate(
        best.get("value"),
        best.get("ci_low"),
        best.get("ci_high"),
        best.get("n"),
        best.get("aggregate"),
    )


#: Rows of the study summary a reader copies: whole below the table when they do not fit.
VERBATIM = ("reproduce", "results", "figures")


def print_summary(summary: Mapping[str, Any]) -> None:
    from rich.table import Table

    from sweeper.console import console as sweeper_console
    from sweeper.console import print_rows

    console = sweeper_console()
    c = summary["trials"]
    rows = [
        (
            "trials",
            f"{c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed"
            + (f", {c['running']} running" if c["running"] else "")
            + (f", {c['waiting']} queued" if c.get("waiting") else "")
            + (f" ({c['uncounted']} stale/surplus not counted)" if c["uncounted"] else "")
            + f" / n_trials {summary['n_trials']}",
        )
    ]
    best = summary.get("best")
    if best:
        rows.append(("best value", f"{best_value_text(best)} (trial {best['number']})"))
        if best.get("seeds"):
            rows.append(("best seeds", ", ".join(str(s) for s in best["seeds"])))
        rows.append(
            ("best params", ", ".join(f"{k}={format_value(v)}" for k, v in best["params"].items()))
        )
        if "overrides" in best:
            rows.append(("reproduce", best.get("command", " ".join(best["overrides"]))))
        imp = summary.get("importance")
        if isinstance(imp, Mapping):
            rows.append(analysis.importance_text(imp))
            rows.append(("matters most", str(imp.get("verdict"))))
    else:
        rows.append(("result", summary.get("message", "no complete trial")))
    if summary.get("stopped"):
        rows.append(("stopped", summary["stopped"]))
    retest = summary.get("retest")
    if retest:
        rows.append(("test seeds", "\n".join(retest_lines(retest))))
    rows.append(("results", str(summary.get("results_file", ""))))
    if summary.get("figures"):
        rows.append(("figures", "\n".join(summary["figures"])))
    print_rows(f"study {summary['study_name']}", rows, VERBATIM, console)
    if summary.get("verdict"):
        console.print(summary["verdict"]["line"], soft_wrap=True)
    groups = summary.get("groups")
    if groups:
        params = [k for k in groups[0] if k not in _STAT_KEYS(groups[0])]
        measures = [k[: -len("_iqm")] for k in groups[0] if k.endswith("_iqm")]
        gt = Table(title="by " + ", ".join(params) + " (complete trials, seeds pooled)")
        for key in params:
            gt.add_column(key)
        gt.add_column("n", justify="right")
        for m in measures:
            gt.add_column(f"{m} IQM [95% CI]", justify="right")
        for row in groups:
            cells = [str(row[k]) for k in params] + [_n_cell(row)]
            cells += [_with_ci(row, m) for m in measures]
            gt.add_row(*cells)
        console.print(gt)


def _n_cell(row: Mapping[str, Any]) -> str:
    n, trials = row.get("n"), row.get("n_trials")
    return f"{n}" if trials in (None, n) else f"{n} ({trials} trials)"


def _with_ci(row: Mapping[str, Any], measure: str) -> str:
    value, low, high = (row.get(f"{measure}_{k}") for k in ("iqm", "ci_low", "ci_high"))
    if value is None:
        return "-"
    if low is None or high is None:
        return f"{value:.4g} [no CI: n=1]"
    return f"{value:.4g} [{low:.4g}, {high:.4g}]"


def _STAT_KEYS(row: Mapping[str, Any]) -> set[str]:  # noqa: N802
    return {k for k in row if k in ("n", "n_trials") or k.endswith(("_iqm", "_ci_low", "_ci_high"))}
