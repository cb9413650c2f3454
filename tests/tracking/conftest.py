"""Fixtures for the tracking tests: real MLflow SQLite stores in temp dirs, tiny runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_outputs(tmp_path, monkeypatch):
    """Nothing a test does lands in the repo's outputs/ or an outer MLflow store."""
    monkeypatch.setenv("SWEEPER_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def _template_db(tmp_path_factory) -> Path:
    """An initialized MLflow SQLite database (migrations take seconds: do them once)."""
    import contextlib
    import sqlite3

    from sweeper.tracking import store

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    store.prepare_store(store.sqlite_uri(path))
    with contextlib.closing(sqlite3.connect(path)) as con:  # everything into the main file
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


@pytest.fixture
def store_uri(tmp_path, _template_db) -> str:
    """A fresh embedded store under tmp_path/outputs (the default location in tests)."""
    from sweeper.tracking import store

    out = tmp_path / "outputs"
    out.mkdir(exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        src = _template_db.with_name(_template_db.name + suffix)
        if src.exists():
            shutil.copy(src, out / (store.DB_NAME + suffix))
    return store.default_tracking_uri()


@pytest.fixture
def mlflow_client(store_uri):
    from sweeper.tracking import store

    return store.client(store_uri)
