"""Issue 8, point 5: a diverged training run is a failure, not a result.

Real training, no mocks: a DQN with ``agent.lr=1e5`` (its loss overflows within a few
episodes) as a single run and as an Optuna trial, a Q-learning table overflowed by rewards
near the float maximum, and a healthy run that must not notice anything.
"""

from __future__ import annotations

import csv
import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from reliability_helpers import clean_env

TINY = [
    "train.episodes=30",
    "eval.every=10",
    "eval.episodes=2",
    "train.progress=false",
    "train.plot=false",
]


def _env() -> dict[str, str]:
    """The test's environment (SWEEPER_OUTPUTS from conftest) without an outer Hydra's."""
    return clean_env()


def _app(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m sweeper.train`` in a subprocess, cwd tmp_path."""
    return subprocess.run(
        [sys.executable, "-m", "sweeper.train", *args],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )


def _compose(*overrides: str):
    from sweeper.cli import compose

    return compose([*TINY, "tracking.enabled=false", *overrides])


def _train(cfg, poison=None) -> float:
    """``sweeper.training.train`` on a composed config; ``poison(agent)`` before training."""
    from sweeper.callbacks import Callback
    from sweeper.train import budget_of, prepare
    from sweeper.training import train

    agent, env, eval_env = prepare(cfg)
    if poison is not None:
        poison(agent)
    return train(agent, env, eval_env, budget_of(cfg), cfg.seed, Callback(), True)


def test_single_run_that_diverges_fails_with_one_line(tmp_path):
    proc = _app(tmp_path, "agent.lr=1e5", *TINY, f"hydra.run.dir={tmp_path / 'run'}")

    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sweeper: training diverged at episode "), (
        proc.stderr
    )
    reason = lines[0].removeprefix("sweeper: ")
    assert "non-finite" in reason

    run = tmp_path / "run"
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "FAILED"
    assert result["error"] == f"DivergenceError: {reason}"
    assert result["objective"] is None

    # Detected within one evaluation of the first non-finite loss (before it: no update yet).
    with open(run / "episodes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    first_update = next(i for i, r in enumerate(rows) if r["loss"] != "nan")
    first_bad = next(
        int(r["episode"]) for r in rows[first_update:] if not math.isfinite(float(r["loss"]))
    )
    next_eval = -(-first_bad // 10) * 10
    assert int(rows[-1]["episode"]) <= next_eval
    assert result["episodes"] == int(rows[-1]["episode"])

    from mlflow.tracking import MlflowClient

    from sweeper.tracking import store

    client = MlflowClient(tracking_uri=store.sqlite_uri(tmp_path / "outputs" / store.DB_NAME))
    runs = [
        r for exp in client.search_experiments() for r in client.search_runs([exp.experiment_id])
    ]
    assert len(runs) == 1
    assert runs[0].info.status == "FAILED"
    assert runs[0].data.tags["error"] == f"DivergenceError: {reason}"


def test_optuna_sweep_fails_the_diverged_trial_and_goes_on(tmp_path):
    from sweeper.study_storage import open_storage

    journal = f"journal:{tmp_path / 'journal.log'}"
    proc = _app(
        tmp_path,
        "-m",
        "hydra/sweeper=sweeper_optuna",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.retest.enabled=false",
        "agent.lr=choice(1e-3,1e6)",
        "hydra.sweeper.n_trials=2",
        *TINY,
        "tracking.enabled=false",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"hydra.sweeper.storage={journal}",
    )

    assert proc.returncode == 0, proc.stderr[-3000:]
    st = open_storage(journal)
    (name,) = optuna.get_all_study_names(st)
    trials = optuna.load_study(study_name=name, storage=st).get_trials(deepcopy=False)
    by_lr = {t.params["agent.lr"]: t for t in trials}
    assert set(by_lr) == {1e-3, 1e6}
    assert by_lr[1e-3].state == optuna.trial.TrialState.COMPLETE
    failed = by_lr[1e6]
    assert failed.state == optuna.trial.TrialState.FAIL
    assert "DivergenceError: training diverged" in failed.user_attrs["sweeper:error"]


def test_tabular_q_table_overflow_is_divergence():
    from sweeper.training import DivergenceError

    # Rewards near the float maximum: the first squared TD error is inf (episode 1).
    cfg = _compose("agent=q_learning", "env=gridworld", "env.kwargs.step_reward=-1e308")
    with pytest.raises(DivergenceError, match=r"at episode 1 \(env step \d+\): non-finite loss"):
        _train(cfg)

    # A NaN only in the Q-table (the wall's row, never visited: loss and max-Q stay finite)
    # is caught by the parameter check at the first evaluation.
    cfg = _compose("agent=q_learning", "env=gridworld")

    def poison(agent) -> None:
        agent.q_table[0, 5] = np.nan  # the wall (1, 1) of the 4x4 grid

    with pytest.raises(DivergenceError, match=r"at episode 10 \(.*\): non-finite Q-table$") as exc:
        _train(cfg, poison)
    # A joblib worker sends the error back pickled: it must survive the trip intact.
    back = pickle.loads(pickle.dumps(exc.value))
    assert (str(back), back.episode, back.what) == (str(exc.value), 10, "non-finite Q-table")


def test_nonfinite_names_what_holds_the_nan():
    from sweeper.train import prepare

    tabular, _, _ = prepare(_compose("agent=q_learning", "env=gridworld"))
    assert tabular.nonfinite(0) is None
    tabular.q_table[0, 0, 1] = np.inf
    assert tabular.nonfinite(0) == "non-finite Q-table"

    dqn, _, _ = prepare(_compose("agent=dqn", "env=cartpole_simple"))
    assert dqn.nonfinite(0) is None
    dqn.target.params[-1][0, 0] = np.nan
    assert dqn.nonfinite(0) == "non-finite target network weights"
    dqn.online.params[0][0, 0, 0] = -np.inf
    assert dqn.nonfinite(0) == "non-finite online network weights"


def test_healthy_run_is_unaffected(tmp_path):
    from sweeper.train import prepare, run

    errors_before = np.geterr()
    cfg = _compose("agent=dqn", "env=cartpole_simple", "train.episodes=20")
    built = prepare(cfg)
    objective = run(cfg, tmp_path / "run", built=built)
    assert math.isfinite(objective)
    assert built[0].nonfinite(0) is None
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "FINISHED" and result["error"] is None
    assert np.geterr() == errors_before  # the overflow silencing stays inside train()
