"""Pytest fixtures of the fake TWS, shared by every test that talks to Interactive Brokers.

Loaded as a plugin by tests/conftest.py. The IB stack is imported when a fixture is used, so
tests that never touch IB do not load ib_async.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.fakes.fake_tws import FakeTWS
    from trading.brokers.ibkr import IBKRAdapter


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
