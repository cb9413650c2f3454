"""A real ``mlflow server`` (issue 8): a sweep logs parent and nested runs to it, a server that
dies mid-run never blocks training, and a bad tracking URI fails before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from reliability_helpers import free_port

from sweeper.tracking.preflight import TrackingUriError, check_tracking_uri

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "agent=q_learning",
    "env=gridworld",
    "eval.episodes=1",
    "train.progress=false",
]


def train(*args: str, cwd: Path, env: dict | None = None, timeout: float = 240):
    """``python -m sweeper.train`` in a subprocess: (CompletedProcess, wall seconds)."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "sweeper.train", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc, time.monotonic() - start


def api(base: str, path: str, body: dict | None = None) -> dict:
    url = f"{base}/api/2.0/mlflow/{path}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"{}")


def all_runs(base: str) -> list[dict]:
    """Every run on the server, with tags and metrics as dicts."""
    exps = api(base, "experiments/search", {"max_results": 1000}).get("experiments", [])
    ids = [e["experiment_id"] for e in exps]
    found = api(base, "runs/search", {"experiment_ids": ids, "max_results": 1000})
    runs = found.get("runs", [])
    for run in runs:
        data = run.setdefault("data", {})
        data["tags"] = {t["key"]: t["value"] for t in data.get("tags", [])}
        data["metrics"] = {m["key"]: m["value"] for m in data.get("metrics", [])}
        data["params"] = {p["key"]: p["value"] for p in data.get("params", [])}
    return runs


def sweep_args(tmp_path: Path, name: str, *extra: str) -> list[str]:
    return [
        "-m",
        "hydra/sweeper=sweeper_optuna",
        "hydra/sweeper/pruner=none",
        *TINY,
        "eval.every=5",
        "agent.alpha=interval(0.1,0.5)",
        f"hydra.sweep.dir={tmp_path / name / 'sweep'}",
        f"hydra.sweeper.storage=journal:{tmp_path / name / 'journal.log'}",
        "hydra.sweeper.retest.top_k=1",
        "hydra.sweeper.retest.seeds=2",
        *extra,
    ]


def study_runs(base: str, study: str) -> tuple[dict, list[dict]]:
    runs = [r for r in all_runs(base) if r["data"]["tags"].get("study_name") == study]
    parents = [r for r in runs if r["data"]["tags"].get("sweeper.role") == "parent"]
    assert len(parents) == 1, [r["data"]["tags"] for r in runs]
    parent = parents[0]
    pid = parent["info"]["run_id"]
    direct = [r for r in runs if r["data"]["tags"].get("mlflow.parentRunId") == pid]
    ids = {r["info"]["run_id"] for r in direct}
    replicates = [r for r in runs if r["data"]["tags"].get("mlflow.parentRunId") in ids]
    assert len(direct) + len(replicates) == len(runs) - 1, "every run nests under the parent"
    tests = [r for r in direct if r["data"]["tags"].get("phase") == "test"]
    assert len(tests) == 2 and {r["info"]["status"] for r in tests} == {"FINISHED"}
    trials = [r for r in direct if r["data"]["tags"].get("phase") != "test"]
    for run in trials:  # each trial's seed (a replicate group of one) nests under the trial
        mine = [
            r
            for r in replicates
            if r["data"]["tags"]["mlflow.parentRunId"] == run["info"]["run_id"]
        ]
        assert len(mine) == 1 and mine[0]["info"]["status"] == run["info"]["status"]
    return parent, trials


def study_name(sweep_dir: Path) -> str:
    import yaml

    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    return results["study_name"]


def test_an_optuna_sweep_logs_parent_and_nested_runs_to_a_server(tmp_path, mlflow_server):
    """End to end against a real server: the override, then $MLFLOW_TRACKING_URI. The
    choice of step_reward=1e308 diverges (a cheap failing trial: FAILED, outcome=failed)."""
    url = mlflow_server.url
    check_tracking_uri(url)  # what the sweeper checks when planning
    check_tracking_uri(url + "/")
    proc, _ = train(
        *sweep_args(tmp_path, "a", "hydra.sweeper.n_trials=3", "train.episodes=10"),
        "env.kwargs.step_reward=choice(-0.04,1e308)",
        f"tracking.tracking_uri={url}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, trials = study_runs(url, study_name(tmp_path / "a" / "sweep"))
    assert parent["info"]["status"] == "FINISHED"
    assert "best_value" in parent["data"]["metrics"]
    assert len(trials) == 3
    outcomes = set()
    for run in trials:
        diverged = float(run["data"]["params"]["env.kwargs.step_reward"]) > 1
        status, outcome = ("FAILED", "failed") if diverged else ("FINISHED", "finished")
        assert run["info"]["status"] == status, run["data"]["tags"]
        assert run["data"]["tags"]["outcome"] == outcome
        outcomes.add(outcome)
    assert outcomes == {"finished", "failed"}  # the seeded sampler picks both values

    proc, _ = train(
        *sweep_args(tmp_path, "b", "hydra.sweeper.n_trials=2", "train.episodes=6"),
        cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": url},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parent, trials = study_runs(url, study_name(tmp_path / "b" / "sweep"))
    assert parent["info"]["status"] == "FINISHED" and "best_value" in parent["data"]["metrics"]
    assert len(trials) == 2
    assert {r["info"]["status"] for r in trials} == {"FINISHED"}
    assert {r["data"]["tags"]["outcome"] for r in trials} == {"finished"}
    assert not (tmp_path / "outputs" / "mlflow.db").exists()  # nothing went to the embedded store


LONG_RUN = [*TINY, "train.episodes=60000", "eval.every=500"]


def test_a_server_killed_mid_run_never_blocks_training(tmp_path, mlflow_server):
    """kill -9 of the server while a single run trains: the run finishes in about its
    untracked time, exit 0, result.json FINISHED, one line about tracking on stderr."""
    _, normal = train(*LONG_RUN, "tracking.enabled=false", f"hydra.run.dir={tmp_path / 'base'}",
                      cwd=tmp_path)  # fmt: skip
    out = tmp_path / "run"
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweeper.train", *LONG_RUN, f"hydra.run.dir={out}",
         f"tracking.tracking_uri={mlflow_server.url}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        while not all_runs(mlflow_server.url):  # the run exists: logging is under way
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() - start < 120, "no run on the server"
            time.sleep(0.2)
        mlflow_server.kill()
        killed_at = time.monotonic() - start
        _, stderr = proc.communicate(timeout=normal + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, stderr[-3000:]
    assert elapsed < normal * 1.25 + 10, (elapsed, normal, killed_at, stderr[-2000:])
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "FINISHED" and result["objective"] is not None
    said = [line for line in stderr.splitlines() if "tracking" in line.lower()]
    assert len(said) == 1, stderr[-3000:]
    assert mlflow_server.url in said[0] and "training continues" in said[0], said
    assert "Traceback" not in stderr and "Retrying" not in stderr, stderr[-3000:]


@pytest.mark.parametrize("how", ["closed-port", "garbage", "env"])
def test_a_bad_tracking_uri_fails_a_single_run_at_once(tmp_path, how):
    port = free_port()  # nothing listens there: connection refused
    uri = "garbage://x" if how == "garbage" else f"http://127.0.0.1:{port}"
    args, env = [*TINY, "train.episodes=5", f"hydra.run.dir={tmp_path / 'runs' / 'x'}"], {}
    if how == "env":
        env["MLFLOW_TRACKING_URI"] = uri
    else:
        args.append(f"tracking.tracking_uri={uri}")
    proc, elapsed = train(*args, cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert elapsed < 10 + 5, elapsed  # interpreter and Hydra startup included
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and uri in lines[0], proc.stderr
    key = "MLFLOW_TRACKING_URI" if how == "env" else "tracking.tracking_uri"
    assert lines[0].startswith(f"sweeper: config error: {key} {uri}: "), lines
    assert not (tmp_path / "runs").exists()  # no run dir left behind
    assert not (tmp_path / "outputs").exists()


# -- check_tracking_uri ------------------------------------------------------------------------
def test_check_accepts_a_writable_sqlite_path_and_a_directory(tmp_path, monkeypatch):
    check_tracking_uri(f"sqlite:///{tmp_path / 'new' / 'dir' / 'mlflow.db'}")
    assert (tmp_path / "new" / "dir").is_dir()  # the store could be created there
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow >= 3.13 needs it
    (tmp_path / "mlruns").mkdir()
    check_tracking_uri(str(tmp_path / "mlruns"))  # a plain path: an existing directory
    check_tracking_uri((tmp_path / "mlruns2").as_uri())  # a file: URI is created
    check_tracking_uri("databricks")  # not probed: needs the Databricks SDK and credentials
    with pytest.raises(TrackingUriError, match="is not a file"):
        check_tracking_uri(f"sqlite:///{tmp_path / 'new'}")  # a directory


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:////proc/x/mlflow.db", "cannot create directory /proc/x"),
        ("file:///proc/x/mlruns", "cannot create directory /proc/x"),
        ("garbage://x", "no tracking store for scheme 'garbage'"),
        ("sqlite+a+b:///x.db", "invalid database URI scheme"),
        ("http://", "no host"),
    ],
)
def test_check_rejects_unusable_uris_in_one_line(uri, expected, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # file:///proc/x: the directory
    start = time.monotonic()
    with pytest.raises(TrackingUriError) as info:
        check_tracking_uri(uri)
    message = str(info.value)
    assert message.startswith(f"tracking.tracking_uri {uri}: ") and expected in message
    assert "\n" not in message
    assert time.monotonic() - start < 2


def test_check_masks_the_password_of_an_unreachable_server():
    port = free_port()
    with pytest.raises(TrackingUriError) as info:
        check_tracking_uri(f"http://user:s3cret@127.0.0.1:{port}", timeout=2)
    message = str(info.value)
    assert "s3cret" not in message and "user:***@" in message
    assert "unreachable (connection refused)" in message


def test_a_server_killed_mid_sweep_keeps_the_retest_and_says_tracking_was_lost(
    tmp_path, mlflow_server
):
    """kill -9 of the MLflow server during a packed sweep's tuning: every trial and every
    re-test run still trains and reports (the re-test's values reach the study), the loss is
    said once while it happens and once at the end, nothing retries noisily, and the exit
    code (3) says the sweep finished without all of its MLflow record."""
    import optuna

    from sweeper.study_storage import open_storage

    args = [
        *sweep_args(tmp_path, "k", "hydra.sweeper.n_trials=4", "train.episodes=1500"),
        "eval.every=300",
        "hydra.sweeper.seeds=2",
        "hydra.sweeper.population=2",
        "hydra.sweeper.retest.seeds=3",
        f"tracking.tracking_uri={mlflow_server.url}",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweeper.train", *args],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        start = time.monotonic()
        while len(all_runs(mlflow_server.url)) < 3:  # the parent and a trial's runs exist
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() - start < 120, "no runs on the server"
            time.sleep(0.2)
        mlflow_server.kill()
        out, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("[I ")]
    assert "Traceback" not in err and "Retrying" not in err, err[-3000:]
    said = [ln for ln in lines if "tracking" in ln.lower()]
    assert len(said) == 2, err[-3000:]  # once when it happened, once at the end
    assert said[0].startswith("sweeper: tracking: ") and "training continues" in said[0]
    assert lines[-1].startswith("sweeper: the sweep finished"), err[-3000:]
    assert "incomplete" in lines[-1]
    assert "study hook" not in err
    storage = open_storage(f"journal:{tmp_path / 'k' / 'journal.log'}")
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 4
    retest = study.user_attrs["sweeper:retest"]
    tests = [v for c in retest["configs"] for v in c["test_per_seed"]]
    assert len(tests) == 3 and all(v is not None for v in tests), retest
