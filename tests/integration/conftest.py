"""Fixtures for integration tests that need servers: one real PostgreSQL for the whole session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_server import PostgresServer, PostgresUnavailable, start_server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL server with an empty `cohortflow` database, stopped and deleted at the end.

    When it cannot start (binaries missing, not allowed to run as `postgres`, ...), CI fails
    (CI=true: .ci/run installs PostgreSQL, so a missing server there is a bug); elsewhere the test skips
    with the reason.
    """
    try:
        server = start_server()
    except PostgresUnavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL could not be started in CI: {error}")
        pytest.skip(f"PostgreSQL could not be started: {error}")
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def served_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse after one full pipeline run (3,000 generated users, snapshot published); read-only:
    a test that changes it works on ``api_server.copy_world``."""
    from api_server import build_world

    return build_world(tmp_path_factory.mktemp("served_world"))
