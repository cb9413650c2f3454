"""Studies beyond one machine (issue 13): the sweeper on a real local Ray cluster
(``ray start --head``) and on submitit's local executor, with a PostgreSQL study storage and a
real ``mlflow server``.

Every sweep here runs the real app with tiny budgets. The PostgreSQL role is made for the test
with a password nothing else knows, and every file the sweeps leave (sweep dirs, submitit's
pickles, the MLflow server's store and artifacts, the Ray cluster's session logs), every row
of the Optuna database, and the console are searched for it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from reliability_helpers import MlflowServer, clean_env, files_with, free_port, rows_with

from sweeper import study_attrs

pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="the [ray] extra")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the [slurm] extra")

TINY = [
    "agent=q_learning",
    "env=gridworld",
    "train.episodes=40",
    "eval.every=10",
    "eval.episodes=2",
    "train.progress=false",
    "hydra.sweeper.retest.enabled=false",
    "hydra.sweeper.sampler.name=random",
    "hydra.sweeper.pruner.name=median",
    "hydra.sweeper.pruner.warmup_steps=1000",  # reports arrive, nothing is pruned
    "agent.alpha=interval(0.1,0.5)",
]
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
EVALS = 4  # train.episodes / eval.every: the intermediate values each trial reports


def _env() -> dict[str, str]:
    env = clean_env(MLFLOW_DISABLE_TELEMETRY="true", **RAY_ENV)
    env.pop("SWEEPER_SECRET_URLS", None)  # the password comes from the arguments only
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _sweep_cmd(sweep_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sweeper.train",
        "-m",
        "hydra/sweeper=sweeper_optuna",
        f"hydra.sweep.dir={sweep_dir}",
        *TINY,
        *overrides,
    ]


def _run(cwd: Path, cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """The command to its end; ``.pid`` is the sweeper's (the populations' checks need it)."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = proc.communicate(timeout=timeout)
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    done.pid = proc.pid
    return done


def _study_args(name: str, pg_role, server, n_trials: int) -> list[str]:
    """The overrides every sweep here shares: 2 slots, the PostgreSQL study, the server."""
    return [
        "hydra.sweeper.n_jobs=2",
        f"hydra.sweeper.n_trials={n_trials}",
        f"hydra.sweeper.study_name={name}",
        f"hydra.sweeper.storage={pg_role.url['optuna']}",
        f"tracking.tracking_uri={server.url}",
    ]


@pytest.fixture(scope="module")
def ray_head():
    """A local Ray head on 127.0.0.1 with 2 CPUs, its session files in a temp dir (short:
    Ray's socket paths must fit 107 bytes); ``ray stop`` at the end."""
    ray = Path(sys.executable).with_name("ray")
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    port = free_port()
    env = {**_env(), **RAY_ENV}
    start = [
        str(ray), "start", "--head", "--node-ip-address=127.0.0.1", "--num-cpus=2",
        f"--port={port}", f"--temp-dir={temp}", "--disable-usage-stats",
        "--include-dashboard=false",
    ]  # fmt: skip
    proc = subprocess.run(start, env=env, cwd=temp, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}", temp
    finally:
        subprocess.run([str(ray), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """One ``mlflow server`` for the module (each test's runs carry its own study name and
    each test's PostgreSQL role its own password, so sharing it hides nothing)."""
    server = MlflowServer(tmp_path_factory.mktemp("cluster") / "mlflow-server")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=optuna.storages.RDBStorage(url))


def _check_sweep(proc, url: str, name: str, n_trials: int, server, password: str) -> None:
    """n_trials counted exactly, all COMPLETE with their pruning reports, each with its
    MLflow run FINISHED on the server; no password in the console."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    study = _study(url, name)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * n_trials, [
        (t.number, t.state.name, t.user_attrs.get(study_attrs.ERROR)) for t in trials
    ]
    assert sorted(t.number for t in trials) == list(range(n_trials))
    for t in trials:
        assert len(t.intermediate_values) == EVALS, (t.number, t.intermediate_values)
        # what the job's result.json said came back in the job's return (JobResult)
        assert {"mean_max_q", "objective_per_seed"} <= set(t.user_attrs), sorted(t.user_attrs)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server.url)
    runs = [
        r
        for e in client.search_experiments()
        for r in client.search_runs([e.experiment_id], f"tags.study_name = '{name}'")
        if "trial_number" in r.data.tags and r.data.tags.get("replicate") != "true"
    ]
    by_trial = {r.data.tags["trial_number"]: r for r in runs}
    assert sorted(by_trial) == sorted(str(i) for i in range(n_trials)), sorted(by_trial)
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert password not in out
    assert "Ray Launcher is launching" not in out and "Submitit 'local'" not in out


def _check_no_password(password: str, admin_url: str, *roots: Path) -> None:
    for root in roots:
        assert files_with(root, password) == [], root
    assert rows_with(admin_url, password) == []


# -- planning refuses what cannot work ---------------------------------------------------------
@pytest.mark.parametrize("launcher", ["ray", "submitit_local", "submitit_slurm"])
def test_remote_launchers_refuse_machine_local_stores(tmp_path, launcher, pg_role):
    """A journal file and an embedded MLflow store cannot be shared by other machines: one
    line naming the fix, non-zero exit, before any trial (no sweep dir, no study)."""
    journal = _run(tmp_path, _sweep_cmd(tmp_path / "s1", f"hydra/launcher={launcher}"), timeout=120)
    assert journal.returncode != 0
    line = journal.stderr.strip().splitlines()[-1]
    assert "hydra.sweeper.storage" in line and "postgresql+psycopg://" in line, line
    assert not (tmp_path / "s1").exists()
    assert not (tmp_path / "outputs" / "optuna").exists()

    embedded = _run(
        tmp_path,
        _sweep_cmd(
            tmp_path / "s2",
            f"hydra/launcher={launcher}",
            f"hydra.sweeper.storage={pg_role.url['optuna']}",
        ),
        timeout=120,
    )
    assert embedded.returncode != 0
    line = embedded.stderr.strip().splitlines()[-1]
    assert "tracking.tracking_uri" in line and "MLflow server" in line, line
    assert not (tmp_path / "s2").exists()
    assert optuna.get_all_study_names(pg_role.url["optuna"]) == []
    assert pg_role.password not in journal.stderr + embedded.stderr + embedded.stdout


# -- Ray ---------------------------------------------------------------------------------------
def test_ray_sweep_on_postgresql_and_an_mlflow_server(tmp_path, ray_head, pg_role, mlflow_server):
    address, ray_temp = ray_head
    name = f"ray-{uuid.uuid4().hex[:8]}"
    proc = _run(
        tmp_path,
        _sweep_cmd(
            Path("relative-sweep"),  # made absolute: Ray workers run in ray start's cwd
            "hydra/launcher=ray",
            f"hydra.launcher.ray.init.address={address}",
            *_study_args(name, pg_role, mlflow_server, 4),
        ),
    )
    _check_sweep(proc, pg_role.url["optuna"], name, 4, mlflow_server, pg_role.password)
    jobs = sorted(p.name for p in (tmp_path / "relative-sweep").iterdir() if p.name.isdigit())
    assert jobs == ["0", "1", "2", "3"]
    assert not list(ray_temp.rglob("relative-sweep"))  # no job folder under Ray's cwd
    _check_no_password(
        pg_role.password, pg_role.admin_url["optuna"], tmp_path, mlflow_server.root, ray_temp
    )


def _ray_jobs() -> list[int]:
    """Pids of Ray worker processes running a Hydra job (process title ``ray::_run_job``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "cmdline").read_bytes().startswith(b"ray::_run_job"):
                    pids.append(int(entry.name))
    return pids


def test_kill_9_of_a_ray_worker_fails_only_its_trial(tmp_path, ray_head, pg_role, mlflow_server):
    """kill -9 of the Ray worker process running one trial: that trial ends FAIL (Ray does not
    retry it: it would train the same Optuna trial twice), the sweep completes the rest."""
    address, _ = ray_head
    name = f"ray-kill-{uuid.uuid4().hex[:8]}"
    url = pg_role.url["optuna"]
    cmd = _sweep_cmd(
        tmp_path / "sweep",
        "hydra/launcher=ray",
        f"hydra.launcher.ray.init.address={address}",
        *_study_args(name, pg_role, mlflow_server, 4),
        "train.episodes=4000",
        "eval.every=1000",
    )
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        victim = None
        end = time.time() + 180
        while time.time() < end and victim is None:
            with contextlib.suppress(Exception):  # the study may not exist yet
                running = _study(url, name).get_trials(states=(TrialState.RUNNING,))
                jobs = _ray_jobs()
                if len(running) == 2 and len(jobs) == 2 and running[0].intermediate_values:
                    victim = min(jobs)
            time.sleep(0.3)
        assert victim is not None, "two trials never ran on Ray workers at once"
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, (out + err)[-4000:]
    trials = _study(url, name).get_trials()
    states = sorted(t.state.name for t in trials)
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"], states
    failed = next(t for t in trials if t.state == TrialState.FAIL)
    assert "died" in failed.user_attrs[study_attrs.ERROR].lower() or "crash" in (
        failed.user_attrs[study_attrs.ERROR].lower()
    ), failed.user_attrs[study_attrs.ERROR]


def _check_populations(proc, url: str, name: str, n_trials: int, sweeper_pid: int) -> set:
    """Every trial COMPLETE with its reports, trained in the remote engine's process (a Ray
    worker, a submitit job), not in the sweeper; the pids that trained them."""
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    trials = _study(url, name).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * n_trials, [
        (t.number, t.state.name, t.user_attrs.get(study_attrs.ERROR)) for t in trials
    ]
    pids = {t.user_attrs[study_attrs.WORKER_PID] for t in trials}
    assert sweeper_pid not in pids
    for t in trials:
        assert len(t.intermediate_values) == EVALS
    return pids


def test_ray_populations_are_one_task_each(tmp_path, ray_head, pg_role, mlflow_server):
    """population=2 with 2 slots on Ray: 4 trials in 2 populations, each one Ray task (one
    worker process), each trial still its own Optuna trial with its reports and its run."""
    address, _ = ray_head
    name = f"raypop-{uuid.uuid4().hex[:8]}"
    done = _run(
        tmp_path,
        _sweep_cmd(
            tmp_path / "sweep",
            "hydra/launcher=ray",
            f"hydra.launcher.ray.init.address={address}",
            "hydra.sweeper.population=2",
            *_study_args(name, pg_role, mlflow_server, 4),
        ),
    )
    pids = _check_populations(done, pg_role.url["optuna"], name, 4, done.pid)
    assert len(pids) == 2, pids  # two populations, one Ray task (worker process) each
    _check_sweep(done, pg_role.url["optuna"], name, 4, mlflow_server, pg_role.password)


# -- submitit ----------------------------------------------------------------------------------
def test_submitit_local_sweep_on_postgresql_and_an_mlflow_server(tmp_path, pg_role, mlflow_server):
    name = f"submitit-{uuid.uuid4().hex[:8]}"
    proc = _run(
        tmp_path,
        _sweep_cmd(
            tmp_path / "sweep",
            "hydra/launcher=submitit_local",
            *_study_args(name, pg_role, mlflow_server, 4),
        ),
    )
    _check_sweep(proc, pg_role.url["optuna"], name, 4, mlflow_server, pg_role.password)
    assert list((tmp_path / "sweep" / ".submitit").rglob("*.pkl"))  # it did go through submitit
    _check_no_password(pg_role.password, pg_role.admin_url["optuna"], tmp_path, mlflow_server.root)


def test_submitit_populations_are_one_job_each(tmp_path, pg_role, mlflow_server):
    name = f"subpop-{uuid.uuid4().hex[:8]}"
    done = _run(
        tmp_path,
        _sweep_cmd(
            tmp_path / "sweep",
            "hydra/launcher=submitit_local",
            "hydra.sweeper.population=2",
            *_study_args(name, pg_role, mlflow_server, 4),
        ),
    )
    pids = _check_populations(done, pg_role.url["optuna"], name, 4, done.pid)
    assert len(pids) == 2, pids
    _check_sweep(done, pg_role.url["optuna"], name, 4, mlflow_server, pg_role.password)
    _check_no_password(pg_role.password, pg_role.admin_url["optuna"], tmp_path, mlflow_server.root)


# -- both at once ------------------------------------------------------------------------------
def test_a_ray_driver_and_a_submitit_driver_share_one_study(
    tmp_path, ray_head, pg_role, mlflow_server
):
    """The same study from two machines' worth of drivers: exactly n_trials counted, no
    trial number or configuration twice, both drivers ran trials."""
    address, ray_temp = ray_head
    name = f"shared-{uuid.uuid4().hex[:8]}"
    url = pg_role.url["optuna"]
    common = _study_args(name, pg_role, mlflow_server, 6)
    launchers = {
        "ray": ["hydra/launcher=ray", f"hydra.launcher.ray.init.address={address}"],
        "submitit": ["hydra/launcher=submitit_local"],
    }
    procs = {
        key: subprocess.Popen(
            _sweep_cmd(tmp_path / key, *extra, *common),
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for key, extra in launchers.items()
    }
    outs = {key: p.communicate(timeout=400) for key, p in procs.items()}
    for key, p in procs.items():
        assert p.returncode == 0, (key, "".join(outs[key])[-3000:])
        assert pg_role.password not in "".join(outs[key])
    trials = _study(url, name).get_trials()
    counted = [t for t in trials if study_attrs.UNCOUNTED not in t.user_attrs]
    assert len(counted) == 6 and all(t.state == TrialState.COMPLETE for t in counted)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    alphas = [t.params["agent.alpha"] for t in trials]
    assert len(set(alphas)) == len(alphas)
    owners = {t.user_attrs["sweeper:owner"]["pid"] for t in counted}
    assert len(owners) == 2  # both drivers ran trials
    _check_no_password(pg_role.password, pg_role.admin_url["optuna"], tmp_path, ray_temp)
