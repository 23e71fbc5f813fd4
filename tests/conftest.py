"""Suite-wide test setup: keep trained ML models out of the user's cache folder; PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.trading.persistence.pg_server import PostgresServer

pytest_plugins = ["tests.fakes.ib_fixtures"]  # `tws` and `adapter`: the fake TWS for IB tests


@pytest.fixture(autouse=True, scope="session")
def _model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point $ATF_MODEL_CACHE at a fresh folder for the whole session (models are reused within it)."""
    path = tmp_path_factory.mktemp("atf-models")
    old = os.environ.get("ATF_MODEL_CACHE")
    os.environ["ATF_MODEL_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("ATF_MODEL_CACHE", None)
    else:
        os.environ["ATF_MODEL_CACHE"] = old


# --- PostgreSQL (persistence suite; see tests/trading/persistence/pg_server.py) ----------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Start a private PostgreSQL server for this test session (one per xdist worker).

    It listens on 127.0.0.1 on a free port (`.port`); `.url()`, `.create_database()` and
    `.drop_database(url)` manage databases. To simulate an outage mid-test::

        postgres_server.stop()          # connections now fail
        postgres_server.start()         # back on the same port with the same data
        with postgres_server.stopped(): # or both around a block
            ...

    Without PostgreSQL binaries (or psycopg) the tests that use it are skipped, with the
    reason; when ``$CI`` is set they fail instead, so CI never passes without PostgreSQL.
    """
    from tests.trading.persistence.pg_server import PostgresUnavailable, start_server

    try:
        server = start_server()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL not available: {exc}")
    yield server
    server.destroy()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """Yield the URL of a fresh, empty PostgreSQL database, dropped after the test."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)
