"""Fixtures of the broker tests: the fake Binance exchange and the fake TWS, on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.fakes.fake_exchange import FakeExchange

if TYPE_CHECKING:
    from tests.fakes.fake_tws import FakeTWS
    from trading.brokers.ibkr import IBKRAdapter


@pytest.fixture
def fake() -> Iterator[FakeExchange]:
    """A fake exchange on a frozen clock (prices move only when a test steps it)."""
    with FakeExchange(check_timestamp=False, hang_seconds=0.6) as fx:
        fx.script("BTCUSDT", [100.0])
        yield fx


# --- Interactive Brokers (imported when used, so that the ccxt tests do not load the IB stack)


@pytest.fixture
def tws() -> Iterator[FakeTWS]:
    """A fake TWS with the default paper account and instruments (see fake_tws_setup)."""
    from tests.fakes.fake_tws_setup import fake_tws

    with fake_tws() as server:
        yield server


@pytest.fixture
def adapter(tws: FakeTWS) -> Iterator[IBKRAdapter]:
    """An IB adapter connected to `tws`; closed after the test."""
    from tests.fakes.fake_tws_setup import settings
    from trading.brokers.ibkr import IBKRAdapter

    a = IBKRAdapter(settings(tws))
    a.connect()
    yield a
    a.close()
