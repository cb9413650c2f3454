"""One parent run per Optuna study, trials nested beneath it; results (best value with its CI
over seeds, importances with their uncertainty), plots, resume."""

from __future__ import annotations

import optuna
import pytest
from test_tracker import Raise, artifact_paths
from tracking_helpers import tiny_cfg

from sweeper.tracking import MlflowTracker, ensure_parent_run, finalize_parent_run
from sweeper.tracking.parent import MlflowStudyHook, study_hook
from sweeper.train import run


def run_study(tmp_path, parent: str, n: int = 6) -> optuna.Study:
    """A small study driven by hand, like the sweeper does: ask, run, tell."""
    study = optuna.create_study(
        study_name="tab", direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    for i in range(n):
        trial = study.ask(
            {
                "agent.alpha": optuna.distributions.FloatDistribution(0.05, 1.0),
                "agent.gamma": optuna.distributions.FloatDistribution(0.5, 0.99),
            }
        )
        cfg = tiny_cfg(
            "tracking.enabled=true",
            f"agent.alpha={trial.params['agent.alpha']}",
            f"agent.gamma={trial.params['agent.gamma']}",
            "trial.study_name=tab",
            f"trial.number={trial.number}",
            f"trial.parent_run_id={parent}",
        )
        out = tmp_path / "sweep" / str(i)
        tracker = MlflowTracker(cfg, out, mode="sync")  # (process mode: test_tracker.py)
        extra = []
        if i == 2:
            extra = [Raise(optuna.TrialPruned("pruned"), at=1)]
        if i == 4:
            extra = [Raise(RuntimeError("broken trial"), at=0)]
        try:
            value = run(cfg, out, [tracker, *extra])
        except optuna.TrialPruned as err:
            tracker.close(err)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        except RuntimeError as err:
            tracker.close(err)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            tracker.close(None)
            study.tell(trial, value)
    return study


def test_trials_nest_under_one_parent_with_results(mlflow_client, tmp_path, monkeypatch):
    monkeypatch.delenv("SWEEPER_PLOTLY_HTML", raising=False)
    parent = ensure_parent_run("tab", tags={"storage": "memory"})
    study = run_study(tmp_path, parent)
    summary = finalize_parent_run(study, parent, sweep_dir=tmp_path / "sweep")

    p = mlflow_client.get_run(parent)
    assert p.info.status == "FINISHED"
    assert mlflow_client.get_experiment(p.info.experiment_id).name == "tab"
    trials = mlflow_client.search_runs(
        [p.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'"
    )
    assert len(trials) == 6  # one MLflow run per trial
    by_number = {int(r.data.tags["trial_number"]): r for r in trials}
    assert sorted(by_number) == list(range(6))
    assert all(r.data.tags["study_name"] == "tab" for r in trials)
    assert by_number[2].info.status == "KILLED"
    assert by_number[2].data.tags["outcome"] == "pruned"
    assert by_number[4].info.status == "FAILED"
    assert "broken trial" in by_number[4].data.tags["error"]
    assert all(by_number[i].info.status == "FINISHED" for i in (0, 1, 3, 5))
    assert all(r.data.tags["mlflow.runName"] == f"trial-{n}" for n, r in by_number.items())

    best = study.best_trial
    m = p.data.metrics
    assert m["best_value"] == best.value == summary["best"]["value"]
    assert m["best_n"] == 1 and "best_ci_low" not in m  # one run per trial: no CI
    assert m["n_complete"] == 4 and m["n_pruned"] == 1 and m["n_failed"] == 1
    assert m["n_trials"] == 6
    assert p.data.tags["best_trial"] == str(best.number)
    assert float(p.data.tags["best.agent.alpha"]) == best.params["agent.alpha"]
    # 4 complete trials: importances with their intervals, but no parameter named
    assert "most_important" not in p.data.tags
    assert p.data.tags["importance_evaluator"] == "fANOVA"
    assert p.data.tags["importance_verdict"].startswith("not enough evidence to rank (only 4 ")
    for name in ("agent.alpha", "agent.gamma"):
        assert m[f"importance_ci_low.{name}"] <= m[f"importance_ci_high.{name}"]
        assert 0 <= m[f"importance_top_share.{name}"] <= 1
        assert f"importance.{name}" in m
    arts = artifact_paths(mlflow_client, parent)
    assert "study_summary.json" in arts
    for name in ("history", "importances", "parallel_coordinate", "slice"):
        assert f"plots/{name}.png" in arts, arts
        assert f"plots/{name}.html" not in arts, arts  # plotly pages only on request
        assert (tmp_path / "sweep" / "plots" / f"{name}.png").stat().st_size > 1000

    # Resuming the study reuses its parent (RUNNING again until finalized).
    again = ensure_parent_run("tab")
    assert again == parent
    assert mlflow_client.get_run(parent).info.status == "RUNNING"
    finalize_parent_run(study, parent)
    assert mlflow_client.get_run(parent).info.status == "FINISHED"


def test_study_hook_factory(store_uri, mlflow_client, tmp_path):
    assert study_hook(tiny_cfg("tracking.enabled=false")) is None
    hook = study_hook(tiny_cfg("tracking.enabled=true"))
    assert isinstance(hook, MlflowStudyHook)

    class Info:
        study_name = "hooked"
        storage = "journal:x"
        direction = "maximize"
        n_trials = 3
        search_space = {"agent.alpha": "interval(0.1, 1)"}
        fixed_overrides = ["env=gridworld"]
        sweep_dir = str(tmp_path / "sweep")

    run_id = hook.on_study_start(Info)
    assert mlflow_client.get_run(run_id).data.tags["search_space"].startswith("{")
    study = optuna.create_study(study_name="hooked", direction="maximize")
    study.optimize(lambda t: t.suggest_float("agent.alpha", 0.1, 1.0), n_trials=3)
    hook.on_study_end(Info, {"study": study})
    assert mlflow_client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.parametrize("n_complete", [0, 1])
def test_finalize_with_too_few_trials_for_plots(mlflow_client, n_complete):
    study = optuna.create_study(direction="maximize")
    for _ in range(n_complete):
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    parent = ensure_parent_run(f"few{n_complete}")
    summary = finalize_parent_run(study, parent)
    assert summary["trials"]["complete"] == n_complete
    p = mlflow_client.get_run(parent)
    assert p.info.status == "FINISHED"
    assert ("best_value" in p.data.metrics) == (n_complete > 0)


def per_seed_study(n: int = 9) -> optuna.Study:
    """Trials as the sweeper stores them: each value the IQM of three seeds."""
    from sweeper.statistics import aggregate

    study = optuna.create_study(study_name="seeded", direction="maximize")
    dists = {
        "agent.lr": optuna.distributions.CategoricalDistribution([1e-4, 1e-3, 1e-2]),
        "buffer.capacity": optuna.distributions.CategoricalDistribution([1000, 5000, 20000]),
    }
    for i in range(n):
        lr, cap = [1e-4, 1e-3, 1e-2][i % 3], [1000, 5000, 20000][i // 3 % 3]
        per_seed = [100.0 * (i % 3) + s for s in (0.0, 4.0, 1.0)]
        study.add_trial(
            optuna.trial.create_trial(
                params={"agent.lr": lr, "buffer.capacity": cap},
                distributions=dists,
                value=aggregate(per_seed),
                user_attrs={
                    "sweeper:seeds": [1, 2, 3],
                    "sweeper:aggregate": "iqm",
                    "objective_per_seed": per_seed,
                },
            )
        )
    return study


def test_parent_run_gets_the_best_iqm_with_its_ci_and_html_on_request(
    mlflow_client, tmp_path, monkeypatch
):
    from sweeper.statistics import estimate

    monkeypatch.setenv("SWEEPER_PLOTLY_HTML", "1")
    study = per_seed_study()
    parent = ensure_parent_run("seeded")
    figure = tmp_path / "figs" / "marginal_effects.png"  # what sweeper.figures would draw
    figure.parent.mkdir()
    figure.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    summary = finalize_parent_run(
        study, parent, sweep_dir=tmp_path / "sweep", figures=[figure, figure]
    )
    p = mlflow_client.get_run(parent)
    m, tags = p.data.metrics, p.data.tags
    best = study.best_trial
    est = estimate(best.user_attrs["objective_per_seed"])
    assert m["best_value"] == m["best_iqm"] == best.value
    assert (m["best_ci_low"], m["best_ci_high"], m["best_n"]) == (est.low, est.high, 3)
    assert tags["best_seeds"] == "1,2,3"
    imp = summary["importance"]
    assert imp["n_trials"] == 9 and m["importance.agent.lr"] == imp["values"]["agent.lr"]
    assert tags["importance_verdict"] == imp["verdict"]
    assert ("most_important" in tags) == (imp["most_important"] is not None)
    arts = artifact_paths(mlflow_client, parent)
    plots = sorted(a for a in arts if a.startswith("plots/"))
    assert "plots/plotly.min.js" in plots and "plots/history.html" in plots
    assert "figures/marginal_effects.png" in arts
    names = [a.rsplit("/", 1)[-1] for a in arts]
    assert len(names) == len(set(names))  # each file logged once, under one path
    js = [f for f in (tmp_path / "sweep" / "plots").iterdir() if f.suffix == ".js"]
    assert [f.name for f in js] == ["plotly.min.js"]


def test_the_hook_reuses_the_sweeps_analysis(store_uri, mlflow_client, tmp_path):
    """The sweep's results already hold the importance bootstrap: the parent run logs those
    numbers rather than computing them again."""
    from sweeper import analysis

    hook = study_hook(tiny_cfg("tracking.enabled=true"))

    class Info:
        study_name = "seeded"
        storage = "memory"
        direction = "maximize"
        n_trials = 9
        search_space = {"agent.lr": "choice(0.0001,0.001,0.01)"}
        fixed_overrides = []
        sweep_dir = str(tmp_path / "sweep")

    run_id = hook.on_study_start(Info)
    study = per_seed_study()
    results = analysis.study_summary(study, n_bootstrap=5, seed=7)
    results["importance"]["values"]["agent.lr"] = 0.123  # what the sweep computed
    hook.on_study_end(Info, {**results, "study": study})
    run = mlflow_client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["importance.agent.lr"] == 0.123
    assert run.data.metrics["best_n"] == 3
