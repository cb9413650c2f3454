"""Studies are easy to find: a changed sampler seed is another study (never a silent resume
of the old one), a resumed study says so in its first line, and ``sweeper studies`` lists the
studies of a storage with their sweep, sampler, trials by state and best value."""

from __future__ import annotations

import re
import subprocess
import sys

from sweep_helpers import clean_env, journal, run_sweep

from sweeper.study_storage import open_storage

SWEEP = (
    "hydra/sweeper=sweeper_optuna",
    "hydra/sweeper/sampler=random",
    "hydra.sweeper.n_trials=2",
    "agent=q_learning",
    "env=gridworld",
    "train.episodes=20",
    "eval.every=10",
    "eval.episodes=2",
    "tracking.enabled=false",
    "agent.alpha=interval(0.05,0.5)",
)


def first_line(res: subprocess.CompletedProcess) -> str:
    text = res.stdout + res.stderr
    return next(ln for ln in text.splitlines() if "study " in ln and "trials done" in ln)


def test_a_changed_sampler_seed_is_another_study_and_a_resume_says_so(tmp_path):
    import optuna

    first = run_sweep(tmp_path, "app", *SWEEP, "hydra.sweeper.sampler.seed=1")
    assert first.returncode == 0, first.stderr
    line = first_line(first)
    assert re.search(r"\] study q_learning-gridworld-random-[0-9a-f]{10} \(", line), line
    assert "0/2 trials done" in line

    other = run_sweep(tmp_path, "app", *SWEEP, "hydra.sweeper.sampler.seed=2")
    assert other.returncode == 0, other.stderr
    assert "0/2 trials done" in first_line(other)  # not "2/2 done, nothing to do"
    storage = open_storage(journal(tmp_path))
    names = optuna.get_all_study_names(storage)
    assert len(names) == 2, names
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        assert len(study.trials) == 2
        assert study.user_attrs["sweeper:sampler"]["name"] == "random"
    seeds = {
        optuna.load_study(study_name=n, storage=storage).user_attrs["sweeper:sampler"]["seed"]
        for n in names
    }
    assert seeds == {1, 2}

    again = run_sweep(tmp_path, "app", *SWEEP, "hydra.sweeper.sampler.seed=1")
    assert again.returncode == 0, again.stderr
    line = first_line(again)
    assert "resuming study q_learning-gridworld-random-" in line and "2/2 trials done" in line
    assert "a fresh one: another hydra.sweeper.study_name=NAME" in again.stdout + again.stderr
    assert len(optuna.get_all_study_names(storage)) == 2

    listed = subprocess.run(
        [sys.executable, "-m", "sweeper.cli", "studies", "--storage", journal(tmp_path)],
        cwd=tmp_path,
        env=clean_env(COLUMNS="250"),  # a row a line (piped, the table is 120 wide)
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert f"2 studies in {journal(tmp_path)}" in listed.stdout
    for name in names:
        study = optuna.load_study(study_name=name, storage=storage)
        row = next(ln for ln in listed.stdout.splitlines() if name in ln)
        cells = [c.strip() for c in re.split(r"[│┃]", row) if c.strip()]
        seed = study.user_attrs["sweeper:sampler"]["seed"]
        assert cells[:4] == [name, "-", f"random ({seed})", "2 complete, 0 pruned, 0 failed"]
        assert cells[4] == (  # one tuning seed per trial (the default): an IQM with no CI
            f"IQM {study.best_value:.4g} (n=1 seeds, no CI) (trial {study.best_trial.number})"
        )
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", cells[5])
    # the study the last command resumed is the most recently active: listed first
    rows = [ln for ln in listed.stdout.splitlines() if "q_learning-gridworld" in ln]
    resumed = re.search(r"(q_learning-gridworld-random-[0-9a-f]{10})", line).group(1)
    assert resumed in rows[0] or resumed in rows[1]


def test_studies_on_an_empty_place_creates_nothing(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "sweeper.cli", "studies"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1
    assert res.stderr.strip().startswith("sweeper: studies: no study storage at ")
    assert not (tmp_path / "outputs").exists()
