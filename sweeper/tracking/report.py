"""``sweeper report``: a study's top trials, best config as overrides, what matters most, plots.

Reads the Optuna study (the sweeper's storage, ``journal:outputs/optuna/journal.log`` by
default, or any storage URL) and writes Optuna's plots to ``outputs/reports/<study>/``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sweeper.sweeps.search_space import format_value

OVERRIDES_ATTR = "sweeper:overrides"
FIXED_ATTR = "sweeper:fixed_overrides"
ERROR_ATTR = "sweeper:error"


class ReportError(RuntimeError):
    """A one-line reason why there is no report."""


def _open(storage: str | None):
    try:
        from sweeper.sweeps.storage import canonical, is_journal, journal_path, open_storage

        spec = canonical(storage)
        if is_journal(spec) and not Path(journal_path(spec)).is_file():
            # a report reads: it never creates a journal (nor its directory)
            raise ReportError(f"no study storage at {journal_path(spec)} (nothing swept here yet)")
        return open_storage(spec), spec
    except ImportError:  # the sweeper package is not there: a plain Optuna storage URL
        import optuna

        if storage is None:
            raise ReportError("no --storage given") from None
        return optuna.storages.get_storage(storage), storage


def load_study(study_name: str | None, storage: str | None):
    import optuna

    try:
        store, label = _open(storage)
    except Exception as err:  # StorageError and friends: one line
        raise ReportError(str(err).splitlines()[0]) from None
    names = optuna.get_all_study_names(store)
    if study_name is None:
        if not names:
            raise ReportError(f"no study in {label}")
        if len(names) > 1:
            raise ReportError(
                f"{len(names)} studies in {label}: pick one with --study "
                f"({', '.join(sorted(names))})"
            )
        study_name = names[0]
    elif study_name not in names:
        raise ReportError(
            f"no study {study_name!r} in {label}"
            + (f" (studies: {', '.join(sorted(names))})" if names else "")
        )
    return optuna.load_study(study_name=study_name, storage=store)


def shown_value(value: Any) -> str:
    """A value as the report's table shows it (floats to 6 significant digits)."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def ranked_trials(study) -> list:
    """Complete trials best first, then pruned (by their last report), then the rest."""
    from optuna.trial import TrialState

    sign = -1.0 if study.direction.name == "MAXIMIZE" else 1.0
    trials = study.get_trials(deepcopy=False)

    def key(t):
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value):
            return (0, sign * t.value, t.number)
        if t.state == TrialState.PRUNED:
            last = (
                t.intermediate_values[max(t.intermediate_values)]
                if t.intermediate_values
                else math.nan
            )
            return (1, sign * last if math.isfinite(last) else math.inf, t.number)
        return (2, 0.0, t.number)

    return sorted(trials, key=key)


def best_overrides(study, best) -> list[str]:
    """The best trial's config as overrides for a plain ``python -m sweeper.train`` run.

    From the trial's recorded overrides (the sweeper stores them) when they compose here:
    expanded against the default config (a ``+sweep=...`` override would start a sweep), so
    that the command gives the trial's exact semantic config (checked by config hash). Else
    the recorded overrides, else the study's fixed overrides plus the sampled params."""
    recorded = best.user_attrs.get(OVERRIDES_ATTR)
    if recorded:
        recorded = [o for o in recorded if not o.startswith(("trial.", "hydra."))]
        try:
            return expand_overrides(recorded)
        except Exception:  # noqa: BLE001 - composition failed here: show what the sweep had
            return recorded
    fixed = list(study.user_attrs.get(FIXED_ATTR, []))
    return fixed + [f"{k}={format_value(v)}" for k, v in best.params.items()]


GROUPS = ("agent", "env", "buffer")


def expand_overrides(overrides: list[str]) -> list[str]:
    """Overrides of the default config that give the same semantic config as ``overrides``
    (group choices first, then the values that differ). Raises if the result's config hash
    differs from the original's."""
    from hydra import compose, initialize_config_dir

    from sweeper.cli import CONF_DIR
    from sweeper.config import register_configs
    from sweeper.config_hash import config_hash, flatten, semantic_config

    register_configs()
    with initialize_config_dir(
        version_base="1.3", config_dir=str(CONF_DIR), job_name="sweeper_report"
    ):
        want_cfg = compose("config", overrides=overrides, return_hydra_config=True)
        choices = dict(want_cfg.hydra.runtime.choices)
        groups = [f"{g}={choices[g]}" for g in GROUPS if g in choices]
        base_cfg = compose("config", overrides=groups)
        want, have = flatten(semantic_config(want_cfg)), flatten(semantic_config(base_cfg))
        values = [f"{k}={format_value(v)}" for k, v in want.items() if k in have and have[k] != v]
        values += [f"+{k}={format_value(v)}" for k, v in want.items() if k not in have]
        values += [f"~{k}" for k in have if k not in want]
        default = compose("config", overrides=[], return_hydra_config=True)
        default_choices = dict(default.hydra.runtime.choices)
        groups = [g for g in groups if default_choices.get(g.split("=")[0]) != g.split("=")[1]]
        result = groups + values
        check = compose("config", overrides=result)
    if config_hash(check) != config_hash(want_cfg):
        raise ValueError("expanded overrides do not reproduce the config")
    return result


def build_report(study, top: int = 10, plots_dir: Path | None = None) -> dict[str, Any]:
    from sweeper.tracking.parent import best_trial, param_importances, study_counts, write_plots

    best = best_trial(study)
    importances = param_importances(study)
    report = {
        "study_name": study.study_name,
        "direction": study.direction.name.lower(),
        "counts": study_counts(study),
        "top": ranked_trials(study)[:top],
        "best": best,
        "best_overrides": best_overrides(study, best) if best is not None else [],
        "importances": importances,
        "most_important": max(importances, key=importances.get) if importances else None,
        "plots": [],
    }
    if plots_dir is not None:
        report["plots"] = write_plots(study, Path(plots_dir), importances)
    return report


def print_report(report: dict[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    counts = report["counts"]
    title = (
        f"study {report['study_name']} ({report['direction']}): "
        f"{counts['n_trials']} trials, {counts.get('n_complete', 0)} complete, "
        f"{counts.get('n_pruned', 0)} pruned, {counts.get('n_fail', 0)} failed"
    )
    params = sorted({k for t in report["top"] for k in t.params})
    table = Table(title=title, title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("trial", justify="right")
    table.add_column("state")
    table.add_column("value", justify="right")
    for p in params:
        table.add_column(p, justify="right")
    for rank, t in enumerate(report["top"], 1):
        value = (
            t.value
            if t.value is not None
            else (
                t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
            )
        )
        shown = "-" if value is None else shown_value(value)
        if t.value is None and value is not None:
            shown += " (last report)"
        table.add_row(
            str(rank),
            str(t.number),
            t.state.name,
            shown,
            *[shown_value(t.params[p]) if p in t.params else "-" for p in params],
        )
    console.print(table)
    best = report["best"]
    if best is None:
        console.print("no complete trial yet: no best config")
    else:
        console.print(f"best: trial {best.number}, value {shown_value(best.value)}")
        console.print("best config as overrides:")
        console.print(
            "  python -m sweeper.train " + " ".join(report["best_overrides"]),
            soft_wrap=True,
            highlight=False,
        )
    imps = report["importances"]
    if imps:
        ranked = ", ".join(f"{k} {v:.2f}" for k, v in sorted(imps.items(), key=lambda kv: -kv[1]))
        console.print(
            f"most important hyperparameter: {report['most_important']} (importances: {ranked})",
            highlight=False,
        )
    else:
        console.print(
            "parameter importances: not available (needs at least two complete "
            "trials that differ in their parameters)"
        )
    if report["plots"]:
        folder = Path(report["plots"][0]).parent
        names = ", ".join(sorted({Path(p).name for p in report["plots"]}))
        console.print(f"plots in {folder}: {names}", soft_wrap=True, highlight=False)
