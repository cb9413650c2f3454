"""Replicates in process: seeds, the lockstep group run, its record and its callbacks.

Real training (tabular Q-learning on the GridWorld, tens of milliseconds per seed), no mocks.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from hydra.errors import ConfigCompositionException

from sweeper import statistics
from sweeper.callbacks import Callback
from sweeper.config import ConfigError, check_overrides, compose_config, validate
from sweeper.seeding import SEED_RANGES, replicate_seeds
from sweeper.train import budget_of, build, run, run_replicates, seed_config
from sweeper.training import evaluation, train

BASE = [
    "agent=q_learning",
    "env=gridworld",
    "train.episodes=40",
    "eval.every=10",
    "eval.episodes=3",
    "tracking.enabled=false",
    "train.plot=false",
    "train.save_model=false",
    "train.progress=false",
]
SEEDS = [3, 5, 7]
FIVE = [3, 5, 7, 11, 13]  # n=5: IQM, mean, median and min all differ (checked where it matters)
EVAL_EPISODES = [10, 20, 30, 40]


def group_cfg(seeds, *extra: str):
    return compose_config([*BASE, f"trial.seeds=[{','.join(str(s) for s in seeds)}]", *extra])


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def eval_means(run_dir: Path) -> list[float]:
    with (run_dir / "evals.csv").open() as f:
        return [float(row["eval_return_mean"]) for row in csv.DictReader(f)]


class Recorder(Callback):
    """Everything a group callback is told, in order."""

    def __init__(self, prune_at: int | None = None) -> None:
        self.prune_at = prune_at
        self.starts: list[dict] = []
        self.evals: list[tuple[int, int, int, dict]] = []
        self.results: list[dict] = []
        self.ends: list[tuple[float, str]] = []

    def on_train_start(self, info) -> None:
        self.starts.append(dict(info))

    def on_eval(self, index, episode, step, metrics) -> None:
        self.evals.append((index, episode, step, dict(metrics)))
        if self.prune_at is not None and index == self.prune_at:
            raise optuna.TrialPruned(f"pruned at evaluation {index}")

    def on_result(self, result) -> None:
        self.results.append(dict(result))

    def on_train_end(self, objective, status) -> None:
        self.ends.append((objective, status))


# -- replicate_seeds -------------------------------------------------------------------------


@pytest.mark.parametrize("sweep_seed", [0, 1, 42, 2**31 - 1])
def test_replicate_seeds_are_deterministic_prefix_stable_distinct_and_disjoint(sweep_seed):
    tune = replicate_seeds(sweep_seed, 50, "tune")
    test = replicate_seeds(sweep_seed, 50, "test")
    assert tune == replicate_seeds(sweep_seed, 50, "tune")  # deterministic
    assert replicate_seeds(sweep_seed, 3) == replicate_seeds(sweep_seed, 5)[:3] == tune[:3]
    assert replicate_seeds(sweep_seed, 10, "test")[:4] == replicate_seeds(sweep_seed, 4, "test")
    assert len(set(tune)) == 50 and len(set(test)) == 50  # distinct
    assert all(isinstance(s, int) for s in tune + test)
    lo, hi = SEED_RANGES["tune"]
    assert all(lo <= s < hi for s in tune)
    lo, hi = SEED_RANGES["test"]
    assert all(lo <= s < hi for s in test)
    assert not set(tune) & set(test)  # a test seed is never a tuning seed
    assert tune != replicate_seeds(sweep_seed + 1, 50, "tune")  # the sweep seed picks them


def test_replicate_seeds_differ_between_sweep_seeds_and_refuse_an_unknown_phase():
    lists = [tuple(replicate_seeds(s, 5, "tune")) for s in range(20)]
    assert len(set(lists)) == 20
    assert replicate_seeds(7, 0) == []
    with pytest.raises(ValueError, match="phase"):
        replicate_seeds(7, 3, "train")


# -- run_replicates --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    """One group of three seeds, and a plain single run of each of its seeds."""
    root = tmp_path_factory.mktemp("group")
    value = run_replicates(group_cfg(SEEDS), root / "group")
    plain = {s: run(compose_config([*BASE, f"seed={s}"]), root / f"plain_{s}") for s in SEEDS}
    return root, value, plain


def test_each_seed_leaves_the_files_of_a_plain_run_of_that_seed(group):
    root, _, _ = group
    g = root / "group"
    assert sorted(p.name for p in g.iterdir()) == sorted(
        ["config.yaml", "result.json", *(f"seed_{s}" for s in SEEDS)]
    )
    for s in SEEDS:
        d = g / f"seed_{s}"
        for name in ("config.yaml", "episodes.csv", "evals.csv", "result.json"):
            assert (d / name).is_file(), (s, name)
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        assert cfg["seed"] == s
        assert cfg["trial"]["seeds"] is None
        assert len((d / "episodes.csv").read_text().splitlines()) == 1 + 40
        assert [r["episode"] for r in csv.DictReader((d / "evals.csv").open())] == [
            str(e) for e in EVAL_EPISODES
        ]
        assert read_json(d / "result.json")["status"] == "FINISHED"
    group_cfg_file = yaml.safe_load((g / "config.yaml").read_text())
    assert group_cfg_file["trial"]["seeds"] == SEEDS


def test_lockstep_changes_no_replicate_bit_for_bit(group):
    """Each seed of the group trains exactly what a plain single run of that seed trains."""
    root, _, plain = group
    for s in SEEDS:
        mine, alone = root / "group" / f"seed_{s}", root / f"plain_{s}"
        for name in ("config.yaml", "episodes.csv", "evals.csv"):
            assert (mine / name).read_bytes() == (alone / name).read_bytes(), (s, name)
        assert read_json(mine / "result.json") == read_json(alone / "result.json")
        assert read_json(mine / "result.json")["objective"] == plain[s]
    # the seeds are different runs (else "bit-identical" would prove nothing)
    assert len({(root / f"plain_{s}" / "episodes.csv").read_bytes() for s in SEEDS}) == 3


def test_group_record_aggregates_the_seeds_own_results(group):
    root, value, plain = group
    g = root / "group"
    result = read_json(g / "result.json")
    per_seed = [read_json(g / f"seed_{s}" / "result.json")["objective"] for s in SEEDS]
    assert per_seed == [plain[s] for s in SEEDS]
    assert result["status"] == "FINISHED" and result["error"] is None
    assert result["sweeper:seeds"] == SEEDS
    assert result["runs"] == [f"seed_{s}" for s in SEEDS]
    assert result["sweeper:aggregate"] == "iqm"
    assert result["objective_per_seed"] == per_seed
    assert result["objective"] == result["objective_iqm"] == value
    assert value == statistics.aggregate(per_seed, "iqm")
    est = statistics.estimate(per_seed, "iqm")
    assert (result["objective_ci_low"], result["objective_ci_high"], result["objective_n"]) == (
        est.low,
        est.high,
        3,
    )
    assert est.low < est.high  # the seeds differ: a real interval
    # per metric: each seed's value and their aggregate
    for key in ("last50_length", "mean_max_q", "final_max_q", "overestimation"):
        seeds_values = [read_json(g / f"seed_{s}" / "result.json")["metrics"][key] for s in SEEDS]
        assert result[f"{key}_per_seed"] == seeds_values
        assert result[key] == statistics.aggregate(seeds_values, "iqm")


@pytest.mark.parametrize("how", ["iqm", "mean", "median", "min"])
def test_each_aggregate_gives_its_statistic(tmp_path, how):
    value = run_replicates(group_cfg(FIVE, f"trial.aggregate={how}"), tmp_path)
    result = read_json(tmp_path / "result.json")
    per_seed = [read_json(tmp_path / f"seed_{s}" / "result.json")["objective"] for s in FIVE]
    stats = {h: statistics.aggregate(per_seed, h) for h in statistics.AGGREGATES}
    assert len(set(stats.values())) == 4, stats  # the four statistics tell apart here
    assert value == stats[how] == result["objective"] == result[f"objective_{how}"]
    assert result["sweeper:aggregate"] == how
    est = statistics.estimate(per_seed, how)
    assert (result["objective_ci_low"], result["objective_ci_high"]) == (est.low, est.high)


def test_group_callbacks_see_the_iqm_over_seeds_at_each_evaluation(tmp_path):
    rec = Recorder()
    value = run_replicates(group_cfg(FIVE), tmp_path, [rec])
    per_seed = [eval_means(tmp_path / f"seed_{s}") for s in FIVE]
    assert len(rec.starts) == 1
    assert [(i, e) for i, e, _, _ in rec.evals] == list(enumerate(EVAL_EPISODES))
    differs_from_mean = False
    for i, (_, _, _, metrics) in enumerate(rec.evals):
        values = [seed_evals[i] for seed_evals in per_seed]
        assert metrics["eval_return_mean"] == statistics.aggregate(values, "iqm")
        est = statistics.estimate(values, "iqm")
        assert metrics["eval_return_mean_ci_low"] == est.low
        assert metrics["eval_return_mean_ci_high"] == est.high
        assert metrics["n"] == 5
        differs_from_mean |= metrics["eval_return_mean"] != statistics.aggregate(values, "mean")
    assert differs_from_mean  # the IQM, not the mean (they differ on these seeds)
    # the step of a round is the furthest replicate's env step
    for i, (_, _, step, _) in enumerate(rec.evals):
        steps = []
        for s in FIVE:
            rows = list(csv.DictReader((tmp_path / f"seed_{s}" / "evals.csv").open()))
            steps.append(int(rows[i]["step"]))
        assert step == max(steps)
    assert rec.results == [read_json(tmp_path / "result.json")]
    assert rec.ends == [(value, "FINISHED")]


def test_a_group_callback_that_prunes_stops_every_seed(tmp_path):
    rec = Recorder(prune_at=1)
    with pytest.raises(optuna.TrialPruned):
        run_replicates(group_cfg(SEEDS), tmp_path, [rec])
    assert [i for i, *_ in rec.evals] == [0, 1]
    for s in SEEDS:
        d = tmp_path / f"seed_{s}"
        result = read_json(d / "result.json")
        assert result["status"] == "PRUNED" and result["objective"] is None
        assert result["episodes"] == 20  # no seed trained past the evaluation that pruned
        assert len((d / "episodes.csv").read_text().splitlines()) == 1 + 20
        assert len(eval_means(d)) == 2
    result = read_json(tmp_path / "result.json")
    assert result["status"] == "PRUNED" and result["objective"] is None
    assert result["error"] is None
    assert result["objective_per_seed"] == [None, None, None]
    assert len(rec.ends) == 1 and math.isnan(rec.ends[0][0]) and rec.ends[0][1] == "PRUNED"
    assert rec.results == [result]


def test_the_same_group_twice_gives_the_same_record(tmp_path):
    for name in ("a", "b"):
        run_replicates(group_cfg(SEEDS), tmp_path / name)
    assert (tmp_path / "a" / "result.json").read_bytes() == (
        tmp_path / "b" / "result.json"
    ).read_bytes()
    for s in SEEDS:
        assert (tmp_path / "a" / f"seed_{s}" / "episodes.csv").read_bytes() == (
            tmp_path / "b" / f"seed_{s}" / "episodes.csv"
        ).read_bytes()


def test_seed_config_sets_the_seed_and_leaves_the_group_config_alone():
    cfg = group_cfg(SEEDS)
    one = seed_config(cfg, 5)
    assert one.seed == 5 and one.trial.seeds is None
    assert cfg.seed == 42 and list(cfg.trial.seeds) == SEEDS


# -- config validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trial.seeds=[]", "trial.seeds"),
        ("trial.seeds=[1,1]", "trial.seeds"),
        ("trial.seeds=[-1,2]", "trial.seeds"),
    ],
)
def test_bad_replicate_settings_are_config_errors_naming_the_key(override, key):
    cfg = compose_config([*BASE, override])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value).startswith(key), err.value
    assert "\n" not in str(err.value)


def test_a_valid_group_config_validates():
    validate(group_cfg(SEEDS, "trial.aggregate=median"))  # the checks above are not blanket


def test_a_bogus_aggregate_is_refused_before_any_run(tmp_path):
    # trial.aggregate is an Enum (sweeper.choices.Aggregate): the schema refuses it while
    # composing, so no run (and no directory) can start with it
    with pytest.raises(ConfigCompositionException, match="aggregate"):
        group_cfg(SEEDS, "trial.aggregate=bogus")
    with pytest.raises(ConfigError, match="trial.aggregate"):
        check_overrides([*BASE, "trial.aggregate=bogus"])


@pytest.mark.parametrize("seeds", ["[1,1]", "[]"])
def test_run_replicates_refuses_bad_seeds_before_writing(tmp_path, seeds):
    cfg = compose_config([*BASE, f"trial.seeds={seeds}"])
    with pytest.raises(ConfigError, match="trial.seeds"):
        run_replicates(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("override", "key"),
    [("trial.seeds=[1,1]", "trial.seeds"), ("trial.aggregate=bogus", "trial.aggregate")],
)
def test_the_app_refuses_bad_replicate_settings_with_one_line(tmp_path, override, key):
    out = tmp_path / "outputs" / "bad"
    proc = subprocess.run(
        [sys.executable, "-m", "sweeper.train", *BASE, override, f"hydra.run.dir={out}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and key in lines[0], proc.stderr
    assert not (tmp_path / "outputs").exists()


# -- evaluation() ----------------------------------------------------------------------------

ZERO = np.array([0])


def _trained(*overrides: str):
    cfg = compose_config([*BASE, *overrides])
    agent, env, eval_env = build(cfg)
    train(agent, env, eval_env, budget_of(cfg), cfg.seed, Callback())
    assert np.any(agent.q_table != 0)
    return agent, eval_env


def _evaluate(agent, eval_env, episodes: int, seed: int, probe: bool = False):
    out = evaluation(agent, eval_env, ZERO, [seed], [episodes], probe)
    return {k: v[0, :episodes] for k, v in out.items()}


def test_evaluation_discounted_return_equals_return_at_gamma_one():
    agent, eval_env = _trained("agent.gamma=1.0", "train.episodes=30")
    ev = _evaluate(agent, eval_env, 3, seed=11, probe=True)
    assert set(ev) == {"return", "discounted_return", "start_max_q"}
    assert ev["return"].shape == (3,)
    np.testing.assert_allclose(ev["discounted_return"], ev["return"], rtol=0, atol=1e-12)


def test_evaluation_discounts_with_the_agents_gamma_and_probes_the_start_state():
    """Each greedy episode replayed by hand on a scalar env from the same reseeded start."""
    from sweeper.envs import make_env

    agent, eval_env = _trained("agent.gamma=0.9", "train.episodes=30")
    scalar = make_env("sweeper/GridWorld-v0")
    seed = 11
    ev = _evaluate(agent, eval_env, 3, seed=seed, probe=True)
    for i in range(3):
        obs, _ = scalar.reset(seed=seed + i)
        assert ev["start_max_q"][i] == agent.q_table[0, obs].max()
        total, discounted, discount, done = 0.0, 0.0, 1.0, False
        while not done:
            action = int(agent.q_table[0, obs].argmax())
            obs, reward, terminated, truncated, _ = scalar.step(action)
            total += reward
            discounted += discount * reward
            discount *= 0.9
            done = terminated or truncated
        assert ev["return"][i] == pytest.approx(total, abs=1e-12)
        assert ev["discounted_return"][i] == pytest.approx(discounted, abs=1e-12)
    assert np.any(ev["discounted_return"] != ev["return"])  # gamma < 1 does discount
    assert np.all(np.isnan(_evaluate(agent, eval_env, 2, seed=seed)["start_max_q"]))
