"""Build the ccxt adapter against the fake exchange: the real ccxt client over HTTP on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tests.fakes.fake_exchange import API_KEY, API_SECRET, FakeExchange
from trading.brokers.ccxt_config import CcxtSettings, credentials_from_env, settings_from_broker
from trading.brokers.ccxt_execution import CcxtExecution
from trading.brokers.ccxt_venue import CcxtVenue
from trading.bus import EventBus
from trading.events import Event, OrderFill
from trading.order_manager import OrderManager
from trading.orders import ClientOrderId, Order, OrderSide, OrderType

ENV = {"BINANCE_TESTNET_API_KEY": API_KEY, "BINANCE_TESTNET_API_SECRET": API_SECRET,
       "BINANCE_DEMO_API_KEY": API_KEY, "BINANCE_DEMO_API_SECRET": API_SECRET}  # demo: Binance futures' sandbox
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def section(fake: FakeExchange, **ccxt: Any) -> dict[str, Any]:
    """A broker section for the fake: fast retries, no client-side spacing, poll on every pump.

    The order stream is on (`auto`) when the fake serves its websocket, off otherwise.
    """
    own = {"urls": fake.api_urls(), "poll_interval": 0.0, "rate_limit_ms": 1, "timeout_ms": 2000,
           "retry": {"attempts": 4, "base_delay": 0.01, "max_delay": 0.05},
           "websocket": "auto" if fake.ws is not None else "off", **ccxt}
    return {"type": "binance", "trading_mode": "paper", "ccxt": own}


@dataclass
class Rig:
    """The adapter, its OrderManager and every event published on the bus."""

    fake: FakeExchange
    venue: CcxtVenue
    execution: CcxtExecution
    orders: OrderManager
    events: list[Event] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)

    def order(self, leg: str, side: OrderSide, kind: OrderType, qty: str, *, price: str | None = None,
              stop: str | None = None, n: int = 0) -> Order:
        return Order(
            client_order_id=ClientOrderId.for_signal("test", "BTCUSDT", T0, leg, n),
            symbol="BTCUSDT", side=side, order_type=kind, quantity=Decimal(qty),
            price=None if price is None else Decimal(price), stop_price=None if stop is None else Decimal(stop),
            tag=leg,
        )

    def of_type(self, cls: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, cls)]


def build(fake: FakeExchange, *, connect: bool = True, symbols: tuple[str, ...] = (), **ccxt: Any) -> Rig:
    """The whole adapter against `fake`; sleeps are recorded, not slept (backoff stays testable and fast).

    ``market="future"`` builds the USDⓈ-M futures adapter (ccxt binanceusdm on the fake's /fapi);
    `symbols` are configured (leverage, margin mode) at connect.
    """
    settings: CcxtSettings = settings_from_broker("binance", section(fake, **ccxt))
    sleeps: list[float] = []
    venue = CcxtVenue(settings, credentials_from_env(settings, ENV), sleep=sleeps.append)
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append, inline=True, name="recorder")
    orders = OrderManager(bus)
    execution = CcxtExecution(venue, orders, bus=bus)
    if connect:
        execution.connect(symbols)
    return Rig(fake, venue, execution, orders, events, sleeps)


def pump_until(rig: Rig, done: Callable[[], bool], timeout: float = 10.0) -> None:
    """Pump whenever the stream delivers something, until `done` (the stream's condition, no sleeps)."""
    stream = rig.venue.stream
    assert stream is not None
    deadline = time.monotonic() + timeout
    while not done():
        left = deadline - time.monotonic()
        assert left > 0, "the stream delivered nothing that made it true"
        stream.wait(left)
        rig.execution.pump()


def fills(rig: Rig, order: Order) -> list[tuple[Decimal, Decimal, Decimal, str | None]]:
    return [(e.last_qty, e.last_price, e.fee, e.trade_id) for e in rig.events
            if isinstance(e, OrderFill) and e.client_order_id == order.client_order_id]
