"""Bad input is refused before the first trial, in one line, with nothing half-written; two
sweeps never share a directory (issue 8, points 6 and 7)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from reliability_helpers import clean_env, free_port

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "tests" / "sweeps" / "apps" / "toy.py"
TINY = [
    "agent=q_learning",
    "env=gridworld",
    "train.episodes=20",
    "eval.every=10",
    "eval.episodes=1",
    "train.progress=false",
    "train.plot=false",
    "tracking.enabled=false",
]


env = clean_env


def run(cmd: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def toy(tmp_path: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        str(TOY),
        "-m",
        f"hydra.sweeper.storage=journal:{tmp_path / 'journal.log'}",
        "hydra.sweeper.n_trials=2",
        *overrides,
    ]


def app(tmp_path: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sweeper.train",
        "-m",
        "hydra/sweeper=sweeper_optuna",
        f"hydra.sweeper.storage=journal:{tmp_path / 'journal.log'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.retest.enabled=false",
        *TINY,
        *overrides,
    ]


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert lines, proc.stdout[-2000:]
    return lines[-1]


def studies(tmp_path: Path) -> list[str]:
    path = tmp_path / "journal.log"
    if not path.exists():
        return []
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    return optuna.get_all_study_names(optuna.storages.JournalStorage(backend))


def test_two_sweeps_started_together_get_their_own_directories(tmp_path):
    same = tmp_path / "multirun" / "12-00-00"  # what ${now:%H-%M-%S} gives both
    procs = [
        subprocess.Popen(
            toy(tmp_path, f"hydra.sweep.dir={same}", f"x=choice({x},{x + 0.5})", "duration=0.3"),
            cwd=tmp_path,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for x in (1, 2)
    ]
    said = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-3000:]
        said.append(out + err)
    # the one that moved says so; the other, in its own directory, does not
    moved = [t for t in said if f"hydra.sweep.dir {same} is another study's" in t]
    assert len(moved) == 1 and f"using {same}-1" in moved[0]
    dirs = sorted(d for d in same.parent.iterdir() if d.is_dir())
    assert [d.name for d in dirs] == ["12-00-00", "12-00-00-1"]
    names = {(d / ".sweeper_study").read_text().strip() for d in dirs}
    assert len(names) == 2 and names == set(studies(tmp_path))
    for d in dirs:  # each holds one whole study: its 2 jobs and its own results
        assert sorted(p.name for p in d.iterdir() if p.is_dir()) == ["0", "1"]
        results = (d / "optimization_results.yaml").read_text()
        assert (d / ".sweeper_study").read_text().strip() in results
    # re-running one of them resumes in its own directory, not a third one
    proc = run(
        toy(tmp_path, f"hydra.sweep.dir={same}", "x=choice(2,2.5)", "duration=0.3"), tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len([d for d in same.parent.iterdir() if d.is_dir()]) == 2


def test_a_relative_sweep_dir_of_its_own_says_nothing_about_another_study(tmp_path):
    """The sweep dir Hydra gives (relative, ``outputs/multirun/<date>/<time>``) is this study's:
    its first lines must not say it moved (they once did, comparing relative with absolute)."""
    proc = run(toy(tmp_path, "hydra.sweep.dir=rel/sweep", "x=choice(1,2)"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "is another study's" not in proc.stdout + proc.stderr
    assert (tmp_path / "rel" / "sweep" / ".sweeper_study").is_file()


def test_an_unwritable_sweep_dir_is_refused_before_any_trial(tmp_path):
    proc = run(toy(tmp_path, "hydra.sweep.dir=/proc/x", "x=choice(1,2)"), tmp_path)
    line = one_line_error(proc)
    assert line.startswith("sweeper: hydra.sweep.dir '/proc/x'"), line
    assert studies(tmp_path) == []  # no study left behind to refuse later runs


def test_an_unknown_env_id_is_refused_before_any_trial(tmp_path):
    proc = run(app(tmp_path, "env.id=NoSuchEnv-v7", "agent.alpha=choice(0.1,0.2)"), tmp_path)
    line = one_line_error(proc)
    assert "env.id" in line and "NoSuchEnv-v7" in line, line
    assert studies(tmp_path) == [] and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("uri", ["http://127.0.0.1:{port}", "garbage://x"])
def test_a_bad_tracking_uri_is_refused_before_any_trial(tmp_path, uri):

    uri = uri.format(port=free_port())  # nothing listens there
    started = time.monotonic()
    proc = run(
        app(
            tmp_path,
            "tracking.enabled=true",
            f"tracking.tracking_uri={uri}",
            "agent.alpha=choice(0.1,0.2)",
        ),
        tmp_path,
    )
    line = one_line_error(proc)
    assert line.startswith(f"sweeper: tracking.tracking_uri {uri}"), line
    assert time.monotonic() - started < 60  # was 253 s of retries, then a traceback
    assert studies(tmp_path) == [] and not (tmp_path / "sweep").exists()


def test_a_bad_point_of_the_search_space_is_named_whole(tmp_path):
    proc = run(
        app(
            tmp_path,
            "agent=dqn",
            "env=cartpole_simple",
            "buffer.capacity=1000",
            "agent.lr=interval(1e-4,1e-2)",
            "buffer.batch_size=choice(64,2000)",
        ),
        tmp_path,
    )
    line = one_line_error(proc)
    # the error is about buffer.batch_size=2000, and the label says so (not just agent.lr)
    assert "buffer.batch_size=2000" in line and "buffer.capacity" in line, line


def test_read_only_commands_in_an_empty_directory_create_nothing(tmp_path):
    for args in (["reproduce", "abc123"], ["report"]):
        proc = subprocess.run(
            [sys.executable, "-m", "sweeper.cli", *args],
            cwd=tmp_path,
            env={**env(), "SWEEPER_OUTPUTS": str(tmp_path / "outputs")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 1, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "nothing" in proc.stderr, proc.stderr
        assert list(tmp_path.iterdir()) == [], list(tmp_path.rglob("*"))


@pytest.mark.slow
def test_a_pruned_trial_reproduces(tmp_path):
    """A pruned trial has no final metrics: its history up to the pruning must re-run
    bit-identically, and ``sweeper reproduce`` says so with exit 0."""
    from mlflow.tracking import MlflowClient

    from sweeper.tracking import store

    outputs = tmp_path / "outputs"
    cmd = app(
        tmp_path,
        "tracking.enabled=true",
        "train.episodes=60",
        "hydra/sweeper/sampler=grid",
        "hydra/sweeper/pruner=percentile",
        "hydra.sweeper.pruner.kwargs.percentile=90",
        "hydra.sweeper.pruner.kwargs.n_startup_trials=1",
        "hydra.sweeper.pruner.warmup_steps=0",
        "hydra.sweeper.n_trials=3",
        "agent.alpha=choice(0.9,0.001,0.002)",
        "agent.epsilon_decay=0.9",
        "seed=1",  # the sweep seed whose tuning seed makes alpha 0.9 lead and the rest pruned
    )
    proc = subprocess.run(
        cmd,
        cwd=tmp_path,
        env={**env(), "SWEEPER_OUTPUTS": str(outputs)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store.sqlite_uri(outputs / "mlflow.db"))
    pruned = store.search_all_runs(client, "tags.outcome = 'pruned'")
    assert pruned, "the grid/pruner setup no longer prunes a trial: adjust the test"
    digest = pruned[0].data.tags["config_hash"]
    proc = subprocess.run(
        [sys.executable, "-m", "sweeper.cli", "reproduce", digest[:12]],
        cwd=tmp_path,
        env={**env(), "SWEEPER_OUTPUTS": str(outputs)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "pruned" in proc.stdout and "bit-identical" in proc.stdout


def test_a_failed_run_reproduces_only_if_it_fails_the_same_way(tmp_path):
    """A diverged run's re-run must diverge again, with the same error, and log the same
    metrics up to that point."""
    from mlflow.tracking import MlflowClient

    from sweeper.tracking import store

    outputs = tmp_path / "outputs"
    full_env = {**env(), "SWEEPER_OUTPUTS": str(outputs)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sweeper.train",
            "agent.lr=1e5",
            "train.episodes=30",
            "eval.every=10",
            "eval.episodes=1",
            "train.progress=false",
            "train.plot=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 1 and "diverged" in proc.stderr, proc.stderr[-2000:]
    client = MlflowClient(store.sqlite_uri(outputs / "mlflow.db"))
    (failed,) = store.search_all_runs(client, "tags.outcome = 'failed'")
    proc = subprocess.run(
        [sys.executable, "-m", "sweeper.cli", "reproduce", failed.data.tags["config_hash"][:12]],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "was failed" in proc.stdout and "bit-identical" in proc.stdout
