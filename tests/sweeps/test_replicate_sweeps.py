"""Sweeps whose trials are replicate groups, from the shell: seeds, aggregate, re-test, MLflow.

Subprocess sweeps of the real app (tabular Q-learning on the GridWorld, tiny budgets) on a
journal file and an embedded MLflow store under the test's tmp directory.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from sweep_helpers import clean_env, journal, only_study, states, sweep_cmd

from sweeper.analysis import NOT_ENOUGH, retest_lines
from sweeper.seeding import replicate_seeds
from sweeper.statistics import aggregate, estimate

APP_SEED = 42  # conf/config.yaml: the sweep seed the tuning and test seeds derive from
TINY = [
    "agent=q_learning",
    "env=gridworld",
    "eval.episodes=2",
    "train.plot=false",
    "train.save_model=false",
    "train.progress=false",
]


def sweep(tmp_path: Path, *overrides: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m sweeper.train -m`` in tmp_path (journal, sweep dir and MLflow store there);
    a wide terminal, so that the summary table does not wrap its lines."""
    cmd = sweep_cmd(
        "app",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"hydra.sweeper.storage={journal(tmp_path)}",
        "hydra/sweeper=sweeper_optuna",
        *overrides,
    )
    env = clean_env(COLUMNS="400")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("SWEEPER_OUTPUTS", None)
    return subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )


def ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# -- a sweep of 2 configs x 3 tuning seeds, the best re-tested on 3 test seeds, tracked --------


@pytest.fixture(scope="module")
def retested(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("retest")
    proc = sweep(
        tmp,
        "hydra/launcher=isolated",
        "hydra.sweeper.n_jobs=2",
        *TINY,
        "train.episodes=40",
        "eval.every=20",
        "agent.alpha=choice(0.1,0.6)",
        "hydra/sweeper/sampler=grid",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.seeds=3",
        "hydra.sweeper.retest.top_k=1",
        "hydra.sweeper.retest.seeds=3",
    )
    ok(proc)
    return tmp, proc, only_study(journal(tmp))


def test_every_trial_trains_the_same_three_tuning_seeds(retested):
    tmp, _, study = retested
    tuning = replicate_seeds(APP_SEED, 3, "tune")
    assert states(study) == {"COMPLETE": 2}
    assert study.user_attrs["sweeper:replicate_seeds"] == {"sweep_seed": APP_SEED, "tune": tuning}
    values = set()
    for t in study.trials:
        assert t.user_attrs["sweeper:seeds"] == tuning
        assert t.user_attrs["sweeper:aggregate"] == "iqm"
        assert set(t.params) == {"agent.alpha"}  # the seed is no parameter
        per_seed = t.user_attrs["objective_per_seed"]
        trial_dir = Path(t.user_attrs["sweeper:output_dir"])
        assert trial_dir == tmp / "sweep" / str(t.number)
        assert per_seed == [
            read_json(trial_dir / f"seed_{s}" / "result.json")["objective"] for s in tuning
        ]
        assert t.value == aggregate(per_seed, "iqm") == t.user_attrs["objective_iqm"]
        est = estimate(per_seed, "iqm")
        assert t.user_attrs["objective_ci_low"] == est.low
        assert t.user_attrs["objective_ci_high"] == est.high
        assert t.user_attrs["objective_n"] == 3
        group = read_json(trial_dir / "result.json")
        assert group["sweeper:seeds"] == tuning and group["objective"] == t.value
        for s in tuning:  # each replicate's config is that of a plain run of its seed
            cfg = yaml.safe_load((trial_dir / f"seed_{s}" / "config.yaml").read_text())
            assert cfg["seed"] == s and cfg["trial"]["seeds"] is None
            assert cfg["agent"]["alpha"] == t.params["agent.alpha"]
        values.add(t.value)
    assert len(values) == 2  # the two configs are told apart


def test_optimization_results_best_has_a_ci_over_seeds_and_no_seed_param(retested):
    tmp, _, study = retested
    best = yaml.safe_load((tmp / "sweep" / "optimization_results.yaml").read_text())["best"]
    t = study.best_trial
    per_seed = t.user_attrs["objective_per_seed"]
    est = estimate(per_seed, "iqm")
    assert best["number"] == t.number and best["value"] == t.value
    assert best["aggregate"] == "iqm"
    assert (best["ci_low"], best["ci_high"], best["n"]) == (est.low, est.high, 3)
    assert best["ci_low"] <= best["value"] <= best["ci_high"]
    assert best["per_seed"] == per_seed
    assert best["seeds"] == replicate_seeds(APP_SEED, 3, "tune")
    assert best["params"] == {"agent.alpha": t.params["agent.alpha"]}
    assert not any(o.split("=")[0].lstrip("+~") == "seed" for o in best["overrides"])


def test_the_best_config_is_retested_on_disjoint_test_seeds(retested):
    tmp, _, study = retested
    tuning = replicate_seeds(APP_SEED, 3, "tune")
    test_seeds = replicate_seeds(APP_SEED, 3, "test")
    retest = study.user_attrs["sweeper:retest"]
    assert retest["test_seeds"] == test_seeds
    assert not set(test_seeds) & set(tuning)
    best = study.best_trial
    assert [c["number"] for c in retest["configs"]] == [best.number]  # top_k=1
    row = retest["configs"][0]
    run_dirs = [tmp / "sweep" / "test" / f"trial-{best.number}" / f"seed_{s}" for s in test_seeds]
    objectives = [read_json(d / "result.json")["objective"] for d in run_dirs]
    assert row["test_per_seed"] == objectives
    assert all(isinstance(v, float) for v in objectives)
    for d, s in zip(run_dirs, test_seeds, strict=True):  # plain single runs of a test seed
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        assert cfg["seed"] == s and cfg["trial"]["seeds"] is None
        assert cfg["trial"]["phase"] == "test" and cfg["trial"]["test_of"] == best.number
        assert cfg["agent"]["alpha"] == best.params["agent.alpha"]
    test_est = estimate(objectives, "iqm")
    assert row["test"]["value"] == test_est.value and row["test"]["n"] == 3
    assert row["tuning"]["value"] == best.value
    assert row["optimism_gap"] == pytest.approx(best.value - test_est.value)
    assert retest["tuning_winner"] == retest["test_winner"] == best.number
    assert not (tmp / "sweep" / "test" / f"trial-{1 - best.number}").exists()


def test_the_summary_shows_the_ci_and_the_test_seeds(retested):
    _, proc, study = retested
    out = proc.stdout
    assert "IQM" in out and "95% CI" in out
    assert "best seeds" in out
    assert ", ".join(str(s) for s in replicate_seeds(APP_SEED, 3, "tune")) in out
    lines = retest_lines(study.user_attrs["sweeper:retest"])
    assert len(lines) == 2 and lines[-1].startswith("winner on 3 test seeds: trial")
    for line in lines:
        assert line in out, line


@pytest.fixture(scope="module")
def mlflow_runs(retested):
    from sweeper.tracking import store

    tmp, _, study = retested
    db = tmp / "outputs" / store.DB_NAME
    assert db.is_file()
    client = store.client(store.sqlite_uri(db))
    exp = client.get_experiment_by_name(study.study_name)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return client, runs


def _artifact_paths(client, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for a in client.list_artifacts(run_id, path):
        out += _artifact_paths(client, run_id, a.path) if a.is_dir else [a.path]
    return out


def test_mlflow_parent_trial_replicate_and_test_runs_are_nested(retested, mlflow_runs):
    _, _, study = retested
    client, runs = mlflow_runs
    tuning = replicate_seeds(APP_SEED, 3, "tune")
    test_seeds = replicate_seeds(APP_SEED, 3, "test")
    by_id = {r.info.run_id: r for r in runs}
    assert all(r.info.status == "FINISHED" for r in runs)

    parents = [r for r in runs if r.data.tags.get("sweeper.role") == "parent"]
    assert len(parents) == 1
    parent = parents[0].info.run_id

    def children(run_id: str) -> list:
        return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == run_id]

    under_parent = children(parent)
    trial_runs = {
        r.data.tags["mlflow.runName"]: r for r in under_parent if "test_of_trial" not in r.data.tags
    }
    test_runs = [r for r in under_parent if "test_of_trial" in r.data.tags]
    assert sorted(trial_runs) == ["trial-0", "trial-1"]
    assert len(runs) == 1 + 2 + 2 * 3 + 3  # nothing else was logged

    for t in study.trials:
        run = trial_runs[f"trial-{t.number}"]
        m, tags = run.data.metrics, run.data.tags
        assert m["objective_iqm"] == t.value == m["objective"]
        assert m["objective_ci_low"] == t.user_attrs["objective_ci_low"]
        assert m["objective_ci_high"] == t.user_attrs["objective_ci_high"]
        assert m["objective_n"] == 3
        assert tags["seeds"] == ",".join(str(s) for s in tuning) and "seed" not in tags
        assert tags["phase"] == "tune" and tags["trial_number"] == str(t.number)
        replicas = children(run.info.run_id)
        assert sorted(r.data.tags["mlflow.runName"] for r in replicas) == sorted(
            f"trial-{t.number}/seed-{s}" for s in tuning
        )
        per_seed = dict(zip(tuning, t.user_attrs["objective_per_seed"], strict=True))
        for r in replicas:
            seed = int(r.data.tags["seed"])
            assert r.data.tags["mlflow.runName"] == f"trial-{t.number}/seed-{seed}"
            assert r.data.metrics["objective"] == per_seed[seed]
            assert {"config.yaml", "episodes.csv", "evals.csv", "result.json"} <= set(
                _artifact_paths(client, r.info.run_id)
            )
            assert not children(r.info.run_id)

    assert len(test_runs) == 3
    best = study.best_trial
    assert sorted(int(r.data.tags["seed"]) for r in test_runs) == sorted(test_seeds)
    values = dict(
        zip(
            test_seeds,
            study.user_attrs["sweeper:retest"]["configs"][0]["test_per_seed"],
            strict=True,
        )
    )
    for r in test_runs:
        assert r.data.tags["phase"] == "test"
        assert r.data.tags["test_of_trial"] == str(best.number)
        assert r.data.metrics["objective"] == values[int(r.data.tags["seed"])]
        assert (
            r.data.tags["mlflow.runName"]
            == f"test-of-trial-{best.number}/seed-{r.data.tags['seed']}"
        )
    assert set(by_id) == {parent} | {r.info.run_id for r in under_parent} | {
        r.info.run_id for t in trial_runs.values() for r in children(t.info.run_id)
    }


def test_a_trial_run_does_not_copy_its_replicates_folders(retested, mlflow_runs):
    tmp, _, study = retested
    client, runs = mlflow_runs
    for r in runs:
        if r.data.tags.get("mlflow.runName") not in ("trial-0", "trial-1"):
            continue
        paths = _artifact_paths(client, r.info.run_id)
        assert "result.json" in paths and "config.yaml" in paths
        assert not any(p.split("/")[0].startswith("seed_") for p in paths), paths
        assert not any(p.endswith("episodes.csv") for p in paths), paths
    # the store holds each replicate's episodes.csv once
    copies = list((tmp / "outputs" / "mlartifacts").rglob("episodes.csv"))
    assert len(copies) == 2 * 3 + 3, copies


# -- refused before any trial ------------------------------------------------------------------


def _refused(tmp_path: Path, proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("sweeper: ")
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "sweep").exists()
    if (tmp_path / "journal.log").exists():  # nothing, or a study without trials
        for name in optuna.get_all_study_names(journal_storage(tmp_path)):
            assert not optuna.load_study(study_name=name, storage=journal_storage(tmp_path)).trials
    assert not (tmp_path / "outputs").exists()  # no MLflow store, no run dirs


def journal_storage(tmp_path: Path):
    from sweeper.study_storage import open_storage

    return open_storage(journal(tmp_path))


@pytest.mark.parametrize(
    "override",
    ["seed=choice(0,1)", "+hydra.sweeper.params.seed='choice(0,1)'", "seed=3,4"],
    ids=["command-line", "params", "list"],
)
def test_seed_in_the_search_space_is_refused(tmp_path, override):
    proc = sweep(tmp_path, *TINY, "train.episodes=10", "agent.alpha=choice(0.1,0.6)", override)
    _refused(tmp_path, proc, "seed", "hydra.sweeper.seeds")
    assert proc.stderr.split(":")[1].strip() == "seed"  # the line names the key first


def test_a_force_added_seed_in_the_search_space_is_refused(tmp_path):
    proc = sweep(
        tmp_path,
        *TINY,
        "tracking.enabled=false",
        "train.episodes=10",
        "eval.every=10",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.retest.enabled=false",
        "++seed=choice(0,1)",
    )
    _refused(tmp_path, proc, "seed", "hydra.sweeper.seeds")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("hydra.sweeper.seeds=0", "hydra.sweeper.seeds"),
        ("hydra.sweeper.aggregate=bogus", "hydra.sweeper.aggregate"),
    ],
)
def test_bad_replicate_settings_are_refused_before_any_trial(tmp_path, override, key):
    proc = sweep(tmp_path, *TINY, "train.episodes=10", "agent.alpha=choice(0.1,0.6)", override)
    _refused(tmp_path, proc, key)
    assert proc.stderr.startswith(f"sweeper: {key}:"), proc.stderr


# -- importance with too few trials ------------------------------------------------------------


def test_four_trials_are_not_enough_evidence_to_rank(tmp_path):
    proc = sweep(
        tmp_path,
        *TINY,
        "tracking.enabled=false",
        "train.episodes=30",
        "eval.every=10",
        "agent.alpha=choice(0.1,0.6)",
        "agent.gamma=choice(0.5,0.99)",
        "hydra/sweeper/sampler=grid",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.seeds=2",
        "hydra.sweeper.retest.enabled=false",
    )
    ok(proc)
    study = only_study(journal(tmp_path))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4
    assert len({t.value for t in study.trials}) > 1  # the values vary: fANOVA could fit
    res = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    imp = res["importance"]
    assert res["most_important"] is None and imp["most_important"] is None
    assert sorted(imp["values"]) == ["agent.alpha", "agent.gamma"]  # importances, no ranking
    assert imp["reason"] == "only 4 complete trials, needs at least 8"
    assert imp["verdict"] == f"{NOT_ENOUGH} ({imp['reason']})"
    assert imp["verdict"] in proc.stdout
    assert "retest" not in res and "test seeds" not in proc.stdout


# -- a full grid with replicates: its exact decomposition ------------------------------------


def test_a_grid_names_the_hyperparameter_that_drives_it(tmp_path):
    """A real 2 x 2 grid on 8 shared tuning seeds: the learning rate of tabular Q-learning
    against the evaluation cadence, which cannot change what is learned. The importance is the
    grid's exact decomposition, and the summary names the learning rate."""
    proc = sweep(
        tmp_path,
        *TINY,
        "tracking.enabled=false",
        "train.episodes=100",
        "eval.episodes=5",
        "agent.alpha=choice(0.02,0.5)",
        "eval.every=choice(10,20)",
        "hydra/sweeper/sampler=grid",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.seeds=8",
        "hydra.sweeper.retest.enabled=false",
    )
    ok(proc)
    res = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    imp = res["importance"]
    assert imp["evaluator"] == "exact ANOVA" and res["most_important"] == "agent.alpha"
    shares = imp["decomposition"]["shares"]
    assert set(shares) == {"agent.alpha", "eval.every", "interactions", "seed"}
    assert shares["agent.alpha"][1] > 0 and shares["eval.every"][1] <= 0  # CI lows
    assert imp["decomposition"]["n_seeds"] == 8 and imp["decomposition"]["n_configs"] == 4
    assert imp["verdict"] == "agent.alpha matters most of the hyperparameters"
    assert "agent.alpha matters most of the hyperparameters" in proc.stdout
    assert "exact ANOVA, omega squared: 4 configs x 8 seeds" in proc.stdout
