"""Embedded stores survive kills and full disks (issue 8, points 3 and 4).

Real processes killed with SIGKILL during MLflow's schema creation, real half-built databases
made by MLflow's own (non-transactional on SQLite) migrations, and a real 2 MB tmpfs that runs
out of space under an Optuna journal.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from reliability_helpers import clean_env  # noqa: E402
from sweep_helpers import sweep_cmd  # noqa: E402

from sweeper.analysis import counts
from sweeper.study_storage.journal import JournalFile, drop_torn_tail
from sweeper.tracking import store

ROOT = Path(__file__).resolve().parents[2]

# One process imports mlflow once, then forks a child per creation (each child still imports
# alembic and runs every migration itself, as a fresh process would) and kills it with SIGKILL
# once its database file has appeared plus a fraction of how long a full creation (the
# reference, not killed) took from there: robust to the import time on a loaded machine.
#   argv: mode ("new": sweeper's prepare_store, the file is the temp build |
#         "old": MLflow's SqlAlchemyStore straight on the final path), the reference dir,
#         then "fraction:dir" pairs.
KILLER = r"""
import glob, os, signal, sys, time
from sweeper.tracking import store
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

mode, ref, jobs = sys.argv[1], sys.argv[2], sys.argv[3:]

def create(d):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            uri = store.sqlite_uri(os.path.join(d, "mlflow.db"))
            if mode == "new":
                store.prepare_store(uri)
            else:
                SqlAlchemyStore(uri, store.artifact_root(uri))
            code = 0
        finally:
            os._exit(code)
    return pid

def appeared(d):
    return glob.glob(os.path.join(d, "mlflow.db.tmp-*" if mode == "new" else "mlflow.db"))

def wait_appeared(pid, d):
    while not appeared(d):
        if os.waitpid(pid, os.WNOHANG)[0]:
            raise SystemExit(f"the creation in {d} ended before its file appeared")
        time.sleep(0.005)
    return time.monotonic()

pid = create(ref)
t0 = wait_appeared(pid, ref)
_, status = os.waitpid(pid, 0)
assert status == 0, status
build = time.monotonic() - t0
print(f"build {build:.2f} s", flush=True)
for job in jobs:
    frac, d = job.split(":", 1)
    pid = create(d)
    wait_appeared(pid, d)
    time.sleep(float(frac) * build)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
"""


def _kill_during_creation(tmp_path: Path, mode: str, fractions: list[float]) -> list[Path]:
    dirs = [tmp_path / f"{mode}-{i}" for i in range(len(fractions))]
    for d in [tmp_path / f"{mode}-ref", *dirs]:
        d.mkdir()
    jobs = [f"{f}:{d}" for f, d in zip(fractions, dirs, strict=True)]
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, mode, str(tmp_path / f"{mode}-ref"), *jobs],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dirs


def _tables(path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as con:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _single_run(tmp_path: Path, outputs: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "sweeper.train", "agent=q_learning", "env=gridworld",
        "train.episodes=5", "eval.every=5", "eval.episodes=1", "train.progress=false",
        "train.plot=false",
    ]  # fmt: skip
    env = clean_env(SWEEPER_OUTPUTS=str(outputs))
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def _runs(uri: str) -> list:
    client = store.client(uri)
    return store.search_all_runs(client, "")


def test_kill_9_during_first_creation_leaves_no_or_a_complete_store(tmp_path):
    dirs = _kill_during_creation(tmp_path, "new", [0.1, 0.4, 0.7, 1.5])
    ref = tmp_path / "new-ref" / store.DB_NAME
    complete = _tables(ref)
    # a finished creation leaves the database in WAL mode, closed: no -wal/-shm, no temp
    assert sorted(p.name for p in ref.parent.iterdir()) == ["mlflow.db", "mlflow.db.lock"]
    with contextlib.closing(sqlite3.connect(ref)) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    mid_build = []  # killed while building: no database, the dead build's temp file
    for d in dirs:
        db = d / store.DB_NAME
        if db.exists():  # renamed into place before the kill: complete, WAL, no temp left
            assert _tables(db) == complete
            assert not list(d.glob("mlflow.db.tmp-*"))
        elif list(d.glob("mlflow.db.tmp-*")):
            mid_build.append(d)
    assert mid_build, "no kill landed during the creation"
    # the next command builds the store (removing the dead build's temp files) and tracks
    d = mid_build[0]
    proc = _single_run(tmp_path, d)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(d.glob("mlflow.db.tmp-*"))
    runs = _runs(store.sqlite_uri(d / store.DB_NAME))
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert "eval_return_mean" in runs[0].data.metrics


def test_half_built_stores_without_runs_are_moved_aside_and_rebuilt(tmp_path, caplog):
    # what MLflow's own creation leaves when killed (the old way: straight on the final path;
    # its migrations are not transactional on SQLite): a partial schema, a leftover
    # _alembic_tmp_* table, or a consistent schema at an intermediate revision
    dirs = _kill_during_creation(tmp_path, "old", [0.15, 0.3, 0.5, 0.7])
    complete = _tables(tmp_path / "old-ref" / store.DB_NAME)
    broken = [d / store.DB_NAME for d in dirs if store._state(d / store.DB_NAME)[0] == "broken"]
    assert broken, "no kill left a half-built database"
    for db in broken:
        before = _tables(db)
        caplog.clear()
        with caplog.at_level("WARNING", logger=store.__name__):
            store.prepare_store(store.sqlite_uri(db))
        sidecars = ("-wal", "-shm", "-journal")  # moved with it, if any
        [aside] = [p for p in db.parent.glob("mlflow.db.broken-*") if not p.name.endswith(sidecars)]
        assert _tables(aside) == before  # kept as it was, for the record
        assert _tables(db) == complete and store._state(db)[0] == "ready"
        [line] = [r.getMessage() for r in caplog.records if "moved aside" in r.getMessage()]
        assert str(db) in line and aside.name in line
    # the store works: a run written and read back
    client = store.client(store.sqlite_uri(broken[0]))
    run = client.create_run(store.get_or_create_experiment(client, "after-repair"))
    client.log_metric(run.info.run_id, "m", 1.5)
    client.set_terminated(run.info.run_id)
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.5}


def test_head_revision_read_without_mlflow_matches_mlflow():
    from mlflow.store.db.utils import _get_latest_schema_revision

    head, known = store._migrations()
    assert head == _get_latest_schema_revision() and head in known


@pytest.mark.parametrize(
    ("damage", "advice"),
    [
        # what a migration killed in alembic's batch mode leaves (copy made, not swapped in)
        ("CREATE TABLE _alembic_tmp_tags (key VARCHAR(250), value VARCHAR(8000))", "move it"),
        # a consistent schema at an older revision (a kill between migrations, an old MLflow)
        ("UPDATE alembic_version SET version_num = '{older}'", "mlflow db upgrade"),
    ],
    ids=["alembic_tmp_table", "older_revision"],
)
def test_unusable_store_with_runs_is_left_alone_with_a_one_line_error(
    tmp_path, _template, damage, advice
):
    db = tmp_path / "outputs" / store.DB_NAME
    db.parent.mkdir()
    shutil.copy(_template, db)
    uri = store.sqlite_uri(db)
    client = store.client(uri)
    run = client.create_run(store.get_or_create_experiment(client, "precious"))
    client.set_terminated(run.info.run_id)
    store._initialized.discard(uri)
    head, known = store._migrations()
    older = sorted(known - {head})[0]
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute(damage.format(older=older))
        con.commit()
    tables = _tables(db)
    with pytest.raises(store.StoreError) as err:
        store.prepare_store(uri)
    message = str(err.value)
    assert "\n" not in message and str(db) in message and "holds 1 run:" in message
    assert advice in message
    assert _tables(db) == tables and not list(db.parent.glob("mlflow.db.broken-*"))
    with contextlib.closing(sqlite3.connect(db)) as con:
        assert con.execute("SELECT run_uuid FROM runs").fetchall() == [(run.info.run_id,)]


@pytest.fixture(scope="module")
def _template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / store.DB_NAME
    store.prepare_store(store.sqlite_uri(path))
    return path


# -- the Optuna journal ---------------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path):
    """A real 2 MB tmpfs (root only: skipped elsewhere, unless under CI)."""
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("mounting a tmpfs needs root (required under CI)")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path, leave: int) -> Path:
    st = os.statvfs(mnt)
    filler = mnt / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * (st.f_bavail * st.f_frsize - leave))
    return filler


def test_journal_survives_a_full_disk_mid_sweep(tmp_path, tmpfs):
    journal = tmpfs / "journal.log"
    args = [
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"hydra.sweeper.storage=journal:{journal}",
        "hydra.sweeper.n_trials=12",
        "x=interval(-2,2)",
    ]
    cmd = sweep_cmd("toy", *args)
    filler = _fill(tmpfs, leave=8192)  # room for a few trials' records
    run = {"cwd": tmp_path, "env": clean_env(), "capture_output": True, "text": True}
    full = subprocess.run(cmd, **run, timeout=120)
    assert full.returncode != 0, full.stdout[-2000:]
    assert 0 < journal.stat().st_size <= 8192
    # the append that hit ENOSPC took its partial line back: the next one starts clean
    assert journal.read_bytes().endswith(b"\n")
    filler.unlink()
    again = subprocess.run(cmd, **run, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    lines = journal.read_bytes().splitlines(keepends=True)
    assert all(line.endswith(b"\n") and json.loads(line) for line in lines)
    # plain Optuna reads it back: the finished trials of both runs, none torn
    backend = optuna.storages.journal.JournalFileBackend(str(journal))
    storage = optuna.storages.JournalStorage(backend)
    [name] = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials()
    assert len([t for t in trials if counts(t)]) == 12  # the sweep's n_trials, all counted
    # at most the trial whose claim hit ENOSPC (no owner recorded) stays RUNNING until its
    # grace period: that is the sweeper's stale-trial rule, not the journal's
    assert len([t for t in trials if t.state == optuna.trial.TrialState.RUNNING]) <= 1


def _study_on(path: Path, n: int) -> None:
    storage = optuna.storages.JournalStorage(JournalFile(str(path)))
    study = optuna.create_study(study_name="s", storage=storage, load_if_exists=True)
    for _ in range(n):
        study.tell(study.ask(), 1.0)


def _read_all(path: Path) -> list[dict]:
    return list(optuna.storages.journal.JournalFileBackend(str(path)).read_logs(0))


def test_append_after_a_torn_record_starts_on_a_clean_line(tmp_path):
    path = tmp_path / "journal.log"
    _study_on(path, 2)
    good = _read_all(path)
    with open(path, "ab") as f:  # an append that died half-way
        f.write(b'{"op_code":4,"worker_id":"dead","study_id":0,"datetime_st')
    assert _read_all(path) == good  # Optuna skips a torn last line...
    _study_on(path, 1)  # ...and appending through JournalFile drops it first
    logs = _read_all(path)
    assert logs[: len(good)] == good and len(logs) > len(good)
    assert all(json.loads(line) for line in path.read_bytes().splitlines())
    storage = optuna.storages.JournalStorage(JournalFile(str(path)))
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 3


def test_append_failing_half_way_leaves_a_clean_end(tmp_path, monkeypatch):
    path = tmp_path / "journal.log"
    _study_on(path, 1)
    size = path.stat().st_size
    real_write = os.write

    def half_then_enospc(fd, data):
        if len(data) > 8:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_enospc)
    backend = JournalFile(str(path))
    with pytest.raises(OSError, match="No space"):
        backend.append_logs(
            [{"op_code": 0, "worker_id": "w", "study_name": "t", "directions": [1]}]
        )
    monkeypatch.setattr(os, "write", real_write)
    assert path.stat().st_size == size  # the partial line is gone at once
    _study_on(path, 1)
    assert all(json.loads(line) for line in path.read_bytes().splitlines())


def test_drop_torn_tail_edge_cases(tmp_path):
    path = tmp_path / "j"
    cases = [
        (b"", b""),
        (b"a\n", b"a\n"),
        (b"torn", b""),
        (b"a\nb\n" + b"x" * 200_000, b"a\nb\n"),  # a tail longer than the scan chunk
    ]
    for content, kept in cases:
        path.write_bytes(content)
        fd = os.open(path, os.O_RDWR)
        try:
            assert drop_torn_tail(fd) == len(content) - len(kept)
        finally:
            os.close(fd)
        assert path.read_bytes() == kept


# -- a full disk under a packed sweep with tracking (issue 24, point 7) ----------------------

# S-like: a packed grid sweep (2 worker processes, populations of trials x 10 seeds), MLflow
# tracking to the local SQLite store, each run a few seconds
PACKED = ("+sweep=sensitivity", "hydra.sweeper.n_trials=8", "train.episodes=40")


def _sweep(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = sweep_cmd("app-nom", *PACKED, *args)
    return subprocess.run(
        cmd, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=240
    )


def _last_line(proc: subprocess.CompletedProcess) -> str:
    return proc.stderr.strip().splitlines()[-1]


def _audit(storage: str, outputs: Path, n: int) -> None:
    """The study has its ``n`` counted COMPLETE trials and nothing RUNNING, in Optuna and in
    MLflow."""
    from sweep_helpers import only_study

    trials = only_study(storage).get_trials()
    complete = [t for t in trials if counts(t) and t.state == optuna.trial.TrialState.COMPLETE]
    for t in trials:  # (shown when the test fails)
        print(t.number, t.state.name, counts(t), t.params, t.user_attrs.get("sweeper:error"))
    assert len(complete) == n
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    runs = _runs(store.sqlite_uri(outputs / store.DB_NAME))
    assert runs and not [r.info.run_name for r in runs if r.info.status == "RUNNING"]


def _converge(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The same command run again until it finishes the study: at most 3 times."""
    for _ in range(3):
        again = _sweep(tmp_path, *args)
        assert "Traceback" not in again.stderr, again.stderr[-4000:]
        if again.returncode == 0:
            return again
    raise AssertionError(f"3 runs did not finish the study: {again.stderr[-3000:]}")


@pytest.mark.slow
def test_full_journal_disk_then_the_same_command_converges(tmp_path, mount_tmpfs):
    disk = mount_tmpfs(tmp_path / "journal-disk", "24k")  # the journal only: a few trials
    storage = f"journal:{disk / 'journal.log'}"
    full = _sweep(tmp_path, f"hydra.sweeper.storage={storage}")
    assert full.returncode != 0, full.stdout[-2000:]
    assert "Traceback" not in full.stderr, full.stderr[-4000:]
    last = _last_line(full)
    assert last.startswith("sweeper: the sweep stopped:"), last
    assert "No space left on device" in last, last
    journal = disk / "journal.log"
    assert journal.read_bytes().endswith(b"\n")  # readable: no torn last record
    mount_tmpfs.grow(disk, "4m")  # room made: whatever was left RUNNING (maybe with only
    _converge(tmp_path, f"hydra.sweeper.storage={storage}")  # some params) is failed, asked again
    _audit(storage, tmp_path / "outputs", 8)


@pytest.mark.slow
def test_full_outputs_disk_ends_in_one_line_then_resumes(tmp_path, mount_tmpfs):
    outputs = mount_tmpfs(tmp_path / "outputs", "2m")  # SWEEPER_OUTPUTS: journal, MLflow, runs
    full = _sweep(tmp_path)
    assert full.returncode != 0, full.stdout[-2000:]
    # MLflow's tracebacks, the dead workers', the threads': in sweep.log (if it had room)
    assert "Traceback" not in full.stderr, full.stderr[-4000:]
    assert "Exception in thread" not in full.stderr and "Logging error" not in full.stderr
    last = _last_line(full)
    assert last.startswith("sweeper: the sweep stopped:"), last
    assert "No space left on device" in last, last  # the disk, not a worker's death
    assert len(full.stderr.splitlines()) < 20, full.stderr[-4000:]
    mount_tmpfs.grow(outputs, "64m")
    _converge(tmp_path)
    [journal] = outputs.glob("optuna/journal.log")
    _audit(f"journal:{journal}", outputs, 8)
