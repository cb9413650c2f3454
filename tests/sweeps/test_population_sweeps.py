"""``hydra.sweeper.population=K``: real sweeps whose trials train as one population.

Real Optuna studies (journal storage), the real app, a real embedded MLflow store, and a real
kill -9 of the sweeper. Each packed trial must stay its own Optuna trial and MLflow run, be
pruned alone, and hand its slot to the next trial at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sweep_helpers import clean_env, journal, only_study, run_sweep, states, sweep_cmd

from sweeper.sweeps._impl import counts

TABULAR = [
    "hydra/sweeper=sweeper_optuna",
    "hydra.sweeper.retest.enabled=false",
    "agent=q_learning",
    "env=gridworld",
    "eval.every=10",
    "eval.episodes=2",
    "train.plot=false",
    "train.progress=false",
]


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def mlflow_runs(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    from sweeper.tracking import store

    client = MlflowClient(store.sqlite_uri(tmp_path / "outputs" / "mlflow.db"))
    return store.search_all_runs(client, "", max_results=1000)


def test_packed_trials_are_their_own_trials_and_runs_pruned_alone_without_a_barrier(tmp_path):
    """8 trials, 4 at a time, 2 seeds each (a population of 8 members): alpha 0.001 barely
    learns, so the median pruner stops such trials while the others in the same population
    train on; the slots refill as trials end."""
    proc = run_sweep(
        tmp_path,
        "app",
        *TABULAR,
        "hydra.sweeper.population=4",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.seeds=2",
        "hydra/sweeper/sampler=grid",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.kwargs.n_startup_trials=1",
        "hydra.sweeper.pruner.warmup_steps=0",
        "train.episodes=100",
        "agent.alpha=choice(0.001,0.5)",
        "agent.epsilon_decay=choice(0.9,0.95,0.99,0.995)",
    )
    _ok(proc)
    study = only_study(journal(tmp_path))
    trials = study.get_trials()
    assert len(trials) == 8 and all(t.state.is_finished() for t in trials), states(study)
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert pruned and complete and len(pruned) + len(complete) == 8, states(study)
    assert all(t.params["agent.alpha"] == 0.001 for t in pruned)
    for t in complete:  # every evaluation reported, by this trial alone
        assert sorted(t.intermediate_values) == list(range(10, 101, 10))
        assert len(t.user_attrs["objective_per_seed"]) == 2
    for t in pruned:
        assert t.intermediate_values and max(t.intermediate_values) < 100
    # no batch barrier: a later trial started while one of the first four still trained
    first = [t for t in trials if t.number < 4]
    later = [t for t in trials if t.number >= 4]
    assert any(s.datetime_start < f.datetime_complete for s in later for f in first), [
        (t.number, t.datetime_start, t.datetime_complete) for t in trials
    ]
    # one MLflow run per trial with that trial's params, its seeds nested under it
    runs = mlflow_runs(tmp_path)
    by_trial: dict[int, list] = {}
    for r in runs:
        if "trial_number" in r.data.tags:
            by_trial.setdefault(int(r.data.tags["trial_number"]), []).append(r)
    assert sorted(by_trial) == list(range(8))
    for t in trials:
        group = [r for r in by_trial[t.number] if r.data.tags.get("replicate") != "true"]
        seeds = [r for r in by_trial[t.number] if r.data.tags.get("replicate") == "true"]
        assert len(group) == 1 and len(seeds) == 2
        (run,) = group
        assert float(run.data.params["agent.alpha"]) == t.params["agent.alpha"]
        assert float(run.data.params["agent.epsilon_decay"]) == t.params["agent.epsilon_decay"]
        want = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}[t.state.name]
        assert run.info.status == want
        assert {s.data.tags["mlflow.parentRunId"] for s in seeds} == {run.info.run_id}
        out = Path(t.user_attrs["sweeper:output_dir"])
        assert {p.name for p in out.iterdir() if p.is_dir()} == {
            f"seed_{s}" for s in t.user_attrs["sweeper:seeds"]
        }


def test_a_packed_trial_equals_the_same_trial_run_alone(tmp_path):
    """Packing changes no trial's numbers: each packed trial's value is the one the same
    config and seeds give in an ordinary sweep (one job per trial), and its MLflow runs carry
    the same config hashes (what ``sweeper reproduce`` finds a run by)."""
    args = [
        *TABULAR,
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.seeds=2",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.pruner.name=none",
        "train.episodes=40",
        "agent.alpha=choice(0.1,0.5)",
        "agent.gamma=choice(0.9,0.99)",
    ]
    packed, alone = tmp_path / "packed", tmp_path / "alone"
    packed.mkdir()
    alone.mkdir()
    _ok(run_sweep(packed, "app", *args, "hydra.sweeper.population=4"))
    _ok(run_sweep(alone, "app", *args))

    def values(where: Path) -> dict:
        study = only_study(journal(where))
        return {tuple(sorted(t.params.items())): t.value for t in study.get_trials()}

    assert values(packed) == values(alone) and len(values(packed)) == 4

    def hashes(where: Path) -> set:
        return {
            (r.data.params["agent.alpha"], r.data.params["agent.gamma"], r.data.tags["config_hash"])
            for r in mlflow_runs(where)
            if "trial_number" in r.data.tags
        }

    assert hashes(packed) == hashes(alone) and len(hashes(packed)) == 12  # 4 trials + 8 seeds


def test_resume_after_kill_9_counts_exactly(tmp_path):
    args = [
        *TABULAR,
        "tracking.enabled=false",
        "hydra.sweeper.population=3",
        "hydra.sweeper.n_trials=7",
        "hydra.sweeper.pruner.name=none",
        "train.episodes=3000",
        "eval.every=500",
        "agent.alpha=interval(0.05,0.5)",
    ]
    cmd = sweep_cmd(
        "app",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"hydra.sweeper.storage={journal(tmp_path)}",
        *args,
    )
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=clean_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def midway() -> bool:
        try:
            study = only_study(journal(tmp_path))
        except (AssertionError, Exception):  # noqa: BLE001 - not created yet
            return False
        done = len(study.get_trials(states=(TrialState.COMPLETE,)))
        return done >= 1 and len(study.get_trials(states=(TrialState.RUNNING,))) == 3

    try:
        end = time.time() + 180
        while time.time() < end and not midway():
            time.sleep(0.2)
        assert midway(), "the sweep never got going"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    study = only_study(journal(tmp_path))
    killed = {t.number for t in study.get_trials(states=(TrialState.RUNNING,))}
    assert len(killed) == 3
    restart = run_sweep(tmp_path, "app", *args, timeout=400)  # the same command
    _ok(restart)
    study = only_study(journal(tmp_path))
    trials = study.get_trials()
    assert len([t for t in trials if counts(t)]) == 7
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 7
    stale = [t for t in trials if not counts(t)]
    assert {t.number for t in stale} == killed
    assert all(t.state == TrialState.FAIL for t in stale)
    assert len(trials) == 10  # 7 counted + the 3 killed; only the missing trials ran


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["hydra.sweeper.population=0"], "hydra.sweeper.population: must be >= 1"),
        (
            ["hydra.sweeper.population=2", "hydra.sweeper.n_jobs=2"],
            "hydra.sweeper.population: a population trains its trials in one process",
        ),
    ],
)
def test_bad_population_settings_fail_before_any_trial_with_one_line(tmp_path, overrides, message):
    proc = run_sweep(tmp_path, "app", *TABULAR, "agent.alpha=interval(0.1,0.5)", *overrides)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("sweeper: ") and message in lines[-1], proc.stderr[-2000:]
    assert not (tmp_path / "journal.log").exists() or not optuna.get_all_study_names(
        optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log"))
        )
    )


def test_the_toy_app_cannot_be_packed(tmp_path):
    proc = run_sweep(tmp_path, "toy", "x=interval(-2,2)", "hydra.sweeper.population=2")
    assert proc.returncode != 0
    assert "hydra.sweeper.population: this app is not sweeper.train" in proc.stderr
