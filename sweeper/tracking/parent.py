"""One MLflow parent run per Optuna study; every trial's run nests beneath it.

The active run does not cross processes, so the sweeper passes the parent's id explicitly:
:func:`ensure_parent_run` before the first trial, the id injected into each trial as the
override ``trial.parent_run_id=<id>`` (the trial's tracker tags its run
``mlflow.parentRunId`` and puts it in the parent's experiment), :func:`finalize_parent_run`
after the last one. Resuming a study reuses its parent run (found by tags
``sweeper.role=parent`` and ``study_name``).

The sweeper calls these through the study hook :func:`study_hook` (``sweeper.sweeps.hooks``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sweeper.tracking import store

ROLE_TAG = "sweeper.role"
PLOTS = ("history", "importances", "parallel_coordinate", "slice")


def _find_parents(client, experiment_id: str, study_name: str) -> list:
    runs = store.retry(
        client.search_runs,
        [experiment_id],
        f"tags.`{ROLE_TAG}` = 'parent' and tags.study_name = '{_quote(study_name)}'",
        order_by=["attributes.start_time ASC"],
        max_results=100,
    )
    return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))


def _quote(text: str) -> str:
    return text.replace("'", "\\'")


def ensure_parent_run(
    study_name: str,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """The id of the study's parent run, created if missing, set RUNNING again on resume.

    The experiment is ``experiment`` or the study name. On the embedded SQLite store a file
    lock makes one process the creator; on a server two workers starting the same study at
    once may both create one: the oldest wins and the other is deleted.
    """
    client = store.client(tracking_uri)
    path = store.sqlite_path(client.tracking_uri)
    if path is None:
        return _ensure_parent_run(client, study_name, experiment, tags)
    with store.file_lock(path.with_name(path.name + ".parent.lock")):  # one creator at a time
        return _ensure_parent_run(client, study_name, experiment, tags)


def _ensure_parent_run(
    client, study_name: str, experiment: str | None, tags: Mapping[str, str] | None
) -> str:
    exp_id = store.get_or_create_experiment(client, experiment or study_name)
    parents = _find_parents(client, exp_id, study_name)
    if parents:
        run_id = parents[0].info.run_id
        store.retry(client.update_run, run_id, status="RUNNING")
        if tags:
            _set_tags(client, run_id, tags)
        return run_id
    all_tags = {
        ROLE_TAG: "parent",
        "study_name": study_name,
        "mlflow.runName": study_name,
        "mlflow.source.name": "sweeper sweep",
        "mlflow.source.type": "LOCAL",
    }
    all_tags.update({k: str(v) for k, v in (tags or {}).items()})
    run = store.retry(client.create_run, exp_id, tags=all_tags)
    parents = _find_parents(client, exp_id, study_name)
    winner = parents[0].info.run_id if parents else run.info.run_id
    if winner != run.info.run_id:
        store.retry(client.delete_run, run.info.run_id)
    return winner


def _set_tags(client, run_id: str, tags: Mapping[str, Any]) -> None:
    from mlflow.entities import RunTag

    items = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
    for i in range(0, len(items), 100):
        store.retry(client.log_batch, run_id, tags=items[i : i + 100])


def study_counts(study) -> dict[str, int]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {f"n_{s.name.lower()}": 0 for s in TrialState}
    for t in trials:
        counts[f"n_{t.state.name.lower()}"] += 1
    counts["n_trials"] = len(trials)
    return counts


def best_trial(study):
    """The best COMPLETE trial, or None (no complete trial; multi-objective)."""
    try:
        return study.best_trial
    except (ValueError, RuntimeError):
        return None


def param_importances(study) -> dict[str, float]:
    """Optuna's parameter importances: fANOVA when scikit-learn is installed, else PED-ANOVA
    (numpy only); {} when they cannot be computed (fewer than two complete trials, a single
    parameter value, ...)."""
    import optuna

    evaluators: list = [None] if _has_sklearn() else []  # None: Optuna's default, fANOVA
    evaluators.append(optuna.importance.PedAnovaImportanceEvaluator())
    import warnings

    for evaluator in evaluators:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                values = optuna.importance.get_param_importances(study, evaluator=evaluator)
            except Exception:  # noqa: BLE001
                continue
        if any("too small" in str(w.message) for w in caught):
            continue  # PED-ANOVA then returns equal importances: no information
        if values and all(math.isfinite(v) for v in values.values()):
            return {k: float(v) for k, v in values.items()}
    return {}


def _has_sklearn() -> bool:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def write_plots(
    study, directory: Path, importances: Mapping[str, float] | None = None
) -> list[Path]:
    """Optuna's history, importances, parallel-coordinate and slice plots in ``directory``:
    PNG (optuna.visualization.matplotlib) always, HTML (plotly) when plotly is installed.
    Plots that cannot be drawn (too few trials) are skipped."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization as pv
    import optuna.visualization.matplotlib as pm

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    evaluator = _plot_evaluator(study, importances)
    makers = {
        "history": (pm.plot_optimization_history, pv.plot_optimization_history, {}),
        "importances": (
            pm.plot_param_importances,
            pv.plot_param_importances,
            {"evaluator": evaluator} if evaluator is not None else {},
        ),
        "parallel_coordinate": (pm.plot_parallel_coordinate, pv.plot_parallel_coordinate, {}),
        "slice": (pm.plot_slice, pv.plot_slice, {}),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning from optuna.visualization.matplotlib
        for name, (mpl_fn, plotly_fn, kwargs) in makers.items():
            if name == "importances" and not importances:
                continue
            try:
                ax = mpl_fn(study, **kwargs)
                fig = _figure_of(ax)
                if len(fig.axes) == 1:  # single plots only: multi-axes ones own a colorbar
                    fig.set_size_inches(max(fig.get_size_inches()[0], 8), 5)
                    fig.tight_layout()
                fig.savefig(directory / f"{name}.png", dpi=100, bbox_inches="tight")
                plt.close(fig)
                written.append(directory / f"{name}.png")
            except Exception as err:  # noqa: BLE001 - a plot is never worth failing a sweep
                print(f"sweeper: plot {name}.png skipped: {err}", file=sys.stderr)
                plt.close("all")
            if not _has_plotly():
                continue
            try:
                plotly_fn(study, **kwargs).write_html(
                    directory / f"{name}.html", include_plotlyjs=True
                )
                written.append(directory / f"{name}.html")
            except Exception as err:  # noqa: BLE001
                print(f"sweeper: plot {name}.html skipped: {err}", file=sys.stderr)
    return written


def _plot_evaluator(study, importances):
    if _has_sklearn():
        return None
    import optuna

    return optuna.importance.PedAnovaImportanceEvaluator()


def _figure_of(ax):
    import numpy as np

    if isinstance(ax, np.ndarray):
        return ax.flat[0].get_figure()
    return ax.get_figure()


def _has_plotly() -> bool:
    try:
        import plotly  # noqa: F401
    except ImportError:
        return False
    return True


def study_summary(study) -> dict[str, Any]:
    """Best value/params, counts and importances of a study (plain data)."""
    best = best_trial(study)
    return {
        "study_name": study.study_name,
        "direction": study.direction.name.lower() if len(study.directions) == 1 else "multi",
        "best_value": best.value if best is not None else None,
        "best_trial": best.number if best is not None else None,
        "best_params": dict(best.params) if best is not None else {},
        "counts": study_counts(study),
        "importances": param_importances(study),
    }


def finalize_parent_run(
    study, run_id: str, sweep_dir: str | Path | None = None, tracking_uri: str | None = None
) -> dict[str, Any]:
    """Log the study's results on its parent run and end it FINISHED.

    Metrics ``best_value``, ``n_complete``/``n_pruned``/``n_fail``/``n_trials`` and
    ``importance.<param>``; tags ``best_trial``, ``best.<param>``, ``most_important``;
    artifacts ``study_summary.json`` and ``plots/{history,importances,parallel_coordinate,
    slice}.{png,html}`` (also written to ``<sweep_dir>/plots``). Returns the summary.
    Metrics get step = number of trials so a resumed study keeps its history.
    """
    import time

    from mlflow.entities import Metric

    client = store.client(tracking_uri)
    summary = study_summary(study)
    counts, step = summary["counts"], summary["counts"]["n_trials"]
    ts = int(time.time() * 1000)
    metrics = [Metric(k, float(v), ts, step) for k, v in counts.items()]
    if summary["best_value"] is not None and math.isfinite(summary["best_value"]):
        metrics.append(Metric("best_value", float(summary["best_value"]), ts, step))
    metrics += [
        Metric(f"importance.{k}"[:250], v, ts, step) for k, v in summary["importances"].items()
    ]
    store.retry(client.log_batch, run_id, metrics=metrics[:1000])
    tags: dict[str, Any] = {"direction": summary["direction"]}
    if summary["best_trial"] is not None:
        tags["best_trial"] = summary["best_trial"]
        tags.update({f"best.{k}": v for k, v in summary["best_params"].items()})
    if summary["importances"]:
        tags["most_important"] = max(summary["importances"], key=summary["importances"].get)
    if sweep_dir is not None:
        tags["sweep_dir"] = str(Path(sweep_dir).resolve())
    _set_tags(client, run_id, tags)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "study_summary.json").write_text(json.dumps(summary, indent=2, default=str))
        store.retry(client.log_artifact, run_id, str(out / "study_summary.json"))
        plots_dir = Path(sweep_dir) / "plots" if sweep_dir is not None else out / "plots"
        if write_plots(study, plots_dir, summary["importances"]):
            for path in plots_dir.iterdir():
                if path.stem in PLOTS:
                    store.retry(client.log_artifact, run_id, str(path), "plots")
    store.retry(client.set_terminated, run_id, "FINISHED")
    return summary


# What a finished Optuna trial's MLflow run must say (Optuna is the truth about a trial).
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
RUN_OUTCOME = {"COMPLETE": "finished", "PRUNED": "pruned", "FAIL": "failed"}


def close_trial_runs(client, parent_run_id: str, study_name: str, trials) -> int:
    """Make the MLflow runs of finished trials agree with Optuna; returns how many changed.

    A trial's run is normally ended by the trial's own tracker, before the job returns. Not
    when its process dies: loky kills a dead worker's whole process tree, logging child
    included (the run stayed RUNNING), a kill after the run was logged FINISHED but before the
    job returned left MLflow FINISHED and Optuna FAIL, and a process killed before its logging
    child created the run left a FAIL trial with no run at all. So after each trial the
    sweeper's hook closes a run still RUNNING (or FINISHED for a trial that did not complete)
    with the trial's status and error, and creates a run for a failed trial that has none.
    """
    from mlflow.entities import Param, ViewType

    exp_id = store.retry(client.get_run, parent_run_id).info.experiment_id
    changed = 0
    for trial in trials:
        state = trial.state.name
        if state not in RUN_STATUS:
            continue  # RUNNING or WAITING: not finished
        status = RUN_STATUS[state]
        tags = {"outcome": RUN_OUTCOME[state]}
        error = trial.user_attrs.get("sweeper:error")
        if error and state == "FAIL":
            tags["error"] = str(error)[:5000]
        runs = store.retry(
            client.search_runs,
            [exp_id],
            f"tags.`mlflow.parentRunId` = '{parent_run_id}' "
            f"and tags.trial_number = '{trial.number}'",
            run_view_type=ViewType.ALL,  # a deleted run (a config error) is not to be replaced
            max_results=10,
        )
        # A run is made up only for a trial that ran and failed: not for one that never
        # started (stale before its claim, surplus, interrupted: ``sweeper:uncounted``).
        if not runs and state == "FAIL" and "sweeper:uncounted" not in trial.user_attrs:
            run = store.retry(
                client.create_run,
                exp_id,
                tags={
                    "mlflow.parentRunId": parent_run_id,
                    "mlflow.runName": f"trial-{trial.number}",
                    "study_name": study_name,
                    "trial_number": str(trial.number),
                    **tags,
                },
            )
            params = [Param(k[:250], str(v)[:6000]) for k, v in trial.params.items()]
            if params:
                store.retry(client.log_batch, run.info.run_id, params=params[:100])
            store.retry(client.set_terminated, run.info.run_id, status)
            changed += 1
            continue
        for run in runs:
            if run.info.lifecycle_stage == "deleted":
                continue
            current = run.info.status
            if current == status or (state == "FAIL" and current in ("FAILED", "KILLED")):
                continue
            if current == "RUNNING" or (current == "FINISHED" and state != "COMPLETE"):
                _set_tags(client, run.info.run_id, tags)
                store.retry(client.set_terminated, run.info.run_id, status)
                changed += 1
    return changed


def close_open_runs(client, parent_run_id: str, study) -> int:
    """``close_trial_runs`` for every RUNNING run under the parent whose trial has finished
    (at the end of a sweep: runs of trials failed earlier, e.g. by an older version)."""
    runs = store.retry(
        client.search_runs,
        [store.retry(client.get_run, parent_run_id).info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{parent_run_id}' and attributes.status = 'RUNNING'",
        max_results=1000,
    )
    numbers = {int(r.data.tags["trial_number"]) for r in runs if "trial_number" in r.data.tags}
    if not numbers:
        return 0
    trials = [t for t in study.get_trials(deepcopy=False) if t.number in numbers]
    return close_trial_runs(client, parent_run_id, study.study_name, trials)


class MlflowStudyHook:
    """The ``sweeper.sweeps.hooks`` study hook: parent run at start, each finished trial's run
    checked against Optuna, results at the end."""

    def __init__(self, task_cfg) -> None:
        tracking = task_cfg.tracking
        self.tracking_uri = tracking.get("tracking_uri")
        self.experiment = tracking.get("experiment")
        self.run_id: str | None = None
        self._client = None
        self._guard = None

    def client(self):
        if self._client is None:
            self._client = store.client(self.tracking_uri)
        return self._client

    def on_trial_end(self, info, trial) -> None:
        """Complete trials are left alone: their tracker ended the run FINISHED before the
        job returned (one search per trial saved)."""
        if self.run_id is None or trial.state.name == "COMPLETE":
            return
        close_trial_runs(self.client(), self.run_id, info.study_name, [trial])

    def on_study_start(self, info) -> str | None:
        tags = {
            "sweep_dir": str(Path(info.sweep_dir).resolve()),
            "storage": info.storage,
            "direction": info.direction,
            "n_trials_requested": str(info.n_trials),
            "search_space": json.dumps(dict(info.search_space), sort_keys=True),
            "fixed_overrides": " ".join(info.fixed_overrides),
        }
        self.run_id = ensure_parent_run(
            info.study_name, self.experiment, self.tracking_uri, tags=tags
        )
        from sweeper.tracking.worker import ProcessExecutor

        # A logging child watches the parent run, as one watches each trial's: if this
        # process dies (kill -9), its end of input ends the run KILLED, never RUNNING forever.
        self._guard = ProcessExecutor.acquire()
        self._guard.send(
            "adopt",
            uri=store.resolve_tracking_uri(self.tracking_uri),
            run_id=self.run_id,
            on_death={"outcome": "killed", "error": "the sweeper process died"},
        )
        return self.run_id

    def on_study_end(self, info, results: Mapping[str, Any]) -> None:
        if self.run_id is None:
            return
        self._end(info, results)
        if self._guard is not None:  # on an error the watch stays: KILLED when we exit
            self._guard.end()  # the run is ended: the child lets it be
            self._guard = None

    def _end(self, info, results: Mapping[str, Any]) -> None:
        if isinstance(results, Mapping) and results.get("error"):  # the sweep was stopped
            _set_tags(self.client(), self.run_id, {"error": results["error"]})
            store.retry(self.client().set_terminated, self.run_id, "FAILED")
            return
        study = results.get("study") if isinstance(results, Mapping) else None
        if study is None:
            import optuna

            from sweeper.sweeps.storage import open_storage

            study = optuna.load_study(
                study_name=info.study_name, storage=open_storage(info.storage)
            )
        close_open_runs(self.client(), self.run_id, study)
        finalize_parent_run(study, self.run_id, info.sweep_dir, self.tracking_uri)


def study_hook(task_cfg) -> MlflowStudyHook | None:
    """Factory found by ``sweeper.sweeps.hooks.load_hooks`` when ``tracking.enabled``."""
    if not task_cfg.get("tracking") or not task_cfg.tracking.get("enabled", False):
        return None
    from sweeper.tracking.preflight import check_tracking_uri
    from sweeper.tracking.worker import HTTP_LIMITS

    # The sweeper's own MLflow calls (parent run, closing runs of failed trials) get the same
    # bounded HTTP retries as the logging children: a dead server costs seconds, not minutes.
    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)

    # before any trial: a reachable server or a writable store, else one line naming the URI
    configured = task_cfg.tracking.get("tracking_uri")
    key = (
        "MLFLOW_TRACKING_URI" if not configured and os.environ.get("MLFLOW_TRACKING_URI") else None
    )
    check_tracking_uri(store.resolve_tracking_uri(configured), key=key or "tracking.tracking_uri")
    return MlflowStudyHook(task_cfg)
