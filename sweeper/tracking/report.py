"""``sweeper report``: a study's top trials, best config as overrides, what matters most, plots.

Reads the Optuna study (the sweeper's storage, ``journal:outputs/optuna/journal.log`` by
default, or any storage URL), prints what :mod:`sweeper.analysis` says about it (per trial the
aggregate over its seeds with its 95% CI and n; the importance with its uncertainty and
verdict; marginal effects) and writes Optuna's plots to ``outputs/reports/<study>/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeper import analysis


class ReportError(RuntimeError):
    """A one-line reason why there is no report."""


def open_storage_to_read(storage: str | None):
    """The storage (never created: a missing journal is a ReportError) and its label."""
    try:
        from sweeper.study_storage import canonical, is_journal, journal_path, open_storage

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
        store, label = open_storage_to_read(storage)
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
    """A value as the report's table shows it: floats to 4 significant digits, as every
    number a person reads here (``399.3``, not ``399.333333``); the stored values keep full
    precision."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def build_report(
    study,
    top: int = 10,
    plots_dir: Path | None = None,
    *,
    html: bool | None = None,
    n_bootstrap: int = analysis.N_BOOTSTRAP,
) -> dict[str, Any]:
    """The report's data: :func:`sweeper.analysis.study_summary` plus the ``top`` trials
    (:func:`sweeper.analysis.ranked_trials`), the best trial's overrides and the plots
    written to ``plots_dir`` (HTML too with ``html``, see ``tracking.parent.write_plots``)."""
    summary = analysis.study_summary(study, n_bootstrap=n_bootstrap)
    best = analysis.best_trial(study)
    report = {
        **summary,
        "top": analysis.ranked_trials(study)[:top],
        "best_trial": best,
        "best_overrides": analysis.best_overrides(study, best) if best is not None else [],
        "retest": study.user_attrs.get(analysis.RETEST_ATTR),
        "plots": [],
    }
    if plots_dir is not None:
        from sweeper.tracking.parent import write_plots

        params = list(summary["importance"].get("values") or {})
        report["plots"] = write_plots(study, Path(plots_dir), params, html=html)
    return report


def _trial_cells(t) -> tuple[str, str, str]:
    """(value, 95% CI, n seeds) of a trial row: a complete trial's aggregate over its seeds,
    a pruned trial's last report (at a shorter budget)."""
    if analysis.is_complete(t):
        est = analysis.trial_estimate(t)
        ci = f"[{est.low:.4g}, {est.high:.4g}]" if est.low is not None else "-"
        return shown_value(float(t.value)), ci, str(est.n)
    last = analysis.last_report(t)
    if last is None:
        return "-", "-", "-"
    step, value = last
    return f"{shown_value(value)} (last report, step {step})", "-", "-"


def print_report(report: dict[str, Any], console=None) -> None:
    from rich.table import Table

    from sweeper.console import console as sweeper_console

    console = console or sweeper_console()
    c = report["trials"]
    title = (
        f"study {report['study_name']} ({report['direction']}): "
        f"{analysis.n_counted(c)} trials, {c['complete']} complete, "
        f"{c['pruned']} pruned, {c['failed']} failed"
        + (f", {c['running']} running" if c["running"] else "")
        + (f" ({c['uncounted']} stale/surplus not counted)" if c["uncounted"] else "")
    )
    params = sorted({k for t in report["top"] for k in t.params})
    seeded = [t for t in report["top"] if analysis.is_complete(t) and analysis.has_seeds(t)]
    hows = {analysis.aggregate_of(t) for t in seeded}
    label = analysis.LABELS.get(hows.pop(), "") if len(hows) == 1 else ""
    table = Table(title=title, title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("trial", justify="right")
    table.add_column("state")
    table.add_column(f"value ({label} over seeds)" if label else "value", justify="right")
    if seeded:
        table.add_column("95% CI", justify="right")
        table.add_column("n", justify="right")
    for p in params:
        table.add_column(p, justify="right")
    for rank, t in enumerate(report["top"], 1):
        value, ci, n = _trial_cells(t)
        table.add_row(
            str(rank),
            str(t.number),
            t.state.name,
            value,
            *([ci, n] if seeded else []),
            *[shown_value(t.params[p]) if p in t.params else "-" for p in params],
        )
    console.print(table)
    best = report["best"]
    if best is None:
        console.print("no complete trial yet: no best config")
    else:
        text = analysis.format_estimate(
            best["value"], best["ci_low"], best["ci_high"], best["n"], best["aggregate"]
        )
        seeds = f", seeds {', '.join(map(str, best['seeds']))}" if best.get("seeds") else ""
        console.print(f"best: trial {best['number']}, value {text}{seeds}", highlight=False)
        console.print("best config as overrides:")
        console.print(
            "  python -m sweeper.train " + " ".join(report["best_overrides"]),
            soft_wrap=True,
            highlight=False,
        )
    imp = report["importance"]
    head, values = analysis.importance_text(imp)
    console.print(f"{head}: {values}", soft_wrap=True, highlight=False)
    if imp.get("n_pruned"):
        console.print(imp["pruned"], highlight=False)
    console.print(f"most important hyperparameter: {imp['verdict']}", highlight=False)
    print_effects(report.get("marginal_effects") or {}, console)
    retest = report.get("retest")
    if retest:
        console.print("re-tested on unseen test seeds:", highlight=False)
        for line in analysis.retest_lines(retest):
            console.print(f"  {line}", soft_wrap=True, highlight=False)
    if report["plots"]:
        folder = Path(report["plots"][0]).parent
        names = ", ".join(sorted({Path(p).name for p in report["plots"]}))
        console.print(f"plots in {folder}: {names}", soft_wrap=True, highlight=False)


def print_effects(effects: dict[str, list[dict[str, Any]]], console) -> None:
    """One table per parameter: per value (or quantile bin) the complete trials' per-seed
    values pooled, IQM [95% CI] (n), and the trials pruned there."""
    from rich.table import Table

    for param, rows in effects.items():
        if len(rows) < 2:
            continue
        table = Table(
            title=f"{param}: complete trials, seeds pooled; pruned trials counted apart "
            "(stopped at a shorter budget)",
            title_justify="left",
        )
        table.add_column(param)
        table.add_column("trials", justify="right")
        table.add_column("IQM [95% CI] (n runs)", justify="right")
        table.add_column("pruned", justify="right")
        for row in rows:
            if row["iqm"] is None:
                est = "-"
            elif row["ci_low"] is None:
                est = f"{row['iqm']:.4g} (n={row['n']}, no CI)"
            else:
                lo, hi = row["ci_low"], row["ci_high"]
                est = f"{row['iqm']:.4g} [{lo:.4g}, {hi:.4g}] (n={row['n']})"
            pruned = str(row["n_pruned"])
            if row.get("pruned_last_iqm") is not None:
                lo, hi = row["pruned_steps"]
                steps = f"step {lo}" if lo == hi else f"steps {lo}-{hi}"
                pruned += f" (last reports IQM {row['pruned_last_iqm']:.4g} at {steps})"
            table.add_row(row["label"], str(row["n_trials"]), est, pruned)
        console.print(table)
