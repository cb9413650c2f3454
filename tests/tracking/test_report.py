"""``sweeper report``: top trials, best config as overrides, most important parameter (with
its uncertainty), marginal effects, plots."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution

from sweeper.cli import main
from sweeper.statistics import aggregate, estimate


def make_study(path, name="sens", n=12, record=False):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=1),
    )
    study.set_user_attr("sweeper:fixed_overrides", ["agent=dqn", "env=cartpole_simple"])

    def objective(trial):
        lr = trial.suggest_float("agent.lr", 1e-4, 1e-2, log=True)
        freq = trial.suggest_int("agent.target_update_freq", 10, 500)
        if record:  # what the sweeper stores: the trial's full overrides
            trial.set_user_attr(
                "sweeper:overrides",
                ["agent=dqn", f"agent.lr={lr!r}", f"trial.number={trial.number}"],
            )
        if trial.number == 3:
            raise optuna.TrialPruned()
        if trial.number == 5:
            raise RuntimeError("diverged")
        return 100 * lr + 1e-4 * freq  # lr matters far more

    study.optimize(objective, n_trials=n, catch=(RuntimeError,))
    return study


def test_report_prints_table_best_overrides_importance_and_writes_plots(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "200")
    study = make_study(tmp_path / "journal.log", n=30)
    make_study(tmp_path / "journal.log", name="other", n=2)
    out = tmp_path / "plots"
    code = main(
        [
            "report",
            "--study",
            "sens",
            "--storage",
            f"journal:{tmp_path}/journal.log",
            "--out",
            str(out),
            "--top",
            "5",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    assert "study sens (maximize): 30 trials, 28 complete, 1 pruned, 1 failed" in text
    assert "agent.lr" in text and "agent.target_update_freq" in text
    best = study.best_trial
    assert f"best: trial {best.number}, value {best.value:.4g}\n" in text  # one run: no CI
    assert (
        "python -m sweeper.train agent=dqn env=cartpole_simple "
        f"agent.lr={best.params['agent.lr']!r} "
        f"agent.target_update_freq={best.params['agent.target_update_freq']}" in text
    )
    assert "importance (fANOVA, 28 trials, pruned left out: 1): agent.lr 0." in text
    assert "(95% bootstrap CI over trials)" in text
    assert "1 pruned trial(s) left out of the importance" in text
    assert "most important hyperparameter: agent.lr (ranked first in " in text
    assert "of 100 resamples)" in text
    assert "agent.lr: complete trials, seeds pooled" in text  # marginal effects
    assert text.count("COMPLETE") == 5  # top 5 rows, complete trials first
    for name in ("history", "importances", "parallel_coordinate", "slice"):
        assert (out / f"{name}.png").stat().st_size > 1000
        assert not (out / f"{name}.html").exists()  # plotly pages only on request


def test_report_html_pages_share_one_plotly_js(tmp_path, capsys):
    make_study(tmp_path / "j.log", n=6)
    out = tmp_path / "plots"
    args = ["report", "--storage", f"journal:{tmp_path}/j.log", "--out", str(out), "--html"]
    assert main([*args, "--bootstrap", "10"]) == 0
    pages = sorted(p.name for p in out.glob("*.html"))
    assert pages == ["history.html", "parallel_coordinate.html", "slice.html"] or pages == [
        "history.html",
        "importances.html",
        "parallel_coordinate.html",
        "slice.html",
    ]
    assert (out / "plotly.min.js").stat().st_size > 1_000_000  # plotly.js, once
    for page in out.glob("*.html"):
        assert page.stat().st_size < 200_000 and "plotly.min.js" in page.read_text()
    assert "plotly.min.js" in capsys.readouterr().out


def test_report_of_per_seed_trials_shows_iqm_ci_and_n(tmp_path, capsys, monkeypatch):
    """Trials as the sweeper stores them now: a value aggregating several seeds."""
    monkeypatch.setenv("COLUMNS", "200")
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log"))
    )
    study = optuna.create_study(study_name="seeds", storage=storage, direction="maximize")
    dists = {
        "agent.lr": CategoricalDistribution([1e-4, 1e-3, 1e-2]),
        "agent.double": CategoricalDistribution([False, True]),
    }
    for i, (lr, double) in enumerate([(1e-4, False), (1e-3, True), (1e-2, False), (1e-2, True)]):
        per_seed = [100.0 * i + s for s in (0.0, 3.0, 1.0)]
        study.add_trial(
            optuna.trial.create_trial(
                params={"agent.lr": lr, "agent.double": double},
                distributions=dists,
                value=aggregate(per_seed),
                user_attrs={
                    "sweeper:seeds": [4, 5, 6],
                    "sweeper:aggregate": "iqm",
                    "objective_per_seed": per_seed,
                },
            )
        )
    study.add_trial(
        optuna.trial.create_trial(
            params={"agent.lr": 1e-4, "agent.double": True},
            distributions=dists,
            state=optuna.trial.TrialState.PRUNED,
            intermediate_values={20: 5.0, 40: 7.5},
        )
    )
    args = ["report", "--storage", f"journal:{tmp_path}/j.log", "--no-plots", "--bootstrap", "20"]
    assert main(args) == 0
    text = capsys.readouterr().out
    est = estimate([300.0, 303.0, 301.0])
    assert (
        f"best: trial 3, value IQM {est.value:.4g}, 95% CI [{est.low:.4g}, {est.high:.4g}] "
        "(n=3 seeds), seeds 4, 5, 6" in text
    )
    assert "value (IQM over seeds)" in text and "95% CI" in text
    assert "7.5 (last report, step 40)" in text
    assert "importance (fANOVA, 4 trials, pruned left out: 1)" in text
    assert (
        "most important hyperparameter: not enough evidence to rank (only 4 complete trials, "
        "needs at least 8)" in text
    )
    assert "1 (last reports IQM 7.5 at step 40)" in text  # pruned there, at a shorter budget


def test_report_prefers_the_trials_recorded_overrides(tmp_path, capsys):
    study = make_study(tmp_path / "j.log", n=4, record=True)
    lr = study.best_trial.params["agent.lr"]
    assert main(["report", "--storage", f"journal:{tmp_path}/j.log", "--no-plots"]) == 0
    text = capsys.readouterr().out
    # expanded against the default config: agent=dqn is the default, only the lr differs
    assert f"python -m sweeper.train agent.lr={lr!r}\n" in text


def test_best_overrides_expand_a_sweep_config():
    """A recorded ``+sweep=...`` would start a sweep: the report expands it to plain values
    giving the same config hash."""
    from sweeper.analysis import expand_overrides
    from sweeper.cli import compose
    from sweeper.config_hash import config_hash

    recorded = ["+sweep=tabular", "train.episodes=30", "agent=sarsa", "agent.alpha=0.25"]
    expanded = expand_overrides(recorded)
    assert not any("sweep" in o for o in expanded)
    assert expanded[:2] == ["agent=sarsa", "env=gridworld"]
    assert "agent.alpha=0.25" in expanded and "eval.episodes=20" in expanded
    assert config_hash(compose(expanded)) == config_hash(compose(recorded))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--study", "nope"], "no study 'nope'"),
        ([], "2 studies"),
    ],
)
def test_report_errors_are_one_line(tmp_path, capsys, args, message):
    make_study(tmp_path / "j.log", n=2)
    make_study(tmp_path / "j.log", name="b", n=2)
    code = main(["report", "--storage", f"journal:{tmp_path}/j.log", *args])
    err = capsys.readouterr().err
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1
