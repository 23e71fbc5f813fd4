"""The details of a ccxt fill against the fake Binance (real ccxt over HTTP): the venue's fee
currency and its bid/ask when the fill was seen, down to the audit database's `fills` row."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import backtrader as bt
import pandas as pd
from sqlalchemy import select

from tests.fakes.fake_exchange import FakeExchange
from tests.trading.brokers.ccxt_harness import Rig, build
from trading.brokers.ccxt_broker import CcxtBroker
from trading.bt_orders import FILL_DETAILS, BacktraderOrders, FillDetails, attach_fill_details
from trading.bus import EventBus
from trading.events import Event, OrderFill, OrderFilled
from trading.order_manager import OrderManager
from trading.orders import Order, OrderSide, OrderStatus, OrderType
from trading.persistence import apply_events, ensure_database, register_bot_instance
from trading.persistence.db import read_connection
from trading.persistence.models import FillRecord, table

BUY = OrderSide.BUY
D = Decimal
TICKER = ("GET", "/api/v3/ticker/24hr")


def _fill_of(rig: Rig, order: Order) -> OrderFill:
    [fill] = [e for e in rig.of_type(OrderFill) if e.client_order_id == order.client_order_id]
    assert isinstance(fill, OrderFill)
    return fill


def _resting_limit_filled(rig: Rig, fake: FakeExchange) -> Order:
    """A limit buy at 99 that rests, then fills when the price comes down (seen at a later poll)."""
    order = rig.execution.submit(rig.order("entry", BUY, OrderType.LIMIT, "0.2", price="99"))
    rig.execution.pump()
    assert order.status is OrderStatus.ACCEPTED
    fake.script("BTCUSDT", [98.5])
    fake.step(1)
    return order


def test_a_market_fill_carries_the_fee_currency_and_the_quote_read_for_the_order(fake: FakeExchange) -> None:
    fake.spread = D("0.2")
    rig = build(fake)
    order = rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "0.5"))
    rig.execution.pump()

    fill = _fill_of(rig, order)
    assert isinstance(fill, OrderFilled) and fill.fee == D("0.05")
    assert (fill.fee_currency, fill.bid, fill.ask) == ("USDT", D("99.9"), D("100.1"))
    # The ticker read to check the order's notional is the quote at its fill: no second read.
    assert len(fake.calls(*TICKER)) == 1


def test_a_fill_seen_at_a_later_poll_reads_the_ticker_once_then(fake: FakeExchange) -> None:
    fake.spread = D("1")
    rig = build(fake)
    order = _resting_limit_filled(rig, fake)
    assert fake.calls(*TICKER) == []  # a limit order needs no ticker to go out
    rig.execution.pump()

    assert order.status is OrderStatus.FILLED
    fill = _fill_of(rig, order)
    assert (fill.last_price, fill.fee_currency) == (D("99"), "USDT")
    assert (fill.bid, fill.ask) == (D("98.0"), D("99.0"))  # the venue's quote when the fill was seen
    assert len(fake.calls(*TICKER)) == 1


def test_a_failing_ticker_costs_the_fill_its_quote_never_the_fill(fake: FakeExchange) -> None:
    rig = build(fake)
    order = _resting_limit_filled(rig, fake)
    fake.fault(*TICKER, "unavailable", times=5)
    rig.execution.pump()

    assert order.status is OrderStatus.FILLED
    fill = _fill_of(rig, order)
    assert (fill.bid, fill.ask) == (None, None)
    assert (fill.last_qty, fill.fee, fill.fee_currency) == (D("0.2"), D("0.0198"), "USDT")
    assert len(fake.calls(*TICKER)) == 1  # tried once, not retried
    assert rig.sleeps == []  # and nothing waited for it


def test_quote_at_fill_false_sends_no_ticker_request(fake: FakeExchange) -> None:
    rig = build(fake, quote_at_fill=False)
    order = _resting_limit_filled(rig, fake)
    rig.execution.pump()

    fill = _fill_of(rig, order)
    assert (fill.fee_currency, fill.bid, fill.ask) == ("USDT", None, None)
    assert fake.calls(*TICKER) == []


def test_the_fills_row_of_a_ccxt_fill_holds_the_venues_fee_currency_and_quote(
    fake: FakeExchange, tmp_path: Path
) -> None:
    fake.spread = D("0.5")
    rig = build(fake)
    order = rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "0.5"))
    rig.execution.pump()
    engine = ensure_database(f"sqlite:///{tmp_path / 'atf.db'}")
    try:
        bot = register_bot_instance(engine, "ccxt_bot", "paper", strategy="S", exchange="binance").id
        apply_events(engine, rig.events, bot)
        fills = table(FillRecord)
        with read_connection(engine) as conn:
            row = conn.execute(select(fills)).one()
    finally:
        engine.dispose()
    fill = _fill_of(rig, order)
    assert (row.client_order_id, row.quantity, row.price, row.fee) == (
        str(order.client_order_id), fill.last_qty, fill.last_price, fill.fee)
    assert (row.fee_currency, row.bid, row.ask) == ("USDT", D("99.75"), D("100.25"))
    assert row.venue_trade_id == fill.trade_id is not None


def _one_bar_feed() -> bt.feeds.PandasData:
    """A started feed at its first bar: what a backtrader order needs of its data."""
    df = pd.DataFrame({"open": [100.0], "high": [100.0], "low": [100.0], "close": [100.0], "volume": [1.0]},
                      index=pd.DatetimeIndex(["2024-01-01"]))
    data = bt.feeds.PandasData(dataname=df, name="BTCUSDT")
    bt.Cerebro().adddata(data)  # the feed's environment (time zone)
    data._start()
    assert data.next()
    return data


def test_the_ccxt_broker_puts_the_fill_details_on_the_notification_the_strategy_reads(fake: FakeExchange) -> None:
    fake.spread = D("0.2")
    rig = build(fake)
    broker = CcxtBroker(rig.execution)
    order = broker.buy(None, _one_bar_feed(), 0.5, exectype=bt.Order.Market, client_order_id="atf-x-entry-0")
    broker.next()
    notes = []
    while (note := broker.get_notification()) is not None:
        notes.append(note)
    assert order.status == bt.Order.Completed
    [filled] = [n for n in notes if n.executed.size]
    [venue_fill] = [e for e in rig.events if isinstance(e, OrderFill)]
    assert venue_fill.trade_id is not None  # the venue's trade id, told to the strategy's book too
    assert getattr(filled, FILL_DETAILS) == FillDetails("USDT", D("99.9"), D("100.1"), venue_fill.trade_id)
    assert not any(hasattr(n, FILL_DETAILS) for n in notes if not n.executed.size)
    assert not hasattr(order, FILL_DETAILS)  # on the notification only, never on the live order


def test_the_strategys_order_book_publishes_the_details_of_the_notification() -> None:
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe(seen.append, inline=True, name="recorder")
    broker = bt.brokers.BackBroker()
    manager = OrderManager(bus)
    venue = BacktraderOrders("t", manager, lambda: broker)
    order = bt.BuyOrder(owner=None, data=_one_bar_feed(), size=2.0, exectype=bt.Order.Market)
    rec = venue.track(order, "entry")
    manager.submit(rec)
    manager.on_accepted(rec.client_order_id)
    order.execute(order.data.datetime[0], 2.0, 100.0, 0, 0.0, 0.0, 2.0, 200.0, 0.2, 0.0, 0.0, 2.0, 100.0)
    order.completed()
    note = order.clone()
    attach_fill_details(note, FillDetails("USDT", D("99.5"), D("100.5"), "T-77"))
    venue.on_notification(note, datetime(2024, 1, 1, tzinfo=UTC))
    [fill] = [e for e in seen if isinstance(e, OrderFill)]
    assert (fill.fee_currency, fill.bid, fill.ask, fill.trade_id, fill.last_qty, fill.last_price) == (
        "USDT", D("99.5"), D("100.5"), "T-77", D(2), D(100))
