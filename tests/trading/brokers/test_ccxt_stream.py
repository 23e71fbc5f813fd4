"""Order state by websocket: the real ccxt.pro client on the fake's user data stream (127.0.0.1), polling as the net."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.fakes.fake_exchange import API_KEY, API_SECRET, FakeExchange
from tests.trading.brokers.ccxt_harness import ENV, Rig, build, fills, pump_until, section
from trading.brokers.ccxt_config import credentials_from_env, settings_from_broker
from trading.brokers.ccxt_venue import build_exchange
from trading.events import ConnectionLost, ConnectionRestored
from trading.exceptions import ConfigError
from trading.orders import Order, OrderSide, OrderStatus, OrderType

D = Decimal
ORDER_QUERIES = (("GET", "/api/v3/openOrders"), ("GET", "/api/v3/order"), ("GET", "/api/v3/myTrades"))


@pytest.fixture
def wsfake() -> Iterator[FakeExchange]:
    """The fake exchange with its user data stream, on a frozen clock at 100."""
    with FakeExchange(check_timestamp=False, hang_seconds=0.6, websocket=True) as fx:
        fx.script("BTCUSDT", [100.0])
        yield fx


@pytest.fixture
def make(wsfake: FakeExchange) -> Iterator[Callable[..., Rig]]:
    """Build adapters on `wsfake` (harness settings plus the given ones); their streams stop after the test."""
    made: list[Rig] = []

    def _make(**ccxt: Any) -> Rig:
        made.append(build(wsfake, **ccxt))
        return made[-1]

    yield _make
    for r in made:
        r.execution.close()


@pytest.fixture
def rig(make: Callable[..., Rig]) -> Rig:
    """The adapter with its order stream up; safety-net polls an hour apart while it is."""
    r = make(stream_poll_interval=3600.0)
    assert r.venue.stream is not None and r.venue.stream.wait(10, up=True)
    r.execution.pump()  # the first pump polls (nothing is working yet)
    return r


def order_queries(fake: FakeExchange) -> int:
    return sum(len(fake.calls(method, path)) for method, path in ORDER_QUERIES)


def venue_fills(fake: FakeExchange, client_id: str) -> list[tuple[Decimal, Decimal, Decimal, str | None]]:
    (venue_order,) = fake.orders_by_client_id(client_id)
    return [(D(t["qty"]), D(t["price"]), D(t["commission"]), str(t["id"])) for t in venue_order.fills]


def resting_buy(rig: Rig, qty: str = "0.5", price: str = "99", n: int = 0) -> Order:
    order = rig.order("entry", OrderSide.BUY, OrderType.LIMIT, qty, price=price, n=n)
    rig.execution.submit(order)
    rig.execution.pump()
    assert rig.orders.get(order.client_order_id).status is OrderStatus.ACCEPTED
    return order


def test_fill_reaches_the_order_manager_from_the_stream_before_any_poll(wsfake: FakeExchange, rig: Rig) -> None:
    order = resting_buy(rig)
    queries = order_queries(wsfake)
    wsfake.script("BTCUSDT", [98.0])
    wsfake.step(2)
    wsfake.match()  # the venue fills the resting buy at its limit; no request from the adapter

    pump_until(rig, lambda: not rig.orders.get(order.client_order_id).is_open)

    assert rig.orders.get(order.client_order_id).status is OrderStatus.FILLED
    assert fills(rig, order) == venue_fills(wsfake, str(order.client_order_id))
    assert fills(rig, order) == [(D("0.5"), D("99"), D("0.0495"), "5001")]
    assert order_queries(wsfake) == queries  # nothing was polled: the fill came by websocket
    assert rig.execution.positions["BTC/USDT"] == D("0.5")
    assert rig.execution.balances["BTC"][1] == D("0.5")  # the balances were read after the streamed fill


def test_partial_fills_seen_by_both_stream_and_poll_are_booked_once(wsfake: FakeExchange, rig: Rig) -> None:
    order = resting_buy(rig)
    cid = str(order.client_order_id)

    wsfake.fill(cid, "0.2")  # a partial fill at the limit: stream first, then a poll sees it too
    pump_until(rig, lambda: rig.orders.get(order.client_order_id).filled_qty == D("0.2"))
    rig.execution.pump(poll=True)
    assert len(fills(rig, order)) == 1

    stream = rig.venue.stream
    assert stream is not None
    wsfake.fill(cid, "0.3", "98.9")  # the rest: a poll first, then the stream's report of it
    rig.execution.poll()
    assert rig.orders.get(order.client_order_id).status is OrderStatus.FILLED
    assert stream.wait(10)  # the stream's report of the same fill
    rig.execution.pump()
    rig.execution.pump(poll=True)

    assert fills(rig, order) == venue_fills(wsfake, cid)
    assert fills(rig, order) == [(D("0.2"), D("99"), D("0.0198"), "5001"), (D("0.3"), D("98.9"), D("0.02967"), "5002")]
    assert rig.orders.get(order.client_order_id).filled_qty == D("0.5")
    assert rig.execution.positions["BTC/USDT"] == D("0.5")


def test_cancel_at_the_venue_reaches_the_order_manager_from_the_stream(wsfake: FakeExchange, rig: Rig) -> None:
    order = resting_buy(rig)
    queries = order_queries(wsfake)
    wsfake.engine.cancel("BTCUSDT", None, str(order.client_order_id))  # cancelled by hand at the venue

    pump_until(rig, lambda: not rig.orders.get(order.client_order_id).is_open)

    assert rig.orders.get(order.client_order_id).status is OrderStatus.CANCELLED
    assert fills(rig, order) == []
    assert order_queries(wsfake) == queries


def test_oco_leg_filled_by_the_stream_ends_the_other_leg(wsfake: FakeExchange, rig: Rig) -> None:
    entry = rig.order("entry", OrderSide.BUY, OrderType.MARKET, "1")
    sl = rig.order("sl", OrderSide.SELL, OrderType.STOP, "1", stop="95")
    tp = rig.order("tp", OrderSide.SELL, OrderType.LIMIT, "1", price="105")
    rig.execution.submit_bracket(entry, sl, tp)
    rig.execution.pump()  # the entry fills at once; its stop and target go out as one OCO list
    assert entry.status is OrderStatus.FILLED and sl.status is tp.status is OrderStatus.ACCEPTED
    queries = len(wsfake.calls("GET", "/api/v3/openOrders")) + len(wsfake.calls("GET", "/api/v3/myTrades"))

    wsfake.script("BTCUSDT", [103.0, 105.5])
    wsfake.step(2)
    wsfake.match()  # the target fills, the venue expires the stop
    pump_until(rig, lambda: not tp.is_open and not sl.is_open)

    assert tp.status is OrderStatus.FILLED and tp.avg_fill_price == D("105")
    assert sl.status is OrderStatus.CANCELLED
    assert fills(rig, tp) == venue_fills(wsfake, str(tp.client_order_id))
    assert fills(rig, sl) == []
    # No poll, no trade lookup; a GET of the stop may follow its cancel when that crossed the venue's expiry.
    assert len(wsfake.calls("GET", "/api/v3/openOrders")) + len(wsfake.calls("GET", "/api/v3/myTrades")) == queries
    assert rig.execution.positions["BTC/USDT"] == 0


def test_dropped_stream_falls_back_to_polling_then_resumes(wsfake: FakeExchange, rig: Rig,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trading.brokers.ccxt_stream")
    stream, ws = rig.venue.stream, wsfake.ws
    assert stream is not None and ws is not None
    ws.refuse = True
    assert ws.drop() == 1
    assert stream.wait(10, up=False)
    rig.execution.pump()
    assert [e.venue for e in rig.of_type(ConnectionLost)] == ["binance order stream"]  # type: ignore[attr-defined]

    order = resting_buy(rig)  # placed and filled while the stream is down
    wsfake.script("BTCUSDT", [98.0])
    wsfake.step(2)
    wsfake.match()
    rig.execution.pump()  # polled at poll_interval while the stream is down
    assert fills(rig, order) == venue_fills(wsfake, str(order.client_order_id))
    assert not [e for e in ws.pushed if e["x"] == "TRADE"]  # nobody was listening: the fill came by polling

    ws.refuse = False
    assert stream.wait(20, up=True)
    rig.execution.pump()  # the stream is back: polled once for what happened meanwhile
    assert [e.venue for e in rig.of_type(ConnectionRestored)] == ["binance order stream"]  # type: ignore[attr-defined]
    wsfake.script("BTCUSDT", [100.0])
    wsfake.step(1)
    second = resting_buy(rig, price="97", n=1)
    queries = order_queries(wsfake)
    wsfake.script("BTCUSDT", [96.0])
    wsfake.step(1)
    wsfake.match()
    pump_until(rig, lambda: not rig.orders.get(second.client_order_id).is_open)
    assert fills(rig, second) == venue_fills(wsfake, str(second.client_order_id))
    assert order_queries(wsfake) == queries  # by websocket again
    assert "binance order stream down" in caplog.text and "binance order stream up again" in caplog.text
    assert API_KEY not in caplog.text and API_SECRET not in caplog.text


def test_websocket_off_polls_only(wsfake: FakeExchange, make: Callable[..., Rig]) -> None:
    rig = make(websocket="off")
    assert rig.venue.stream is None
    order = resting_buy(rig)
    wsfake.script("BTCUSDT", [98.0])
    wsfake.step(2)
    rig.execution.pump()
    assert fills(rig, order) == venue_fills(wsfake, str(order.client_order_id))
    assert wsfake.ws is not None and wsfake.ws.connections == 0


def test_auto_without_ccxt_pro_polls_and_says_so(wsfake: FakeExchange, make: Callable[..., Rig],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "ccxt.pro", None)
    caplog.set_level(logging.INFO, logger="trading.brokers.ccxt_stream")
    rig = make(websocket="auto")
    assert rig.venue.stream is None
    assert "broker.ccxt.websocket: auto: ccxt.pro cannot be imported" in caplog.text
    order = resting_buy(rig)
    wsfake.script("BTCUSDT", [98.0])
    wsfake.step(2)
    rig.execution.pump()
    assert fills(rig, order) == venue_fills(wsfake, str(order.client_order_id))
    assert wsfake.ws is not None and wsfake.ws.connections == 0


def test_on_without_ccxt_pro_is_an_error_naming_the_option(make: Callable[..., Rig],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ccxt.pro", None)
    with pytest.raises(ImportError, match=r"broker\.ccxt\.websocket: on needs ccxt\.pro"):
        make(websocket="on", connect=False)


def test_close_ends_the_thread_and_the_client(make: Callable[..., Rig]) -> None:
    rig = make(websocket="on")
    stream = rig.venue.stream
    assert stream is not None and stream.wait(10, up=True)
    rig.execution.close()
    assert not [t for t in threading.enumerate() if t.name == "binance order stream"]
    assert stream.client.session is None  # the aiohttp session is closed (no "Unclosed client session")
    assert not stream.up
    rig.execution.close()  # twice is harmless


def test_the_websocket_client_gets_the_sandbox_keys_and_url_overrides(wsfake: FakeExchange) -> None:
    settings = settings_from_broker("binance", section(wsfake, websocket="on"))
    client = build_exchange(settings, credentials_from_env(settings, ENV), pro=True)
    assert wsfake.ws is not None
    assert client.urls["api"]["ws"]["ws-api"]["spot"] == f"{wsfake.ws.url}/ws-api/v3"  # the override
    assert client.urls["api"]["ws"]["margin"] == "wss://stream.testnet.binance.vision/ws"  # the sandbox's, kept
    assert client.urls["api"]["public"] == wsfake.api_urls()["public"]
    assert (client.apiKey, client.secret) == (API_KEY, API_SECRET)


def test_urls_ws_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="every entry is a base URL, but `ws`: a mapping"):
        settings_from_broker("binance", {"ccxt": {"urls": {"ws": "wss://proxy/ws"}}})
