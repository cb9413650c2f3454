"""Trial processes killed for real (kill -9): a dead trial fails alone, no MLflow run stays
RUNNING, and a killed sweeper leaves no process behind (issue 8, point 2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from reliability_helpers import clean_env
from sweep_helpers import audit

ROOT = Path(__file__).resolve().parents[2]
# A real app trial of a few seconds (tabular: no torch in the trial's hot loop).
LONG_TRIAL = [
    "agent=q_learning",
    "env=gridworld",
    "train.episodes=20000",
    "eval.every=2000",
    "eval.episodes=1",
    "train.progress=false",
    "train.plot=false",
    "train.save_model=false",
    "hydra/sweeper/pruner=none",
    "agent.alpha=interval(0.1,0.5)",
]


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        for child in children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def start_sweep(tmp_path: Path, launcher: str, n_trials: int, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "sweeper.train",
        "-m",
        "hydra/sweeper=sweeper_optuna",
        f"hydra/launcher={launcher}",
        "hydra.sweeper.n_jobs=2",
        f"hydra.sweeper.n_trials={n_trials}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"hydra.sweeper.storage=journal:{tmp_path / 'journal.log'}",
        "hydra.sweeper.retest.enabled=false",
        *LONG_TRIAL,
        *extra,
    ]
    if launcher == "joblib":
        cmd.append("hydra.launcher.n_jobs=2")
    return subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for_jobs(tmp_path: Path, proc: subprocess.Popen, n: int, timeout: float = 120) -> None:
    """Until ``n`` job folders have their training going (episodes.csv exists)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"sweep ended early ({proc.returncode}): {proc.stdout.read()[-3000:]}")
        started = list((tmp_path / "sweep").glob("*/seed_*/episodes.csv"))
        if len(started) >= n:
            return
        time.sleep(0.2)
    pytest.fail(f"{n} jobs did not start within {timeout} s")


def trial_workers(sweeper_pid: int) -> list[int]:
    """The processes that run the sweeper's trials: loky's workers (its children), or the
    isolated launcher's (children of the sweeper's fork server, or spawned children)."""
    workers = []
    for p in children(sweeper_pid):
        line = cmdline(p)
        if "forkserver" in line:
            workers += children(p)
        elif "resource_tracker" not in line and ("spawn_main" in line or "loky" in line):
            workers.append(p)
    return workers


def mlflow_runs(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    from sweeper.tracking import store

    client = MlflowClient(store.sqlite_uri(tmp_path / "outputs" / "mlflow.db"))
    return store.search_all_runs(client, "", max_results=1000)


def study(tmp_path: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log"))
    )
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def test_a_killed_trial_process_is_retried_alone_and_leaves_no_run_running(tmp_path):
    """kill -9 of one trial's process (as the OOM killer would): that attempt fails without
    counting, naming the signal, and its params are tried again; the other in-flight trial and
    the rest of the sweep complete; every MLflow run ends, none twice."""
    proc = start_sweep(tmp_path, "isolated", 4)
    try:
        wait_for_jobs(tmp_path, proc, 2)
        workers = trial_workers(proc.pid)
        assert len(workers) == 2, [cmdline(p) for p in children(proc.pid)]
        os.kill(workers[0], signal.SIGKILL)
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-3000:]
    st = study(tmp_path)
    trials = st.get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1, [
        (t.number, t.state, t.user_attrs.get("sweeper:error")) for t in trials
    ]
    assert "killed by SIGKILL" in failed[0].user_attrs["sweeper:error"]
    assert failed[0].user_attrs["sweeper:uncounted"].startswith("worker died")
    (retry,) = [t for t in trials if t.user_attrs.get("sweeper:requeued_from") == failed[0].number]
    assert retry.state == TrialState.COMPLETE and retry.params == failed[0].params
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    runs = mlflow_runs(tmp_path)
    audit(st, runs, n_trials=4)
    by_trial = {r.data.tags.get("trial_number"): r for r in runs if "trial_number" in r.data.tags}
    assert by_trial[str(failed[0].number)].info.status in ("FAILED", "KILLED")


@pytest.mark.parametrize("launcher", ["isolated", "joblib"])
def test_killing_the_sweeper_leaves_no_process_behind(tmp_path, launcher):
    proc = start_sweep(tmp_path, launcher, 4)
    try:
        wait_for_jobs(tmp_path, proc, 2)
        time.sleep(1.0)  # the logging children have created their runs
        family = descendants(proc.pid)
        assert len(family) >= 4, [cmdline(p) for p in family]  # 2 trial workers + 2 loggers
        os.kill(proc.pid, signal.SIGKILL)  # the sweeper alone, as the OOM killer would
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(alive(p) for p in family):
            time.sleep(0.2)
        left = [(p, cmdline(p)) for p in family if alive(p)]
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if alive(proc.pid) else None
        for p in descendants(proc.pid):
            os.kill(p, signal.SIGKILL)
    assert not left, left
    log = proc.stdout.read()  # every writer is gone: the whole output
    # the trials' logging children ended their runs KILLED when their trial died, and the
    # parent run's guard ended the study's run KILLED
    runs = mlflow_runs(tmp_path)
    assert {r.info.status for r in runs} == {"KILLED"}, (
        [(r.data.tags.get("trial_number", "parent"), r.info.status) for r in runs],
        log[-3000:],
    )
    if launcher == "joblib":
        return
    # the same command resumes: the killed trials are failed (uncounted), 4 more complete,
    # and every run of the study agrees with Optuna
    proc = start_sweep(tmp_path, launcher, 4)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    trials = study(tmp_path).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    runs = mlflow_runs(tmp_path)
    assert "RUNNING" not in {r.info.status for r in runs}
    parent = [r for r in runs if r.data.tags.get("sweeper.role") == "parent"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    by_trial = {int(r.data.tags["trial_number"]): r for r in runs if "trial_number" in r.data.tags}
    for t in trials:
        want = {"COMPLETE": ("FINISHED",), "FAIL": ("FAILED", "KILLED")}[t.state.name]
        assert by_trial[t.number].info.status in want, (t.number, t.state)


def test_mlflow_runs_follow_optuna_for_trials_that_died(tmp_path):
    """The sweeper's MLflow hook against a real store and a real study: a run left RUNNING, a
    run logged FINISHED by a trial killed before it returned, and a failed trial without any
    run all end up agreeing with Optuna."""
    from mlflow.tracking import MlflowClient

    from sweeper.tracking import store
    from sweeper.tracking.run_ends import close_study_runs, close_trial_runs

    uri = store.sqlite_uri(tmp_path / "mlflow.db")
    store.prepare_store(uri)
    client = MlflowClient(uri)
    exp = store.get_or_create_experiment(client, "s")
    parent = client.create_run(exp, tags={"sweeper.role": "parent"}).info.run_id
    st = optuna.create_study(study_name="s")
    for _ in range(4):
        st.ask()
    st.tell(0, state=TrialState.FAIL)  # its run stayed RUNNING (logging child killed)
    st.tell(1, state=TrialState.FAIL)  # killed after its run was logged FINISHED
    st.tell(2, state=TrialState.FAIL)  # killed before its logging child created a run
    surplus = st.ask()  # failed before it ever ran (a surplus or stale claim): no run made up
    surplus.set_user_attr("sweeper:uncounted", "surplus")
    st.tell(surplus, state=TrialState.FAIL)
    runs = {}
    for number, status in ((0, None), (1, "FINISHED"), (3, None)):
        run = client.create_run(
            exp, tags={"mlflow.parentRunId": parent, "trial_number": str(number)}
        )
        if status:
            client.set_terminated(run.info.run_id, status)
        runs[number] = run.info.run_id
    trials = st.get_trials()
    assert close_trial_runs(client, parent, "s", [*trials[:3], trials[4]]) == 3
    assert client.search_runs([exp], f"tags.trial_number = '{surplus.number}'") == []
    assert client.get_run(runs[0]).info.status == "FAILED"
    assert client.get_run(runs[1]).info.status == "FAILED"
    assert client.get_run(runs[1]).data.tags["outcome"] == "failed"
    created = client.search_runs([exp], "tags.trial_number = '2'")
    assert len(created) == 1 and created[0].info.status == "FAILED"
    # trial 3 is still RUNNING in Optuna: its run is left alone, even at the end of a sweep
    assert close_study_runs(client, parent, st, ending=False) == 0
    assert client.get_run(runs[3]).info.status == "RUNNING"
    st.tell(3, 1.0)
    assert close_study_runs(client, parent, st, ending=False) == 1
    assert client.get_run(runs[3]).info.status == "FINISHED"


def test_the_isolated_launcher_runs_a_basic_sweep_batch(tmp_path):
    """Hydra's own sweeper hands the launcher a batch: n_jobs of them run at a time."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sweeper.train",
            "-m",
            "hydra/launcher=isolated",
            "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            "seed=1,2,3",
            *[o for o in LONG_TRIAL if not o.startswith(("hydra", "agent.alpha", "train.ep"))],
            # jobs of several seconds: far longer than a slot's worker process takes to come
            # up, however loaded the machine (with 1.5 s jobs one worker could take them all)
            "train.episodes=30000",  # ~16 s a job here
            "tracking.enabled=false",
        ],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted((tmp_path / "sweep").glob("*/result.json"))
    assert [p.parent.name for p in results] == ["0", "1", "2"]
    # two at a time: some job started (wrote its config) before another finished (its
    # result). Which pair overlaps depends on how fast each slot's worker process came up.
    spans = [((p.parent / "config.yaml").stat().st_mtime, p.stat().st_mtime) for p in results]
    overlaps = [(a, b) for a in spans for b in spans if a is not b and a[0] < b[0] < a[1]]
    assert overlaps, spans


def test_a_logging_child_closes_its_run_even_after_a_torn_op(tmp_path):
    """A training process killed in the middle of writing an op leaves half a line on the
    logging child's stdin: the child takes it as the end and still ends the run KILLED."""
    import json

    from mlflow.tracking import MlflowClient

    from sweeper.tracking import store

    uri = store.sqlite_uri(tmp_path / "mlflow.db")
    child = subprocess.Popen(
        [sys.executable, "-m", "sweeper.tracking.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    spec = {
        "uri": uri,
        "experiment_name": "torn",
        "tags": {"mlflow.runName": "torn"},
        "params": {"a": "1"},
    }
    child.stdin.write(json.dumps({"op": "start", "spec": spec}) + "\n")
    child.stdin.flush()
    while True:  # progress beats come first; the start answer carries the run id
        answer = json.loads(child.stdout.readline())
        if "run_id" in answer or "error" in answer:
            break
    assert answer.get("run_id"), answer
    child.stdin.write('{"op": "metrics", "items": [["return", 1.0, 0, 1], ["ret')  # torn
    child.stdin.close()
    assert child.wait(timeout=60) == 0
    run = MlflowClient(uri).get_run(answer["run_id"])
    assert run.info.status == "KILLED" and run.data.tags["outcome"] == "worker died"
