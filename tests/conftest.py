"""Fixtures for the sweeper tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def pg_url() -> str:
    """A PostgreSQL URL from SWEEPER_TEST_PG_URL.

    Skips only on a developer machine without the variable; under CI (``CI`` set) a missing
    variable or an unreachable server fails the test.
    """
    url = os.environ.get("SWEEPER_TEST_PG_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI is set but SWEEPER_TEST_PG_URL is not: .ci/run must start PostgreSQL")
        pytest.skip("SWEEPER_TEST_PG_URL is not set (PostgreSQL test; required under CI)")
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, pool_pre_ping=True)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except Exception as err:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at SWEEPER_TEST_PG_URL is unreachable: {err}")
    return url
