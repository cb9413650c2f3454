"""``sweeper ui`` for real: an MLflow server on 127.0.0.1 over an embedded store; runs log to
it over HTTP (``tracking.tracking_uri=http://127.0.0.1:PORT``); its REST API lists them."""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from tracking_helpers import get, post, serve_ui, train_cli


def test_sweeper_ui_serves_the_runs_of_a_sweep_over_rest(tmp_path, store_uri):
    with serve_ui(tmp_path) as base:
        check_runs_over_rest(base, tmp_path)
    # Stopping `sweeper ui` (SIGTERM) stopped the server and its workers.
    time.sleep(1)
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"{base}/health", timeout=2)


def check_runs_over_rest(ui_server: str, tmp_path) -> None:
    train_cli(
        "-m",
        "seed=1,2",
        "agent=q_learning",
        "env=gridworld",
        "train.episodes=20",
        "eval.every=10",
        "eval.episodes=2",
        "train.progress=false",
        "tracking.enabled=true",
        f"tracking.tracking_uri='{ui_server}'",
        "tracking.experiment=ui-sweep",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
        env={"SWEEPER_OUTPUTS": str(tmp_path / "client-side")},
    )
    api = f"{ui_server}/api/2.0/mlflow"
    exp = get(
        f"{api}/experiments/get-by-name?" + urllib.parse.urlencode({"experiment_name": "ui-sweep"})
    )["experiment"]
    runs = post(
        f"{api}/runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100}
    )["runs"]
    assert len(runs) == 2
    for run in runs:
        assert run["info"]["status"] == "FINISHED"
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert tags["sweep_dir"] == str((tmp_path / "sweep").resolve())
        assert len(tags["config_hash"]) == 64 and tags["outcome"] == "finished"
        metrics = {m["key"] for m in run["data"]["metrics"]}
        assert {"return", "eval_return_mean", "objective"} <= metrics
        arts = get(f"{api}/artifacts/list?run_id={run['info']['run_id']}")
        assert {"config.yaml", "result.json", "learning_curve.png"} <= {
            f["path"] for f in arts["files"]
        }
    assert sorted(t["value"] for r in runs for t in r["data"]["tags"] if t["key"] == "seed") == [
        "1",
        "2",
    ]
    # The server writes into the embedded store it was started on; the client made none.
    assert (tmp_path / "outputs" / "mlflow.db").exists()
    assert not (tmp_path / "client-side" / "mlflow.db").exists()
    # The UI page itself is served.
    with urllib.request.urlopen(ui_server + "/", timeout=10) as resp:
        assert resp.status == 200 and b"<html" in resp.read().lower()
