"""The PostgreSQL test server: an outage mid-test, recovery, and secrets kept out of errors."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from tests.trading.persistence.pg_server import PostgresServer
from trading.exceptions import DatabaseError
from trading.persistence import (
    apply_events,
    current_revision,
    ensure_database,
    list_orders,
    register_bot_instance,
)

from .builders import round_trip


def test_stopping_the_server_breaks_writes_and_a_retry_after_restart_succeeds(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    engine = ensure_database(postgres_url)
    try:
        bot = register_bot_instance(engine, "b", "paper").id
        events = round_trip(1)
        apply_events(engine, events[:3], bot)
        with postgres_server.stopped():
            assert not postgres_server.is_running()
            with pytest.raises(OperationalError):
                apply_events(engine, events, bot)
            with pytest.raises(DatabaseError, match="cannot use database"):
                current_revision(postgres_url)
        assert postgres_server.is_running()
        apply_events(engine, events, bot)  # the pool reconnects; the replayed part is skipped
        assert len(list_orders(engine)) == 2
        assert [o.status for o in list_orders(engine)] == ["filled", "filled"]
    finally:
        engine.dispose()


def test_restart_keeps_the_data_and_the_port(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    ensure_database(postgres_url).dispose()
    port = postgres_server.port
    postgres_server.restart()
    assert postgres_server.port == port
    assert current_revision(postgres_url) is not None


def test_a_wrong_password_is_not_echoed(postgres_server: PostgresServer) -> None:
    url = postgres_server.url().replace(postgres_server.password, "not-the-S3CRET-pw")
    with pytest.raises(DatabaseError) as info:
        ensure_database(url)
    texts = [str(info.value)]
    cause = info.value.__cause__
    while cause is not None:
        texts.append(str(cause))
        cause = cause.__cause__
    assert all("not-the-S3CRET-pw" not in t for t in texts)
    assert "atf:***@127.0.0.1" in str(info.value)
    assert "password authentication failed" in str(info.value)
