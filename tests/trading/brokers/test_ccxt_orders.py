"""The ccxt adapter's orders against the fake Binance (real ccxt over HTTP): placement, fills,
cancels, precision, minimum notional, balance refusals, exchange stops, OCO and emulated brackets."""

from __future__ import annotations

from decimal import Decimal

from tests.fakes.fake_exchange import FakeExchange
from tests.trading.brokers.ccxt_harness import build
from trading.events import OrderAccepted, OrderFilled, OrderModified, OrderSubmitted
from trading.orders import OrderSide, OrderStatus, OrderType

BUY, SELL = OrderSide.BUY, OrderSide.SELL
D = Decimal


def _hold(rig, qty: str = "1") -> None:  # type: ignore[no-untyped-def]
    """Buy `qty` BTC at market so reduce-only exits have a position to protect."""
    rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, qty, n=9))
    rig.execution.pump()


def test_market_order_fills_once_with_the_venues_fee_and_trade_id(fake: FakeExchange) -> None:
    rig = build(fake)
    order = rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "0.5"))
    rig.execution.pump()

    assert order.status is OrderStatus.FILLED
    assert (order.filled_qty, order.avg_fill_price, order.fees) == (D("0.5"), D("100"), D("0.05"))
    assert order.venue_order_id is not None
    [fill] = rig.of_type(OrderFilled)
    assert fill.trade_id is not None and fill.fee == D("0.05")
    assert [type(e) for e in rig.events] == [OrderSubmitted, OrderAccepted, OrderFilled]
    [venue_order] = fake.orders_by_client_id(str(order.client_order_id))  # our id reached the venue
    assert venue_order.status == "FILLED"
    assert fake.engine.free["BTC"] == D("0.5")


def test_limit_order_rests_until_the_price_reaches_it_then_fills_at_its_price(fake: FakeExchange) -> None:
    rig = build(fake)
    order = rig.execution.submit(rig.order("entry", BUY, OrderType.LIMIT, "0.2", price="99"))
    rig.execution.pump()
    assert order.status is OrderStatus.ACCEPTED

    fake.script("BTCUSDT", [99.5, 98.9, 99.2])
    fake.step(3)
    rig.execution.pump()
    assert order.status is OrderStatus.FILLED
    assert order.avg_fill_price == D("99") and order.fees == D("0.0198")


def test_cancel_removes_the_resting_order_on_the_venue_and_frees_the_cash(fake: FakeExchange) -> None:
    rig = build(fake)
    order = rig.execution.submit(rig.order("entry", BUY, OrderType.LIMIT, "1", price="90"))
    rig.execution.pump()
    assert fake.engine.locked["USDT"] > 0

    rig.execution.cancel(order.client_order_id, "USER")
    rig.execution.pump()
    assert order.status is OrderStatus.CANCELLED
    [venue_order] = fake.orders_by_client_id(str(order.client_order_id))
    assert venue_order.status == "CANCELED"
    assert fake.engine.locked["USDT"] == 0 and fake.engine.free["USDT"] == D("10000")


def test_amount_is_truncated_and_price_rounded_to_the_market_precision(fake: FakeExchange) -> None:
    rig = build(fake)
    order = rig.execution.submit(rig.order("entry", BUY, OrderType.LIMIT, "0.12389", price="98.987"))
    rig.execution.pump()

    [venue_order] = fake.orders_by_client_id(str(order.client_order_id))
    assert (venue_order.qty, venue_order.price) == (D("0.123"), D("98.99"))
    assert order.quantity == D("0.123")  # the book knows what the venue holds
    assert rig.of_type(OrderModified)[0].quantity == D("0.123")


def test_order_below_the_minimum_notional_is_refused_before_anything_is_sent(fake: FakeExchange) -> None:
    rig = build(fake)
    order = rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "0.05"))  # 5 USDT < 10
    rig.execution.pump()

    assert order.status is OrderStatus.REJECTED
    [rejected] = [e for e in rig.events if type(e).__name__ == "OrderRejected"]
    assert rejected.reason.startswith("MIN_NOTIONAL: BTC/USDT: 0.05 at 100")  # type: ignore[attr-defined]
    assert "below the venue minimum 10" in rejected.reason  # type: ignore[attr-defined]
    assert fake.calls("POST", "/api/v3/order") == []


def test_insufficient_balance_is_rejected_with_the_venues_reason(fake: FakeExchange) -> None:
    rig = build(fake)
    order = rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "150"))  # 15000 USDT > 10000
    rig.execution.pump()

    assert order.status is OrderStatus.REJECTED
    reason = next(e.reason for e in rig.events if type(e).__name__ == "OrderRejected")  # type: ignore[attr-defined]
    assert reason.startswith("INSUFFICIENT_BALANCE:") and "insufficient balance" in reason
    assert len(fake.calls("POST", "/api/v3/order")) == 1  # a refusal is an answer: not retried


def test_stop_loss_rests_on_the_venue_as_stop_loss_limit_and_triggers(fake: FakeExchange) -> None:
    rig = build(fake)
    _hold(rig)
    stop = rig.execution.submit(rig.order("sl", SELL, OrderType.STOP, "1", stop="95"), reduce_only=True)
    rig.execution.pump()

    [venue_stop] = fake.orders_by_client_id(str(stop.client_order_id))
    assert venue_stop.type == "STOP_LOSS_LIMIT" and venue_stop.stop == D("95")
    assert venue_stop.price == rig.venue.stop_limit_price("BTC/USDT", "sell", D("95")) == D("94.53")
    assert stop.status is OrderStatus.ACCEPTED

    fake.script("BTCUSDT", [97.0, 95.0, 94.9])
    fake.step(3)
    rig.execution.pump()
    assert stop.status is OrderStatus.FILLED and stop.avg_fill_price == D("95")
    assert fake.engine.free["BTC"] == 0


def test_reduce_only_exit_waits_for_the_position_it_protects(fake: FakeExchange) -> None:
    rig = build(fake)
    stop = rig.execution.submit(rig.order("sl", SELL, OrderType.STOP, "1", stop="95"), reduce_only=True)
    rig.execution.pump()
    assert stop.status is OrderStatus.NEW and fake.orders_by_client_id(str(stop.client_order_id)) == []

    _hold(rig)
    assert stop.status is OrderStatus.ACCEPTED
    assert len(fake.orders_by_client_id(str(stop.client_order_id))) == 1


def test_stop_the_market_is_already_through_exits_at_market(fake: FakeExchange) -> None:
    rig = build(fake)
    _hold(rig)
    fake.script("BTCUSDT", [94.0])
    stop = rig.execution.submit(rig.order("sl", SELL, OrderType.STOP, "1", stop="95"), reduce_only=True)
    rig.execution.pump()

    assert stop.status is OrderStatus.FILLED and stop.avg_fill_price == D("94")
    [venue_order] = fake.orders_by_client_id(str(stop.client_order_id))
    assert venue_order.type == "MARKET"


def test_bracket_goes_out_as_the_venues_oco_list_after_the_entry_fills(fake: FakeExchange) -> None:
    rig = build(fake)
    entry = rig.order("entry", BUY, OrderType.MARKET, "1")
    sl = rig.order("sl", SELL, OrderType.STOP, "1", stop="95")
    tp = rig.order("tp", SELL, OrderType.LIMIT, "1", price="105")
    rig.execution.submit_bracket(entry, sl, tp)
    rig.execution.pump()

    assert entry.status is OrderStatus.FILLED
    [oco] = fake.calls("POST", "/api/v3/orderList/oco")
    assert (oco.params["aboveType"], oco.params["abovePrice"]) == ("LIMIT_MAKER", "105")
    assert (oco.params["belowType"], oco.params["belowStopPrice"]) == ("STOP_LOSS_LIMIT", "95")
    assert (oco.params["aboveClientOrderId"], oco.params["belowClientOrderId"]) == (
        str(tp.client_order_id), str(sl.client_order_id))
    assert sl.status is tp.status is OrderStatus.ACCEPTED

    fake.script("BTCUSDT", [103.0, 105.5])
    fake.step(2)
    rig.execution.pump()
    assert tp.status is OrderStatus.FILLED and tp.avg_fill_price == D("105")
    assert sl.status is OrderStatus.CANCELLED  # the venue expired the other leg of the list
    assert fake.orders_by_client_id(str(sl.client_order_id))[0].status == "EXPIRED"
    assert fake.engine.free["BTC"] == 0 and fake.engine.locked["BTC"] == 0


def test_emulated_bracket_keeps_the_stop_on_the_venue_and_the_target_local(fake: FakeExchange) -> None:
    rig = build(fake, oco="emulated")
    entry = rig.order("entry", BUY, OrderType.MARKET, "1")
    sl = rig.order("sl", SELL, OrderType.STOP, "1", stop="95")
    tp = rig.order("tp", SELL, OrderType.LIMIT, "1", price="105")
    rig.execution.submit_bracket(entry, sl, tp)
    rig.execution.pump()

    assert fake.calls("POST", "/api/v3/orderList/oco") == []
    assert len(fake.orders_by_client_id(str(sl.client_order_id))) == 1  # the stop holds the coins
    assert fake.orders_by_client_id(str(tp.client_order_id)) == []  # the target is watched here

    fake.script("BTCUSDT", [103.0, 105.2])
    fake.step(2)
    rig.execution.pump()
    assert sl.status is OrderStatus.CANCELLED  # cancelled first, so the target can sell the coins
    assert fake.orders_by_client_id(str(sl.client_order_id))[0].status == "CANCELED"
    assert tp.status is OrderStatus.FILLED and tp.avg_fill_price == D("105.2")
    assert fake.engine.free["BTC"] == 0


def test_emulated_bracket_stop_fill_cancels_the_local_target(fake: FakeExchange) -> None:
    rig = build(fake, oco="emulated")
    entry = rig.order("entry", BUY, OrderType.MARKET, "1")
    sl = rig.order("sl", SELL, OrderType.STOP, "1", stop="95")
    tp = rig.order("tp", SELL, OrderType.LIMIT, "1", price="105")
    rig.execution.submit_bracket(entry, sl, tp)
    rig.execution.pump()

    fake.script("BTCUSDT", [96.0, 94.8])
    fake.step(2)
    rig.execution.pump()
    rig.execution.pump()
    assert sl.status is OrderStatus.FILLED
    assert tp.status is OrderStatus.CANCELLED
    assert fake.orders_by_client_id(str(tp.client_order_id)) == []


def test_spot_refuses_a_sell_it_cannot_cover_before_sending(fake: FakeExchange) -> None:
    rig = build(fake)
    short = rig.execution.submit(rig.order("entry", SELL, OrderType.MARKET, "1"))  # no BTC held
    rig.execution.pump()

    assert short.status is OrderStatus.REJECTED
    reason = next(e.reason for e in rig.events if type(e).__name__ == "OrderRejected")  # type: ignore[attr-defined]
    assert reason == ("NO_SHORT_ON_SPOT: BTC/USDT: selling 1 BTC with 0 free; spot cannot go short "
                      "(trade futures with market: future)")
    assert fake.calls("POST", "/api/v3/order") == []

    _hold(rig, "1")  # with the coins on the account the same sell goes (balances read again first)
    close = rig.execution.submit(rig.order("exit", SELL, OrderType.MARKET, "1"))
    rig.execution.pump()
    assert close.status is OrderStatus.FILLED and fake.engine.free["BTC"] == 0
