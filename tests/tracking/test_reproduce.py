"""``sweeper reproduce``: re-run a tracked config by hash prefix and compare final metrics;
``tracking.skip_existing``: reuse a finished run of the same config."""

from __future__ import annotations

import json
from pathlib import Path

from tracking_helpers import TINY, tiny_cfg, train_cli

from sweeper.cli import main
from sweeper.config_hash import config_hash
from sweeper.tracking import store, tracking_callback
from sweeper.train import run


def tracked_run(tmp_path, *overrides):
    cfg = tiny_cfg("tracking.enabled=true", *overrides)
    tracker = tracking_callback(cfg, tmp_path / "original")
    run(cfg, tmp_path / "original", [tracker])
    tracker.close(None)
    return cfg, tracker.run_id


def reproduce(capsys, *args):
    code = main(["reproduce", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_reproduce_round_trip_by_prefix(mlflow_client, tmp_path, capsys):
    cfg, run_id = tracked_run(tmp_path, "seed=7")
    digest = config_hash(cfg)
    code, out, err = reproduce(capsys, digest[:8], "--output-dir", str(tmp_path / "repro"))
    assert code == 0, out + err
    assert "bit-identical" in out and run_id in out
    new = mlflow_client.search_runs(
        [mlflow_client.get_run(run_id).info.experiment_id], f"tags.reproduced_from = '{run_id}'"
    )
    assert len(new) == 1
    assert new[0].data.tags["config_hash"] == digest
    assert new[0].data.tags["seed"] == "7"
    assert new[0].info.status == "FINISHED"
    assert any((tmp_path / "repro").rglob("result.json"))

    # Tamper with a logged metric of the original: non-zero, the difference named.
    mlflow_client.log_metric(run_id, "objective", 12345.0, step=10**6)
    code, out, _ = reproduce(capsys, digest[:8], "--output-dir", str(tmp_path / "repro"))
    assert code == 1
    assert "objective: 12345.0 (original)" in out
    assert "not reproduced" in out


def test_a_replicate_group_reproduces_from_its_hash(mlflow_client, tmp_path, capsys):
    """A trial trains its config on several seeds: its run's hash covers the seeds, differs
    from any one seed's run, and reproduces the whole group bit for bit."""
    from sweeper.train import replicate_callbacks, run_replicates

    cfg = tiny_cfg("tracking.enabled=true", "trial.seeds=[3,4]")
    tracker = tracking_callback(cfg, tmp_path / "original")
    run_replicates(cfg, tmp_path / "original", [tracker], replicate_callbacks(cfg, [tracker]))
    tracker.close(None)
    digest = config_hash(cfg)
    one_seed = tiny_cfg("tracking.enabled=true", "seed=3")
    assert digest != config_hash(one_seed)
    replicate = mlflow_client.search_runs(
        [mlflow_client.get_run(tracker.run_id).info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{tracker.run_id}'",
    )
    assert sorted(r.data.tags["seed"] for r in replicate) == ["3", "4"]
    assert {r.data.tags["config_hash"] for r in replicate} == {config_hash(one_seed)} | {
        config_hash(tiny_cfg("tracking.enabled=true", "seed=4"))
    }
    code, out, err = reproduce(capsys, digest[:10], "--output-dir", str(tmp_path / "repro"))
    assert code == 0, out + err
    assert "bit-identical" in out
    assert len(list((tmp_path / "repro").rglob("seed_*/result.json"))) == 2


def test_reproduce_detects_a_tampered_seed(mlflow_client, tmp_path, capsys):
    _, run_id = tracked_run(tmp_path, "seed=11")
    original = mlflow_client.get_run(run_id)
    config = Path(original.info.artifact_uri.removeprefix("file://")) / "config.yaml"
    config.write_text(config.read_text().replace("seed: 11", "seed: 12"))
    code, out, _ = reproduce(
        capsys, original.data.tags["config_hash"][:10], "--output-dir", str(tmp_path / "repro")
    )
    assert code == 1
    assert "hashes to" in out  # the stored config no longer matches its hash
    assert "(original) vs" in out  # and the metrics differ


def test_unknown_and_ambiguous_prefixes(mlflow_client, tmp_path, capsys):
    exp = store.get_or_create_experiment(mlflow_client, "fake")
    for digest in ("abc1" + "0" * 60, "abc2" + "0" * 60):
        mlflow_client.create_run(exp, tags={"config_hash": digest})
    code, out, err = reproduce(capsys, "abc")
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "ambiguous" in err
    code, out, err = reproduce(capsys, "fff0")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "no run" in err
    code, out, err = reproduce(capsys, "not-a-hash")
    assert code == 1 and len(err.strip().splitlines()) == 1


def test_skip_existing_reuses_a_finished_run(store_uri, mlflow_client, tmp_path):
    from sweeper.schema import TrackingConfig

    assert TrackingConfig().skip_existing is False  # documented default: always train
    cfg, first_id = tracked_run(tmp_path, "tracking.experiment=skip")  # trained once
    args = [
        *TINY,
        "tracking.enabled=true",
        "tracking.experiment=skip",
        "tracking.skip_existing=true",
    ]
    second = train_cli(*args, f"hydra.run.dir={tmp_path / 'b'}", cwd=tmp_path)
    assert "reusing its result" in second.stderr
    assert not (tmp_path / "b" / "episodes.csv").exists()  # it did not train

    runs = mlflow_client.search_runs(
        [mlflow_client.get_experiment_by_name("skip").experiment_id],
        order_by=["attributes.start_time ASC"],
    )
    assert [r.data.tags["outcome"] for r in runs] == ["finished", "reused"]
    first, reused = runs
    assert first.info.run_id == first_id
    assert reused.data.tags["reused_from"] == first_id
    assert reused.data.tags["config_hash"] == config_hash(cfg)
    assert reused.info.status == "FINISHED"
    assert reused.data.metrics["objective"] == first.data.metrics["objective"]
    result = json.loads((tmp_path / "b" / "result.json").read_text())
    assert result["reused_from"] == first.info.run_id
