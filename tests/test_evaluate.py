"""``sweeper eval``: a saved agent, loaded from its run directory, MLflow run id or config hash,
replays the run's own last greedy evaluation exactly; the GridWorld policy is its Q-table's
argmax; what cannot be evaluated says why in one line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from sweeper.evaluate import ARROWS, EvalError, evaluate, find_run_dir, load
from sweeper.training import EVAL_SEED_OFFSET


def train(tmp_path, name, *overrides):
    out = tmp_path / name
    res = subprocess.run(
        [sys.executable, "-m", "sweeper.train", *overrides, f"hydra.run.dir={out}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": ""},  # piped tables: no cell cut (pytest sets 80)
    )
    assert res.returncode == 0, res.stderr
    return out, res


def cli(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "sweeper.cli", "eval", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": ""},
    )


@pytest.mark.parametrize(
    "overrides",
    [
        ("agent=q_learning", "env=gridworld", "train.episodes=80", "eval.every=40"),
        ("agent=dqn", "train.episodes=12", "eval.every=6", "eval.episodes=4"),
        ("agent=dueling_dqn", "env=gridworld", "env.kwargs.obs_mode=onehot", "train.episodes=10"),
    ],
)
def test_a_loaded_agent_replays_its_last_evaluation_exactly(tmp_path, overrides):
    out, _ = train(tmp_path, "run", *overrides, "tracking.enabled=false", "train.plot=false")
    result = json.loads((out / "result.json").read_text())
    saved = load(find_run_dir(str(out)))
    replay = evaluate(saved, result["eval_episodes"], seed_offset=EVAL_SEED_OFFSET)
    assert replay["mean"] == result["eval_means"][-1]  # the same policy, the same starts
    assert replay["std"] == pytest.approx(result["eval_stds"][-1], abs=1e-12)
    fresh = evaluate(saved, 7)  # other seeds than training's: its own
    assert len(fresh["returns"]) == 7 and fresh["seeds"][0] != replay["seeds"][0]


def test_eval_finds_a_run_by_mlflow_id_and_hash_and_prints_the_gridworld_policy(tmp_path):
    out, res = train(
        tmp_path, "run", "agent=q_learning", "env=gridworld", "train.episodes=60", "eval.every=30"
    )
    run_id = re.search(r"MLflow run\s*│\s*([0-9a-f]{32})", res.stdout).group(1)
    digest = re.search(r"config hash\s*│\s*([0-9a-f]{64})", res.stdout).group(1)
    for target in (str(out), run_id, digest[:10]):
        got = cli(tmp_path, target, "--episodes", "5")
        assert got.returncode == 0, got.stderr
        assert "n=5 episodes" in got.stdout and str(out) in got.stdout
    rows = [ln for ln in got.stdout.splitlines() if any(a in ln for a in ARROWS + "WGT")]
    cells = [re.findall(rf"[{ARROWS}WGT]", ln.split("│")[-2]) for ln in rows]
    q = np.load(out / "model.npy")
    layout = {(0, 3): "G", (1, 1): "W", (2, 3): "T"}  # the seed's 4x4 grid
    assert len(cells) == 4
    for r in range(4):
        for c in range(4):
            want = layout.get((r, c)) or ARROWS[int(np.argmax(q[r * 4 + c]))]
            assert cells[r][c] == want, (r, c)


def test_what_cannot_be_evaluated_is_one_line(tmp_path):
    out, _ = train(
        tmp_path,
        "noml",
        "agent=q_learning",
        "env=gridworld",
        "train.episodes=5",
        "train.save_model=false",
        "tracking.enabled=false",
    )
    with pytest.raises(EvalError, match="no saved model"):
        load(out)
    for target, why in [
        (str(out), "no saved model"),
        ("no/such/dir", "is neither a run directory"),
        ("abcdef", "no run with config hash abcdef"),
    ]:
        got = cli(tmp_path, target)
        assert got.returncode == 1
        lines = got.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("sweeper: eval: ") and why in lines[0]
