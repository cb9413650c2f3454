"""Helpers for the sweeper tests: subprocess sweeps with tiny budgets in tmp_path.

Imported as ``sweep_helpers`` (pytest puts this directory on sys.path; the unique name avoids
clashes with other test directories).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[2]
TOY = Path(__file__).resolve().parent / "apps" / "toy.py"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def sweep_cmd(app: str, *overrides: str) -> list[str]:
    optuna_sweep = any(
        o == "hydra/sweeper=sweeper_optuna" or o.startswith("+sweep=") for o in overrides
    )
    if app != "toy" and optuna_sweep and not any("retest" in o for o in overrides):
        # the re-test on unseen seeds (default on) has tests of its own; here it would only
        # add 3 x 10 runs to every sweep
        overrides = (*overrides, "hydra.sweeper.retest.enabled=false")
    if app == "toy":
        return [sys.executable, str(TOY), "-m", *overrides]
    if app == "app-nom":  # a ready-made sweep config sets hydra.mode=MULTIRUN itself
        return [sys.executable, "-m", "sweeper.train", *overrides]
    return [sys.executable, "-m", "sweeper.train", "-m", *overrides]


def run_sweep(
    tmp_path: Path, app: str, *overrides: str, storage: str | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    """One sweep in a subprocess, cwd tmp_path, sweep dir tmp_path/sweep."""
    storage = storage or f"journal:{tmp_path / 'journal.log'}"
    cmd = sweep_cmd(
        app,
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"hydra.sweeper.storage={storage}",
        *overrides,
    )
    return subprocess.run(
        cmd, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=timeout
    )


def only_study(storage: str) -> optuna.Study:
    from sweeper.study_storage import open_storage

    st = open_storage(storage)
    names = optuna.get_all_study_names(st)
    assert len(names) == 1, names
    return optuna.load_study(study_name=names[0], storage=st)


def journal(tmp_path: Path) -> str:
    return f"journal:{tmp_path / 'journal.log'}"


def states(study: optuna.Study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def sweep_children(pid: int) -> set[int]:
    """The pids of every descendant of process ``pid`` (children, their children, ...: trial
    workers are children of the sweeper's fork server), from ``/proc``, no psutil."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def audit(study: optuna.Study, runs: list, n_trials: int | None = None) -> dict[str, int]:
    """Both stores agree after a sweep: no MLflow run RUNNING, every ended run says why
    (``outcome``), one run per trial and per (trial, seed), one per test run; with
    ``n_trials``, that many counted trials. Returns the runs' outcomes counted."""
    from sweeper.analysis import counts

    running = [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    assert not running, f"{len(running)} runs left RUNNING: {running[:5]}"
    keys: dict[tuple, int] = {}
    outcomes: dict[str, int] = {}
    for r in runs:
        tags = r.data.tags
        assert "outcome" in tags, (r.info.run_name, r.info.status)
        outcomes[tags["outcome"]] = outcomes.get(tags["outcome"], 0) + 1
        if tags.get("sweeper.role") == "parent":
            continue
        key = (tags.get("trial_number"), tags.get("test_of_trial"), tags.get("seed"))
        keys[key] = keys.get(key, 0) + 1
    twice = [k for k, n in keys.items() if n > 1]
    assert not twice, f"two runs for (trial, test of, seed) {twice[:5]}"
    trials = study.get_trials(deepcopy=False)
    numbers = {k[0] for k in keys if k[0] is not None}
    assert {str(t.number) for t in trials if t.state.name == "COMPLETE"} <= numbers
    assert not [t.number for t in trials if t.state.name == "RUNNING"], states(study)
    if n_trials is not None:
        assert len([t for t in trials if counts(t)]) == n_trials, states(study)
    return outcomes
