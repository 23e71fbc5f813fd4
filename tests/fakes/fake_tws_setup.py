"""Ready-made markets for the fake TWS: a stock, a forex pair and two futures on synthetic paths."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pandas as pd

from tests.fakes.fake_tws import FakeTWS
from tests.fakes.fake_tws_market import FakeInstrument, PricePath
from trading.brokers.ibkr_bridge import OrderManagerBridge
from trading.data.synthetic import generate_ohlcv
from trading.order_manager import OrderManager
from trading.orders import ClientOrderId, Order, OrderSide, OrderType

AAPL = FakeInstrument(265598, "AAPL", "STK", "NASDAQ", local_symbol="AAPL", trading_class="NMS",
                      primary_exchange="NASDAQ")
EURUSD = FakeInstrument(12087792, "EUR", "CASH", "IDEALPRO", currency="USD", local_symbol="EUR.USD",
                        trading_class="EUR.USD", min_tick=0.00005)
ES_DEC = FakeInstrument(495512563, "ES", "FUT", "CME", expiry="20261218", multiplier="50", local_symbol="ESZ6",
                        trading_class="ES", min_tick=0.25)
ES_MAR = FakeInstrument(551601561, "ES", "FUT", "CME", expiry="20270319", multiplier="50", local_symbol="ESH7",
                        trading_class="ES", min_tick=0.25)
INSTRUMENTS = (AAPL, EURUSD, ES_DEC, ES_MAR)
CONTRACTS = {"AAPL": "AAPL:STK:SMART:USD", "EURUSD": "EURUSD:CASH", "ES": "ES:FUT:CME:202612",
             "ESC": "ES:CONTFUT:CME"}
START = "2024-01-01"


def frame(bars: int, *, seed: int, timeframe: str = "1h", start_price: float = 100.0) -> pd.DataFrame:
    """Synthetic bars with whole-number volumes (the fake splits each bar's volume into four ticks)."""
    df = generate_ohlcv(bars, seed=seed, timeframe=timeframe, start=START, start_price=start_price)
    df["volume"] = (df["volume"].round() // 4 * 4).clip(lower=4)
    return df


def paths(bars: int = 400, timeframe: str = "1h", bar_seconds: int = 3600) -> dict[int, PricePath]:
    return {
        AAPL.con_id: PricePath(frame(bars, seed=7, timeframe=timeframe, start_price=180.0), bar_seconds),
        EURUSD.con_id: PricePath(frame(bars, seed=8, timeframe=timeframe, start_price=1.1), bar_seconds),
        ES_DEC.con_id: PricePath(frame(bars, seed=9, timeframe=timeframe, start_price=5000.0), bar_seconds),
    }


def start_time(history_bars: int, bar_seconds: int = 3600) -> int:
    """The fake's clock after `history_bars` bars: on the close tick of the last historical bar."""
    return int(pd.Timestamp(START, tz="UTC").timestamp()) + history_bars * bar_seconds - bar_seconds // 4


@contextmanager
def fake_tws(*, bars: int = 400, history: int = 300, timeframe: str = "1h", bar_seconds: int = 3600,
             **kwargs: Any) -> Iterator[FakeTWS]:
    with FakeTWS(list(INSTRUMENTS), paths(bars, timeframe, bar_seconds), start=start_time(history, bar_seconds),
                 **kwargs) as tws:
        yield tws


def settings(tws: FakeTWS, **overrides: Any) -> Any:
    from trading.brokers.ibkr_config import IBKRSettings

    values: dict[str, Any] = {
        "port": tws.port, "client_id": 7, "contracts": dict(CONTRACTS), "connect_timeout": 5.0,
        "request_timeout": 10.0, "commission_wait": 0.5,
        "reconnect": {"initial_delay": 0.05, "factor": 2.0, "max_delay": 0.2, "max_attempts": 50},
    }
    values.update(overrides)
    return IBKRSettings.model_validate(values)


def wait_until(condition: Callable[[], object], timeout: float = 5.0, pump: Callable[[], object] | None = None) -> None:
    """Wait until `condition()` is true, calling `pump()` (e.g. a bridge's) before each check."""
    deadline = time.monotonic() + timeout
    while True:
        if pump is not None:
            pump()
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.005)


_SIGNAL = datetime(2024, 1, 1, tzinfo=UTC)


def order(symbol: str, side: str, kind: str, qty: float, *, leg: str = "entry", attempt: int = 0,
          price: float | None = None, stop: float | None = None) -> Order:
    """An Order with a deterministic client order id (bot ``t``, the given leg and attempt)."""
    dec = (lambda x: None if x is None else Decimal(repr(round(x, 2))))
    return Order(ClientOrderId.for_signal("t", symbol, _SIGNAL, leg, attempt), symbol, OrderSide(side.lower()),
                 OrderType(kind), Decimal(repr(qty)), price=dec(price), stop_price=dec(stop))


def bridge(adapter: Any) -> tuple[OrderManager, OrderManagerBridge]:
    om = OrderManager()
    return om, OrderManagerBridge(adapter, om)
