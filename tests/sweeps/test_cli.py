"""End-to-end sweeps from the shell (subprocesses, real storages, tiny budgets)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from sweep_helpers import (
    clean_env,
    journal,
    only_study,
    run_sweep,
    states,
    sweep_cmd,
)

from sweeper.analysis import UNCOUNTED, counts
from sweeper.statistics import aggregate

TINY_TABULAR = [
    "tracking.enabled=false",
    "agent=q_learning",
    "env=gridworld",
    "train.episodes=30",
    "eval.every=10",
    "eval.episodes=2",
    "train.plot=false",
    "train.save_model=false",
]


def _csv(trial_dir: Path, seed: int) -> list[dict[str, str]]:
    with (trial_dir / f"seed_{seed}" / "evals.csv").open() as f:
        return list(csv.DictReader(f))


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _results(tmp_path: Path) -> dict:
    return yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())


def spawn_toy_sweep(tmp_path, args) -> subprocess.Popen:
    """The toy sweep on the tmp journal, in its own session (so a test can kill -9 it)."""
    cmd = sweep_cmd(
        "toy",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"hydra.sweeper.storage={journal(tmp_path)}",
        *args,
    )
    return subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=clean_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_tpe_sweep_of_the_app_and_reproducible_best(tmp_path):
    proc = run_sweep(
        tmp_path,
        "app",
        "hydra/sweeper=sweeper_optuna",
        "hydra.sweeper.n_trials=4",
        *TINY_TABULAR,
        "agent.alpha=interval(0.05,1.0)",
        "agent.gamma=choice(0.9,0.99)",
        "+hydra.sweeper.params.agent.epsilon_decay='tag(log,interval(0.9,0.999))'",
    )
    _ok(proc)
    study = only_study(journal(tmp_path))
    assert states(study) == {"COMPLETE": 4}
    assert set(study.trials[0].params) == {"agent.alpha", "agent.gamma", "agent.epsilon_decay"}
    res = _results(tmp_path)
    assert res["sampler"] == "tpe"
    best = res["best"]
    assert best["value"] == study.best_value and best["number"] == study.best_trial.number
    assert "importance" in res and res["trials"]["complete"] == 4
    assert "best value" in proc.stdout and "complete" in proc.stdout
    # the overrides reproduce the best trial's config
    from sweeper.config import compose_config

    trial_cfg = yaml.safe_load(
        (tmp_path / "sweep" / str(best["number"]) / ".hydra" / "config.yaml").read_text()
    )
    again = compose_config(best["overrides"])
    from omegaconf import OmegaConf

    again = OmegaConf.to_container(again, resolve=True)
    for cfg in (trial_cfg, again):
        cfg.pop("trial")
    assert again == trial_cfg
    assert best["command"].startswith("python -m sweeper.train ")
    for key, value in study.best_trial.params.items():  # also those equal to their default
        assert any(o.startswith(f"{key}=") for o in best["overrides"]), (key, value)


def test_plain_basic_sweeper_still_works(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "sweeper.train",
        "-m",
        *TINY_TABULAR,
        "agent.alpha=0.1,0.5",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=240
    )
    _ok(proc)
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()) == ["0", "1"]


def test_grid_sweep_visits_every_point_once(tmp_path):
    proc = run_sweep(
        tmp_path,
        "toy",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.n_trials=50",
        "x=choice(0,1,2)",
        "y=range(0,2)",
    )
    _ok(proc)
    study = only_study(journal(tmp_path))
    points = sorted((t.params["x"], t.params["y"]) for t in study.trials)
    assert points == [(x, y) for x in (0, 1, 2) for y in (0, 1)]  # n_trials capped at 6
    assert states(study) == {"COMPLETE": 6}
    assert _results(tmp_path)["best"]["params"] == {"x": 1, "y": 0}


PRUNE = [
    "hydra/sweeper/sampler=grid",
    "hydra.sweeper.pruner.kwargs.n_startup_trials=2",
    "x=choice(1.0,-3.0,0.5,-2.0,0.9,-2.5)",
    "evals=3",
]


def test_pruning_with_the_basic_launcher(tmp_path):
    proc = run_sweep(tmp_path, "toy", "hydra.sweeper.n_trials=6", *PRUNE)
    _ok(proc)
    study = only_study(journal(tmp_path))
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned, states(study)
    for t in pruned:  # pruned at the first evaluation that trailed the median
        assert len(t.intermediate_values) < 3 and t.params["x"] < 0
    assert _results(tmp_path)["trials"]["pruned"] == len(pruned)


def test_joblib_two_slots_prune_and_have_no_batch_barrier(tmp_path):
    proc = run_sweep(
        tmp_path,
        "toy",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=12",
        *PRUNE,
        "duration=choice(0.3,1.5)",
    )
    _ok(proc)
    study = only_study(journal(tmp_path))
    trials = study.get_trials()
    assert len(trials) == 12 and all(t.state.is_finished() for t in trials)
    assert study.get_trials(states=(TrialState.PRUNED,)), states(study)  # pickled TrialPruned
    spans = sorted((t.datetime_start.timestamp(), t.datetime_complete.timestamp()) for t in trials)
    # two trials ran at once ...
    assert any(s2 < e1 for (s1, e1), (s2, _) in zip(spans, spans[1:], strict=False))
    # ... and a slot started a trial while the other slot's trial, begun well before, still ran
    assert any(s0 < s - 0.25 and e0 > s + 0.05 for s, _ in spans[2:] for s0, e0 in spans if s0 < s)


def test_failing_nan_none_and_exiting_trials_fail_and_the_sweep_goes_on(tmp_path):
    proc = run_sweep(
        tmp_path,
        "toy",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.n_trials=5",
        "mode=choice(ok,raise,return_nan,return_none,exit)",
    )
    _ok(proc)
    study = only_study(journal(tmp_path))
    assert states(study) == {"COMPLETE": 1, "FAIL": 4}
    errors = {
        t.params["mode"]: t.user_attrs["sweeper:error"]
        for t in study.trials
        if t.state == TrialState.FAIL
    }
    assert errors["raise"] == "RuntimeError: toy failure at x=0.0"
    assert errors["return_nan"] == "the objective is nan"
    assert errors["return_none"] == "the objective is not a number: None"
    assert errors["exit"].startswith("TrialExit: the job exited with code 2")
    assert set(_results(tmp_path)["failures"].values()) == set(errors.values())
    assert _results(tmp_path)["trials"] == {
        "complete": 1,
        "pruned": 0,
        "failed": 4,
        "running": 0,
        "waiting": 0,
        "uncounted": 0,
    }


def test_max_failures_stops_with_a_clear_message(tmp_path):
    proc = run_sweep(
        tmp_path,
        "toy",
        "hydra.sweeper.n_trials=10",
        "hydra.sweeper.max_failures=2",
        "mode=raise_if_negative",
        "x=interval(-5,-1)",
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("sweeper: stopped after 2 failed trial(s)")
    assert "max_failures=2" in last and "toy failure" in last
    assert "Traceback" not in proc.stderr
    assert len(only_study(journal(tmp_path)).trials) == 2


def test_all_failed_ends_with_a_message_not_a_traceback(tmp_path):
    proc = run_sweep(tmp_path, "toy", "hydra.sweeper.n_trials=2", "mode=raise", "x=interval(0,1)")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("sweeper: no trial of study") and "2 failed" in last
    assert "Traceback" not in proc.stderr
    assert _results(tmp_path)["best"] is None


def _wait_for(predicate, timeout=60.0):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def kill_9_midway(tmp_path, args) -> None:
    """Start a toy sweep and kill -9 its process group once two trials are complete and a
    third is running and claimed (an unclaimed one would wait for the grace period)."""
    proc = spawn_toy_sweep(tmp_path, args)

    def midway() -> bool:
        if not (tmp_path / "journal.log").exists():
            return False
        try:
            study = only_study(journal(tmp_path))
        except AssertionError:
            return False
        running = study.get_trials(states=(TrialState.RUNNING,))
        done = len(study.get_trials(states=(TrialState.COMPLETE,)))
        return done >= 2 and len(running) == 1 and "sweeper:owner" in running[0].user_attrs

    try:
        assert _wait_for(midway), "the sweep never got going"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_resume_after_kill_9(tmp_path):
    args = [
        "hydra.sweeper.n_trials=6",
        "x=interval(-2,2)",
        "duration=0.8",
        "evals=4",
        "hydra.sweeper.pruner.name=none",
    ]
    kill_9_midway(tmp_path, args)
    study = only_study(journal(tmp_path))
    before = states(study)
    assert before.get("RUNNING") == 1
    restart = run_sweep(tmp_path, "toy", *args)  # the same command
    _ok(restart)
    study = only_study(journal(tmp_path))
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 6
    stale = [t for t in trials if not counts(t)]
    assert len(stale) == 1 and stale[0].state == TrialState.FAIL
    assert "is gone" in stale[0].user_attrs[UNCOUNTED]
    assert len(trials) == 7  # 6 counted + the stale one; only the missing trials ran
    # a third run finds nothing to do
    again = run_sweep(tmp_path, "toy", *args)
    _ok(again)
    assert len(only_study(journal(tmp_path)).trials) == 7


def test_resume_runs_only_missing_trials(tmp_path):
    _ok(run_sweep(tmp_path, "toy", "hydra.sweeper.n_trials=3", "x=interval(-2,2)"))
    _ok(run_sweep(tmp_path, "toy", "hydra.sweeper.n_trials=5", "x=interval(-2,2)"))
    assert states(only_study(journal(tmp_path))) == {"COMPLETE": 5}
    # another search space is another study
    _ok(run_sweep(tmp_path, "toy", "hydra.sweeper.n_trials=1", "x=interval(-2,3)"))
    assert (
        len(
            optuna.get_all_study_names(
                optuna.storages.JournalStorage(
                    optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log"))
                )
            )
        )
        == 2
    )


def test_two_workers_on_postgresql(tmp_path, pg_url):
    name = f"pgtest-{uuid.uuid4().hex[:8]}"
    procs = []
    for i in range(2):
        cmd = sweep_cmd(
            "toy",
            f"hydra.sweep.dir={tmp_path / f'w{i}'}",
            f"hydra.sweeper.storage={pg_url}",
            f"hydra.sweeper.study_name={name}",
            "hydra.sweeper.n_trials=8",
            "hydra.sweeper.sampler.name=random",
            "hydra.sweeper.pruner.name=none",
            "x=interval(-2,2)",
            "duration=0.4",
        )
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=tmp_path,
                env=clean_env(),
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-2000:] + err[-2000:]
    storage = optuna.storages.RDBStorage(pg_url)
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    counted = [t for t in trials if counts(t)]
    assert len(counted) == 8 and all(t.state == TrialState.COMPLETE for t in counted)
    assert len(trials) <= 9  # at most one surplus trial from a race at the very end
    owners = {t.user_attrs["sweeper:owner"]["pid"] for t in counted}
    assert len(owners) == 2  # both workers ran trials
    xs = [t.params["x"] for t in trials]
    assert len(set(xs)) == len(xs)  # each worker has its own seed
    optuna.delete_study(study_name=name, storage=storage)


BAD = [
    (["x=interval(5,1)"], "sweeper: x: interval(5,1) needs low < high"),
    (["x=tag(log,interval(0,1))"], "sweeper: x: a log interval needs low > 0"),
    (["+hydra.sweeper.params.x='choice()'"], "sweeper: hydra.sweeper.params.x: cannot parse"),
    (["+hydra.sweeper.params.x='interval(1,'"], "sweeper: hydra.sweeper.params.x: cannot parse"),
    (["nope.bar=choice(1,2)"], "sweeper: nope.bar=1: Could not override 'nope.bar'"),
    (
        ["hydra.sweeper.storage=postgresql+psycopg://u:pw@127.0.0.1:1/db", "x=interval(0,1)"],
        "sweeper: hydra.sweeper.storage: cannot open",
    ),
    (["hydra/sweeper/sampler=grid", "x=interval(0,1)"], "sweeper: x: the grid sampler needs"),
    (["hydra.sweeper.sampler.name=nope"], "sweeper: hydra.sweeper.sampler.name: unknown"),
    (["hydra.sweeper.n_trials=0"], "sweeper: hydra.sweeper.n_trials: must be >= 1"),
    (["hydra.sweeper.max_failures=0"], "sweeper: hydra.sweeper.max_failures: must be >= 1"),
    (
        ["hydra.sweeper.study_hooks=[no_such_module_xyz:factory]", "x=interval(0,1)"],
        "sweeper: hydra.sweeper.study_hooks: cannot import 'no_such_module_xyz:factory'",
    ),
    (
        ["hydra.sweeper.study_hooks=[hook_probe:nope]", "x=interval(0,1)"],
        "sweeper: hydra.sweeper.study_hooks: cannot import 'hook_probe:nope': AttributeError",
    ),
    (
        ["hydra.sweeper.validator=no_such_module_xyz.validate", "x=interval(0,1)"],
        "sweeper: hydra.sweeper.validator: cannot import 'no_such_module_xyz.validate'",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[b[1][9:40] for b in BAD])
def test_bad_inputs_fail_before_any_trial_with_one_line(tmp_path, overrides, message):
    proc = run_sweep(tmp_path, "toy", *overrides)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(message), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "sweep").exists() or not any((tmp_path / "sweep").iterdir())
    assert not (tmp_path / "journal.log").exists()  # nothing was written to the storage


def test_bad_grammar_on_the_command_line_is_refused_by_hydra(tmp_path):
    proc = run_sweep(tmp_path, "toy", "x=interval(1,")
    assert proc.returncode == 1
    # Hydra parses the command line before any plugin runs; its first line shows the override
    assert "interval(1," in proc.stderr.splitlines()[0]
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["agent.lrr=interval(0.1,1)"], "sweeper: agent.lrr=0.1: Could not override 'agent.lrr'"),
        (["agent.lr=interval(-1,1)"], "sweeper: agent.lr=-1.0: agent.lr must be > 0"),
    ],
)
def test_bad_inputs_of_the_app(tmp_path, overrides, message):
    proc = run_sweep(tmp_path, "app", "hydra/sweeper=sweeper_optuna", *overrides)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_ready_made_sweep_double_vs_vanilla(tmp_path):
    proc = run_sweep(
        tmp_path,
        "app-nom",
        "+sweep=double_vs_vanilla",
        "train.episodes=3",
        "eval.every=0",
        "eval.episodes=1",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.seeds=2",
    )
    _ok(proc)
    res = _results(tmp_path)
    assert res["study_name"].startswith("double_vs_vanilla-")
    groups = {g["agent.double"]: g for g in res["groups"]}
    assert set(groups) == {True, False}
    for g in groups.values():  # per arm: IQM over its seeds with a bootstrap CI
        assert g["n"] == 2
        assert isinstance(g["mean_max_q_iqm"], float)
        for m in ("objective", "mean_max_q"):
            if g["n"] >= 2:
                assert g[f"{m}_ci_low"] <= g[f"{m}_iqm"] <= g[f"{m}_ci_high"]
    assert "mean_max_q" in proc.stdout


READY_MADE = sorted(
    p.stem for p in (Path(__file__).parents[2] / "conf" / "sweep").glob("*.yaml")
    if p.stem != "double_vs_vanilla"  # run with tracking and joblib in the test above
)  # fmt: skip


@pytest.mark.parametrize("name", READY_MADE)
def test_ready_made_sweeps_run(tmp_path, name):
    # the basic launcher and no tracking keep this fast; joblib + tracking run in the test above
    proc = run_sweep(
        tmp_path,
        "app-nom",
        f"+sweep={name}",
        "hydra/launcher=basic",
        "tracking.enabled=false",
        "train.episodes=2",
        "eval.every=0",
        "eval.episodes=1",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.seeds=2",
        "hydra.sweeper.retest.enabled=false",
    )
    _ok(proc)
    res = _results(tmp_path)
    assert res["study_name"].startswith(f"{name}-") and res["trials"]["complete"] == 1


def test_running_trial_of_another_host_without_heartbeat_is_failed(tmp_path):
    """A RUNNING trial whose owner lives elsewhere counts until its heartbeat is older than
    hydra.sweeper.grace_period; then it is failed and does not count."""
    args = ["hydra.sweeper.n_trials=2", "x=interval(-2,2)", "hydra.sweeper.grace_period=30"]
    _ok(run_sweep(tmp_path, "toy", "hydra.sweeper.n_trials=1", *args[1:]))
    from sweeper.study_storage import open_storage

    study = only_study(journal(tmp_path))
    ghost = study.ask()  # a trial "running" on another machine
    st = open_storage(journal(tmp_path))
    st.set_trial_user_attr(ghost._trial_id, "sweeper:owner", {"host": "elsewhere", "pid": 1})
    st.set_trial_user_attr(ghost._trial_id, "sweeper:heartbeat", time.time())
    _ok(run_sweep(tmp_path, "toy", *args))  # fresh heartbeat: the ghost counts, 1+1 = 2 trials
    study = only_study(journal(tmp_path))
    assert states(study) == {"COMPLETE": 1, "RUNNING": 1}
    st.set_trial_user_attr(ghost._trial_id, "sweeper:heartbeat", time.time() - 100)
    _ok(run_sweep(tmp_path, "toy", *args))
    study = only_study(journal(tmp_path))
    assert states(study) == {"COMPLETE": 2, "FAIL": 1}
    failed = study.trials[ghost.number]
    assert failed.state == TrialState.FAIL and "no heartbeat" in failed.user_attrs[UNCOUNTED]


def test_basic_launcher_never_runs_trials_concurrently(tmp_path):
    proc = run_sweep(
        tmp_path,
        "toy",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=3",
        "x=interval(-2,2)",
        "duration=0.3",
    )
    _ok(proc)
    assert "with the basic launcher" in proc.stdout + proc.stderr
    spans = sorted(
        (t.datetime_start, t.datetime_complete) for t in only_study(journal(tmp_path)).trials
    )
    assert all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:], strict=False))


def test_study_hooks_start_end_and_parent_run_id(tmp_path):
    proc = run_sweep(
        tmp_path,
        "toy",
        "hydra.sweeper.n_trials=2",
        "x=interval(-2,2)",
        "hydra.sweeper.study_hooks=[hook_probe:factory]",
    )
    _ok(proc)
    sweep = tmp_path / "sweep"
    name = only_study(journal(tmp_path)).study_name
    assert (sweep / "hook_start.txt").read_text() == name
    assert (sweep / "hook_end.txt").read_text().startswith(name + " -")
    for number in (0, 1):
        overrides = yaml.safe_load((sweep / str(number) / ".hydra" / "overrides.yaml").read_text())
        assert "trial.parent_run_id=parent-123" in overrides
        assert f"trial.number={number}" in overrides


# -- seeding: reproducible fresh sweeps, new points on resume and across workers -------------


def _xs(storage: str) -> list[float]:
    return [t.params["x"] for t in only_study(storage).trials]


def test_two_fresh_sweeps_with_the_same_command_sample_the_same_points(tmp_path):
    args = ["hydra.sweeper.n_trials=3", "x=interval(-2,2)", "y=choice(0,1,2)"]
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        _ok(run_sweep(tmp_path / name, "toy", *args))
        study = only_study(journal(tmp_path / name))
        runs.append([t.params for t in study.trials])
    assert runs[0] == runs[1]  # the sampler is seeded (hydra.sweeper.sampler.seed=0)
    assert len({p["x"] for p in runs[0]}) == 3


def test_resume_samples_new_points(tmp_path):
    _ok(run_sweep(tmp_path, "toy", "hydra.sweeper.n_trials=3", "x=interval(-2,2)"))
    _ok(run_sweep(tmp_path, "toy", "hydra.sweeper.n_trials=6", "x=interval(-2,2)"))
    xs = _xs(journal(tmp_path))
    assert len(xs) == 6 and len(set(xs)) == 6, xs  # not the first run's points again


def test_two_workers_sample_distinct_points(tmp_path):
    args = [
        f"hydra.sweeper.storage={journal(tmp_path)}",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.sampler.name=random",
        "x=interval(-2,2)",
        "duration=0.3",
    ]
    procs = [
        subprocess.Popen(
            sweep_cmd("toy", f"hydra.sweep.dir={tmp_path / f'w{i}'}", *args),
            cwd=tmp_path,
            env=clean_env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, out[-2000:] + err[-2000:]
    study = only_study(journal(tmp_path))
    counted = [t for t in study.trials if counts(t)]
    assert len(counted) == 8
    xs = [t.params["x"] for t in study.trials]
    assert len(set(xs)) == len(xs), xs
    assert len({t.user_attrs["sweeper:owner"]["pid"] for t in counted}) == 2


# -- grid after kill -9 --------------------------------------------------------------------


def test_grid_resume_after_kill_9_evaluates_every_point_once(tmp_path):
    args = [
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.pruner.name=none",
        "x=choice(0,1,2)",
        "y=range(0,2)",
        "duration=0.8",
        "evals=4",
    ]
    kill_9_midway(tmp_path, args)
    assert states(only_study(journal(tmp_path))).get("RUNNING") == 1
    _ok(run_sweep(tmp_path, "toy", *args))  # the same command
    study = only_study(journal(tmp_path))
    complete = sorted(
        (t.params["x"], t.params["y"]) for t in study.get_trials(states=(TrialState.COMPLETE,))
    )
    assert complete == [(x, y) for x in (0, 1, 2) for y in (0, 1)]  # each point exactly once
    stale = [t for t in study.trials if not counts(t)]
    assert len(stale) == 1 and "is gone" in stale[0].user_attrs[UNCOUNTED]
    assert not study.get_trials(states=(TrialState.WAITING, TrialState.RUNNING))


# -- a live local owner is not judged by its heartbeat ----------------------------------------


def test_running_trial_of_a_live_local_process_is_kept_despite_a_late_heartbeat(tmp_path):
    import socket

    from sweeper.study_storage import open_storage
    from sweeper.sweeps.workers import process_start as _process_start

    args = ["hydra.sweeper.n_trials=2", "x=interval(-2,2)", "hydra.sweeper.grace_period=30"]
    _ok(run_sweep(tmp_path, "toy", "hydra.sweeper.n_trials=1", *args[1:]))
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        study = only_study(journal(tmp_path))
        busy = study.ask()  # a long trial of a live sweeper process on this host
        st = open_storage(journal(tmp_path))
        st.set_trial_user_attr(
            busy._trial_id,
            "sweeper:owner",
            {"host": socket.gethostname(), "pid": owner.pid, "start": _process_start(owner.pid)},
        )
        st.set_trial_user_attr(busy._trial_id, "sweeper:heartbeat", time.time() - 1000)
        _ok(run_sweep(tmp_path, "toy", *args))
        assert states(only_study(journal(tmp_path))) == {"COMPLETE": 1, "RUNNING": 1}
    finally:
        owner.kill()
        owner.wait()
    _ok(run_sweep(tmp_path, "toy", *args))  # now its process is gone: failed, not counted
    study = only_study(journal(tmp_path))
    assert states(study) == {"COMPLETE": 2, "FAIL": 1}
    assert "is gone" in study.trials[busy.number].user_attrs[UNCOUNTED]


# -- pruning of the real app ------------------------------------------------------------------


def test_pruning_of_the_real_app(tmp_path):
    """Q-learning on GridWorld: alpha 0.001 barely learns, 0.5 learns; the median pruner (after
    one complete trial, no warmup) stops trials at the periodic evaluations."""
    proc = run_sweep(
        tmp_path,
        "app",
        "hydra/sweeper=sweeper_optuna",
        "hydra/sweeper/sampler=grid",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.kwargs.n_startup_trials=1",
        "hydra.sweeper.pruner.warmup_steps=0",
        *TINY_TABULAR,
        "train.episodes=60",
        "eval.episodes=3",
        "agent.alpha=choice(0.001,0.5)",
        "agent.gamma=choice(0.9,0.95,0.99)",
        "hydra.sweeper.seeds=3",
        "hydra.sweeper.retest.enabled=false",
    )
    _ok(proc)
    study = only_study(journal(tmp_path))
    evals = {10, 20, 30, 40, 50, 60}  # eval.every=10: steps are training episodes
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert pruned and complete and len(pruned) + len(complete) == 6, states(study)
    assert any(t.params["agent.alpha"] == 0.001 for t in pruned)
    for t in complete:
        assert set(t.intermediate_values) == evals
    for t in pruned:
        assert t.intermediate_values and set(t.intermediate_values) < evals
    assert _results(tmp_path)["trials"]["pruned"] == len(pruned)
    # what the pruner saw at each evaluation is the IQM over the trial's three seeds
    for t in pruned + complete:
        seeds = t.user_attrs["sweeper:seeds"]
        assert len(seeds) == 3 and "seed" not in t.params
        trial_dir = Path(t.user_attrs["sweeper:output_dir"])
        evals_by_seed = [
            {int(r["episode"]): float(r["eval_return_mean"]) for r in _csv(trial_dir, s)}
            for s in seeds
        ]
        for step, value in t.intermediate_values.items():
            assert value == pytest.approx(aggregate([e[step] for e in evals_by_seed], "iqm"))
    for t in complete:
        assert t.value == pytest.approx(aggregate(t.user_attrs["objective_per_seed"], "iqm"))


# -- ready-made sweeps with another pruner ------------------------------------------------------


def test_cartpole_sweep_with_hyperband_plans_and_runs(tmp_path):
    proc = run_sweep(
        tmp_path,
        "app-nom",
        "+sweep=cartpole_v1",
        "hydra/sweeper/pruner=hyperband",
        "hydra/launcher=basic",
        "tracking.enabled=false",
        "train.episodes=2",
        "eval.every=0",
        "eval.episodes=1",
        "hydra.sweeper.n_trials=1",
    )
    _ok(proc)
    assert _results(tmp_path)["pruner"] == {"name": "hyperband", "kwargs": {"min_resource": 40}}
