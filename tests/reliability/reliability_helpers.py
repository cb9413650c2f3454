"""Helpers of the fault battery (imported as ``reliability_helpers``: a unique name, since
every test directory has a ``conftest`` module)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

# The sweeper tests' helpers: one ``clean_env`` for every subprocess the tests start.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sweeps"))
from sweep_helpers import clean_env  # noqa: E402, F401


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real ``mlflow server`` subprocess (own process group) over a SQLite store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 150) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
            "--default-artifact-root", (self.root / "artifacts").as_uri(),
        ]  # fmt: skip
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        self.log = open(self.root / "server.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, cwd=self.root, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow server exited {self.proc.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not answer /health in {timeout} s: {self.tail()}")
            time.sleep(0.3)

    def kill(self) -> None:
        """kill -9 of the server's whole process group (gunicorn/uvicorn workers too)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def tail(self) -> str:
        path = self.root / "server.log"
        return path.read_text()[-2000:] if path.exists() else ""


def files_with(root: Path, needle: str) -> list[str]:
    """Every file under ``root`` (bytes, recursively) that contains ``needle``."""
    hits = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and needle.encode() in path.read_bytes():
            hits.append(str(path.relative_to(root)))
    return hits


def rows_with(url: str, needle: str) -> list[str]:
    """``table`` for every row of every table of a PostgreSQL database that contains
    ``needle`` in any column (the whole row cast to text)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                sqlalchemy.text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
                )
            ).scalars()
            hits = []
            for table in list(tables):
                n = conn.execute(
                    sqlalchemy.text(f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE :p'),
                    {"p": f"%{needle}%"},
                ).scalar()
                hits += [table] * n
            return hits
    finally:
        engine.dispose()
