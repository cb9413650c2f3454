"""``hydra.sweeper.population=K``: real sweeps whose trials train as one population.

Real Optuna studies (journal storage), the real app, a real embedded MLflow store, and a real
kill -9 of the sweeper. Each packed trial must stay its own Optuna trial and MLflow run, be
pruned alone, and hand its slot to the next trial at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sweep_helpers import (
    audit,
    clean_env,
    journal,
    only_study,
    run_sweep,
    states,
    sweep_children,
    sweep_cmd,
)

from sweeper.analysis import counts
from sweeper.sweeps.packing import WORKER_PID

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
PARALLEL = ["hydra/launcher=isolated", "hydra.sweeper.n_jobs=2"]  # J populations, J workers


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def running_runs(tmp_path: Path) -> set[str]:
    """The trial numbers of the runs RUNNING in the sweep's MLflow store (read directly)."""
    import sqlite3

    db = tmp_path / "outputs" / "mlflow.db"
    if not db.is_file():
        return set()
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            rows = con.execute(
                "select value from tags where key = 'trial_number' and run_uuid in "
                "(select run_uuid from runs where status = 'RUNNING')"
            ).fetchall()
    except sqlite3.Error:  # not created yet, or busy
        return set()
    return {r[0] for r in rows}


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


@pytest.mark.parametrize("jobs", [1, 2])
def test_resume_after_kill_9_counts_exactly(tmp_path, jobs):
    """kill -9 of the sweeper (its population workers, n_jobs=2, die with it): the same
    command fails the trials it left RUNNING as stale and runs only the missing ones."""
    n_trials = 7 if jobs == 1 else 10
    args = [
        *TABULAR,
        *(PARALLEL if jobs > 1 else []),
        "tracking.enabled=false",
        "hydra.sweeper.population=3",
        f"hydra.sweeper.n_trials={n_trials}",
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
        # a population in flight after one has finished (with two workers the second may be
        # between populations at the moment of the kill: how many run then is a race)
        return done >= 1 and len(study.get_trials(states=(TrialState.RUNNING,))) >= 3

    try:
        end = time.time() + 180
        while time.time() < end and not midway():
            time.sleep(0.2)
        assert midway(), "the sweep never got going"
        children = sweep_children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # the sweeper alone: its workers must follow it
        proc.wait()
        end = time.time() + 20
        while time.time() < end and any(Path(f"/proc/{c}").exists() for c in children):
            time.sleep(0.2)
        assert not any(Path(f"/proc/{c}").exists() for c in children), children
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group is gone, as it should be
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    study = only_study(journal(tmp_path))
    killed = {t.number for t in study.get_trials(states=(TrialState.RUNNING,))}
    assert 3 <= len(killed) <= 3 * jobs
    restart = run_sweep(tmp_path, "app", *args, timeout=400)  # the same command
    _ok(restart)
    study = only_study(journal(tmp_path))
    trials = study.get_trials()
    assert len([t for t in trials if counts(t)]) == n_trials
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == n_trials
    stale = [t for t in trials if not counts(t)]
    assert {t.number for t in stale} == killed
    assert all(t.state == TrialState.FAIL for t in stale)
    assert len(trials) == n_trials + len(killed)  # only the missing trials ran


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["hydra.sweeper.population=0"], "hydra.sweeper.population: must be >= 1"),
        (
            ["hydra.sweeper.population=3", "hydra.sweeper.n_jobs=2", "hydra/launcher=joblib"],
            "hydra.sweeper.population=3 with hydra.sweeper.n_jobs=2 trains 2 populations on "
            "worker processes: needs hydra/launcher=isolated (got joblib)",
        ),
    ],
)
def test_bad_population_settings_fail_before_any_trial_with_one_line(tmp_path, overrides, message):
    proc = run_sweep(tmp_path, "app", *TABULAR, "agent.alpha=interval(0.1,0.5)", *overrides)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("sweeper: ") and message in lines[-1], proc.stderr[-2000:]
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "outputs").exists()
    assert not (tmp_path / "journal.log").exists() or not optuna.get_all_study_names(
        optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log"))
        )
    )


def test_the_toy_app_cannot_be_packed(tmp_path):
    proc = run_sweep(tmp_path, "toy", "x=interval(-2,2)", "hydra.sweeper.population=2")
    assert proc.returncode != 0
    assert "hydra.sweeper.population: this app is not sweeper.train" in proc.stderr


# -- J populations on J worker processes (n_jobs > 1) ------------------------------------------


def test_packed_slots_on_worker_processes_give_the_values_of_a_plain_sweep(tmp_path):
    """population=2 with n_jobs=2: two worker processes, each training a population of two
    trials (two seeds each); every trial and every re-test run has the value the same grid
    gives one job per trial in the sweeper's process, with its own MLflow run and params."""
    args = [
        *[a for a in TABULAR if not a.startswith("hydra.sweeper.retest")],
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.seeds=2",
        "hydra.sweeper.retest.top_k=2",
        "hydra.sweeper.retest.seeds=2",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.pruner.name=none",
        "train.episodes=40",
        "agent.alpha=choice(0.1,0.5)",
        "agent.gamma=choice(0.9,0.99)",
    ]
    packed, alone = tmp_path / "packed", tmp_path / "alone"
    packed.mkdir()
    alone.mkdir()
    _ok(run_sweep(packed, "app", *args, *PARALLEL, "hydra.sweeper.population=2"))
    _ok(run_sweep(alone, "app", *args))

    def values(where: Path) -> dict:
        study = only_study(journal(where))
        assert all(t.state == TrialState.COMPLETE for t in study.get_trials()), states(study)
        return {tuple(sorted(t.params.items())): t.value for t in study.get_trials()}

    def tests(where: Path) -> dict:
        retest = only_study(journal(where)).user_attrs["sweeper:retest"]
        return {tuple(sorted(r["params"].items())): r["test_per_seed"] for r in retest["configs"]}

    assert values(packed) == values(alone) and len(values(packed)) == 4
    assert tests(packed) == tests(alone) and len(tests(packed)) == 2
    assert all(v is not None for vs in tests(packed).values() for v in vs)
    study = only_study(journal(packed))
    pids = {t.user_attrs[WORKER_PID] for t in study.get_trials()}
    assert len(pids) == 2 and os.getpid() not in pids, pids
    runs = [r for r in mlflow_runs(packed) if "trial_number" in r.data.tags]
    for t in study.get_trials():
        (run,) = [
            r
            for r in runs
            if int(r.data.tags["trial_number"]) == t.number
            and r.data.tags.get("replicate") != "true"
        ]
        assert run.info.status == "FINISHED"
        assert float(run.data.params["agent.alpha"]) == t.params["agent.alpha"]
        assert float(run.data.params["agent.gamma"]) == t.params["agent.gamma"]


def test_kill_9_of_a_packed_worker_retries_its_trials_and_ends_their_runs(tmp_path):
    """kill -9 of one of the two population workers: the two trials it held did not fail of
    themselves, so each attempt stays FAIL naming SIGKILL, does not count, and its params are
    tried again (Optuna's retry convention); the other worker's population trains on, and the
    sweep ends with its 6 trials counted and complete. MLflow agrees: the dead worker's runs
    (logged in the worker itself) end FAILED with ``outcome=worker died``, none RUNNING."""
    args = [
        *TABULAR,
        *PARALLEL,
        "hydra.sweeper.population=2",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.pruner.name=none",
        "train.episodes=2000",
        "eval.every=500",
        "agent.alpha=interval(0.05,0.5)",
    ]
    cmd = sweep_cmd(
        "app", f"hydra.sweep.dir={tmp_path / 'sweep'}", f"hydra.sweeper.storage={journal(tmp_path)}"
    )
    proc = subprocess.Popen(
        [*cmd, *args],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )

    def victim() -> int | None:
        """A worker (a child of the sweeper) holding two RUNNING trials, once both hold two."""
        try:
            running = only_study(journal(tmp_path)).get_trials(states=(TrialState.RUNNING,))
        except Exception:  # noqa: BLE001 - not created yet
            return None
        held: dict[int, int] = {}
        for t in running:
            pid = t.user_attrs.get(WORKER_PID)
            if pid is not None:
                held[pid] = held.get(pid, 0) + 1
        children = sweep_children(proc.pid)
        both = len(held) == 2 and all(n == 2 for n in held.values())
        if not both or not set(held) <= children:
            return None
        victim = min(held)  # once its trials' runs exist (the worker logs them itself)
        mine = {str(t.number) for t in running if t.user_attrs.get(WORKER_PID) == victim}
        return victim if mine <= running_runs(tmp_path) else None

    try:
        end = time.time() + 120
        pid = victim()
        while pid is None and time.time() < end and proc.poll() is None:
            time.sleep(0.2)
            pid = victim()
        assert pid is not None, "the two populations never got going"
        os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    assert "exited with code 0" not in out + err
    study = only_study(journal(tmp_path))
    trials = study.get_trials()
    assert len(trials) == 8, states(study)  # 6 counted + the 2 attempts of the dead worker
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 2, states(study)
    for t in failed:
        assert not counts(t)
        assert t.user_attrs[WORKER_PID] == pid
        assert "SIGKILL" in t.user_attrs["sweeper:error"]
        assert t.user_attrs["sweeper:uncounted"].startswith("worker died")
        (retry,) = [r for r in trials if r.user_attrs.get("sweeper:requeued_from") == t.number]
        assert retry.params == t.params and retry.user_attrs["sweeper:retries"] == 1
        assert retry.state == TrialState.COMPLETE
    others = [t for t in trials if t.state != TrialState.FAIL]
    assert len(others) == 6 and all(t.state == TrialState.COMPLETE for t in others)
    assert {t.user_attrs[WORKER_PID] for t in others} - {pid}, "no other worker finished"
    runs = mlflow_runs(tmp_path)
    audit(study, runs, n_trials=6)
    dead = {str(t.number) for t in failed}
    ended = [r for r in runs if r.data.tags.get("trial_number") in dead]
    assert len(ended) >= 2, [r.info.run_name for r in ended]  # (and their seeds', if made)
    for run in ended:
        assert run.info.status == "FAILED" and run.data.tags["outcome"] == "worker died"
