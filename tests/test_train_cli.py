"""The Hydra app end to end, as a user runs it: files left, errors, determinism."""

import subprocess
import sys
from pathlib import Path

import pytest

from sweeper.config import compose_config
from sweeper.train import run


def cli(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sweeper.train", *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_run_leaves_config_metrics_curve_and_model(tmp_path):
    out = tmp_path / "run"
    res = cli(
        "agent=q_learning",
        "env=gridworld",
        "train.episodes=60",
        "eval.every=20",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    for name in [
        "config.yaml",
        "episodes.csv",
        "evals.csv",
        "learning_curve.png",
        "model.npy",
        "result.json",
        ".hydra/overrides.yaml",
    ]:
        assert (out / name).is_file(), name
    header = (out / "episodes.csv").read_text().splitlines()[0]
    assert header == "episode,step,return,length,epsilon,loss,max_q"
    assert len((out / "episodes.csv").read_text().splitlines()) == 61
    assert len((out / "evals.csv").read_text().splitlines()) == 1 + 3
    assert "_target_: sweeper.agents.tabular.QLearning" in (out / "config.yaml").read_text()


@pytest.mark.parametrize(
    "override, key",
    [
        ("agent.lr=-1", "agent.lr"),
        ("buffer.capacity=10", "buffer.capacity"),
        ("agent=q_learning", "tabular"),
    ],
)
def test_bad_values_exit_non_zero_with_one_line_and_no_output_dir(tmp_path, override, key):
    out = tmp_path / "outputs" / "bad"
    res = cli(override, f"hydra.run.dir={out}", cwd=tmp_path)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and key in lines[0], res.stderr
    assert not out.exists()
    assert not (tmp_path / "outputs").exists()  # nor the folders Hydra made above it


def test_a_refused_run_leaves_nothing_under_the_default_outputs(tmp_path):
    res = cli("agent.gamma=0", cwd=tmp_path)
    assert res.returncode == 2 and "agent.gamma" in res.stderr
    assert not (tmp_path / "outputs" / "runs").exists()


def test_unknown_key_and_option_fail_before_a_directory_exists(tmp_path):
    out = tmp_path / "outputs" / "bad"
    for override, key in [
        ("agent.learning_rate=1", "agent.learning_rate"),
        ("buffer=huge", "buffer"),
    ]:
        res = cli(override, f"hydra.run.dir={out}", cwd=tmp_path)
        assert res.returncode != 0 and key in res.stderr
        assert not out.exists()


@pytest.mark.parametrize(
    "args, option",
    [
        (["agent=base_dqn"], "'base_dqn'"),  # the schemas are no options
        (["agent=schema_dqn_agent"], "'schema_dqn_agent'"),
        (["env=grid"], "'grid'"),
        (["-m", "agent=dqn,sarsaa"], "'sarsaa'"),  # a sweep over options: each is checked
        (["+sweep=nope"], "'nope'"),
    ],
)
def test_an_unknown_group_option_is_one_line_naming_the_group(tmp_path, args, option):
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    group = args[-1].lstrip("+").split("=")[0]
    assert lines[0].startswith(f"sweeper: config error: {args[-1]}: {group} has no option")
    assert option in lines[0] and "(options: " in lines[0]
    assert not (tmp_path / "outputs").exists()


def test_help_lists_the_options_and_not_the_schemas(tmp_path):
    res = cli("--help", cwd=tmp_path)
    assert res.returncode == 0
    groups = res.stdout.split("== Config ==")[0]
    assert "agent: double_dqn, dqn, dueling_dqn, expected_sarsa, q_learning, sarsa" in groups
    assert "buffer: none, prioritized, uniform" in groups
    assert "base_" not in groups and "schema" not in groups


@pytest.mark.parametrize(
    "overrides",
    [
        ["agent=dqn", "buffer=prioritized", "train.episodes=15", "eval.every=5"],
        ["agent=dueling_dqn", "agent.double=true", "train.episodes=15", "eval.every=5"],
        ["agent=sarsa", "env=gridworld", "train.episodes=100", "eval.every=25"],
    ],
)
def test_same_config_and_seed_give_identical_metrics(tmp_path, overrides):
    cfg = compose_config([*overrides, "eval.episodes=3", "train.plot=false"])
    runs = []
    for name in ("a", "b"):
        objective = run(cfg, tmp_path / name)
        runs.append(
            (
                objective,
                (tmp_path / name / "episodes.csv").read_bytes(),
                (tmp_path / name / "evals.csv").read_bytes(),
            )
        )
    assert runs[0] == runs[1]
    other = run(compose_config([*overrides, "eval.episodes=3", "seed=7"]), tmp_path / "c")
    assert (tmp_path / "c" / "episodes.csv").read_bytes() != runs[0][1] or other != runs[0][0]
