"""The strategy's side of risk: every entry BaseStrategy sizes passes `RiskController.check`.

BaseStrategy sizes an entry with floats; the controller works in Decimal. A quantity sized
exactly at a cap (`max_position_size`, `risk_per_trade`) can come out a few ulps above the
Decimal cap, so such a quantity is checked as the cap itself rather than denied for rounding.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from trading.orders import OrderSide
from trading.risk import Holding, OrderRequest, Portfolio, RiskController

_ROUNDING = Decimal("1e-9")


def dec(x: float) -> Decimal:
    """Convert a float to the Decimal that prints like it (0.1 -> Decimal('0.1'))."""
    return Decimal(repr(float(x)))


def bar_datetime(day_number: float) -> datetime:
    """Convert a backtrader day number to a UTC datetime (millisecond precision)."""
    ms = round((day_number - 719163.0) * 86_400_000)
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def holdings(books: Iterable[Any]) -> dict[str, Holding]:
    """Return every symbol with a trade, open or still being entered, marked at its last close.

    A working entry counts as held: two symbols signalling on one bar must not both pass
    `max_positions`.
    """
    out = {}
    for book in books:
        trade = book.trade
        if trade is None or not trade.quantity:
            continue
        n = book.clock.lencount
        mark = book.close[n - 1] if 0 < n <= len(book.close) else trade.ref_price
        out[book.symbol] = Holding(dec(trade.side.sign * trade.quantity), dec(mark))
    return out


def check_entry(
    risk: RiskController,
    books: Iterable[Any],
    *,
    symbol: str,
    sign: int,
    quantity: float,
    price: float,
    stop: float | None,
    equity: float,
) -> str | None:
    """Return the denial's reason code, or None when the entry may go out."""
    eq, px = dec(equity), dec(price)
    sl = dec(stop) if stop is not None else None
    qty = dec(quantity)
    cap = risk.max_quantity(px, sl, eq)
    if cap is not None and cap < qty <= cap * (1 + _ROUNDING):
        qty = cap
    request = OrderRequest(
        symbol=symbol, side=OrderSide.BUY if sign > 0 else OrderSide.SELL, quantity=qty, price=px, stop_loss=sl
    )
    decision = risk.check(request, Portfolio(eq, holdings(books)))
    return None if decision.allowed else (decision.reason or "RISK_DENIED")
