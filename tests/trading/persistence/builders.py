"""Hand-written trading events for the audit tests (one order's life in a few lines)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from trading.events import (
    OrderAccepted,
    OrderFilled,
    OrderPartiallyFilled,
    OrderSubmitted,
    TradeClosed,
    TradeOpened,
)
from trading.orders import ClientOrderId, OrderSide, OrderType
from trading.positions import PositionSide

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
D = Decimal


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def cid(n: int, leg: str = "entry") -> ClientOrderId:
    """A client order id in the bot's format (so the leg names the role)."""
    return ClientOrderId(f"atf-{n:016x}-{leg}-0")


def submit(
    n: int,
    *,
    leg: str = "entry",
    side: OrderSide = OrderSide.BUY,
    qty: str = "2",
    symbol: str = "BTC/USDT",
    minute: int = 0,
    order_type: OrderType = OrderType.MARKET,
    price: str | None = None,
    stop: str | None = None,
    tag: str = "",
) -> OrderSubmitted:
    return OrderSubmitted(
        ts=at(minute),
        client_order_id=cid(n, leg),
        symbol=symbol,
        side=side,
        order_type=order_type,
        quantity=D(qty),
        price=None if price is None else D(price),
        stop_price=None if stop is None else D(stop),
        tag=tag,
    )


def accept(
    n: int, *, leg: str = "entry", symbol: str = "BTC/USDT", minute: int = 0
) -> OrderAccepted:
    return OrderAccepted(
        ts=at(minute), client_order_id=cid(n, leg), symbol=symbol, venue_order_id=f"V{n}"
    )


def fill(
    n: int,
    *,
    leg: str = "entry",
    side: OrderSide = OrderSide.BUY,
    qty: str = "2",
    price: str = "100",
    fee: str = "0.2",
    total: str | None = None,
    filled: str | None = None,
    avg: str | None = None,
    symbol: str = "BTC/USDT",
    minute: int = 1,
    trade_id: str | None = None,
) -> OrderFilled | OrderPartiallyFilled:
    """A fill of `qty` at `price`; partial when `filled` (cumulative) is below `total`."""
    total_q = D(total or qty)
    filled_q = D(filled or qty)
    cls = OrderFilled if filled_q == total_q else OrderPartiallyFilled
    return cls(
        ts=at(minute),
        client_order_id=cid(n, leg),
        symbol=symbol,
        side=side,
        last_qty=D(qty),
        last_price=D(price),
        fee=D(fee),
        filled_qty=filled_q,
        remaining_qty=total_q - filled_q,
        avg_price=D(avg or price),
        trade_id=trade_id,
    )


def opened(
    key: str,
    *,
    side: PositionSide = PositionSide.LONG,
    qty: str = "2",
    price: str = "100",
    symbol: str = "BTC/USDT",
    minute: int = 1,
) -> TradeOpened:
    return TradeOpened(
        ts=at(minute),
        trade_id=key,
        symbol=symbol,
        side=side,
        quantity=D(qty),
        entry_price=D(price),
    )


def closed(
    key: str,
    *,
    side: PositionSide = PositionSide.LONG,
    qty: str = "2",
    entry: str = "100",
    exit: str = "110",
    pnl: str = "20",
    fees: str = "0.42",
    symbol: str = "BTC/USDT",
    minute: int = 5,
) -> TradeClosed:
    return TradeClosed(
        ts=at(minute),
        trade_id=key,
        symbol=symbol,
        side=side,
        quantity=D(qty),
        entry_price=D(entry),
        exit_price=D(exit),
        realised_pnl=D(pnl),
        fees=D(fees),
    )


def round_trip(n: int = 1, *, symbol: str = "BTC/USDT") -> list:  # type: ignore[type-arg]
    """A long of 2 at 100 closed by its take profit at 110: the events a bot publishes."""
    return [
        submit(n, symbol=symbol),
        accept(n, symbol=symbol),
        fill(n, symbol=symbol, fee="0.2"),
        opened(str(cid(n)), symbol=symbol),
        submit(
            n,
            leg="tp",
            side=OrderSide.SELL,
            order_type=OrderType.LIMIT,
            price="110",
            symbol=symbol,
            minute=1,
        ),
        fill(n, leg="tp", side=OrderSide.SELL, price="110", fee="0.22", symbol=symbol, minute=5),
        closed(str(cid(n)), symbol=symbol),
    ]


def count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(text(table))).scalar_one())


def counts(engine: Engine) -> dict[str, int]:
    tables = ("orders", "order_events", "fills", "trades", "positions", "risk_events")
    return {t: count(engine, t) for t in tables}
