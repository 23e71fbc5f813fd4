"""Fixtures of the broker tests: the fake Binance exchange and the fake TWS, on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.fake_exchange import FakeExchange


@pytest.fixture
def fake() -> Iterator[FakeExchange]:
    """A fake exchange on a frozen clock (prices move only when a test steps it)."""
    with FakeExchange(check_timestamp=False, hang_seconds=0.6) as fx:
        fx.script("BTCUSDT", [100.0])
        yield fx


# The fake TWS fixtures (`tws`, `adapter`) come from tests/fakes/ib_fixtures.py.
