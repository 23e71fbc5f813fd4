"""Every persistence test that takes `db_url` runs twice: on SQLite and on PostgreSQL.

The PostgreSQL server (`postgres_server` in tests/conftest.py) starts only when a
``[postgresql]`` test runs. SQLite-only behaviour (pragmas, file locking) takes `sqlite_url`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from trading.persistence import ensure_database

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'atf.db'}"


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The URL of an empty database of the backend under test."""
    if backend == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a database migrated to head."""
    eng = ensure_database(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def bot(engine: Engine) -> int:
    """A registered paper bot (strategy RsiBb on the venue paper-sim); its instance id."""
    from trading.persistence import register_bot_instance

    info = register_bot_instance(
        engine, "paper_bot", "paper", strategy="RsiBb", exchange="paper-sim"
    )
    return info.id
