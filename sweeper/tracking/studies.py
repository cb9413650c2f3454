"""``sweeper studies``: the studies in a storage, one row each, newest activity first.

Why: study names are derived (``sensitivity-grid-88904aaa1b``) so that the same command
resumes the same study; a user who ran a few sweeps needs to see which is which: the sweep
config it came from, its sampler and seed, how many trials ended how, the best value with its
CI over seeds, when it was created and when a trial last started or ended.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from sweeper import analysis


def _when(t: datetime.datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def study_rows(storage: Any) -> list[dict[str, Any]]:
    """One plain-data row per study in ``storage`` (an Optuna storage object)."""
    import optuna

    rows = []
    for name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        starts = [t.datetime_start for t in trials if t.datetime_start]
        ends = [t.datetime_complete for t in trials if t.datetime_complete]
        attrs = study.user_attrs
        sampler = attrs.get(analysis.SAMPLER_ATTR) or {}
        best = analysis.best_summary(study) if len(study.directions) == 1 else None
        rows.append(
            {
                "name": name,
                "sweep": attrs.get(analysis.SWEEP_ATTR),
                "sampler": sampler.get("name"),
                "sampler_seed": sampler.get("seed"),
                "direction": study.direction.name.lower() if len(study.directions) == 1 else "-",
                "trials": analysis.tally(trials),
                "best": best,
                "created": min(starts) if starts else None,
                "last_active": max(starts + ends) if starts or ends else None,
            }
        )
    rows.sort(key=lambda r: r["last_active"] or datetime.datetime.min, reverse=True)
    return rows


def _trials_text(c: dict[str, int]) -> str:
    parts = [f"{c['complete']} complete", f"{c['pruned']} pruned", f"{c['failed']} failed"]
    if c["running"]:
        parts.append(f"{c['running']} running")
    if c.get("waiting"):
        parts.append(f"{c['waiting']} queued")
    return ", ".join(parts)


def _best_text(best: dict[str, Any] | None) -> str:
    if not best:
        return "-"
    value = analysis.format_estimate(
        best["value"], best["ci_low"], best["ci_high"], best["n"], best["aggregate"]
    )
    return f"{value} (trial {best['number']})"


def print_studies(rows: Sequence[dict[str, Any]], label: str) -> None:
    from rich.table import Table

    from sweeper.console import console

    table = Table(title=f"{len(rows)} {'study' if len(rows) == 1 else 'studies'} in {label}")
    for column in ("study", "sweep", "sampler (seed)", "trials", "best", "created", "last active"):
        table.add_column(column)
    for r in rows:
        sampler = r["sampler"] or "-"
        if r["sampler_seed"] is not None:
            sampler += f" ({r['sampler_seed']})"
        table.add_row(
            r["name"],
            r["sweep"] or "-",
            sampler,
            _trials_text(r["trials"]),
            _best_text(r["best"]),
            _when(r["created"]),
            _when(r["last_active"]),
        )
    console().print(table)
