"""A resumed study goes back to its own sweep directory (``sweep_dir.resume``).

Hydra's default ``hydra.sweep.dir`` is a new timestamp at each start: the same command re-run
after a kill -9 claimed a new directory, the trials and results of the resumed study went
there and the old one kept only its first trials. Real sweeps of the toy app in subprocesses
on a journal file, killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
from sweep_helpers import clean_env, journal, only_study, sweep_cmd

from sweeper import study_attrs
from sweeper.study_storage import open_storage
from sweeper.sweeps import sweep_dir
from sweeper.sweeps.sweep_dir import DIR_ATTR, MARKER


def command(tmp_path: Path, *extra: str) -> list[str]:
    """The same command each time: no hydra.sweep.dir, so Hydra's default names it by the
    second it starts (``multirun/<date>/<time>`` under the cwd)."""
    return sweep_cmd(
        "toy",
        f"hydra.sweeper.storage={journal(tmp_path)}",
        "x=interval(-2,2)",
        "duration=2",
        "evals=2",
        "hydra.sweeper.n_trials=3",
        *extra,
    )


def start_and_kill_after_first_trial(tmp_path: Path) -> Path:
    """Start the sweep, kill -9 it (its whole process group) once trial 1 has started; its
    directory."""
    proc = subprocess.Popen(
        command(tmp_path),
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("multirun/*/*/1/.hydra")):
            assert proc.poll() is None, "the sweep ended before its second trial"
            assert time.monotonic() < deadline, "no second trial within 120 s"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    (first,) = [m.parent for m in tmp_path.glob(f"multirun/*/*/{MARKER}")]
    return first


def resume(tmp_path: Path) -> subprocess.CompletedProcess:
    time.sleep(1.1)  # the next second: Hydra's default names another directory
    proc = subprocess.run(
        command(tmp_path),
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_a_study_resumed_after_kill_9_writes_to_its_own_directory(tmp_path):
    first = start_and_kill_after_first_trial(tmp_path)
    study = only_study(journal(tmp_path))
    assert study.user_attrs[DIR_ATTR] == str(first)
    resume(tmp_path)
    assert [m.parent for m in tmp_path.glob(f"multirun/*/*/{MARKER}")] == [first]
    assert len(list(tmp_path.glob("multirun/*/*"))) == 1  # the new one was given up, no trace
    assert (first / "optimization_results.yaml").is_file()
    study = only_study(journal(tmp_path))
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert len(done) == 3
    for t in done:  # the resumed trials too
        assert Path(t.user_attrs[study_attrs.OUTPUT_DIR]).parent == first
        assert (first / str(t.number) / ".hydra").is_dir()


def test_a_study_whose_directory_is_gone_takes_the_new_one(tmp_path):
    first = start_and_kill_after_first_trial(tmp_path)
    (first / MARKER).unlink()  # e.g. the directory was cleaned up (or is on another machine)
    resume(tmp_path)
    (second,) = [m.parent for m in tmp_path.glob(f"multirun/*/*/{MARKER}")]
    assert second != first and (second / "optimization_results.yaml").is_file()
    assert only_study(journal(tmp_path)).user_attrs[DIR_ATTR] == str(second)


# -- resume() on real directories and a real journal, no sweep --------------------------------
def study_in(tmp_path: Path, name: str = "s") -> optuna.Study:
    return optuna.create_study(study_name=name, storage=open_storage(journal(tmp_path)))


def test_resume_gives_up_the_new_directory_for_the_recorded_one(tmp_path):
    study = study_in(tmp_path)
    own = sweep_dir.claim(tmp_path / "runs" / "a", "s")
    assert sweep_dir.resume(own, study).path == own.path  # a fresh study: records it
    assert study.user_attrs[DIR_ATTR] == str(own.path)
    new = sweep_dir.claim(tmp_path / "runs" / "b" / "c", "s")
    back = sweep_dir.resume(new, study)
    assert back.path == own.path and back.resumed
    assert not (tmp_path / "runs" / "b").exists()  # the directories it made are removed


def test_a_study_recorded_before_the_attr_is_found_by_its_trials(tmp_path):
    study = study_in(tmp_path)
    own = sweep_dir.claim(tmp_path / "old", "s")
    trial = study.ask()
    trial.set_user_attr(study_attrs.OUTPUT_DIR, str(own.path / "0"))
    study.tell(trial, 1.0)
    back = sweep_dir.resume(sweep_dir.claim(tmp_path / "new", "s"), study)
    assert back.path == own.path and study.user_attrs[DIR_ATTR] == str(own.path)


def test_another_studys_directory_is_never_taken(tmp_path):
    study = study_in(tmp_path)
    theirs = sweep_dir.claim(tmp_path / "theirs", "other")
    study.set_user_attr(DIR_ATTR, str(theirs.path))  # e.g. reused by another study since
    new = sweep_dir.claim(tmp_path / "new", "s")
    assert sweep_dir.resume(new, study).path == new.path
    assert study.user_attrs[DIR_ATTR] == str(new.path)
