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
import logging
import math
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sweeper import analysis, secrets
from sweeper.tracking import store
from sweeper.tracking.limits import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG,
)
from sweeper.tracking.run_ends import (
    OWNER_ENV,
    close_study_runs,
    close_trial_runs,
    owner_tag,
    why,
)
from sweeper.tracking.worker import LOST_ENV

PLOTS = ("history", "importances", "parallel_coordinate", "slice")
PLOTLY_HTML_ENV = "SWEEPER_PLOTLY_HTML"
PLOTLY_JS = "plotly.min.js"
LOST_MARKER = ".tracking_lost"  # in the sweep dir: a run's MLflow logging failed


def _find_parents(client, experiment_id: str, study_name: str) -> list:
    runs = store.retry(
        client.search_runs,
        [experiment_id],
        f"tags.`{store.ROLE_TAG}` = 'parent' and tags.study_name = '{_quote(study_name)}'",
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
        store.ROLE_TAG: "parent",
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


SPACE_PREFIX = "search_space."  # parent run params: the study's search space
BEST_PREFIX = "best."  # parent run params: its best trial's params


def log_params_once(client, run_id: str, params: Mapping[str, Any]) -> dict[str, str]:
    """Log ``params`` on ``run_id`` that it does not have yet; returns those it already had
    with another value. MLflow never changes a logged param, so a resumed study whose best
    trial changed keeps its first best params as params; its ``best.*`` tags (see
    :func:`parent_tags`) always name the current best."""
    from mlflow.entities import Param

    have = store.retry(client.get_run, run_id).data.params
    new = {k: str(v)[:MAX_PARAM] for k, v in params.items() if k not in have}
    items = [Param(k, v) for k, v in new.items()]
    for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
        store.retry(client.log_batch, run_id, params=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])
    return {k: have[k] for k, v in params.items() if k in have and have[k] != str(v)[:MAX_PARAM]}


def _set_tags(client, run_id: str, tags: Mapping[str, Any]) -> None:
    from mlflow.entities import RunTag

    items = [RunTag(k, str(v)[:MAX_TAG]) for k, v in tags.items()]
    for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
        store.retry(client.log_batch, run_id, tags=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])


def html_plots_enabled(html: bool | None = None) -> bool:
    """Whether Optuna's interactive plotly HTML plots are written: ``html`` when given, else
    ``$SWEEPER_PLOTLY_HTML`` (``1``/``true``/``yes``). Off by default: each page embeds
    plotly.js (~4.8 MB); when on, plotly.js is written once beside them (``plotly.min.js``)."""
    if html is not None:
        return bool(html)
    return os.environ.get(PLOTLY_HTML_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def write_plots(
    study,
    directory: Path,
    params: list[str] | None = None,
    *,
    html: bool | None = None,
) -> list[Path]:
    """Optuna's history, importances, parallel-coordinate and slice plots in ``directory``:
    PNG (optuna.visualization.matplotlib) always, HTML (plotly) only when
    :func:`html_plots_enabled`, sharing one ``plotly.min.js``. The importances plot uses the
    evaluator of :func:`sweeper.analysis.importance` (fANOVA, same settings and seed, so its
    bars are the point values of the summary) on ``params``, and is drawn only when ``params``
    has two or more. Plots that cannot be drawn (too few trials) are skipped."""
    import logging
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    # Optuna's slice plot draws categorical numbers: matplotlib says so at INFO, once per axis
    logging.getLogger("matplotlib.category").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt
    import optuna
    import optuna.visualization as pv
    import optuna.visualization.matplotlib as pm

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    evaluator = optuna.importance.FanovaImportanceEvaluator(
        n_trees=analysis.N_TREES, max_depth=analysis.MAX_DEPTH, seed=0
    )
    makers = {
        "history": (pm.plot_optimization_history, pv.plot_optimization_history, {}),
        "importances": (
            pm.plot_param_importances,
            pv.plot_param_importances,
            {"evaluator": evaluator, "params": list(params or [])},
        ),
        "parallel_coordinate": (pm.plot_parallel_coordinate, pv.plot_parallel_coordinate, {}),
        "slice": (pm.plot_slice, pv.plot_slice, {}),
    }
    with_html = html_plots_enabled(html) and _has_plotly()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning from optuna.visualization.matplotlib
        for name, (mpl_fn, plotly_fn, kwargs) in makers.items():
            if name == "importances" and len(params or []) < 2:
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
            if not with_html:
                continue
            try:
                # plotly.js once, in the same directory, for every page
                plotly_fn(study, **kwargs).write_html(
                    directory / f"{name}.html", include_plotlyjs="directory"
                )
                written.append(directory / f"{name}.html")
            except Exception as err:  # noqa: BLE001
                print(f"sweeper: plot {name}.html skipped: {err}", file=sys.stderr)
    if any(p.suffix == ".html" for p in written) and (directory / PLOTLY_JS).exists():
        written.append(directory / PLOTLY_JS)
    return written


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


def log_study_figures(
    client, run_id: str, paths, artifact_path: str = "plots", logged: set | None = None
) -> list[str]:
    """Log a study's figures (PNG, and HTML pages with their ``plotly.min.js``) as artifacts of
    its parent run under ``artifact_path``: each file once (``logged``: resolved paths already
    logged, updated). The place for the study figures of ``sweeper.figures`` too: pass their
    paths. Returns the artifact paths logged."""
    logged = set() if logged is None else logged
    out = []
    for path in paths:
        path = Path(path)
        key = str(path.resolve())
        if key in logged or not path.is_file():
            continue
        store.retry(client.log_artifact, run_id, str(path), artifact_path)
        logged.add(key)
        out.append(f"{artifact_path}/{path.name}")
    return out


def study_summary(study) -> dict[str, Any]:
    """What the parent run records: :func:`sweeper.analysis.study_summary` (counts, best trial
    with its CI over seeds, importance with its uncertainty, marginal effects)."""
    return analysis.study_summary(study)


def parent_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The parent run's metrics from a study summary (``sweeper.analysis.study_summary`` or
    the sweep's results): ``n_<state>`` and ``n_trials`` (trials that count), ``best_value``
    (the best trial's aggregate over its seeds) with ``best_<iqm|mean|...>``, ``best_ci_low``,
    ``best_ci_high``, ``best_n`` (seeds); per parameter ``importance.<p>``,
    ``importance_ci_low.<p>``, ``importance_ci_high.<p>`` and ``importance_top_share.<p>``;
    the same three for ``seed`` (the seed's share of the variance, where trials have seeds) and,
    on a full grid, ``interactions``."""
    out: dict[str, float] = {}
    trials = summary.get("trials") or {}
    for key in ("complete", "pruned", "failed", "running", "waiting", "uncounted"):
        if key in trials:
            out[f"n_{key}"] = float(trials[key])
    if trials:
        out["n_trials"] = float(analysis.n_counted(trials))
    best = summary.get("best") or {}
    if _is_number(best.get("value")):
        out["best_value"] = float(best["value"])
        if best.get("aggregate"):
            out[f"best_{best['aggregate']}"] = float(best["value"])
    for key in ("ci_low", "ci_high", "n"):
        if _is_number(best.get(key)):
            out[f"best_{key}"] = float(best[key])
    imp = summary.get("importance") or {}
    ci = imp.get("ci") or {}
    shares = imp.get("top_share") or {}
    for name, value in (imp.get("values") or {}).items():
        out[f"importance.{name}"[:250]] = float(value)
        if name in ci:
            out[f"importance_ci_low.{name}"[:250]] = float(ci[name][0])
            out[f"importance_ci_high.{name}"[:250]] = float(ci[name][1])
        if name in shares:
            out[f"importance_top_share.{name}"[:250]] = float(shares[name])
    # the seed's share of the variance (and a grid's interactions'), with their CIs
    parts = {"seed": imp.get("seed_share")}
    if imp.get("decomposition"):
        parts["interactions"] = imp["decomposition"]["shares"].get("interactions")
    for name, share in parts.items():
        if share:
            out[f"importance.{name}"] = float(share[0])
            out[f"importance_ci_low.{name}"] = float(share[1])
            out[f"importance_ci_high.{name}"] = float(share[2])
    for row in (summary.get("retest") or {}).get("configs", []):
        for phase in ("tuning", "test"):
            for key in ("value", "ci_low", "ci_high", "n"):
                value = (row.get(phase) or {}).get(key)
                if _is_number(value):
                    out[f"{phase}_{key}.trial_{row['number']}"] = float(value)
        if _is_number(row.get("optimism_gap")):
            out[f"optimism_gap.trial_{row['number']}"] = float(row["optimism_gap"])
    return {k: v for k, v in out.items() if math.isfinite(v)}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parent_tags(summary: Mapping[str, Any]) -> dict[str, Any]:
    """``direction``, ``best_trial``, ``best.<param>`` (never the seed), ``best_seeds``,
    ``importance_evaluator``, ``importance_verdict`` and ``most_important`` (only when the
    ranking is stable enough to name one), the claim's ``verdict`` line, and ``test_winner``
    with the ``test_seeds`` when the best configs were re-tested."""
    tags: dict[str, Any] = {"direction": summary.get("direction", "")}
    best = summary.get("best") or {}
    if best:
        tags["best_trial"] = best.get("number")
        tags.update({f"best.{k}": v for k, v in (best.get("params") or {}).items()})
        if best.get("seeds"):
            tags["best_seeds"] = ",".join(str(s) for s in best["seeds"])
    imp = summary.get("importance") or {}
    if imp:
        tags["importance_evaluator"] = imp.get("evaluator")
        tags["importance_verdict"] = imp.get("verdict")
    if imp.get("most_important"):
        tags["most_important"] = imp["most_important"]
    verdict = summary.get("verdict") or {}
    if verdict.get("line"):
        tags["verdict"] = verdict["line"]
    retest = summary.get("retest") or {}
    if retest.get("test_winner") is not None:
        tags["test_winner"] = retest["test_winner"]
        tags["test_seeds"] = ",".join(str(s) for s in retest.get("test_seeds", []))
    return tags


def finalize_parent_run(
    study,
    run_id: str,
    sweep_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    *,
    summary: Mapping[str, Any] | None = None,
    figures=None,
    html: bool | None = None,
) -> dict[str, Any]:
    """Log the study's results on its parent run and end it FINISHED.

    ``summary``: the study's analysis when the caller has it (the sweep's results, shaped like
    :func:`sweeper.analysis.study_summary`), else computed here. Metrics: :func:`parent_metrics`
    (step = number of trials, so a resumed study keeps its history); tags: :func:`parent_tags`
    and ``sweep_dir``; artifacts: ``study_summary.json``; under ``plots/`` Optuna's plots
    (:func:`write_plots`: PNG, HTML only when :func:`html_plots_enabled`), written to
    ``<sweep_dir>/plots`` (a temporary directory without one); under ``figures/`` the study's
    own figures: ``figures`` (paths, e.g. from ``sweeper.figures``), else the paths listed in
    ``summary["figures"]`` (the sweep's results). Each file is logged once. Returns the
    summary.
    """
    import time

    from mlflow.entities import Metric

    client = store.client(tracking_uri)
    if summary is None or "trials" not in summary:
        summary = study_summary(study)
    summary = {k: v for k, v in summary.items() if k != "study"}
    step = int(analysis.n_counted(summary["trials"])) if summary.get("trials") else 0
    ts = int(time.time() * 1000)
    metrics = [Metric(k, v, ts, step) for k, v in parent_metrics(summary).items()]
    for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        store.retry(client.log_batch, run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])
    tags = parent_tags(summary)
    if sweep_dir is not None:
        tags["sweep_dir"] = str(Path(sweep_dir).resolve())
    _set_tags(client, run_id, tags)
    best = summary.get("best") or {}
    log_params_once(
        client, run_id, {f"{BEST_PREFIX}{k}": v for k, v in (best.get("params") or {}).items()}
    )
    logged: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "study_summary.json").write_text(json.dumps(summary, indent=2, default=str))
        store.retry(client.log_artifact, run_id, str(out / "study_summary.json"))
        plots_dir = Path(sweep_dir) / "plots" if sweep_dir is not None else out / "plots"
        # the importances plot only where the summary has importances (same evaluator)
        params = list((summary.get("importance") or {}).get("values") or {})
        log_study_figures(
            client, run_id, write_plots(study, plots_dir, params, html=html), "plots", logged
        )
        # the study's own figures (sweeper.figures): given, or listed in the sweep's results
        extra = figures if figures is not None else summary.get("figures") or []
        log_study_figures(client, run_id, extra, "figures", logged)
    _set_tags(client, run_id, {"outcome": "finished"})  # (a resumed study's run was KILLED)
    store.retry(client.set_terminated, run_id, "FINISHED")
    return summary


def preload_modules(uri: str) -> list[str]:
    """What a trial that logs to ``uri`` imports: the tracker, MLflow's client and, for a
    database store, MLflow's SQLAlchemy store (the trial processes' fork server imports them
    once, instead of each worker process: ~2.5 s of CPU each)."""
    modules = ["sweeper.tracking.tracker", "sweeper.tracking.worker", "mlflow.tracking"]
    if uri.partition("://")[0].split("+")[0] in ("sqlite", "postgresql", "mysql", "mssql"):
        modules.append("mlflow.store.tracking.sqlalchemy_store")
    return modules


class MlflowStudyHook:
    """The ``sweeper.sweeps.hooks`` study hook: parent run at start, each finished trial's run
    checked against Optuna, results at the end."""

    def __init__(self, task_cfg) -> None:
        tracking = task_cfg.tracking
        self.tracking_uri = tracking.get("tracking_uri")
        self.preload = preload_modules(store.resolve_tracking_uri(self.tracking_uri))
        self.experiment = tracking.get("experiment")
        self.run_id: str | None = None
        self._client = None
        self._guard = None

    def client(self):
        if self._client is None:
            self._client = store.client(self.tracking_uri)
        return self._client

    def remote_problem(self) -> str | None:
        """An embedded store (SQLite file, ``file:`` directory) is on this machine only."""
        uri = store.resolve_tracking_uri(self.tracking_uri)
        if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
            return (
                f"tracking.tracking_uri: the MLflow store {secrets.mask(uri)} is on this machine: "
                "use an "
                "MLflow server (tracking.tracking_uri=http://HOST:5000) or tracking.enabled=false"
            )
        return None

    def lost(self) -> str | None:
        """Why MLflow has not all of this sweep (a run's logging failed: the first such
        line), or None."""
        marker = getattr(self, "_lost_marker", None)
        if marker is None or not marker.is_file():
            return None
        try:
            text = marker.read_text().strip()
        except OSError:
            text = ""
        return text.removeprefix("sweeper: ").split(": MLflow logging stopped")[0] or (
            "tracking: a run's MLflow logging failed"
        )

    def on_trial_end(self, info, trial) -> None:
        """Complete trials are left alone: their tracker ended the run FINISHED before the
        job returned (one search per trial saved). A failed trial's missing run is made up
        at the end of the sweep, when its own logging child has surely given up."""
        if self.run_id is None or trial.state.name == "COMPLETE":
            return
        close_trial_runs(self.client(), self.run_id, info.study_name, [trial], make_missing=False)

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
        # this process's runs say so (its trial processes inherit the environment), and the
        # runs an earlier, dead run of this study left open are closed
        os.environ[OWNER_ENV] = owner_tag()
        # a run whose logging fails says so once for the whole sweep, in this file
        self._lost_marker = Path(info.sweep_dir) / LOST_MARKER
        self._lost_marker.unlink(missing_ok=True)
        os.environ[LOST_ENV] = str(self._lost_marker)
        # The search space as the parent's params (MLflow's Parameters tab and the runs
        # table's param columns): fixed for a study, as its name covers it.
        client = self.client()
        try:  # best effort: the end of this sweep closes them too
            close_study_runs(client, self.run_id, self._study(info), ending=False)
        except Exception as err:  # noqa: BLE001 - e.g. a study store this process cannot open
            logging.getLogger(__name__).debug("closing the study's stale runs: %s", err)
        log_params_once(
            client,
            self.run_id,
            {f"{SPACE_PREFIX}{k}": v for k, v in dict(info.search_space).items()},
        )
        # The study's trials ranked by their objective, as a view of the MLflow UI's runs
        # page (sweeper.tracking.ui; `sweeper ui` prints its link).
        from sweeper.tracking.ui import publish_view

        experiment_id = store.retry(client.get_run, self.run_id).info.experiment_id
        publish_view(
            client, experiment_id, info.study_name, list(info.search_space), info.direction
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
        try:
            self._end(info, results)
        finally:  # this sweep's marks leave this process's environment with it
            for name in (OWNER_ENV, LOST_ENV):
                os.environ.pop(name, None)
        if self._guard is not None:  # on an error the watch stays: KILLED when we exit
            self._guard.end()  # the run is ended: the child lets it be
            self._guard = None

    def _end(self, info, results: Mapping[str, Any]) -> None:
        study = results.get("study") if isinstance(results, Mapping) else None
        error = results.get("error") if isinstance(results, Mapping) else None
        if error:  # the sweep was stopped (interrupted, or its storage failed)
            interrupted = bool(results.get("interrupted"))
            outcome = "interrupted" if interrupted else why(str(error)) or "failed"
            client = self.client()
            try:
                if study is None:
                    study = self._study(info)
            except Exception:  # noqa: BLE001 - the storage failed: close what is ours
                study = None
            close_study_runs(
                client,
                self.run_id,
                study,
                ending=True,
                outcome=outcome,
                study_name=info.study_name,
            )
            _set_tags(client, self.run_id, {"error": error, "outcome": outcome})
            status = "KILLED" if interrupted else "FAILED"
            store.retry(client.set_terminated, self.run_id, status)
            return
        if study is None:
            study = self._study(info)
        close_study_runs(self.client(), self.run_id, study, ending=True, outcome="worker died")
        # the sweep's results carry the analysis (importance bootstrap included): not redone
        computed = results if isinstance(results, Mapping) and "importance" in results else None
        finalize_parent_run(study, self.run_id, info.sweep_dir, self.tracking_uri, summary=computed)

    @staticmethod
    def _study(info):
        import optuna

        from sweeper.study_storage import open_storage

        return optuna.load_study(study_name=info.study_name, storage=open_storage(info.storage))


def find_parent_run(study_name: str, tracking_uri: str) -> str | None:
    """The id of the study's MLflow parent run (the oldest, as ``tracking.parent`` picks it),
    or None: no such run, or no store yet (never created here)."""
    path = store.sqlite_path(tracking_uri)
    if path is not None and not path.is_file():
        return None
    client = store.client(tracking_uri)
    name = study_name.replace("'", "\\'")
    runs = store.search_all_runs(
        client,
        f"tags.`{store.ROLE_TAG}` = 'parent' and tags.study_name = '{name}'",
        order_by=["attributes.start_time ASC"],
    )
    runs = sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))
    return runs[0].info.run_id if runs else None


def study_hook(task_cfg) -> MlflowStudyHook | None:
    """The MLflow study hook (registered as the ``sweeper.study_hooks`` entry point ``mlflow``,
    loaded by ``sweeper.sweeps.hooks.load_hooks``); None when ``tracking.enabled`` is false."""
    if not task_cfg.get("tracking") or not task_cfg.tracking.get("enabled", False):
        return None
    from sweeper.tracking.preflight import check_tracking_uri
    from sweeper.tracking.worker import HTTP_LIMITS

    # The sweeper's own MLflow calls (parent run, closing runs of failed trials) get the same
    # bounded HTTP retries as the logging children: a dead server costs seconds, not minutes.
    for name, value in HTTP_LIMITS.items():
        os.environ.setdefault(name, value)
    # urllib3 logs each retry as a warning: a lost server is said once, at the end
    logging.getLogger("urllib3").setLevel(logging.ERROR)

    # before any trial: a reachable server or a writable store, else one line naming the URI
    configured = task_cfg.tracking.get("tracking_uri")
    key = (
        "MLFLOW_TRACKING_URI" if not configured and os.environ.get("MLFLOW_TRACKING_URI") else None
    )
    check_tracking_uri(store.resolve_tracking_uri(configured), key=key or "tracking.tracking_uri")
    return MlflowStudyHook(task_cfg)
