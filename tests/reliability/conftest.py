"""Fixtures for the fault battery (issue 8): real processes, real servers, temp dirs."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from reliability_helpers import MlflowServer


@pytest.fixture(autouse=True)
def _isolated_outputs(tmp_path, monkeypatch):
    """Nothing a test does lands in the repo's outputs/ or an outer MLflow store."""
    monkeypatch.setenv("SWEEPER_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def mlflow_server(tmp_path):
    """A started ``mlflow server``; killed at the end of the test."""
    server = MlflowServer(tmp_path / "mlflow-server")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def pg_role(pg_url):
    """A PostgreSQL role with a unique password and two databases of its own (Optuna,
    MLflow); dropped at the end."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    tag = uuid.uuid4().hex[:10]
    role, password = f"sweeper_secret_{tag}", f"S3cret-{uuid.uuid4().hex}"
    dbs = {"optuna": f"{role}_optuna", "mlflow": f"{role}_mlflow"}
    admin = sqlalchemy.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'"))
        for db in dbs.values():
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {db} OWNER {role}"))
    base = make_url(pg_url)
    url = "postgresql+psycopg://{}:{}@127.0.0.1:5432/{}"
    try:
        yield SimpleNamespace(
            role=role,
            password=password,
            url={k: url.format(role, password, db) for k, db in dbs.items()},
            masked={k: url.format(role, "***", db) for k, db in dbs.items()},
            admin_url={
                k: base.set(database=db).render_as_string(hide_password=False)
                for k, db in dbs.items()
            },
        )
    finally:
        with admin.connect() as conn:
            for db in dbs.values():
                conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            conn.execute(sqlalchemy.text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


@pytest.fixture
def mount_tmpfs():
    """``mount_tmpfs(dir, size)``: a real tmpfs of ``size`` (e.g. ``"24k"``) on ``dir``
    (root only: skipped elsewhere, unless under CI); ``mount_tmpfs.grow(dir, size)`` remounts
    it bigger (making room keeps the files). Unmounted at the end of the test."""
    import os
    import subprocess

    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("mounting a tmpfs needs root (required under CI)")
    mounted = []

    def mount(path, size: str):
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True
        )
        mounted.append(path)
        return path

    def grow(path, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)

    mount.grow = grow
    try:
        yield mount
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", "-l", str(path)], check=False)
