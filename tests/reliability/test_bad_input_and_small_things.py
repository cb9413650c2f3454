"""Issue 24 ("clean ends"), points 8 and 11: bad input is refused before anything is created,
in one line naming the key; the small things a user sees (the obs_mode hint, figures of
diverged trials, summary tables in a log) read right.

Real parts only: ``python -m sweeper.train`` in subprocesses, real files and directories,
matplotlib's real figures (the warnings they used to print are turned into errors here).
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import warnings
from importlib.metadata import version
from pathlib import Path

import pytest
from reliability_helpers import clean_env

from sweeper.console import BELOW, PIPED_WIDTH
from sweeper.tracking.preflight import TrackingUriError, check_tracking_uri

TINY = [
    "agent=q_learning",
    "env=gridworld",
    "train.episodes=5",
    "eval.every=5",
    "eval.episodes=1",
    "train.progress=false",
    "train.plot=false",
]


def app(tmp_path: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m sweeper.train`` in a subprocess, cwd ``tmp_path`` (piped: not a tty)."""
    return subprocess.run(
        [sys.executable, "-m", "sweeper.train", *args],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line(proc: subprocess.CompletedProcess) -> str:
    """The refusal: a non-zero exit, no traceback, one line on stderr."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def created(tmp_path: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))


# -- A1: a tracking URI MLflow cannot use -----------------------------------------------------
URI_HELP = "(http://HOST:PORT, sqlite:///PATH, postgresql://..., file:///DIR or an existing"


def test_a_bare_word_tracking_uri_is_refused_by_a_single_run(tmp_path):
    proc = app(tmp_path, *TINY, "tracking.tracking_uri=garbage")
    line = one_line(proc)
    assert proc.returncode == 2
    assert line.startswith(
        "sweeper: config error: tracking.tracking_uri garbage: not an MLflow tracking URI "
    ), line
    assert URI_HELP in line, line
    assert created(tmp_path) == []  # no ./garbage store, no run dir, no outputs/


def test_a_bare_word_tracking_uri_is_refused_by_a_sweep_before_its_study(tmp_path):
    proc = app(
        tmp_path,
        "-m",
        "hydra/sweeper=sweeper_optuna",
        f"hydra.sweeper.storage=journal:{tmp_path / 'journal.log'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.retest.enabled=false",
        *TINY,
        "tracking.enabled=true",
        "tracking.tracking_uri=garbage",
        "agent.alpha=choice(0.1,0.2)",
    )
    line = one_line(proc)
    assert line.startswith("sweeper: tracking.tracking_uri garbage: not an MLflow tracking URI")
    assert created(tmp_path) == []  # no ./garbage, no journal (no study), no sweep dir


def test_check_takes_a_plain_path_only_for_an_existing_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrackingUriError, match="not an MLflow tracking URI"):
        check_tracking_uri("garbage")
    with pytest.raises(TrackingUriError, match="not an MLflow tracking URI"):
        check_tracking_uri(str(tmp_path / "no" / "such" / "dir"))
    (tmp_path / "mlflow.db").write_bytes(b"")
    with pytest.raises(TrackingUriError, match=r"is a file.*sqlite:///"):
        check_tracking_uri("mlflow.db")
    assert created(tmp_path) == ["mlflow.db"]  # nothing made for the refused ones
    (tmp_path / "mlruns").mkdir()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    check_tracking_uri("mlruns")
    check_tracking_uri(str(tmp_path / "mlruns"))


def test_check_refuses_a_file_store_that_the_installed_mlflow_refuses(tmp_path, monkeypatch):
    """MLflow >= 3.13 raises on a file store unless MLFLOW_ALLOW_FILE_STORE=true: in each
    run, after training started. The check says so first."""
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    major, minor = (int(p) for p in re.findall(r"\d+", version("mlflow"))[:2])
    for uri in (str(tmp_path), (tmp_path / "new").as_uri()):
        if (major, minor) >= (3, 13):
            with pytest.raises(TrackingUriError, match="MLFLOW_ALLOW_FILE_STORE=true"):
                check_tracking_uri(uri)
        else:
            check_tracking_uri(uri)
    if (major, minor) >= (3, 13):
        assert not (tmp_path / "new").exists()


def test_check_masks_a_password_in_an_unknown_scheme():
    with pytest.raises(TrackingUriError) as info:
        check_tracking_uri("garbage://user:s3cret@host/x")
    assert "s3cret" not in str(info.value) and "user:***@" in str(info.value)


# -- A2: the sweep grammar ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["-m", "agent.lr=interval(1e-2)"],
            "sweeper: config error: agent.lr: cannot parse 'interval(1e-2)': "
            "missing a required argument: 'end'",
        ),
        (["agent.alpha=choice(0.1,"], "sweeper: config error: agent.alpha: cannot parse "),
    ],
)
def test_malformed_override_grammar_is_one_line_naming_the_key(tmp_path, args, expected):
    proc = app(tmp_path, *args)
    line = one_line(proc)
    assert proc.returncode == 2
    assert line.startswith(expected), line
    assert created(tmp_path) == []


# -- A3: outputs where nothing can be written ---------------------------------------------------
@pytest.mark.parametrize(
    ("args", "key", "where"),
    [
        (["hydra.run.dir=/proc/x/run"], "hydra.run.dir", "/proc"),
        (["-m", "hydra.sweep.dir=/sys/x", "seed=1,2"], "hydra.sweep.dir", "/sys"),
        (["hydra.run.dir=a-file/run/${now:%H}"], "hydra.run.dir", "a-file"),
    ],
)
def test_outputs_that_cannot_be_written_are_one_line_naming_the_key(tmp_path, args, key, where):
    (tmp_path / "a-file").write_text("in place of a directory")
    proc = app(tmp_path, *TINY, "tracking.enabled=false", *args)
    line = one_line(proc)
    assert line.startswith(f"sweeper: config error: {key} '"), line
    assert where in line, line
    assert created(tmp_path) == ["a-file"]


# -- B4: the obs_mode hint names the chosen env's modes -----------------------------------------
@pytest.mark.parametrize(
    ("env", "hint"),
    [("f1_barcelona", "obs_mode=vector)"), ("gridworld", "obs_mode=onehot or coords)")],
)
def test_a_dqn_on_discrete_observations_is_told_the_env_s_vector_modes(tmp_path, env, hint):
    proc = app(tmp_path, "agent=dqn", f"env={env}", "tracking.enabled=false")
    line = one_line(proc)
    assert "needs vector observations" in line and line.endswith(hint), line


# -- B5: figures of diverged trials draw without numpy/matplotlib warnings ----------------------
def test_figures_of_non_finite_values_draw_without_warnings(tmp_path):
    from sweeper import decomposition_figure, figures
    from sweeper.variance_decomposition import Decomposition, Effect, Interval

    nan, inf = math.nan, math.inf
    decomposition = Decomposition(
        metric="final_eval_mean",
        params=["agent.lr", "agent.gamma"],
        levels={"agent.lr": [1e-3, 1e5, 1e6], "agent.gamma": [0.9, 0.99]},
        n_configs=6,
        n_seeds=3,
        shares={
            "agent.lr": Interval(0.5, nan, nan),
            "agent.gamma": Interval(inf, -inf, inf),
            "interactions": Interval(nan, nan, nan),
            "seed": Interval(0.2, 0.1, 0.3),
        },
        differences={},
        first={},
        effects={
            "agent.lr": Effect(1e-3, 1e5, 0.0, 1.0, Interval(1.0, nan, inf)),
            "agent.gamma": Effect(0.9, 0.99, 0.0, 1.0, Interval(nan, nan, nan)),
        },
        marginal_means={
            "agent.lr": [
                Interval(1.0, 0.5, 1.5),
                Interval(nan, nan, nan),
                Interval(inf, -inf, inf),
            ],
            "agent.gamma": [Interval(inf, inf, inf), Interval(1.0, 0.9, 1.1)],
        },
        n_resamples=10,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning fails the test
        # a log-scale hyperparameter whose other values all diverged: one finite point
        figures.marginal_effects(
            {"agent.lr": {1e-3: [1.0, 2.0], 1e5: [inf, nan], 1e6: [nan]}},
            tmp_path / "effects.png",
            ylabel="return",
            title="diverged",
            log_params=["agent.lr"],
        )
        decomposition_figure.plot(
            decomposition, tmp_path / "decomposition.png", ylabel="return", log_params=["agent.lr"]
        )
    assert (tmp_path / "effects.png").stat().st_size > 0
    assert (tmp_path / "decomposition.png").stat().st_size > 0


# -- B6: the study summary in a log -------------------------------------------------------------
def test_a_piped_study_summary_reads_in_a_log_and_keeps_its_command_whole(capsys, monkeypatch):
    from sweeper.sweeps.results import print_summary

    monkeypatch.delenv("COLUMNS", raising=False)  # pytest sets 80; piped: the log's width
    command = "python -m sweeper.train " + " ".join(f"agent.param_{i}={i}.5" for i in range(30))
    results = "/tmp/" + "a-long-directory-name/" * 8 + "optimization_results.yaml"
    print_summary(
        {
            "study_name": "a-study",
            "n_trials": 4,
            "trials": {"complete": 3, "pruned": 0, "failed": 1, "running": 0, "uncounted": 0},
            "best": {
                "value": 1.5,
                "number": 2,
                "params": {f"agent.param_{i}": i + 0.5 for i in range(30)},
                "overrides": [],
                "command": command,
            },
            "results_file": results,
        }
    )
    out = capsys.readouterr().out
    lines = out.splitlines()
    table = [ln for ln in lines if ln[:1] in "┌│└"]
    assert table and max(len(ln) for ln in table) <= PIPED_WIDTH, out
    assert any("reproduce" in ln and BELOW in ln for ln in table), out
    assert f"reproduce: {command}" in lines  # one line, whole: copy-pastable
    assert f"results: {results}" in lines
    assert "agent.param_29=29.5" in out  # a long cell wraps, it is not cut
