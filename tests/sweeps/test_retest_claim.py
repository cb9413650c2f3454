"""The re-test claim (``sweeper.sweeps.retest_claim``): one re-test per study, however many
sweeper processes worked on it. Real JournalStorage files, real processes (forked racers,
kill -9 of a claimant); the last test runs real concurrent sweeps of one study."""

from __future__ import annotations

import multiprocessing
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from sweep_helpers import ROOT, clean_env, journal, only_study, sweep_cmd

from sweeper import study_attrs
from sweeper.processes import owner, process_start
from sweeper.study_storage import open_storage
from sweeper.sweeps import liveness, retest_claim
from sweeper.sweeps.retest_claim import PREFIX, claim, records, what

TRIALS, SEEDS = [0, 1], [1001, 1002]


def new_study(path: Path, name: str = "s") -> optuna.Study:
    return optuna.create_study(study_name=name, storage=open_storage(f"journal:{path}"))


def load(path: Path, name: str = "s") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(f"journal:{path}"))


def sleeper() -> subprocess.Popen:
    """A live process on this host, to name as a claim's or a trial's owner."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def owner_of(proc: subprocess.Popen) -> dict:
    return {"host": socket.gethostname(), "pid": proc.pid, "start": process_start(proc.pid)}


def kill9(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=10)


# -- racing: exactly one winner ------------------------------------------------------------
def _race(path: str, barrier, hold_s: float, results) -> None:
    study = load(Path(path))
    barrier.wait(timeout=60)
    held = claim(study, TRIALS, SEEDS, heartbeat_interval=0.1)
    results.put(held is not None)
    if held is not None:
        time.sleep(hold_s)
        held.release(done=True)


@pytest.mark.parametrize("hold_s", [0.0, 0.5])
def test_racing_processes_exactly_one_claims(tmp_path, hold_s):
    ctx = multiprocessing.get_context("fork")
    for round_ in range(3):  # fresh study each round: three chances to catch a double claim
        path = tmp_path / f"journal-{round_}.log"
        new_study(path)
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [
            ctx.Process(target=_race, args=(str(path), barrier, hold_s, results)) for _ in "abcd"
        ]
        for p in procs:
            p.start()
        wins = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
        assert sum(wins) == 1, wins
        study = load(path)
        assert [r["state"] for r in records(study.user_attrs).values()].count("done") == 1
        assert study.get_trials() == []  # the claim is no trial: nothing to leave uncounted


def test_racing_threads_exactly_one_claims(tmp_path):
    path = tmp_path / "journal.log"
    new_study(path)
    barrier, wins = threading.Barrier(6), []
    lock = threading.Lock()

    def race() -> None:
        study = load(path)  # each its own storage object, as separate processes would
        barrier.wait(timeout=60)
        held = claim(study, TRIALS, SEEDS)
        with lock:
            wins.append(held)

    threads = [threading.Thread(target=race) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    winners = [h for h in wins if h is not None]
    assert len(wins) == 6 and len(winners) == 1, wins
    winners[0].release(done=False)


# -- done once ------------------------------------------------------------------------------
def test_a_done_retest_is_not_claimed_again_but_a_released_one_is(tmp_path):
    study = new_study(tmp_path / "journal.log")
    held = claim(study, TRIALS, SEEDS)
    assert held is not None
    assert claim(load(tmp_path / "journal.log"), TRIALS, SEEDS) is None  # held (alive)
    held.release(done=False)  # e.g. the re-test raised: the next process may try
    again = claim(load(tmp_path / "journal.log"), TRIALS, SEEDS)
    assert again is not None
    with again:  # done when the block ends without an exception
        pass
    later = load(tmp_path / "journal.log")
    assert claim(later, TRIALS, SEEDS) is None
    assert claim(later, TRIALS, [1001, 1002, 1003]) is not None  # more seeds: another re-test


def test_a_stored_retest_result_counts_as_done(tmp_path):
    study = new_study(tmp_path / "journal.log")
    study.set_user_attr(  # what retest.summarize stores
        study_attrs.RETEST,
        {"test_seeds": SEEDS, "configs": [{"number": 0}, {"number": 1}], "test_winner": 0},
    )
    assert claim(study, TRIALS, SEEDS) is None
    other = claim(study, [0, 2], SEEDS)  # the study's top trials changed: re-test again
    assert other is not None
    other.release(done=True)


# -- dead claimants -------------------------------------------------------------------------
CLAIMANT = """
import sys, time
import optuna
from sweeper.study_storage import open_storage
from sweeper.sweeps.retest_claim import claim
study = optuna.load_study(study_name="s", storage=open_storage("journal:" + sys.argv[1]))
held = claim(study, [0, 1], [1001, 1002], heartbeat_interval=0.2)
print("claimed" if held else "not claimed", flush=True)
time.sleep(120)
"""


def test_a_claim_of_a_process_killed_9_is_taken_over(tmp_path):
    path = tmp_path / "journal.log"
    new_study(path)
    proc = subprocess.Popen(
        [sys.executable, "-c", CLAIMANT, str(path)],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "claimed"
        assert claim(load(path), TRIALS, SEEDS) is None  # its claimant lives
    finally:
        kill9(proc)
    held = claim(load(path), TRIALS, SEEDS)
    assert held is not None
    held.release(done=True)


def test_a_recorded_dead_owner_does_not_hold_the_claim(tmp_path):
    study = new_study(tmp_path / "journal.log")
    proc = sleeper()
    study.set_user_attr(  # recorded the way liveness records a trial's owner
        f"{PREFIX}theirs",
        {
            "owner": owner_of(proc),
            "what": what(TRIALS, SEEDS),
            "state": "running",
            "heartbeat": time.time(),
        },
    )
    assert claim(study, TRIALS, SEEDS) is None
    kill9(proc)  # its pid is gone (or reused by another process: another start time)
    held = claim(study, TRIALS, SEEDS)
    assert held is not None
    held.release(done=True)


def test_another_hosts_claim_holds_while_its_heartbeat_is_fresh(tmp_path):
    study = new_study(tmp_path / "journal.log")
    record = {
        "owner": {"host": "elsewhere", "pid": 1, "start": "1"},
        "what": what(TRIALS, SEEDS),
        "state": "running",
        "heartbeat": time.time(),
    }
    study.set_user_attr(f"{PREFIX}theirs", record)
    assert claim(study, TRIALS, SEEDS, grace_period=30) is None
    study.set_user_attr(f"{PREFIX}theirs", {**record, "heartbeat": time.time() - 31})
    held = claim(study, TRIALS, SEEDS, grace_period=30)
    assert held is not None
    held.release(done=True)


def test_the_holder_refreshes_its_heartbeat(tmp_path):
    study = new_study(tmp_path / "journal.log")
    held = claim(study, TRIALS, SEEDS, heartbeat_interval=0.1)
    assert held is not None
    first = records(load(tmp_path / "journal.log").user_attrs)[held.key]["heartbeat"]
    time.sleep(0.5)
    later = records(load(tmp_path / "journal.log").user_attrs)[held.key]
    assert later["state"] == "running" and later["heartbeat"] > first
    held.release(done=True)
    assert records(load(tmp_path / "journal.log").user_attrs)[held.key]["state"] == "done"


# -- whoever finishes last ------------------------------------------------------------------
def test_a_process_still_tuning_gets_the_retest(tmp_path):
    study = new_study(tmp_path / "journal.log")
    proc = sleeper()
    try:
        trial = study.ask()  # a trial another live sweeper process runs
        trial.set_user_attr(liveness.OWNER, owner_of(proc))
        trial.set_user_attr(liveness.HEARTBEAT, time.time())
        assert claim(study, TRIALS, SEEDS) is None
        mine = study.ask()  # this process's own RUNNING trial does not hold it back
        mine.set_user_attr(liveness.OWNER, owner())
        assert retest_claim.live_tuning(study, time.time(), 60.0).number == trial.number
    finally:
        kill9(proc)
    held = claim(study, TRIALS, SEEDS)  # its tuner died: the trial is stale
    assert held is not None
    held.release(done=True)


# -- end to end: concurrent sweeps of one study ---------------------------------------------
TINY = [
    "agent=q_learning",
    "env=gridworld",
    "eval.episodes=2",
    "train.plot=false",
    "train.save_model=false",
    "train.progress=false",
    "tracking.enabled=false",
    "train.episodes=30",
    "eval.every=15",
]


@pytest.mark.slow
def test_concurrent_sweeps_of_one_study_retest_once(tmp_path):
    """3 sweeper processes of one study: top_k x seeds test runs in all, by one of them."""
    top_k, seeds = 2, 2
    cmd = sweep_cmd(
        "app",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"hydra.sweeper.storage={journal(tmp_path)}",
        "hydra/sweeper=sweeper_optuna",
        *TINY,
        "agent.alpha=choice(0.1,0.3,0.6)",
        "hydra/sweeper/sampler=grid",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.seeds=2",
        f"hydra.sweeper.retest.top_k={top_k}",
        f"hydra.sweeper.retest.seeds={seeds}",
    )
    env = clean_env(COLUMNS="400")
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [
        subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    retested = [
        line for out in outputs for line in out.splitlines() if "re-testing the best" in line
    ]
    assert len(retested) == 1, retested  # one process re-tested
    assert f"({top_k * seeds} runs)" in retested[0]
    # the other two said why not: left to a process still tuning, running or done already
    assert sum("re-test of study" in out for out in outputs) == 2, [o[-1500:] for o in outputs]
    study = only_study(journal(tmp_path))
    assert [c["number"] for c in study.user_attrs["sweeper:retest"]["configs"]] != []
    runs = sorted((tmp_path / "sweep" / "test").glob("trial-*/seed_*"))
    assert len(runs) == top_k * seeds, runs
    assert sum(1 for t in study.get_trials() if t.state.name == "COMPLETE") == 3
