"""Several trial processes on one fresh embedded SQLite store lose nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sweeper.tracking import store

WORKER = Path(__file__).with_name("concurrent_worker.py")


def test_concurrent_processes_on_a_fresh_sqlite_store(tmp_path):
    uri = store.sqlite_uri(tmp_path / "fresh" / "mlflow.db")  # created by the race itself
    n, episodes = 4, 200
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), uri, str(i), str(episodes)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    results = [p.communicate(timeout=240) for p in procs]
    for p, (_out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
    run_ids = {out.split()[0] for out, _ in results}
    parents = {out.split()[1] for out, _ in results}
    assert len(run_ids) == n
    assert len(parents) == 1  # every worker nested under the same parent run

    client = store.client(uri)
    (parent,) = parents
    exp_id = client.get_run(parent).info.experiment_id
    runs = client.search_runs([exp_id], "tags.trial_number != ''")
    assert {r.info.run_id for r in runs} == run_ids
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.tags["mlflow.parentRunId"] == parent
        for key in ("return", "length", "epsilon", "loss", "max_q"):
            history = client.get_metric_history(r.info.run_id, key)
            assert sorted(m.step for m in history) == list(range(1, episodes + 1)), key
        assert len(client.get_metric_history(r.info.run_id, "eval_return_mean")) == 10
    live_parents = client.search_runs([exp_id], "tags.`sweeper.role` = 'parent'")
    assert [p.info.run_id for p in live_parents] == [parent]
