"""The MLflow UI a user lands in, checked the way a person would: a real ``mlflow server``
(started by ``sweeper ui``), a real sweep logging to it over HTTP, the link ``sweeper ui``
prints, and headless Chromium rendering the pages it links to.

The screenshots (experiment runs table, its charts, the parent run, a trial run) are kept as
test artifacts in ``outputs/test-artifacts/mlflow-ui/`` (git-ignored), to be looked at."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.parse

import pytest
from tracking_helpers import ROOT, TINY, get, post, serve_ui, train_cli

from sweeper.tracking import ui

ARTIFACTS = ROOT / "outputs" / "test-artifacts" / "mlflow-ui"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# as the workplace's probe starts it: no network beyond localhost, a fresh profile
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
    "--virtual-time-budget=20000",
]


def chromium(url: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"chromium-{len(list(tmp_path.glob('chromium-*')))}"
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
        capture_output=True,
        text=True,
        timeout=120,
    )


def runs_of(api: str, experiment_id: str) -> list[dict]:
    runs = post(f"{api}/runs/search", {"experiment_ids": [experiment_id], "max_results": 500})
    out = []
    for run in runs["runs"]:
        data = run.setdefault("data", {})
        for kind in ("tags", "params", "metrics"):
            data[kind] = {x["key"]: x["value"] for x in data.get(kind, [])}
        out.append(run)
    return out


def test_the_ui_lands_on_the_study_trials_ranked_by_their_objective(tmp_path):
    if CHROMIUM is None and not os.environ.get("CI"):
        pytest.skip("no chromium (CI installs it: .ci/run)")
    assert CHROMIUM is not None, "chromium is missing: .ci/run installs it"
    with serve_ui(tmp_path) as base:
        sweep = train_cli(
            "-m",
            "hydra/sweeper=sweeper_optuna",
            "hydra/sweeper/sampler=random",
            "hydra.sweeper.n_trials=3",
            "hydra.sweeper.seeds=2",
            "hydra.sweeper.retest.enabled=false",
            *TINY,
            "agent.alpha=interval(0.05,0.5)",
            "agent.gamma=choice(0.9,0.99)",
            f"tracking.tracking_uri='{base}'",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            f"hydra.sweeper.storage=journal:{tmp_path / 'journal.log'}",
            cwd=tmp_path,
            env={"SWEEPER_OUTPUTS": str(tmp_path / "client-side")},
            timeout=300,
        )
        study = re.search(r"study (q_learning-gridworld-random-[0-9a-f]{10})", sweep.stdout)
        assert study, sweep.stdout[-2000:]
        name = study.group(1)

        # -- what the server holds --------------------------------------------------------
        api = f"{base}/api/2.0/mlflow"
        query = urllib.parse.urlencode({"experiment_name": name})
        exp = get(f"{api}/experiments/get-by-name?{query}")["experiment"]
        exp_tags = {t["key"]: t["value"] for t in exp.get("tags", [])}
        assert exp_tags["mlflow.experimentKind"] == "custom_model_development"
        assert ui.SHARED_VIEW_TAG + ui.share_key(name) in exp_tags
        runs = runs_of(api, exp["experiment_id"])
        parent = next(r for r in runs if r["data"]["tags"].get("sweeper.role") == "parent")
        params = parent["data"]["params"]
        assert params["search_space.agent.alpha"] == "interval(0.05,0.5)"
        assert params["search_space.agent.gamma"] == "choice(0.9,0.99)"
        best = parent["data"]["tags"]["best_trial"]
        trials = [r for r in runs if r["data"]["tags"].get("seeds")]
        assert len(trials) == 3
        best_run = next(r for r in trials if r["data"]["tags"]["trial_number"] == best)
        assert float(params["best.agent.alpha"]) == float(best_run["data"]["params"]["agent.alpha"])
        for run in trials:
            metrics = run["data"]["metrics"]
            assert {"objective", "objective_ci_low", "objective_ci_high", "objective_n"} <= set(
                metrics
            )
            assert metrics["objective_n"] == 2

        # -- the link `sweeper ui` prints for this server ----------------------------------
        link = subprocess.run(
            [sys.executable, "-m", "sweeper.cli", "ui", "--tracking-uri", base],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert link.returncode == 0, link.stderr
        url = link.stdout.strip()
        key = ui.share_key(name)
        assert url == (
            f"{base}/#/experiments/{exp['experiment_id']}/runs?viewStateShareKey={key}"
            "&workflowType=machine_learning"
        )
        assert f"the trials of study {name}, best objective first" in link.stderr

        # -- the pages, rendered -----------------------------------------------------------
        dom = chromium(url, tmp_path, "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        for text in ("objective_ci_low", "objective_ci_high", "agent.alpha", "agent.gamma"):
            assert text in dom.stdout, text  # columns shown without picking them
        shown = re.findall(r">(trial-\d+)<", dom.stdout)
        assert sorted(set(shown)) == [
            f"trial-{r['data']['tags']['trial_number']}"
            for r in sorted(trials, key=lambda r: r["data"]["tags"]["trial_number"])
        ]
        assert "/seed-" not in dom.stdout  # the per-seed runs are filtered out of this view
        ranked = sorted(trials, key=lambda r: -r["data"]["metrics"]["objective"])
        values = [r["data"]["metrics"]["objective"] for r in ranked]
        if len(set(values)) == len(values):  # ties may come in any order
            first = [
                m
                for m in shown
                if m in {f"trial-{r['data']['tags']['trial_number']}" for r in trials}
            ]
            assert first[0] == f"trial-{ranked[0]['data']['tags']['trial_number']}"

        shutil.rmtree(ARTIFACTS, ignore_errors=True)
        ARTIFACTS.mkdir(parents=True)
        pages = {
            "experiment-runs": url,
            "experiment-charts": ui.runs_url(
                base, exp["experiment_id"], "maximize", key, charts=True
            ),
            "parent-run": ui.run_url(base, exp["experiment_id"], parent["info"]["run_id"]),
            "trial-run": ui.run_url(base, exp["experiment_id"], best_run["info"]["run_id"]),
        }
        import matplotlib.image

        for page, page_url in pages.items():
            png = ARTIFACTS / f"{page}.png"
            shot = chromium(page_url, tmp_path, f"--screenshot={png}")
            assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
            pixels = matplotlib.image.imread(png)
            assert pixels.shape[:2] == (1000, 1600)
            assert pixels.std() > 0.05, f"{page}: a blank page"  # drawn, not empty
        parent_dom = chromium(pages["parent-run"], tmp_path, "--dump-dom").stdout
        assert "search_space.agent.alpha" in parent_dom and "best.agent.alpha" in parent_dom
