"""``sweeper retest``: a real tiny sweep of the app, then its best config re-trained on unseen
test seeds by the command, as plain runs tagged ``phase=test`` under the study's parent run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from sweeper.cli import main
from sweeper.seeding import replicate_seeds

SWEEP = [
    "hydra/sweeper=sweeper_optuna",
    "hydra/launcher=basic",
    "agent=q_learning",
    "env=gridworld",
    "train.episodes=30",
    "eval.every=10",
    "eval.episodes=2",
    "train.plot=false",
    "train.save_model=false",
    "train.progress=false",
    "agent.alpha=choice(0.1,0.5)",
    "hydra.sweeper.n_trials=2",
    "hydra.sweeper.seeds=2",
    "hydra.sweeper.retest.enabled=false",
]


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and mtime: what "nothing written" compares."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_retest_reruns_the_best_config_on_test_seeds_under_the_parent_run(
    tmp_path, monkeypatch, capsys
):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    sweep = subprocess.run(
        [sys.executable, "-m", "sweeper.train", "-m", *SWEEP],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    monkeypatch.chdir(tmp_path)
    storage = f"journal:{tmp_path}/outputs/optuna/journal.log"
    from sweeper.tracking.report import load_study

    study = load_study(None, storage)
    name = study.study_name
    best = study.best_trial
    sweep_dir = Path(best.user_attrs["sweeper:output_dir"]).parent
    assert not (sweep_dir / "test").exists()  # the sweep re-tested nothing

    # a study that is not there: one line, exit 1, nothing written
    before = tree(tmp_path)
    capsys.readouterr()
    assert main(["retest", "--study", "nope", "--top", "1", "--seeds", "3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sweeper: retest: no study 'nope' in journal:")
    assert len(err.strip().splitlines()) == 1
    assert tree(tmp_path) == before

    code = main(["retest", "--study", name, "--top", "1", "--seeds", "3", "--jobs", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err

    sweep_seed = study.user_attrs["sweeper:replicate_seeds"]["sweep_seed"]
    seeds = replicate_seeds(sweep_seed, 3, "test")
    assert not set(seeds) & set(best.user_attrs["sweeper:seeds"])
    objectives = []
    for s in seeds:  # in the best trial's sweep dir, as the sweeper's own re-test puts them
        run_dir = sweep_dir / "test" / f"trial-{best.number}" / f"seed_{s}"
        result = json.loads((run_dir / "result.json").read_text())
        assert result["status"] == "FINISHED"
        objectives.append(result["objective"])
        config = (run_dir / "config.yaml").read_text()
        assert f"seed: {s}\n" in config and "alpha: 0.5" in config
    assert sorted(p.name for p in (sweep_dir / "test" / f"trial-{best.number}").iterdir()) == (
        sorted([f"seed_{s}" for s in seeds] + [f"seed_{s}.log" for s in seeds])
    )

    # the outcome is in the study, as the sweeper stores it
    retest = load_study(name, storage).user_attrs["sweeper:retest"]
    assert retest["test_seeds"] == seeds
    (row,) = retest["configs"]
    assert row["number"] == best.number
    assert row["test_per_seed"] == objectives
    assert row["test"]["n"] == 3
    assert retest["tuning_winner"] == retest["test_winner"] == best.number
    assert f"trial {best.number} (agent.alpha=0.5): tuning IQM " in out
    assert "test IQM " in out and "(n=3)" in out
    assert f"winner on 3 test seeds: trial {best.number}, also the tuning winner" in out
    assert (sweep_dir / "figures" / "tuning_vs_test.png").stat().st_size > 0

    # MLflow: three runs tagged phase=test, test_of_trial=<n>, nested under the parent run
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow.db")
    exps = [e.experiment_id for e in client.search_experiments()]
    (parent,) = client.search_runs(
        exps, f"tags.`sweeper.role` = 'parent' and tags.study_name = '{name}'"
    )
    runs = client.search_runs(exps, "tags.phase = 'test'")
    assert len(runs) == 3
    for r in runs:
        tags = r.data.tags
        assert r.info.status == "FINISHED"
        assert tags["test_of_trial"] == str(best.number)
        assert tags["study_name"] == name
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.info.experiment_id == parent.info.experiment_id
        assert "trial_number" not in tags  # a plain run, not a trial
    assert sorted(int(r.data.tags["seed"]) for r in runs) == sorted(seeds)


def test_retest_without_a_complete_trial_is_one_line(tmp_path, capsys):
    path = tmp_path / "journal.log"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.create_study(study_name="failing", storage=storage, direction="maximize")

    def objective(trial):
        trial.suggest_float("agent.lr", 1e-4, 1e-2)
        raise RuntimeError("diverged")

    study.optimize(objective, n_trials=2, catch=(RuntimeError,))
    before = tree(tmp_path)
    code = main(["retest", "--study", "failing", "--storage", f"journal:{path}"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == "sweeper: retest: study failing has no complete trial: nothing to re-test\n"
    assert tree(tmp_path) == before


@pytest.mark.parametrize("arg", ["--top", "--seeds", "--jobs"])
def test_retest_counts_must_be_positive(arg, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["retest", arg, "0"])
    assert exc.value.code == 2
    assert "must be a positive integer" in capsys.readouterr().err


def test_a_ready_made_sweep_trial_becomes_plain_overrides(tmp_path):
    """A trial of ``+sweep=tabular`` (which sets hydra.mode=MULTIRUN): its test runs get the
    same semantic config without the ``+sweep`` override, and the sweep's plot/model settings."""
    from optuna.distributions import FloatDistribution

    from sweeper.cli import compose
    from sweeper.config_hash import config_hash
    from sweeper.sweeps.retest_runs import trial_overrides

    recorded = ["+sweep=tabular", "agent=sarsa", "agent.alpha=0.3", "trial.number=4"]
    trial = optuna.trial.create_trial(
        params={"agent.alpha": 0.3},
        distributions={"agent.alpha": FloatDistribution(0.05, 1.0)},
        value=1.0,
        user_attrs={"sweeper:overrides": recorded},
    )
    study = optuna.create_study(direction="maximize")
    overrides, _ = trial_overrides(study, trial)
    assert not any(o.startswith(("+", "hydra.", "trial.")) for o in overrides)
    assert "agent=sarsa" in overrides and "agent.alpha=0.3" in overrides
    assert overrides[-2:] == ["train.plot=false", "train.save_model=false"]
    assert config_hash(compose(overrides)) == config_hash(compose(recorded[:-1]))


FAKE_RUN = """
import json, pathlib, sys
run_dir, seed, fail_seed = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if seed == fail_seed:
    print("sweeper: training diverged at episode 3", file=sys.stderr)
    sys.exit(1)
run_dir.mkdir(parents=True)
(run_dir / "result.json").write_text(json.dumps({"status": "FINISHED", "objective": seed % 7}))
"""


def test_failed_test_runs_are_counted_one_line_each(tmp_path, monkeypatch, capsys):
    """Exit 1 and one line per failed run (with the run's last line); the others still count
    (runs faked by a script: the real command line is checked by the test above)."""
    from sweeper.sweeps import retest_runs

    path = tmp_path / "journal.log"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.set_user_attr("sweeper:replicate_seeds", {"sweep_seed": 7, "tune": [1, 2]})

    def objective(trial):
        alpha = trial.suggest_categorical("agent.alpha", [0.5])
        trial.set_user_attr(
            "sweeper:overrides", ["agent=q_learning", "env=gridworld", f"agent.alpha={alpha}"]
        )
        return 1.0

    study.optimize(objective, n_trials=1)
    seeds = replicate_seeds(7, 2, "test")
    monkeypatch.setattr(
        retest_runs.Job,
        "argv",
        lambda self: [
            sys.executable,
            "-c",
            FAKE_RUN,
            str(self.run_dir),
            str(self.seed),
            str(seeds[0]),
        ],
    )
    out_dir = tmp_path / "retest"
    code = main(
        [
            "retest",
            "--storage",
            f"journal:{path}",
            "--seeds",
            "2",
            "--out",
            str(out_dir),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/mlruns/mlflow.db",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 1
    log = out_dir / "test" / "trial-0" / f"seed_{seeds[0]}.log"
    assert err.endswith(
        "sweeper: retest: 1 of 2 test runs failed:\n"
        f"  trial 0, seed {seeds[0]}: exit code 1: sweeper: training diverged at episode 3 "
        f"(log: {log})\n"
    )
    retest = optuna.load_study(study_name="s", storage=storage).user_attrs["sweeper:retest"]
    assert retest["configs"][0]["test_per_seed"] == [None, float(seeds[1] % 7)]
    assert "test mean " in out or "test IQM " in out
    assert (out_dir / "figures" / "tuning_vs_test.png").is_file()


def test_stop_ends_the_whole_process_group(tmp_path, monkeypatch):
    """Ctrl-C while runs are in flight: each run's process group is stopped, even a run that
    ignores SIGINT and SIGTERM (SIGKILL after the grace periods), grandchildren included."""
    import signal
    import time

    from sweeper.sweeps import retest_runs

    monkeypatch.setattr(retest_runs, "STOP_GRACE", (0.5, 0.5))
    pid_file = tmp_path / "grandchild.pid"
    stubborn = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "p = subprocess.Popen(['sleep', '60'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    quick = "pass"

    class Fake(retest_runs.Job):
        def argv(self):
            return [sys.executable, "-c", stubborn if self.seed == 1 else quick]

    jobs = [Fake(0, s, tmp_path / f"seed_{s}", []) for s in (1, 2)]

    def interrupt(job):
        deadline = time.monotonic() + 20
        while not pid_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        retest_runs.run_jobs(jobs, 2, on_done=interrupt)
    assert time.monotonic() - start < 25
    assert jobs[0].returncode == -signal.SIGKILL
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:  # a zombie (reaped by init later) is dead too
        state = Path(f"/proc/{grandchild}/stat").read_text().split()[2]
        assert state == "Z"
