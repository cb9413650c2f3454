"""Clean ends (issue 24): a Ctrl-C or a kill -9 of the sweeper leaves no MLflow run RUNNING and
no trial wrongly failed; the next run of the same command finishes the study.

Real processes and signals: the sweep runs in its own session (as a terminal's foreground job)
and gets SIGINT on its whole process group, as Ctrl-C sends it, or SIGKILL on the sweeper
alone. Each test ends by auditing both stores (``sweep_helpers.audit``): Optuna's trials by
state against MLflow's runs by status.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sweeps"))
from sweep_helpers import (  # noqa: E402
    audit,
    clean_env,
    journal,
    only_study,
    run_sweep,
    states,
    sweep_children,
    sweep_cmd,
)

ARGS = [
    "hydra/sweeper=sweeper_optuna",
    "hydra.sweeper.retest.enabled=false",
    "agent=q_learning",
    "env=gridworld",
    "eval.every=500",
    "eval.episodes=2",
    "train.plot=false",
    "train.progress=false",
    "train.episodes=2000",
    "hydra.sweeper.pruner.name=none",
    "agent.alpha=choice(0.1,0.2,0.3)",
    "agent.gamma=choice(0.9,0.99)",
    "hydra.sweeper.sampler.name=grid",
    "hydra.sweeper.n_trials=6",
    "hydra.sweeper.seeds=2",
]
PACKED = ["hydra.sweeper.population=2", "hydra/launcher=isolated", "hydra.sweeper.n_jobs=2"]


def _runs(tmp_path: Path) -> list:
    from mlflow.tracking import MlflowClient

    from sweeper.tracking import store

    client = MlflowClient(store.sqlite_uri(tmp_path / "outputs" / "mlflow.db"))
    return store.search_all_runs(client, "", max_results=5000)


def _start(tmp_path: Path, args: list[str]) -> subprocess.Popen:
    cmd = sweep_cmd(
        "app",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"hydra.sweeper.storage={journal(tmp_path)}",
        *args,
    )
    return subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )


def _wait_for_trials(tmp_path: Path, proc: subprocess.Popen, running: int) -> None:
    """Until one trial is complete and ``running`` train (or the sweep ends: a failure)."""
    end = time.time() + 180
    while time.time() < end and proc.poll() is None:
        with contextlib.suppress(Exception):  # not created yet
            study = only_study(journal(tmp_path))
            done = study.get_trials(states=(TrialState.COMPLETE,))
            if done and len(study.get_trials(states=(TrialState.RUNNING,))) >= running:
                return
        time.sleep(0.2)
    pytest.fail(f"the sweep never got going: {proc.poll()}")


def _gone(pids: set[int], timeout: float = 20) -> set[int]:
    end = time.time() + timeout
    while time.time() < end and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.2)
    return {p for p in pids if Path(f"/proc/{p}").exists()}


@pytest.mark.parametrize("packed", [False, True], ids=["slots", "packed"])
def test_ctrl_c_is_a_clean_stop_and_the_same_command_finishes(tmp_path, packed):
    """SIGINT to the process group mid-sweep: exit 130 with one line (trials kept, how to
    resume), no process left, no trial RUNNING, every MLflow run ended (the interrupted ones
    KILLED with ``outcome=interrupted``); the same command then finishes the study."""
    args = [*ARGS, *(PACKED if packed else ["hydra/launcher=isolated", "hydra.sweeper.n_jobs=2"])]
    proc = _start(tmp_path, args)
    try:
        _wait_for_trials(tmp_path, proc, running=2)
        children = sweep_children(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("[I ")]
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith("sweeper: interrupted: ") and "re-run the same command" in lines[0]
    assert "Traceback" not in out + err
    assert not _gone(children), "a worker outlived the sweeper"
    study = only_study(journal(tmp_path))
    assert not study.get_trials(states=(TrialState.RUNNING,)), states(study)
    cut = [t for t in study.get_trials() if "sweeper:uncounted" in t.user_attrs]
    assert cut and all(t.user_attrs["sweeper:uncounted"].startswith("interrupted") for t in cut)
    outcomes = audit(study, _runs(tmp_path))
    assert outcomes.get("interrupted", 0) >= 1, outcomes
    parent = [r for r in _runs(tmp_path) if r.data.tags.get("sweeper.role") == "parent"]
    assert [r.info.status for r in parent] == ["KILLED"]

    again = run_sweep(tmp_path, "app", *args, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    study = only_study(journal(tmp_path))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 6
    audit(study, _runs(tmp_path), n_trials=6)
    parent = [r for r in _runs(tmp_path) if r.data.tags.get("sweeper.role") == "parent"]
    assert [(r.info.status, r.data.tags["outcome"]) for r in parent] == [("FINISHED", "finished")]


def test_kill_9_of_the_sweeper_then_the_same_command_leaves_no_run_running(tmp_path):
    """kill -9 of the sweeper alone (its packed workers die with it, their runs were logged
    in the workers themselves): the runs stay RUNNING until the same command runs again,
    which fails the stale trials uncounted, ends their runs (``outcome=stale``) and finishes
    the study with exactly n counted trials."""
    args = [*ARGS, *PACKED]
    proc = _start(tmp_path, args)
    try:
        _wait_for_trials(tmp_path, proc, running=2)
        children = sweep_children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)  # until the workers, which share it, are gone
        assert not _gone(children), "a worker outlived the sweeper"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "Traceback" not in err and "EOFError" not in err, err[-3000:]  # the workers' end
    study = only_study(journal(tmp_path))
    killed = {t.number for t in study.get_trials(states=(TrialState.RUNNING,))}
    assert killed
    assert any(r.info.status == "RUNNING" for r in _runs(tmp_path))  # what the next run ends

    again = run_sweep(tmp_path, "app", *args, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    study = only_study(journal(tmp_path))
    outcomes = audit(study, _runs(tmp_path), n_trials=6)
    assert outcomes.get("stale", 0) >= len(killed), outcomes
    stale = {t.number for t in study.get_trials() if "sweeper:uncounted" in t.user_attrs}
    assert stale == killed
