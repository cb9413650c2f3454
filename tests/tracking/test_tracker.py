"""One MLflow run per training run: params, metrics with steps, tags, artifacts, statuses."""

from __future__ import annotations

import json
import math
import shutil

import optuna
import pytest
from tracking_helpers import tiny_cfg, train_cli

from sweeper.callbacks import Callback
from sweeper.config import ConfigError
from sweeper.config_hash import config_hash, flatten, semantic_config
from sweeper.tracking import store, tracking_callback
from sweeper.train import run


def artifact_paths(client, run_id, path=None) -> set[str]:
    out = set()
    for info in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, info.path) if info.is_dir else {info.path}
    return out


class Raise(Callback):
    """Raises ``exc`` at evaluation number ``at`` (like the Optuna pruner does)."""

    def __init__(self, exc: BaseException, at: int = 1) -> None:
        self.exc, self.at = exc, at

    def on_eval(self, index, episode, step, metrics) -> None:
        if index == self.at:
            raise self.exc


def test_single_run_is_a_complete_mlflow_run(mlflow_client, tmp_path, monkeypatch):
    cfg = tiny_cfg("tracking.enabled=true")
    out = tmp_path / "run"
    from sweeper.tracking.worker import ProcessExecutor

    calls = []
    real = ProcessExecutor.send
    monkeypatch.setattr(
        ProcessExecutor, "send", lambda self, op, **kw: calls.append(op) or real(self, op, **kw)
    )
    tracker = tracking_callback(cfg, out)
    objective = run(cfg, out, [tracker])
    tracker.close(None)

    r = mlflow_client.get_run(tracker.run_id)
    assert r.info.status == "FINISHED"
    exp = mlflow_client.get_experiment(r.info.experiment_id)
    assert exp.name == "q_learning_gridworld"
    assert exp.artifact_location.startswith((tmp_path / "outputs" / "mlartifacts").as_uri())
    # params: the flattened semantic config
    expected = {k: str(v) for k, v in flatten(semantic_config(cfg)).items()}
    assert r.data.params == expected
    assert "tracking.enabled" not in r.data.params and "train.progress" not in r.data.params
    # tags
    tags = r.data.tags
    assert tags["config_hash"] == config_hash(cfg)
    assert tags["seed"] == "42" and tags["agent"] == "q_learning"
    assert tags["env"] == "gridworld" and tags["buffer"] == "uniform"
    assert tags["outcome"] == "finished"
    assert "trial_number" not in tags and "mlflow.parentRunId" not in tags
    if tags.get("git_commit"):
        assert len(tags["git_commit"]) == 40
    # metrics with steps: per episode, per eval, final objective
    returns = mlflow_client.get_metric_history(tracker.run_id, "return")  # every 10th episode
    assert [m.step for m in sorted(returns, key=lambda m: m.step)] == [10, 20, 30]
    evals = mlflow_client.get_metric_history(tracker.run_id, "eval_return_mean")
    assert sorted(m.step for m in evals) == [10, 20, 30]
    for key in ("length", "epsilon", "loss", "max_q", "eval_return_std", "env_steps"):
        assert key in r.data.metrics
    assert r.data.metrics["objective"] == objective == r.data.metrics["final_eval_mean"]
    # batched: one log_batch of metrics per evaluation and one at the end, never per episode
    assert calls.count("metrics") == 3 + 1
    # artifacts: config, overrides (Hydra runs only), metrics files, curve, model, result
    arts = artifact_paths(mlflow_client, tracker.run_id)
    assert {
        "config.yaml",
        "episodes.csv",
        "evals.csv",
        "result.json",
        "learning_curve.png",
        "model.npy",
    } <= arts


@pytest.mark.parametrize(
    ("exc", "status", "outcome"),
    [
        (RuntimeError("boom"), "FAILED", "failed"),
        (optuna.TrialPruned("pruned at episode 20"), "KILLED", "pruned"),
        (KeyboardInterrupt(), "KILLED", "killed"),
    ],
)
def test_failed_pruned_and_killed_runs(mlflow_client, tmp_path, exc, status, outcome):
    cfg = tiny_cfg("tracking.enabled=true")
    out = tmp_path / "run"
    tracker = tracking_callback(cfg, out)
    with pytest.raises(type(exc)):
        try:
            run(cfg, out, [tracker, Raise(exc, at=1)])
        except BaseException as err:
            tracker.close(err)  # what sweeper.train._hydra_main does
            raise
    r = mlflow_client.get_run(tracker.run_id)
    assert r.info.status == status
    assert r.data.tags["outcome"] == outcome
    # the evaluation the pruner stopped at was logged (tracking runs before the pruner)
    evals = mlflow_client.get_metric_history(tracker.run_id, "eval_return_mean")
    assert sorted(m.step for m in evals) == [10, 20]
    assert "objective" not in r.data.metrics
    # files written by run() after on_train_end on failure are there too
    arts = artifact_paths(mlflow_client, tracker.run_id)
    assert {"config.yaml", "episodes.csv", "result.json", "model.npy"} <= arts
    assert json.loads((out / "result.json").read_text())["status"] in ("FAILED", "PRUNED", "KILLED")


def test_nan_objective_is_failed(mlflow_client, tmp_path):
    cfg = tiny_cfg("tracking.enabled=true")
    tracker = tracking_callback(cfg, tmp_path / "run")
    tracker.on_train_start({})
    tracker.on_episode_end(
        1, 5, {"return": 1.0, "length": 5, "epsilon": 1.0, "loss": math.nan, "max_q": math.inf}
    )
    tracker.on_train_end(math.nan, "FAILED")
    tracker.close(None)
    r = mlflow_client.get_run(tracker.run_id)
    assert r.info.status == "FAILED" and r.data.tags["outcome"] == "failed"
    assert set(r.data.metrics) == {"return", "length", "epsilon"}  # non-finite dropped


def test_error_before_training_fails_the_run_and_config_errors_delete_it(mlflow_client, tmp_path):
    cfg = tiny_cfg("tracking.enabled=true")
    tracker = tracking_callback(cfg, tmp_path / "a")
    tracker.close(RuntimeError("env would not build"))
    r = mlflow_client.get_run(tracker.run_id)
    assert r.info.status == "FAILED" and r.data.tags["outcome"] == "failed"
    assert "env would not build" in r.data.tags["error"]

    tracker = tracking_callback(cfg, tmp_path / "b")
    tracker.close(ConfigError("env.id 'nope': unknown"))
    assert mlflow_client.get_run(tracker.run_id).info.lifecycle_stage == "deleted"


def test_experiment_and_tracking_uri_are_configurable(tmp_path, _template_db):
    db = tmp_path / "elsewhere" / "x.db"
    db.parent.mkdir()
    shutil.copy(_template_db, db)  # an initialized store: schema creation takes seconds
    uri = store.sqlite_uri(db)
    cfg = tiny_cfg(
        "tracking.enabled=true", f"tracking.tracking_uri='{uri}'", "tracking.experiment=my-exp"
    )
    tracker = tracking_callback(cfg, tmp_path / "run")
    tracker.on_train_end(1.0, "FINISHED")
    client = store.client(uri)
    r = client.get_run(tracker.run_id)
    assert client.get_experiment(r.info.experiment_id).name == "my-exp"
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_hydra_dqn_run(store_uri, mlflow_client, tmp_path):
    """Through the Hydra app (the basic-sweeper multirun is in test_ui_server.py)."""
    train_cli(
        "train.episodes=3",
        "eval.every=3",
        "eval.episodes=1",
        "train.progress=false",
        "tracking.enabled=true",
        "agent.hidden_sizes=[8]",
        "buffer.batch_size=8",
        f"hydra.run.dir={tmp_path / 'dqn'}",
        cwd=tmp_path,
    )
    dqn = mlflow_client.search_runs(
        [mlflow_client.get_experiment_by_name("dqn_cartpole_simple").experiment_id]
    )
    assert len(dqn) == 1 and dqn[0].info.status == "FINISHED"
    arts = artifact_paths(mlflow_client, dqn[0].info.run_id)
    assert {
        "model.pt",
        "learning_curve.png",
        "hydra/overrides.yaml",
        "hydra/config.yaml",
        "config.yaml",
        "episodes.csv",
        "evals.csv",
        "result.json",
    } <= arts
    assert "loss" in dqn[0].data.metrics and "max_q" in dqn[0].data.metrics
    tags = dqn[0].data.tags
    assert "sweep_dir" not in tags and "agent.hidden_sizes=[8]" in tags["overrides"]
    assert dqn[0].data.params["agent.hidden_sizes"] == "[8]"


def test_a_broken_store_is_refused_up_front_and_never_fails_training(tmp_path, capfd):
    """An unwritable store is a config error before anything is written; a store that fails
    while the run trains stops the logging (one line on stderr), not the run: its result
    stands (FINISHED, result.json) and the reason is kept on the tracker."""
    from sweeper.tracking.tracker import MlflowTracker
    from sweeper.tracking.worker import ProcessExecutor

    # logging children of earlier tests write to the stderr captured back then: start anew
    while ProcessExecutor._idle:
        ProcessExecutor._idle.pop().close()
    cfg = tiny_cfg("tracking.tracking_uri='sqlite:////proc/no-such-dir/mlflow.db'")
    with pytest.raises(ConfigError, match="tracking.tracking_uri sqlite:////proc/no-such-dir"):
        tracking_callback(cfg, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()

    out = tmp_path / "run"
    tracker = MlflowTracker(cfg, out)  # past the check: the store fails in the logging child
    assert math.isfinite(run(cfg, out, [tracker]))
    tracker.close(None)
    assert json.loads((out / "result.json").read_text())["status"] == "FINISHED"
    assert tracker.tracking_error
    lines = [
        ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("sweeper: tracking:")
    ]
    assert len(lines) == 1, lines

    # A run failing anyway keeps its own error; the tracking one is said once on stderr.
    tracker = MlflowTracker(cfg, tmp_path / "b")
    with pytest.raises(ZeroDivisionError) as info:
        run(cfg, tmp_path / "b", [tracker, Raise(ZeroDivisionError(), at=0)])
    tracker.close(info.value)
    lines = [
        ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("sweeper: tracking:")
    ]
    assert len(lines) == 1, lines


KILLED_TRIAL = """
import os, signal, sys
sys.path.insert(0, {helpers!r})
from tracking_helpers import tiny_cfg
from sweeper.tracking import tracking_callback
tracker = tracking_callback(
    tiny_cfg("tracking.experiment=killed", "tracking.episode_metrics_every=1"), None
)
for ep in range(1, 11):
    tracker.on_episode_end(ep, ep * 5, {{"return": 1.0, "length": 5}})
tracker.on_eval(0, 10, 50, {{"eval_return_mean": 1.0, "eval_return_std": 0.0}})
os.kill(os.getpid(), signal.SIGKILL)  # kill -9 mid-training
"""


def test_a_kill_9_trial_ends_killed(store_uri, mlflow_client, tmp_path):
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = KILLED_TRIAL.format(helpers=str(Path(__file__).parent))
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, timeout=120)
    assert proc.returncode == -9
    deadline = time.monotonic() + 60
    while True:  # the logging process outlives the trial and closes its run
        exp = mlflow_client.get_experiment_by_name("killed")
        runs = mlflow_client.search_runs([exp.experiment_id]) if exp else []
        if runs and runs[0].info.status == "KILLED":
            break
        assert time.monotonic() < deadline, runs and runs[0].info.status
        time.sleep(0.5)
    assert runs[0].data.tags["outcome"] == "worker died"  # its training process died
    assert len(mlflow_client.get_metric_history(runs[0].info.run_id, "return")) == 10


def test_logging_child_serves_run_after_run(mlflow_client, tmp_path):
    """One process training several runs pays mlflow's import once: the child is reused,
    and each run still ends complete and separate."""
    cfg = tiny_cfg("tracking.enabled=true")
    trackers = []
    for name in ("a", "b"):
        tracker = tracking_callback(cfg, tmp_path / name)
        run(cfg, tmp_path / name, [tracker])
        tracker.close(None)
        trackers.append(tracker)
    a, b = trackers
    assert a._proc is b._proc and a._proc.proc.poll() is None
    runs = [mlflow_client.get_run(t.run_id) for t in trackers]
    assert a.run_id != b.run_id
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert runs[0].data.metrics == runs[1].data.metrics  # same config and seed


@pytest.mark.parametrize(("every", "steps"), [(1, list(range(1, 24))), (7, [7, 14, 21, 23])])
def test_episode_metrics_go_to_mlflow_every_n_episodes_and_at_the_last(
    mlflow_client, tmp_path, every, steps
):
    """tracking.episode_metrics_every: every n-th episode's values, and the last episode's
    (here 23, not a multiple); the evaluations and the objective are always logged."""
    cfg = tiny_cfg(f"tracking.episode_metrics_every={every}", "train.episodes=23")
    tracker = tracking_callback(cfg, tmp_path / "run")
    run(cfg, tmp_path / "run", [tracker])
    tracker.close(None)
    for key in ("return", "length", "epsilon"):
        history = mlflow_client.get_metric_history(tracker.run_id, key)
        assert sorted(m.step for m in history) == steps, key
    rows = (tmp_path / "run" / "episodes.csv").read_text().splitlines()
    assert len(rows) == 1 + 23  # the full series stays in the run's files
