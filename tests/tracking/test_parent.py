"""One parent run per Optuna study, trials nested beneath it; results, plots, resume."""

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


def test_trials_nest_under_one_parent_with_results(mlflow_client, tmp_path):
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
    assert m["best_value"] == best.value == summary["best_value"]
    assert m["n_complete"] == 4 and m["n_pruned"] == 1 and m["n_fail"] == 1
    assert m["n_trials"] == 6
    assert p.data.tags["best_trial"] == str(best.number)
    assert float(p.data.tags["best.agent.alpha"]) == best.params["agent.alpha"]
    assert p.data.tags["most_important"] in ("agent.alpha", "agent.gamma")
    assert {"importance.agent.alpha", "importance.agent.gamma"} <= set(m)
    arts = artifact_paths(mlflow_client, parent)
    assert "study_summary.json" in arts
    for name in ("history", "importances", "parallel_coordinate", "slice"):
        assert f"plots/{name}.png" in arts, arts
        assert f"plots/{name}.html" in arts, arts
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
    assert summary["counts"]["n_complete"] == n_complete
    p = mlflow_client.get_run(parent)
    assert p.info.status == "FINISHED"
    assert ("best_value" in p.data.metrics) == (n_complete > 0)
