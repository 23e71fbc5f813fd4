"""The order stream on USDⓈ-M futures: ccxt.pro binanceusdm on the fake's listen-key user data stream."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.fakes.fake_exchange import FakeExchange
from tests.fakes.fake_exchange_engine import FakeMarket
from tests.trading.brokers.ccxt_harness import Rig, build, fills, pump_until
from trading.events import OrderCancelled
from trading.orders import OrderSide, OrderStatus, OrderType

D = Decimal
POLLS = (("GET", "/fapi/v1/openOrders"), ("GET", "/fapi/v1/order"), ("GET", "/fapi/v1/userTrades"))


@pytest.fixture
def rig() -> Iterator[Rig]:
    """The futures adapter with its order stream up (safety-net polls an hour apart), on a frozen clock at 100."""
    with FakeExchange(check_timestamp=False, hang_seconds=0.6, websocket=True,
                      futures_markets=[FakeMarket(min_notional="20")]) as fake:
        fake.script("BTCUSDT", [100.0])
        r = build(fake, market="future", stream_poll_interval=3600.0)
        try:
            assert r.venue.stream is not None and r.venue.stream.wait(10, up=True)
            r.execution.pump()
            yield r
        finally:
            r.execution.close()


def polls(fake: FakeExchange) -> int:
    return sum(len(fake.calls(method, path)) for method, path in POLLS)


def test_futures_fill_reaches_the_order_manager_from_the_listen_key_stream(rig: Rig) -> None:
    fake = rig.fake
    order = rig.order("entry", OrderSide.BUY, OrderType.LIMIT, "1", price="99")
    rig.execution.submit(order)
    rig.execution.pump()
    assert order.status is OrderStatus.ACCEPTED
    assert len(fake.calls("POST", "/fapi/v1/listenKey")) == 1
    before = polls(fake)

    fake.script("BTCUSDT", [98.0])
    fake.step(2)
    fake.match()
    pump_until(rig, lambda: not order.is_open)

    assert order.status is OrderStatus.FILLED
    venue = [(D(t["qty"]), D(t["price"]), D(t["commission"]), str(t["id"])) for t in fake.futures.trades]
    assert fills(rig, order) == venue == [(D("1"), D("99"), D("0.0198"), "70001")]  # maker 0.02 %
    assert polls(fake) == before  # by websocket
    assert rig.execution.positions["BTC/USDT:USDT"] == D("1")


def test_futures_conditional_leg_triggered_is_followed_by_a_poll(rig: Rig) -> None:
    fake = rig.fake
    entry = rig.order("entry", OrderSide.BUY, OrderType.MARKET, "1")
    sl = rig.order("sl", OrderSide.SELL, OrderType.STOP, "1", stop="95")
    tp = rig.order("tp", OrderSide.SELL, OrderType.LIMIT, "1", price="105")
    rig.execution.submit_bracket(entry, sl, tp)
    rig.execution.pump()
    assert entry.status is OrderStatus.FILLED and sl.status is tp.status is OrderStatus.ACCEPTED
    before = len(fake.calls("GET", "/fapi/v1/openOrders"))

    fake.script("BTCUSDT", [103.0, 105.5])
    fake.step(2)
    fake.match()  # the target's algo order triggers and its market order fills
    pump_until(rig, lambda: not tp.is_open and not sl.is_open)

    assert tp.status is OrderStatus.FILLED and tp.avg_fill_price == D("105.5")
    assert sl.status is OrderStatus.CANCELLED
    [cancelled] = [e for e in rig.of_type(OrderCancelled) if e.client_order_id == sl.client_order_id]
    assert cancelled.reason == "OCO"  # type: ignore[attr-defined]
    # The algo update made the next pump poll, which followed the algo order to the fills.
    assert len(fake.calls("GET", "/fapi/v1/openOrders")) > before
    assert [e["o"]["X"] for e in fake.ws.pushed if e["e"] == "ALGO_UPDATE"  # type: ignore[union-attr]
            and e["o"]["caid"] == str(tp.client_order_id)] == ["NEW", "TRIGGERED", "FINISHED"]
    assert rig.execution.positions["BTC/USDT:USDT"] == 0


def test_futures_stream_drop_falls_back_to_polling_and_resumes(rig: Rig) -> None:
    fake, stream = rig.fake, rig.venue.stream
    assert stream is not None and fake.ws is not None
    fake.ws.refuse = True
    assert fake.ws.drop() == 1
    assert stream.wait(10, up=False)
    order = rig.order("entry", OrderSide.BUY, OrderType.LIMIT, "1", price="99")
    rig.execution.submit(order)
    rig.execution.pump()
    fake.script("BTCUSDT", [98.0])
    fake.step(2)
    rig.execution.pump()  # polled: the stream is down
    assert order.status is OrderStatus.FILLED

    fake.ws.refuse = False
    assert stream.wait(20, up=True)
    rig.execution.pump()
    assert stream.up
