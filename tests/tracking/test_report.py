"""``sweeper report``: top trials, best config as overrides, most important parameter, plots."""

from __future__ import annotations

import optuna
import pytest

from sweeper.cli import main


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


def test_report_prints_table_best_overrides_importance_and_writes_plots(tmp_path, capsys):
    study = make_study(tmp_path / "journal.log")
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
    assert "study sens (maximize): 12 trials, 10 complete, 1 pruned, 1 failed" in text
    assert "agent.lr" in text and "agent.target_update_freq" in text
    best = study.best_trial
    assert f"best: trial {best.number}" in text
    assert (
        "python -m sweeper.train agent=dqn env=cartpole_simple "
        f"agent.lr={best.params['agent.lr']!r} "
        f"agent.target_update_freq={best.params['agent.target_update_freq']}" in text
    )
    assert "most important hyperparameter: agent.lr" in text
    assert text.count("COMPLETE") == 5  # top 5 rows, complete trials first
    for name in ("history", "importances", "parallel_coordinate", "slice"):
        assert (out / f"{name}.png").stat().st_size > 1000
        assert (out / f"{name}.html").exists()


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
    from sweeper.cli import compose
    from sweeper.config_hash import config_hash
    from sweeper.tracking.report import expand_overrides

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
