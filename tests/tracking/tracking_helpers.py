"""Helpers shared by the tracking tests (imported as a plain module: tests have no packages)."""

from __future__ import annotations

import contextlib
import json
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

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "agent=q_learning",
    "env=gridworld",
    "train.episodes=30",
    "eval.every=10",
    "eval.episodes=2",
    "train.progress=false",
]


def tiny_cfg(*overrides: str):
    """A composed tiny tabular config (sub-second run)."""
    from sweeper.cli import compose

    return compose([*TINY, *overrides])


def train_cli(
    *overrides: str, cwd: Path, env: dict | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess:
    """``python -m sweeper.train`` in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "sweeper.train", *overrides],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read() or b"{}")


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@contextlib.contextmanager
def serve_ui(tmp_path):
    """``sweeper ui`` on the embedded store under tmp_path/outputs; yields its base URL. What
    it prints goes to tmp_path/sweeper-ui.out (the link) and sweeper-ui.err (the rest)."""
    port = free_port()
    env = {**os.environ, "SWEEPER_OUTPUTS": str(tmp_path / "outputs")}
    out, err = tmp_path / "sweeper-ui.out", tmp_path / "sweeper-ui.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sweeper.cli", "ui", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 150
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"sweeper ui exited {proc.returncode}: {err.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("sweeper ui did not answer /health within 150 s")
            time.sleep(0.5)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)  # sweeper ui stops the server's process group
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
