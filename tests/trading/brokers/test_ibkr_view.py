"""IbkrBrokerView: IB's working orders and positions as reconciliation sees them, against the fake TWS."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.fakes.fake_tws import FakeTWS
from tests.fakes.fake_tws_account import cancel_in_tws, manual_order, set_position
from tests.fakes.fake_tws_setup import AAPL, ES_DEC, ES_MAR, order, settings, wait_until
from trading.brokers.ccxt_view import VenueOrderState
from trading.brokers.ibkr import IBKRAdapter
from trading.brokers.ibkr_bridge import OrderManagerBridge
from trading.brokers.ibkr_view import IbkrBrokerView, per_unit
from trading.bus import EventBus
from trading.events import Event
from trading.order_manager import OrderManager
from trading.orders import Order, OrderStatus, OrderType
from trading.persistence import apply_events, ensure_database, load_positions, register_bot_instance
from trading.persistence.db import read_connection
from trading.positions import Position
from trading.reconcile import reconcile_with_broker

SYMBOLS = ["AAPL", "ES", "EURUSD"]
Connect = Callable[[], IBKRAdapter]


@pytest.fixture
def connect(tws: FakeTWS) -> Iterator[Connect]:
    """Connect an adapter to `tws` when the test says so (after what must be at IB first)."""
    made: list[IBKRAdapter] = []

    def make() -> IBKRAdapter:
        a = IBKRAdapter(settings(tws))
        a.connect()
        made.append(a)
        return a

    yield make
    for a in made:
        a.close()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = ensure_database(f"sqlite:///{tmp_path / 'atf.db'}")
    yield eng
    eng.dispose()


class Recorded:
    """An OrderManager on a bus whose events are kept, bridged to IB (what a live bot records)."""

    def __init__(self, adapter: IBKRAdapter) -> None:
        self.events: list[Event] = []
        bus = EventBus()
        bus.subscribe(self.events.append, inline=True, name="recorder")
        self.om = OrderManager(bus)
        self.bridge = OrderManagerBridge(adapter, self.om)

    def until(self, condition: Callable[[], object]) -> None:
        wait_until(condition, pump=self.bridge.pump)


def _bracket(rec: Recorded, tws: FakeTWS, qty: float = 10) -> tuple[Order, Order, Order]:
    price = tws.book.last[AAPL.con_id]
    entry = order("AAPL", "buy", "market", qty)
    sl = order("AAPL", "sell", "stop", qty, leg="sl", stop=price * 0.9)
    tp = order("AAPL", "sell", "limit", qty, leg="tp", price=price * 1.1)
    rec.bridge.submit_bracket(entry, sl, tp)
    rec.until(lambda: entry.status is OrderStatus.FILLED and sl.status is tp.status is OrderStatus.ACCEPTED)
    return entry, sl, tp


def _state(o: Order) -> VenueOrderState:
    return VenueOrderState(str(o.client_order_id), o.symbol, o.side, o.order_type, o.quantity, o.price, o.stop_price,
                           OrderStatus.ACCEPTED, Decimal(0))


def test_the_view_lists_the_bots_working_orders_and_positions_per_unit_for_stocks_futures_and_forex(
    tws: FakeTWS, connect: Connect
) -> None:
    aapl = tws.book.last[AAPL.con_id]
    # Working at IB before the bot connects, none of them the bot's: typed in TWS (no orderRef),
    # placed by another program (its own orderRef), and an atf order on a contract the bot does not trade.
    manual_order(tws, AAPL, "BUY", 5, "LMT", lmt=round(aapl * 0.5, 2))
    manual_order(tws, AAPL, "BUY", 5, "LMT", lmt=round(aapl * 0.5, 2), order_ref="other-program-1", client_id=3)
    manual_order(tws, ES_MAR, "BUY", 1, "LMT", lmt=4000.0, order_ref="atf-00000000000000ff-entry-0", client_id=3)
    adapter = connect()
    rec = Recorded(adapter)
    entry, sl, tp = _bracket(rec, tws)
    es = order("ES", "buy", "market", 2, leg="es")
    fx = order("EURUSD", "sell", "market", 20000, leg="fx")
    es_stop = order("ES", "sell", "stop_limit", 2, leg="essl", stop=tws.book.last[ES_DEC.con_id] * 0.9,
                    price=tws.book.last[ES_DEC.con_id] * 0.89)
    for o in (es, fx, es_stop):
        rec.bridge.submit(o)
    rec.until(lambda: es.status is fx.status is OrderStatus.FILLED and es_stop.status is OrderStatus.ACCEPTED)

    view = IbkrBrokerView(adapter, SYMBOLS)
    assert view.open_orders() == sorted((_state(o) for o in (sl, tp, es_stop)),
                                        key=lambda s: (s.symbol, s.client_order_id))
    assert [(s.order_type, s.price, s.stop_price) for s in view.open_orders() if s.symbol == "ES"] == [
        (OrderType.STOP_LIMIT, es_stop.price, es_stop.stop_price)]
    # IB holds the ES position at avgCost = price x 50 (`tws.book`): the view reports the price.
    assert tws.call(lambda: tws.book.account.positions[ES_DEC.con_id][1]) == pytest.approx(
        float(es.avg_fill_price) * 50)  # type: ignore[arg-type]
    assert view.positions() == [
        Position("AAPL", Decimal(10), entry.avg_fill_price),
        Position("ES", Decimal(2), es.avg_fill_price),
        Position("EURUSD", Decimal(-20000), fx.avg_fill_price),
    ]
    assert IbkrBrokerView(adapter, ["ES"]).positions() == [Position("ES", Decimal(2), es.avg_fill_price)]


def test_an_average_cost_with_commissions_folded_in_is_the_databases_when_the_fees_explain_it(
    tws: FakeTWS, connect: Connect
) -> None:
    adapter = connect()
    price = Decimal("5012.25")
    set_position(tws, ES_DEC, 3, float(price) * 50 + 0.85)  # TWS adds the commission per contract
    view = IbkrBrokerView(adapter, ["ES"])
    wait_until(lambda: view.positions() != [])
    [held] = view.positions()
    assert (held.quantity, held.avg_entry_price) == (Decimal(3), per_unit(float(price) * 50 + 0.85, "50"))
    assert held.avg_entry_price == price + Decimal("0.017")
    paid = Position("ES", Decimal(3), price, fees=Decimal("2.55"))
    assert IbkrBrokerView(adapter, ["ES"], db_positions=[paid]).positions() == [Position("ES", Decimal(3), price)]
    # More than the fees can explain stays IB's, and so does another quantity.
    cheaper = Position("ES", Decimal(3), price - 1, fees=Decimal("2.55"))
    assert IbkrBrokerView(adapter, ["ES"], db_positions=[cheaper]).positions() == [held]
    smaller = Position("ES", Decimal(2), price, fees=Decimal("2.55"))
    assert IbkrBrokerView(adapter, ["ES"], db_positions=[smaller]).positions() == [held]


def test_per_unit_divides_by_the_multiplier_of_futures_only() -> None:
    assert per_unit(250_012.5, "50") == Decimal("5000.25")  # ES: per contract of 50
    assert per_unit(180.255, "") == Decimal("180.255")  # a stock: per share
    assert per_unit(1.08765, None) == Decimal("1.08765")  # forex: per unit of the base currency
    assert per_unit(1.7976931348623157e308, "") is None  # IB's unset value


def _reconciliation_rows(engine: Engine) -> list[tuple[str, str | None]]:
    with read_connection(engine) as conn:
        return [tuple(r) for r in conn.execute(text(  # type: ignore[misc]
            "SELECT client_order_id, payload FROM order_events WHERE kind = 'reconciliation' ORDER BY id"))]


def test_a_database_that_matches_ib_reconciles_without_a_correction(
    tws: FakeTWS, connect: Connect, engine: Engine
) -> None:
    adapter = connect()
    rec = Recorded(adapter)
    _bracket(rec, tws)
    bot = register_bot_instance(engine, "ib_bot", "live").id
    apply_events(engine, rec.events, bot)

    view = IbkrBrokerView(adapter, SYMBOLS, db_positions=load_positions(engine, bot))
    result = reconcile_with_broker(engine, bot, view)
    assert result.ok and not result.corrections
    assert _reconciliation_rows(engine) == []


def test_a_position_only_ib_has_and_an_order_ib_no_longer_holds_are_mismatches(
    tws: FakeTWS, connect: Connect, engine: Engine
) -> None:
    adapter = connect()
    rec = Recorded(adapter)
    _entry, sl, tp = _bracket(rec, tws)
    bot = register_bot_instance(engine, "ib_bot", "live").id
    apply_events(engine, rec.events, bot)  # the database: entry filled, stop and target working
    # Behind the bot's back: the target is cancelled in TWS, and a future is bought there.
    [target] = tws.orders(str(tp.client_order_id))
    cancel_in_tws(tws, target)
    set_position(tws, ES_DEC, 1, 5000.0 * 50)
    view = IbkrBrokerView(adapter, SYMBOLS, db_positions=load_positions(engine, bot))
    wait_until(lambda: len(view.open_orders()) == 1 and len(view.positions()) == 2)

    result = reconcile_with_broker(engine, bot, view)
    assert [(m.reason, m.symbol, m.client_order_id, m.db, m.broker) for m in result.mismatches] == [
        ("ORDER_NOT_AT_BROKER", "AAPL", str(tp.client_order_id),
         f"accepted sell limit 10 filled 0 price {tp.price} stop -", "absent"),
        ("POSITION_MISMATCH", "ES", None, "flat", "1 @ 5000"),
    ]
    assert not result.ok
    rows = _reconciliation_rows(engine)
    assert [r[0] for r in rows] == [str(tp.client_order_id), None]
    assert all('"unexplained": true' in str(r[1]) for r in rows)
    # The stop the database and IB both hold, and the AAPL position, agree.
    assert {m.client_order_id for m in result.mismatches}.isdisjoint({str(sl.client_order_id)})
