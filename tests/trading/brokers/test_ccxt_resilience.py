"""Resilience of the ccxt adapter against the fake Binance: 429, 5xx, timeouts around a placement
(never a duplicate order), the circuit breaker, clock drift, our request budget, scrubbed secrets."""

from __future__ import annotations

import logging
import time
from decimal import Decimal

import pytest

from tests.fakes.fake_exchange import API_KEY, API_SECRET, FakeExchange
from tests.trading.brokers.ccxt_harness import build
from trading.brokers.ccxt_resilience import RequestBudget, Scrubber, VenueUnavailable
from trading.events import (
    ConnectionLost,
    ConnectionRestored,
    Halted,
    OrderFilled,
    OrderRejected,
    Resumed,
)
from trading.orders import OrderSide, OrderStatus, OrderType

BUY = OrderSide.BUY
D = Decimal


def test_429_is_retried_after_the_venues_retry_after(fake: FakeExchange) -> None:
    rig = build(fake)
    fake.fault("GET", "/api/v3/account", "rate_limit")
    balances = rig.venue.balances()

    assert balances["USDT"] == (D("10000"), D("10000"))
    assert len(fake.calls("GET", "/api/v3/account")) == 3  # connect, the 429, the retry
    assert rig.sleeps == [1.0]  # Retry-After: 1 beats the first backoff step (0.01 s)


def test_5xx_is_retried_with_exponential_backoff(fake: FakeExchange) -> None:
    rig = build(fake)
    fake.fault("GET", "/api/v3/account", "unavailable", times=2)
    fake.fault("GET", "/api/v3/account", "server_error")
    rig.venue.balances()

    assert rig.sleeps == [0.01, 0.02, 0.04]
    assert rig.venue.call.retries == 3


def test_request_failing_every_try_raises_venue_unavailable_without_secrets(
    fake: FakeExchange, caplog: pytest.LogCaptureFixture
) -> None:
    rig = build(fake)
    caplog.set_level(logging.DEBUG, logger="ccxt")
    fake.fault("GET", "/api/v3/account", "unavailable", times=4)
    with pytest.raises(VenueUnavailable) as info:
        rig.venue.balances()

    message = str(info.value)
    assert "503" in message and "signature=***" in message
    logged = caplog.text + message
    assert API_KEY not in logged and API_SECRET not in logged
    signatures = [r.params for r in fake.calls("GET", "/api/v3/account")]
    assert signatures and all(s["timestamp"] for s in signatures)
    assert "signature=" in caplog.text and all(
        part.startswith("***") for part in caplog.text.split("signature=")[1:])


def test_5xx_on_a_placement_looks_the_order_up_before_sending_it_again(fake: FakeExchange) -> None:
    rig = build(fake)
    fake.fault("POST", "/api/v3/order", "unavailable")  # nothing reached the matching engine
    order = rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "0.5"))
    rig.execution.pump()

    lookups = fake.calls("GET", "/api/v3/order")
    assert lookups[0].params["origClientOrderId"] == str(order.client_order_id)
    assert len(fake.calls("POST", "/api/v3/order")) == 2
    assert len(fake.orders_by_client_id(str(order.client_order_id))) == 1
    assert order.status is OrderStatus.FILLED


def test_timeout_after_the_venue_accepted_the_order_never_duplicates_it(fake: FakeExchange) -> None:
    rig = build(fake, timeout_ms=300)
    fake.fault("POST", "/api/v3/order", "timeout_after_accept")
    order = rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "0.5"))
    rig.execution.pump()

    assert len(fake.calls("POST", "/api/v3/order")) == 1  # found by its client order id: not resent
    assert len(fake.orders_by_client_id(str(order.client_order_id))) == 1
    assert order.status is OrderStatus.FILLED and order.filled_qty == D("0.5")
    assert len(rig.of_type(OrderFilled)) == 1
    assert fake.engine.free["BTC"] == D("0.5")
    assert fake.engine.free["USDT"] == D("10000") - D("50") - D("0.05")  # charged once


def test_venue_without_lookup_by_client_id_is_searched_instead_of_resent() -> None:
    with FakeExchange(check_timestamp=False, hang_seconds=0.6, client_id_lookup=False) as fx:
        fx.script("BTCUSDT", [100.0])
        rig = build(fx, timeout_ms=300)
        fx.fault("POST", "/api/v3/order", "timeout_after_accept")
        order = rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "0.5"))
        rig.execution.pump()

        assert len(fx.calls("GET", "/api/v3/allOrders")) == 1  # found in the order list
        assert len(fx.calls("POST", "/api/v3/order")) == 1
        assert order.status is OrderStatus.FILLED


def test_timeout_before_the_venue_saw_the_order_sends_it_exactly_once_more(fake: FakeExchange) -> None:
    rig = build(fake, timeout_ms=300)
    fake.fault("POST", "/api/v3/order", "timeout")
    order = rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "0.5"))
    rig.execution.pump()

    assert len(fake.calls("POST", "/api/v3/order")) == 2
    assert len(fake.orders_by_client_id(str(order.client_order_id))) == 1
    assert order.status is OrderStatus.FILLED


def test_unknown_outcome_stays_unconfirmed_until_the_venue_can_say(fake: FakeExchange) -> None:
    rig = build(fake, timeout_ms=300)
    fake.fault("POST", "/api/v3/order", "timeout_after_accept")
    fake.fault("GET", "/api/v3/order", "unavailable", times=8)  # the lookups fail too
    order = rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "0.5"))
    rig.execution.pump()
    assert order.status is OrderStatus.NEW
    assert rig.execution.tracked(order.client_order_id).state == "unconfirmed"  # type: ignore[union-attr]

    rig.execution.pump()  # the last failing lookups
    rig.execution.pump()  # the venue answers: the order is there
    assert order.status is OrderStatus.FILLED
    assert len(fake.calls("POST", "/api/v3/order")) == 1


def test_circuit_breaker_halts_entries_after_repeated_failures_and_resumes(fake: FakeExchange) -> None:
    rig = build(fake, circuit_breaker={"failures": 3, "cooldown": 0.3})
    fake.fault("GET", "/api/v3/account", "unavailable", times=4)
    rig.execution.pump(poll=True)  # the balance refresh fails 4 times

    [halted] = rig.of_type(Halted)
    assert halted.reason == "CIRCUIT_OPEN" and "3 consecutive venue failures" in halted.detail  # type: ignore[attr-defined]
    entry = rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "0.5"))
    rig.execution.pump(poll=False)
    assert entry.status is OrderStatus.REJECTED
    [rejected] = rig.of_type(OrderRejected)
    assert rejected.reason.startswith("CIRCUIT_OPEN: new entries halted")  # type: ignore[attr-defined]
    assert fake.calls("POST", "/api/v3/order") == []

    time.sleep(0.35)
    rig.execution.pump(poll=True)
    assert len(rig.of_type(Resumed)) == 1
    again = rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "0.5", n=1))
    rig.execution.pump()
    assert again.status is OrderStatus.FILLED


def test_venue_down_publishes_one_connection_lost_and_back_one_connection_restored(fake: FakeExchange) -> None:
    rig = build(fake, circuit_breaker={"failures": 3, "cooldown": 0.05})
    fake.fault("GET", "/api/v3/account", "unavailable", times=4)
    rig.execution.pump(poll=True)  # 4 failed tries: the breaker opens on the third
    fake.fault("GET", "/api/v3/account", "unavailable", times=8)
    time.sleep(0.06)
    rig.execution.pump(poll=True)  # still down after the cooldown: the breaker trips again
    time.sleep(0.06)
    rig.execution.pump(poll=True)

    assert len(rig.of_type(Halted)) >= 2  # tripped more than once ...
    [lost] = rig.of_type(ConnectionLost)  # ... but one ConnectionLost for the outage
    assert lost.venue == "binance" and "3 consecutive venue failures" in lost.detail  # type: ignore[attr-defined]
    assert rig.of_type(ConnectionRestored) == []

    time.sleep(0.06)
    rig.execution.pump(poll=True)  # the venue answers again
    rig.execution.pump(poll=True)
    [restored] = rig.of_type(ConnectionRestored)
    assert restored.venue == "binance"  # type: ignore[attr-defined]
    assert restored.downtime.total_seconds() >= 0.1  # type: ignore[attr-defined]  # from the first failure
    assert len(rig.of_type(ConnectionLost)) == 1


def test_clock_drift_is_resynchronised_with_the_server_time() -> None:
    ahead = int(time.time() * 1000) + 3_600_000  # the venue's clock is an hour ahead of ours
    with FakeExchange(start_ms=ahead, speed=1.0, check_timestamp=True) as fx:
        rig = build(fx)
        assert rig.venue.balances()["USDT"][0] == D("10000")  # signed on the venue's time
        fx.clock.advance(60_000)  # the venue jumps a minute: our requests are now stale
        assert rig.venue.balances()["USDT"][0] == D("10000")
        assert len(fx.calls("GET", "/api/v3/time")) == 2  # at connect, and after the -1021
        # connect, the first read, the stale one refused with -1021, the same read resigned
        assert len(fx.calls("GET", "/api/v3/account")) == 4


def test_request_budget_waits_once_the_minute_is_spent() -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    budget = RequestBudget(60, clock=lambda: now[0], sleep=sleep)
    for _ in range(60):
        budget.acquire()
    assert waits == []
    budget.acquire()
    assert waits == [pytest.approx(1.0)]
    now[0] += 10.0  # ten seconds later ten tokens are back
    for _ in range(10):
        budget.acquire()
    assert len(waits) == 1


def test_scrubber_masks_signatures_and_credentials() -> None:
    scrub = Scrubber([API_KEY, API_SECRET])
    text = (f"GET http://x/api/v3/account?timestamp=1&signature=abc123 headers {{'X-MBX-APIKEY': '{API_KEY}'}} "
            f"secret={API_SECRET}")
    out = scrub(text)
    assert API_KEY not in out and API_SECRET not in out and "abc123" not in out
    assert "timestamp=1" in out
