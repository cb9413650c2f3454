"""The embedded store's direct writer against MLflow's own store, on real SQLite stores.

A run written by ``SqliteWriter`` (the default on the embedded store) must read back through
MlflowClient exactly as the same run written through MlflowClient: if MLflow's schema or rules
change under us, these fail.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from sweeper.tracking import limits, store, worker
from sweeper.tracking.limits import MAX_TAG

TAGS = {
    "mlflow.runName": "trial-3",
    "mlflow.user": "alice",
    "config_hash": "ab" * 32,
    "odd key: with/slash and space": "x",  # not a plain name: MLflow's validator decides
}
LATER_TAGS = {
    "outcome": "finished",
    "config_hash": "cd" * 32,  # overwritten
    "long": "v" * (MAX_TAG + 50),  # MLflow's set_tag truncates (its create_run doesn't)
}
PARAMS = {"agent.lr": "0.001", "agent.hidden_sizes": "[64, 64]", "env.kwargs.slip": "None"}
METRICS = [
    ("return", 10.0, 1000, 0),
    ("return", 30.0, 1001, 2),
    ("return", 20.0, 1002, 1),  # out of step order: latest is still step 2
    ("loss", 0.5, 1000, 1),
    ("loss", 0.25, 1003, 1),  # same step, later timestamp wins
    ("eval_return_mean", -3.5, 1004, 2),
]


def _log_run(executor: worker.Executor, uri: str, output_dir) -> str:
    executor.apply(
        "start",
        spec={
            "uri": uri,
            "parent": None,
            "experiment_id": None,
            "experiment_name": "writer-check",
            "tags": TAGS,
            "params": PARAMS,
        },
    )
    executor.apply("metrics", items=METRICS[:3])
    executor.apply("metrics", items=METRICS[3:])
    executor.apply("tags", tags=LATER_TAGS)
    executor.apply("artifacts", directory=str(output_dir))
    executor.apply("terminate", status="FINISHED")
    return executor.run_id


def _output_dir(tmp_path):
    out = tmp_path / "run"
    (out / ".hydra").mkdir(parents=True)
    (out / "config.yaml").write_text("seed: 1\n")
    (out / "episodes.csv").write_text("episode,return\n0,1\n")
    (out / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    return out


def _view(client, run_id: str) -> dict:
    """Everything MLflow shows of a run, its own ids and times left out."""
    run = client.get_run(run_id)
    info = run.info
    history = {
        key: sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key))
        for key in run.data.metrics
    }

    def artifacts(path=None):
        out = []
        for item in client.list_artifacts(run_id, path):
            out += artifacts(item.path) if item.is_dir else [(item.path, item.file_size)]
        return sorted(out)

    assert info.start_time and info.end_time and info.end_time >= info.start_time
    assert info.artifact_uri.endswith(f"/{run_id}/artifacts")
    return {
        "status": info.status,
        "lifecycle_stage": info.lifecycle_stage,
        "run_name": info.run_name,
        "user_id": info.user_id,
        "experiment_id": info.experiment_id,
        "artifact_root": info.artifact_uri.removesuffix(f"/{run_id}/artifacts"),
        "params": run.data.params,
        "tags": run.data.tags,
        "metrics": run.data.metrics,
        "history": history,
        "artifacts": artifacts(),
    }


def test_a_written_run_reads_back_like_one_made_by_mlflow(
    mlflow_client, store_uri, tmp_path, monkeypatch
):
    out = _output_dir(tmp_path)
    fast = worker.Executor()
    fast_id = _log_run(fast, store_uri, out)
    assert fast.writer is not None and fast.writer.usable  # the direct path was taken

    monkeypatch.setattr(worker, "_writer", lambda uri: None)  # MLflow's own store calls
    slow = worker.Executor()
    slow_id = _log_run(slow, store_uri, out)
    assert slow.writer is None

    fast_view, slow_view = _view(mlflow_client, fast_id), _view(mlflow_client, slow_id)
    assert fast_view == slow_view
    assert fast_view["tags"]["long"] == "v" * MAX_TAG
    assert fast_view["metrics"] == {"return": 30.0, "loss": 0.25, "eval_return_mean": -3.5}
    assert ("hydra/overrides.yaml", 9) in fast_view["artifacts"]
    # MLflow searches and updates the written run like its own
    found = mlflow_client.search_runs(
        [fast_view["experiment_id"]], "params.`agent.lr` = '0.001' and tags.outcome = 'finished'"
    )
    assert {r.info.run_id for r in found} == {fast_id, slow_id}
    mlflow_client.set_tag(fast_id, "note", "ok")
    mlflow_client.log_metric(fast_id, "return", 99.0, step=5)
    assert mlflow_client.get_run(fast_id).data.metrics["return"] == 99.0


def test_a_run_renamed_by_tag_like_mlflow(mlflow_client, store_uri, tmp_path):
    out = _output_dir(tmp_path)
    executor = worker.Executor()
    run_id = _log_run(executor, store_uri, out)
    executor.writer.set_tags(run_id, {"mlflow.runName": "renamed"})
    assert mlflow_client.get_run(run_id).info.run_name == "renamed"


def test_limits_are_mlflows():
    from mlflow.utils import validation

    assert limits.MAX_KEY == validation.MAX_ENTITY_KEY_LENGTH
    assert limits.MAX_PARAM == validation.MAX_PARAM_VAL_LENGTH
    assert limits.MAX_TAG == validation.MAX_TAG_VAL_LENGTH
    assert limits.MAX_EXPERIMENT_TAG == validation.MAX_EXPERIMENT_TAG_VAL_LENGTH
    assert limits.MAX_PARAMS_TAGS_PER_BATCH == validation.MAX_PARAMS_TAGS_PER_BATCH
    assert limits.MAX_METRICS_PER_BATCH == validation.MAX_METRICS_PER_BATCH


def test_invalid_keys_are_refused_as_mlflow_refuses_them(store_uri, tmp_path):
    executor = worker.Executor()
    run_id = _log_run(executor, store_uri, _output_dir(tmp_path))
    for bad in ("../escape", "semi;colon", "/abs"):
        with pytest.raises(Exception, match="Invalid value"):
            executor.writer.set_tags(run_id, {bad: "x"})


def test_writes_to_a_deleted_run_or_experiment_fail(mlflow_client, store_uri, tmp_path):
    executor = worker.Executor()
    run_id = _log_run(executor, store_uri, _output_dir(tmp_path))
    writer = executor.writer
    mlflow_client.delete_run(run_id)
    with pytest.raises(RuntimeError, match="active"):
        writer.log_metrics(run_id, [("return", 1.0, 0, 0)])
    with pytest.raises(RuntimeError, match="active"):
        writer.set_tags(run_id, {"a": "b"})
    with pytest.raises(RuntimeError, match="active"):
        writer.terminate(run_id, "FINISHED", 0)
    exp_id = mlflow_client.get_run(run_id).info.experiment_id
    mlflow_client.delete_experiment(exp_id)
    with pytest.raises(RuntimeError, match="active"):
        writer.create_run(exp_id, {"mlflow.runName": "x"}, {}, 0)
    # a run by experiment name restores the deleted experiment, as MLflow's path does
    again = worker.Executor()
    _log_run(again, store_uri, _output_dir(tmp_path / "again"))
    assert mlflow_client.get_experiment(exp_id).lifecycle_stage == "active"


def test_an_unknown_schema_falls_back_to_mlflow(mlflow_client, store_uri, tmp_path):
    path = store.sqlite_path(store_uri)
    with sqlite3.connect(path) as con:  # a column this code does not know
        con.execute("ALTER TABLE runs ADD COLUMN future_column TEXT")
    executor = worker.Executor()
    run_id = _log_run(executor, store_uri, _output_dir(tmp_path))
    assert executor.writer is None
    run = mlflow_client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["return"] == 30.0


def test_a_trials_logging_process_does_not_import_mlflow(mlflow_client, store_uri, tmp_path):
    """A sweep trial (its experiment and parent run exist) never pays mlflow's import."""
    from sweeper.tracking.parent import ensure_parent_run

    parent = ensure_parent_run("study-x", tracking_uri=store_uri)
    out = _output_dir(tmp_path)
    code = textwrap.dedent(
        f"""
        import sys
        from sweeper.tracking.worker import Executor
        ex = Executor()
        ex.apply("start", spec={{"uri": {store_uri!r}, "parent": {parent!r},
                 "experiment_id": None, "experiment_name": "ignored",
                 "tags": {{"mlflow.runName": "trial-0"}}, "params": {{"agent.lr": "0.01"}}}})
        ex.apply("metrics", items=[["return", 1.0, 0, 0]])
        ex.apply("tags", tags={{"outcome": "finished"}})
        ex.apply("artifacts", directory={str(out)!r})
        ex.apply("terminate", status="FINISHED")
        print(ex.run_id, "mlflow" in sys.modules)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    run_id, imported = proc.stdout.split()
    assert imported == "False"
    run = mlflow_client.get_run(run_id)
    assert run.info.experiment_id == mlflow_client.get_run(parent).info.experiment_id
    assert run.info.status == "FINISHED" and run.data.params == {"agent.lr": "0.01"}
