"""A PostgreSQL outage in the middle of a sweep: the sweep ends with one line naming the cause,
every finished trial is kept, and the same command resumes once the server is back (issue 8,
point 7). The server is a private PostgreSQL cluster of this test (initdb in tmp_path, own
port), really stopped and started; the shared CI cluster is never touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from reliability_helpers import clean_env, free_port

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "tests" / "sweeps" / "apps" / "toy.py"


def _pg_bin() -> Path | None:
    for version in ("17", "16", "15"):
        path = Path(f"/usr/lib/postgresql/{version}/bin")
        if (path / "initdb").exists():
            return path
    return None


class PrivateCluster:
    def __init__(self, root: Path) -> None:
        self.bin = _pg_bin()
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self._as_postgres("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log = str(self.root / "server.log")  # not our pipe: the server outlives pg_ctl
        self._as_postgres(
            "pg_ctl", "-D", str(self.data), "-l", log, "-o", opts, "-w", "-t", "60", "start"
        )

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture
def cluster(tmp_path):
    if _pg_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but PostgreSQL's initdb is missing: .ci/run installs it")
        pytest.skip("PostgreSQL server binaries are not installed")
    root = Path("/tmp") / f"sweeper-pg-{os.getpid()}-{tmp_path.name}"[:60]
    pg = PrivateCluster(root)
    pg.init()
    pg.start()
    try:
        yield pg
    finally:
        try:
            pg.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(root, ignore_errors=True)


def sweep_cmd(tmp_path: Path, url: str) -> list[str]:
    return [
        sys.executable,
        str(TOY),
        "-m",
        f"hydra.sweeper.storage={url}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hydra.sweeper.n_trials=12",
        "hydra/sweeper/pruner=none",
        "x=interval(-2,2)",
        "duration=0.6",
    ]


def complete(url: str) -> int:
    storage = optuna.storages.RDBStorage(url)
    try:
        names = optuna.get_all_study_names(storage)
        if not names:
            return 0
        (name,) = names
        trials = optuna.load_study(study_name=name, storage=storage).get_trials()
        return sum(t.state == TrialState.COMPLETE for t in trials)
    finally:
        storage.remove_session()
        storage.engine.dispose()


def test_postgresql_outage_ends_the_sweep_in_one_line_and_keeps_finished_trials(tmp_path, cluster):
    proc = subprocess.Popen(
        sweep_cmd(tmp_path, cluster.url),
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while complete(cluster.url) < 3:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "3 trials did not complete in 120 s"
            time.sleep(0.3)
        cluster.stop()
        stopped_at = time.monotonic()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.monotonic() - stopped_at < 90
    assert proc.returncode != 0
    assert "Traceback" not in err, err[-4000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("sweeper: the sweep stopped: storage postgresql"), last
    # the driver's own error (psycopg's AdminShutdown is an OperationalError; which of them
    # surfaces depends on the moment the server goes), never Optuna's wrapper text
    assert "OperationalError" in last or "AdminShutdown" in last, last
    assert "invalid data in the commit" not in last, last
    # back up: nothing that finished was lost, and the same command finishes the study
    cluster.start()
    kept = complete(cluster.url)
    assert kept >= 3
    proc2 = subprocess.run(
        sweep_cmd(tmp_path, cluster.url),
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    assert complete(cluster.url) >= kept


@pytest.mark.slow
def test_postgresql_outage_under_a_packed_tracked_sweep_is_one_line(tmp_path, cluster):
    """S-like (issue 24, point 5): a packed grid sweep, 2 worker processes, MLflow tracking.
    The terminal gets the progress lines and one final line; tracebacks go to sweep.log."""
    from sweep_helpers import sweep_cmd as app_cmd

    from sweeper.tracking import store

    cmd = app_cmd(
        "app-nom", "+sweep=sensitivity", "hydra.sweeper.n_trials=8", "train.episodes=40",
        f"hydra.sweeper.storage={cluster.url}",
    )  # fmt: skip
    run = {"cwd": tmp_path, "env": clean_env(), "text": True}
    proc = subprocess.Popen(cmd, **run, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while complete(cluster.url) < 3:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "3 trials did not complete in 120 s"
            time.sleep(0.3)
        cluster.stop()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "Traceback" not in err and "Exception in thread" not in err, err[-4000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("sweeper: the sweep stopped: storage postgresql"), last
    assert "OperationalError" in last or "AdminShutdown" in last, last
    [log] = (tmp_path / "outputs").rglob("sweep.log")  # SWEEPER_OUTPUTS: the sweep's dir
    assert f"(details: {log})" in last
    assert "Traceback" in log.read_text()  # the stop's traceback, kept for whoever asks
    cluster.start()
    again = subprocess.run(cmd, **run, capture_output=True, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    assert complete(cluster.url) == 8
    client = store.client(store.sqlite_uri(tmp_path / "outputs" / store.DB_NAME))
    runs = store.search_all_runs(client, "")
    assert runs and not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
