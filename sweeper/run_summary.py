"""What a command prints when it ends: a single run's summary and a Hydra multirun's table.

Why: a run that ends silently leaves the user hunting for its result (which directory, which
MLflow run, what objective). Every single run ends with the same block whether or not stdout
is a terminal (the progress bar is transient; this is what stays): objective, the last greedy
evaluation, episodes and steps, wall time, output directory, MLflow run id, config hash and
the command that reproduces it. A Hydra multirun with the basic or joblib launcher ends with
one row per job, read back from the jobs' ``result.json`` (so it works for any launcher), and,
when its jobs differ only in ``seed``, their aggregate with a bootstrap CI. The same lines go
to the run's Hydra log file (``<run dir>/train.log``, also for each job of a multirun), as
Hydra users expect.

Tables are printed by :func:`sweeper.console.console` (a log's width when piped); a path or
a command too long for its cell is printed whole below the table, to be copied.
"""

from __future__ import annotations

import json
import logging
import math
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback

from sweeper.console import console, print_rows, print_verbatim

log = logging.getLogger("sweeper.summary")

APP_COMMAND = "python -m sweeper.train"


def to_log_file(lines: Sequence[str]) -> None:
    """``lines`` to the log files of the root logger's file handlers only (Hydra's
    ``<run dir>/<job name>.log``): the console already shows them as a table."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    for line in lines:
        record = log.makeRecord(log.name, logging.INFO, __file__, 0, line, (), None)
        for handler in handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


def reproduce_command(task_overrides: Sequence[str]) -> str:
    """The command line that trains the same config again (the run's own overrides)."""
    return " ".join([APP_COMMAND, *(shlex.quote(o) for o in task_overrides)])


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def single_run_rows(
    result: Mapping[str, Any],
    *,
    output_dir: Path,
    wall_s: float,
    config_hash: str,
    run_id: str | None,
    tracking: str,
    reproduce: str,
) -> list[tuple[str, str]]:
    """The rows of a single run's summary, from its ``result.json`` content."""
    rows = [("status", str(result.get("status")))]
    if result.get("error"):
        rows.append(("error", str(result["error"])))
    name = result.get("objective_name")
    if result.get("runs"):  # a replicate group: per seed and the aggregate with its CI
        how = result.get("aggregate", "iqm")
        per_seed = result.get("objective_per_seed") or []
        seeds = [r.removeprefix("seed_") for r in result["runs"]]
        low, high = result.get(f"objective_{how}_ci_low"), result.get(f"objective_{how}_ci_high")
        ci = f" [{_number(low)}, {_number(high)}]" if low is not None else ""
        rows.append(
            (
                f"objective ({name})",
                f"{how.upper() if how == 'iqm' else how} {_number(result.get('objective'))}{ci} "
                f"(95% bootstrap CI, n={len(per_seed)} seeds)",
            )
        )
        rows.append(
            (
                "per seed",
                ", ".join(f"{s}: {_number(v)}" for s, v in zip(seeds, per_seed, strict=False)),
            )
        )
    else:
        rows.append((f"objective ({name})", _number(result.get("objective"))))
        means, stds = result.get("eval_means") or [], result.get("eval_stds") or []
        if means:
            spread = f" ± {_number(stds[-1])}" if stds else ""
            rows.append(
                (
                    "greedy eval (last)",
                    f"{_number(means[-1])}{spread} over {result.get('eval_episodes')} episodes",
                )
            )
        rows.append(("episodes / env steps", f"{result.get('episodes')} / {result.get('steps')}"))
    rows += [
        ("wall time", f"{wall_s:.1f} s"),
        ("output dir", str(output_dir)),
        ("MLflow run", run_id or tracking),
        *([("tracking URI", tracking)] if run_id else []),
        ("config hash", config_hash),
        ("reproduce", reproduce),
        ("or", f"sweeper reproduce {config_hash[:12]}"),
    ]
    return rows


#: Rows a reader copies: printed whole below the table when they do not fit their cell.
VERBATIM = ("output dir", "tracking URI", "reproduce")


def print_single_run(rows: Sequence[tuple[str, str]], title: str) -> None:
    print_rows(title, rows, VERBATIM)
    to_log_file([f"{title}: {key}: {value}" for key, value in rows])


# -- a Hydra multirun ----------------------------------------------------------------------------
def _job_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job directory of a multirun: its number, overrides and result."""
    import yaml

    rows = []
    for result_file in sweep_dir.glob("*/result.json"):
        job_dir = result_file.parent
        try:
            result = json.loads(result_file.read_text())
        except (OSError, ValueError):
            continue
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        try:
            overrides = list(yaml.safe_load(overrides_file.read_text()) or [])
        except (OSError, ValueError):
            overrides = []
        rows.append(
            {
                "job": job_dir.name,
                "overrides": [str(o) for o in overrides],
                "status": result.get("status"),
                "objective": result.get("objective"),
                "objective_name": result.get("objective_name"),
                "episodes": result.get("episodes"),
                "dir": str(job_dir),
            }
        )
    return sorted(rows, key=_job_order)


def _job_order(row: Mapping[str, Any]) -> tuple:
    job = row["job"]
    return (0, int(job), "") if job.isdigit() else (1, 0, job)


def _seed_only(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Do the jobs differ only in their ``seed=`` override?"""
    if len(rows) < 2:
        return False
    rest = {tuple(o for o in r["overrides"] if not o.startswith("seed=")) for r in rows}
    seeds = {tuple(o for o in r["overrides"] if o.startswith("seed=")) for r in rows}
    return len(rest) == 1 and len(seeds) == len(rows)


def multirun_lines(sweep_dir: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The jobs' rows, and the aggregate line when they differ only in their seed."""
    from sweeper.statistics import estimate

    rows = _job_rows(sweep_dir)
    if not _seed_only(rows):
        return rows, None
    values = [r["objective"] for r in rows if r["objective"] is not None]
    if not values:
        return rows, None
    est = estimate([float(v) for v in values], "iqm")
    ci = f" [{est.low:.4g}, {est.high:.4g}]" if est.low is not None else ""
    return rows, (
        f"over seeds: IQM {est.value:.4g}{ci} (95% bootstrap CI, n={est.n} of {len(rows)} jobs)"
    )


def _common(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The overrides every job has (in the first job's order)."""
    shared = set.intersection(*(set(r["overrides"]) for r in rows)) if rows else set()
    return [o for o in rows[0]["overrides"] if o in shared] if rows else []


class MultirunSummary(HydraCallback):
    """Hydra callback (``hydra.callbacks.summary``): at the end of a multirun, the table of
    its jobs. The Optuna sweeper of this project prints its own study summary instead.

    The table shows what tells the jobs apart (the overrides they do not share); the
    overrides they share and the sweep dir (job ``N`` in ``<sweep dir>/N``) follow it whole,
    to be copied."""

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        target = str(config.hydra.sweeper.get("_target_", ""))
        if "sweeper_optuna" in target:
            return
        from rich.table import Table
        from rich.text import Text

        sweep_dir = Path(str(config.hydra.sweep.dir))
        rows, aggregate_line = multirun_lines(sweep_dir)
        if not rows:
            return
        common = _common(rows)
        name = rows[0]["objective_name"] or "objective"
        table = Table(title=f"multirun ({len(rows)} jobs)")
        for column in ("job", "overrides", "status", name, "episodes"):
            table.add_column(column, justify="right" if column in (name, "episodes") else "left")
        for r in rows:
            cells = [
                r["job"],
                " ".join(o for o in r["overrides"] if o not in common),
                str(r["status"]),
                _number(r["objective"]),
                _number(r["episodes"]),
            ]
            table.add_row(*(Text(c) for c in cells))
        out = console()
        out.print(table)
        if common:
            print_verbatim(out, "every job", " ".join(common))
        print_verbatim(out, "sweep dir", f"{sweep_dir} (job N in {sweep_dir / 'N'})")
        if aggregate_line:
            out.print(aggregate_line)
