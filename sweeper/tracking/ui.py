"""Where ``sweeper ui`` sends a user: the newest study's trials, ranked by their objective.

Why: the MLflow UI opens on its experiments list, an experiment's runs table shows no metric
column until one is picked, nested runs start collapsed under their parent, and the compare
view's charts start from whatever metric sorts first (``env_steps``, ``return``). What a
user of this project wants first is the study's trials ranked by their objective, with its CI
and the swept params beside it, and charts of the objective against the params.

MLflow's own mechanism for a prepared view is the *shared view*: an experiment tag
``mlflow.sharedViewState.<key>`` holding the runs page's state as JSON (search filter, sort,
selected columns, chart sections), opened by ``#/experiments/<id>/runs?viewStateShareKey=<key>``
(what its "Share" button writes), in the UI's model-training mode (``workflowType``).
:func:`publish_view` writes one per study when the sweep starts; :func:`landing_urls` builds
the links to the newest study's. The user's own saved view
is never touched: MLflow shows a shared view with "Exit shared view" beside it. Experiments
the project creates also carry ``mlflow.experimentKind`` (``sweeper.tracking.store``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

from sweeper.tracking import store
from sweeper.tracking.limits import MAX_EXPERIMENT_TAG

SHARED_VIEW_TAG = "mlflow.sharedViewState."  # MLflow's prefix (its runs page reads it)
SECTION = "sweeper-objective"
#: The UI's "Model training" mode (its sidebar toggle otherwise comes from the browser's
#: localStorage, GenAI by default; the URL's ``workflowType`` wins).
WORKFLOW = "machine_learning"
#: The trials' own metrics (their aggregate over seeds), first columns of the table.
COLUMNS = ("objective", "objective_ci_low", "objective_ci_high", "objective_n")


def share_key(study_name: str) -> str:
    return "sweeper-" + hashlib.sha1(study_name.encode()).hexdigest()[:12]


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def view_state(study_name: str, params: Sequence[str], direction: str | None) -> dict[str, Any]:
    """The runs page's state for a study: its trial runs (not their per-seed runs, not the
    parent), best objective first, columns objective / CI / n and the swept params; a chart
    section "objective" first (a bar chart of it, parallel coordinates of the params and it,
    and the first param against it)."""
    params = list(params)
    card = {"deleted": False, "isGenerated": False, "runsCountToCompare": 10}
    card["metricSectionId"] = SECTION
    charts: list[dict[str, Any]] = [
        {**card, "uuid": f"{SECTION}-bar", "type": "BAR", "metricKey": "objective"},
        {
            **card,
            "uuid": f"{SECTION}-parallel",
            "type": "PARALLEL",
            "selectedParams": params,
            "selectedMetrics": ["objective"],
            "showAllRuns": True,
        },
    ]
    if params:
        charts.append(
            {
                **card,
                "uuid": f"{SECTION}-scatter",
                "type": "SCATTER",
                "xaxis": {"key": params[0], "type": "PARAM"},
                "yaxis": {"key": "objective", "type": "METRIC"},
            }
        )
    return {
        # trial runs carry the seeds they aggregate; their per-seed runs and the parent do not
        "searchFilter": f"tags.seeds LIKE '%' and tags.study_name = '{_quote(study_name)}'",
        "orderByKey": "metrics.`objective`",
        "orderByAsc": str(direction).lower() == "minimize",
        "selectedColumns": [f"metrics.`{m}`" for m in COLUMNS] + [f"params.`{p}`" for p in params],
        "compareRunCharts": charts,
        "compareRunSections": [
            {
                "uuid": SECTION,
                "name": "objective",
                "display": True,
                "isReordered": False,
                "deleted": False,
                "isGenerated": False,
            }
        ],
        "isAccordionReordered": True,
    }


def publish_view(
    client, experiment_id: str, study_name: str, params: Sequence[str], direction: str | None
) -> str:
    """Write the study's shared view on its experiment; returns its key. With too many params
    for MLflow's tag limit, the view keeps the params that fit (the table's columns and the
    parallel chart); the objective columns are always there."""
    params = list(params)
    while True:
        value = json.dumps(view_state(study_name, params, direction), separators=(",", ":"))
        if len(value) <= MAX_EXPERIMENT_TAG or not params:
            break
        params.pop()
    key = share_key(study_name)
    store.retry(client.set_experiment_tag, experiment_id, SHARED_VIEW_TAG + key, value)
    return key


def runs_url(
    base: str,
    experiment_id: str,
    direction: str | None = "maximize",
    key: str | None = None,
    charts: bool = False,
) -> str:
    """The runs page of ``experiment_id`` on the MLflow UI at ``base``: the shared view
    ``key`` when given, else the runs sorted by the objective, best first; ``charts``: the
    charts tab."""
    if key is not None:
        query: dict[str, str] = {"viewStateShareKey": key}
    else:
        query = {
            "orderByKey": "metrics.`objective`",
            "orderByAsc": "true" if str(direction).lower() == "minimize" else "false",
        }
    if charts:
        query["compareRunsMode"] = "CHART"
    query["workflowType"] = WORKFLOW
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?" + urlencode(
        query, quote_via=quote
    )


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """One run's page (its params, metrics, tags and artifacts) in the model-training UI."""
    query = urlencode({"workflowType": WORKFLOW})
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{query}"


def newest_study(client) -> dict[str, Any] | None:
    """The study whose parent run started last: name, experiment id, direction, and the key
    of its shared view when its experiment has one."""
    parents = store.search_all_runs(
        client, f"tags.`{store.ROLE_TAG}` = 'parent'", order_by=["attributes.start_time DESC"]
    )
    if not parents:
        return None
    newest = max(parents, key=lambda r: (r.info.start_time or 0, r.info.run_id))
    name = newest.data.tags.get("study_name") or ""
    experiment = store.retry(client.get_experiment, newest.info.experiment_id)
    key = share_key(name)
    return {
        "study_name": name,
        "experiment_id": newest.info.experiment_id,
        "direction": newest.data.tags.get("direction"),
        "parent_run_id": newest.info.run_id,
        "view": key if SHARED_VIEW_TAG + key in experiment.tags else None,
    }


def landing_urls(base: str, tracking_uri: str) -> tuple[str, str | None, str]:
    """``(runs url, charts url, what)``: the newest study's trials table and its charts,
    else the experiments list."""
    study = newest_study(store.client(tracking_uri))
    if study is None:
        url = f"{base.rstrip('/')}/#/experiments?workflowType={WORKFLOW}"
        return url, None, "no study tracked yet"
    args = (base, study["experiment_id"], study["direction"], study["view"])
    what = f"the trials of study {study['study_name']}, best objective first"
    return runs_url(*args), runs_url(*args, charts=True), what
