"""Every command ends with a summary, also when piped (``sweeper.run_summary``): a single run's
block with values read back from its files and its MLflow run, a basic multirun's job table
with the aggregate over seeds, the lines in the run's Hydra log file, full-width tables."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sweeper.config import compose_config
from sweeper.config_hash import config_hash
from sweeper.console import BELOW, PIPED_WIDTH
from sweeper.statistics import estimate

OVERRIDES = ["agent=q_learning", "env=gridworld", "train.episodes=40", "eval.every=20"]


def app(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweeper.train", *args],
        cwd=cwd,
        capture_output=True,  # stdout is a pipe, not a terminal
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "", **(env or {})},  # pytest exports COLUMNS=80
    )


def row(text: str, key: str) -> str:
    """The value cell of a summary row ``key`` (rich box-drawn table, one line per row), or,
    for a path or command too long for its cell, its ``key: value`` line below the table."""
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line) if c.strip()]
        if len(cells) >= 2 and cells[0] == key:
            if cells[1] != BELOW:
                return cells[1]
            below = [ln for ln in text.splitlines() if ln.startswith(f"{key}: ")]
            assert len(below) == 1, text
            return below[0].removeprefix(f"{key}: ")
    raise AssertionError(f"no row {key!r} in:\n{text}")


def test_a_piped_single_run_ends_with_its_summary_and_logs_it(tmp_path):
    # a long run dir: piped output is not cut at 80 columns
    out = tmp_path / ("a-run-directory-with-a-long-name-" * 3) / "run"
    res = app(*OVERRIDES, f"hydra.run.dir={out}", cwd=tmp_path, env={"COLUMNS": ""})
    assert res.returncode == 0, res.stderr
    result = json.loads((out / "result.json").read_text())
    assert row(res.stdout, "status") == "FINISHED"
    assert row(res.stdout, "objective (final_eval_mean)") == f"{result['objective']:.4g}"
    mean, std = result["eval_means"][-1], result["eval_stds"][-1]
    assert row(res.stdout, "greedy eval (last)") == f"{mean:.4g} ± {std:.4g} over 10 episodes"
    steps = int((out / "episodes.csv").read_text().splitlines()[-1].split(",")[1])
    assert row(res.stdout, "episodes / env steps") == f"40 / {steps}"
    assert re.fullmatch(r"\d+\.\d s", row(res.stdout, "wall time"))
    assert row(res.stdout, "output dir") == str(out)  # whole, on one line (below the table)
    table = [ln for ln in res.stdout.splitlines() if ln[:1] in "┌│└"]
    assert max(len(ln) for ln in table) <= PIPED_WIDTH  # a table that reads in a log
    digest = config_hash(compose_config(OVERRIDES))
    assert row(res.stdout, "config hash") == digest
    assert row(res.stdout, "or") == f"sweeper reproduce {digest[:12]}"
    assert row(res.stdout, "reproduce") == (  # the config's overrides (not Hydra's own)
        "python -m sweeper.train agent=q_learning env=gridworld train.episodes=40 eval.every=20"
    )
    run_id = re.fullmatch(r"[0-9a-f]{32}", row(res.stdout, "MLflow run"))
    assert run_id, row(res.stdout, "MLflow run")
    uri = row(res.stdout, "tracking URI")  # whole, in its cell or below the table
    assert uri.startswith("sqlite:"), uri
    from mlflow import MlflowClient

    run = MlflowClient(uri).get_run(run_id.group(0))
    assert run.data.tags["config_hash"] == digest
    assert run.data.metrics["objective"] == pytest.approx(result["objective"])
    log = (out / "train.log").read_text()
    assert f"config hash: {digest}" in log and f"MLflow run: {run_id.group(0)}" in log
    assert "objective (final_eval_mean): " in log


def test_a_piped_basic_multirun_over_seeds_ends_with_its_jobs_and_their_aggregate(tmp_path):
    sweep = tmp_path / "sweep"
    res = app(
        "-m",
        *OVERRIDES,
        "seed=1,2,3",
        "tracking.enabled=false",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert "multirun " in res.stdout and "(3 jobs)" in res.stdout
    objectives = []
    for job in range(3):
        result = json.loads((sweep / str(job) / "result.json").read_text())
        objectives.append(result["objective"])
        line = next(ln for ln in res.stdout.splitlines() if "│" in ln and f"seed={job + 1} " in ln)
        cells = [c.strip() for c in re.split(r"[│┃]", line) if c.strip()]
        assert cells[0] == str(job) and cells[1] == f"seed={job + 1}"  # what tells jobs apart
        assert cells[2] == "FINISHED" and cells[3] == f"{result['objective']:.4g}"
        assert "config hash: " in (sweep / str(job) / "train.log").read_text()
    # what every job shares and where the jobs are, whole below the table
    assert f"every job: {' '.join(OVERRIDES)} tracking.enabled=False" in res.stdout.splitlines()
    assert f"sweep dir: {sweep} (job N in {sweep / 'N'})" in res.stdout.splitlines()
    est = estimate(objectives, "iqm")
    assert (
        f"over seeds: IQM {est.value:.4g} [{est.low:.4g}, {est.high:.4g}] "
        "(95% bootstrap CI, n=3 of 3 jobs)"
    ) in res.stdout


def test_columns_sets_the_width_of_piped_tables(tmp_path):
    out = tmp_path / ("long-directory-name-" * 4) / "run"
    res = app(
        *OVERRIDES,
        f"hydra.run.dir={out}",
        "tracking.enabled=false",
        cwd=tmp_path,
        env={"COLUMNS": "70"},
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    table = [ln for ln in lines if ln[:1] in "┌│└"]
    assert table and max(len(line) for line in table) <= 70
    assert row(res.stdout, "MLflow run") == "tracking off"
    # the path is too long for a 70-column cell: whole on its own line below the table
    assert any("output dir" in ln and BELOW in ln for ln in table), res.stdout
    assert f"output dir: {out}" in lines and row(res.stdout, "output dir") == str(out)


def test_a_list_override_is_printed_whole_in_the_reproduce_line(tmp_path):
    """``[soft,hard]`` in an override is a value, not rich markup (which rich would drop as
    an unknown style tag): the reproduce line keeps it."""
    args = ["agent=q_learning", "env=f1_spa", "train.episodes=5", "eval.every=5",
            "+env.kwargs.compounds=[soft,hard]", "+env.kwargs.start_compound=soft"]  # fmt: skip
    res = app(*args, "tracking.enabled=false", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert " '+env.kwargs.compounds=[soft,hard]' " in row(res.stdout, "reproduce")
