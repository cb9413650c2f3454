"""Fixtures for the fault battery (issue 8): real processes, real servers, temp dirs."""

from __future__ import annotations

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
