"""The seed's four training panels (``sweeper.plotting``), drawn from what a real run logged:
the data behind the figure are checked, not its pixels."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from sweeper import plotting

pytestmark = pytest.mark.slow


def cli(*overrides: str, cwd: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "sweeper.train", "tracking.enabled=false", *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]


def column(path: Path, name: str) -> np.ndarray:
    with path.open(newline="") as f:
        return np.array([float(r[name]) if r[name] != "" else np.nan for r in csv.DictReader(f)])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("panels")
    common = ["train.episodes=45", "eval.every=15", "eval.episodes=2", "train.progress=false"]
    cli(*common, f"hydra.run.dir={tmp / 'one'}", cwd=tmp)
    cli(*common, "trial.seeds=[0,1,2]", f"hydra.run.dir={tmp / 'group'}", cwd=tmp)
    return tmp


def test_a_dqn_runs_figure_is_the_seeds_four_panels_from_its_episodes_csv(runs):
    run = runs / "one"
    assert (run / "learning_curve.png").stat().st_size > 0
    panels = plotting.run_panels(run)
    assert set(panels) == {"length", "return", "loss", "epsilon", "eval"}
    episodes = run / "episodes.csv"
    for name in ("length", "return", "loss", "epsilon"):
        logged = column(episodes, name)
        np.testing.assert_array_equal(panels[name]["y"], logged)
        np.testing.assert_array_equal(panels[name]["x"], np.arange(1, 46))
    # the seed's 20-episode moving average ("valid" convolution), on length and reward
    length = column(episodes, "length")
    np.testing.assert_allclose(panels["length"]["smooth_y"], plotting.moving_average(length, 20))
    np.testing.assert_array_equal(panels["length"]["smooth_x"], np.arange(20, 46))
    # the loss is NaN before the first update: each window averages the episodes it has
    loss = column(episodes, "loss")
    assert np.isnan(loss[0]) and np.isfinite(loss[-1])
    last = loss[-20:]
    assert panels["loss"]["smooth_y"][-1] == pytest.approx(np.nanmean(last))
    # epsilon is a schedule: drawn as logged, not smoothed
    np.testing.assert_array_equal(panels["epsilon"]["smooth_y"], column(episodes, "epsilon"))
    evals = run / "evals.csv"
    np.testing.assert_array_equal(panels["eval"]["x"], [15, 30, 45])
    np.testing.assert_array_equal(panels["eval"]["y"], column(evals, "eval_return_mean"))


def test_a_replicate_groups_figure_is_the_iqm_of_its_seeds_with_a_ci_band(runs):
    group = runs / "group"
    assert (group / "learning_curve.png").stat().st_size > 0
    dirs = [group / f"seed_{s}" for s in (0, 1, 2)]
    bands = plotting.group_panels(dirs)
    length = bands["length"]
    smoothed = np.array(
        [plotting.moving_average(column(d / "episodes.csv", "length"), 20) for d in dirs]
    )
    np.testing.assert_allclose(length.value, stats.trim_mean(smoothed, 0.25, axis=0))
    assert length.n_curves == 3 and (length.low <= length.ci_value).all()
    assert (length.ci_value <= length.high).all()
    evals = np.array([column(d / "evals.csv", "eval_return_mean") for d in dirs])
    np.testing.assert_allclose(bands["eval"].value, stats.trim_mean(evals, 0.25, axis=0))


def test_the_goal_line_is_the_envs_solved_return():
    import gymnasium

    import sweeper.envs  # noqa: F401 - registers the seed's envs

    assert gymnasium.spec("sweeper/CartPoleSimple-v0").reward_threshold == 200.0  # the seed's
