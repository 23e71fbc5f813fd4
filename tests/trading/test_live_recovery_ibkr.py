"""A resumed IB bot is reconciled with IB's account at start (`reconcile_at_start`), against the fake TWS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy.engine import Engine

from tests.fakes.fake_tws import FakeTWS
from tests.fakes.fake_tws_account import set_position
from tests.fakes.fake_tws_setup import AAPL, order, wait_until
from trading.brokers.ibkr import IBKRAdapter
from trading.brokers.ibkr_bridge import OrderManagerBridge
from trading.brokers.ibkr_broker import IBKRBroker
from trading.brokers.ibkr_view import IbkrBrokerView
from trading.bus import EventBus
from trading.events import Event
from trading.live_recovery import OpenFromEarlierRun, reconcile_at_start
from trading.order_manager import OrderManager
from trading.orders import OrderStatus
from trading.persistence import apply_events, ensure_database, load_positions, register_bot_instance
from trading.reconcile import ReconciliationMismatch

SYMBOLS = ["AAPL"]


@pytest.fixture
def broker(adapter: IBKRAdapter) -> Iterator[IBKRBroker]:
    b = IBKRBroker(adapter)
    yield b
    b.close()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = ensure_database(f"sqlite:///{tmp_path / 'atf.db'}")
    yield eng
    eng.dispose()


def _first_run(engine: Engine) -> int:
    return register_bot_instance(engine, "ib_bot", "live").id


def _resumed(engine: Engine) -> SimpleNamespace:
    """The audit session of the restarted process: the same bot instance, resumed."""
    info = register_bot_instance(engine, "ib_bot", "live")
    assert info.resumed
    return SimpleNamespace(engine=engine, info=info)


def test_a_flat_database_and_a_flat_ib_account_start_without_a_refusal(broker: IBKRBroker, engine: Engine) -> None:
    _first_run(engine)
    assert reconcile_at_start(_resumed(engine), broker, SYMBOLS) is None


def test_a_position_at_ib_the_flat_database_does_not_know_is_a_mismatch(
    tws: FakeTWS, broker: IBKRBroker, engine: Engine
) -> None:
    _first_run(engine)
    set_position(tws, AAPL, 7, 180.0)  # bought in TWS while the bot was down
    wait_until(lambda: IbkrBrokerView(broker.adapter, SYMBOLS).positions() != [])
    with pytest.raises(ReconciliationMismatch, match=r"POSITION_MISMATCH: symbol AAPL.*database flat; broker 7"):
        reconcile_at_start(_resumed(engine), broker, SYMBOLS)


def test_a_position_and_its_stop_that_ib_also_holds_are_refused_as_adoption_at_ib_is_not_built(
    tws: FakeTWS, broker: IBKRBroker, engine: Engine
) -> None:
    # The first run: an entry filled at IB and its stop working there, all recorded.
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append, inline=True, name="recorder")
    om = OrderManager(bus)
    bridge = OrderManagerBridge(broker.adapter, om)
    entry = order("AAPL", "buy", "market", 10)
    bridge.submit(entry)
    wait_until(lambda: entry.status is OrderStatus.FILLED, pump=bridge.pump)
    stop = order("AAPL", "sell", "stop", 10, leg="sl", stop=tws.book.last[AAPL.con_id] * 0.9)
    bridge.submit(stop)
    wait_until(lambda: stop.status is OrderStatus.ACCEPTED, pump=bridge.pump)
    instance = _first_run(engine)
    apply_events(engine, events, instance)
    assert [p.symbol for p in load_positions(engine, instance)] == ["AAPL"]

    with pytest.raises(OpenFromEarlierRun) as refused:
        reconcile_at_start(_resumed(engine), broker, SYMBOLS)
    message = str(refused.value)
    assert f"order {stop.client_order_id} (AAPL sell stop 10" in message  # IB's quantities: 10.0
    assert "position AAPL 10" in message and message.startswith("refusing to trade: Interactive Brokers still holds")
    assert "adopting Interactive Brokers orders and positions at a restart is not built" in message
