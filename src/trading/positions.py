"""PositionManager: FLAT / LONG / SHORT per symbol from fills, with average entry, pnl and fees.

Conventions: quantities are signed (long > 0, short < 0); `realised_pnl` is gross of fees
and `fees` is kept beside it, so ``realised + unrealised(mark) - fees`` is the net pnl.
A fill that crosses zero (a flip) closes the old round trip at the fill price and opens the
new one with the rest; its fee is split between the two in proportion to the quantities.

The arithmetic runs in a decimal context of its own (`DECIMAL_CONTEXT`: 28 digits, half to
even), never the thread's: a library that changes the global context (ccxt sets its
rounding to half up) must not change an average price or a fee split.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)
from enum import Enum

from trading.bus import EventBus
from trading.events import OrderFill, TradeClosed, TradeOpened
from trading.orders import Order, OrderSide

_ZERO = Decimal(0)
# Python's default context, spelled out: what every result of this module is computed in.
DECIMAL_CONTEXT = Context(prec=28, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow])


def _arithmetic() -> AbstractContextManager[Context]:
    """Enter a copy of `DECIMAL_CONTEXT` for this module's arithmetic."""
    return localcontext(DECIMAL_CONTEXT)


class PositionSide(Enum):
    FLAT = "flat"
    LONG = "long"
    SHORT = "short"


@dataclass(frozen=True)
class Position:
    """A snapshot of one symbol's position; PositionManager replaces it on every fill."""

    symbol: str
    quantity: Decimal = _ZERO
    avg_entry_price: Decimal | None = None
    realised_pnl: Decimal = _ZERO
    fees: Decimal = _ZERO
    trade_id: str | None = None
    opened_ts: datetime | None = None
    entries: int = 0  # orders that opened or added to the open position (scale-in)

    @property
    def side(self) -> PositionSide:
        if self.quantity > 0:
            return PositionSide.LONG
        return PositionSide.SHORT if self.quantity < 0 else PositionSide.FLAT

    def unrealised_pnl(self, mark: Decimal) -> Decimal:
        """Return the pnl of the open quantity valued at `mark` (zero when flat)."""
        if self.quantity == 0 or self.avg_entry_price is None:
            return _ZERO
        with _arithmetic():
            return self.quantity * (mark - self.avg_entry_price)

    def net_pnl(self, mark: Decimal) -> Decimal:
        """Return realised + unrealised - fees."""
        unrealised = self.unrealised_pnl(mark)
        with _arithmetic():
            return self.realised_pnl + unrealised - self.fees


@dataclass(frozen=True)
class EntryDecision:
    """Whether a new entry may go out; `reason` is an UPPER_SNAKE code when it may not."""

    allowed: bool
    reason: str | None = None

    def __bool__(self) -> bool:
        return self.allowed


@dataclass
class _RoundTrip:
    trade_id: str
    side: PositionSide
    entry_orders: set[str] = field(default_factory=set)
    entry_qty: Decimal = _ZERO
    exit_qty: Decimal = _ZERO
    exit_notional: Decimal = _ZERO
    realised: Decimal = _ZERO
    fees: Decimal = _ZERO


class PositionManager:
    """Hold the position of every symbol and tell TradeOpened / TradeClosed on the bus."""

    def __init__(self, bus: EventBus | None = None) -> None:
        self._bus = bus
        self._events: list[TradeOpened | TradeClosed] = []  # told once the fill is applied
        self._positions: dict[str, Position] = {}
        self._trips: dict[str, _RoundTrip] = {}
        self._count = 0

    def position(self, symbol: str) -> Position:
        """Return the symbol's position (FLAT if it never traded)."""
        return self._positions.get(symbol) or Position(symbol)

    def open_positions(self) -> list[Position]:
        return [p for p in self._positions.values() if p.quantity != 0]

    def unrealised_pnl(self, marks: Mapping[str, Decimal]) -> Decimal:
        """Return the summed unrealised pnl of the open positions at the given marks."""
        pnls = [p.unrealised_pnl(marks[p.symbol]) for p in self.open_positions()]
        with _arithmetic():
            return sum(pnls, _ZERO)

    def can_enter(
        self, symbol: str, side: OrderSide, *, scale_in: bool = False, max_entries: int | None = None
    ) -> EntryDecision:
        """Refuse a second entry in the same direction (DUPLICATE_ENTRY) unless scaling in.

        When scaling in, `max_entries` caps the entry orders of one position, the first
        included (MAX_ENTRIES). An entry against an open position is refused too
        (OPPOSITE_POSITION): close first. Entry orders still open are the OrderManager's to
        check (`open_orders(symbol)`).
        """
        if max_entries is not None and max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        pos = self.position(symbol)
        if pos.side is PositionSide.FLAT:
            return EntryDecision(True)
        wanted = PositionSide.LONG if side is OrderSide.BUY else PositionSide.SHORT
        if pos.side is not wanted:
            return EntryDecision(False, "OPPOSITE_POSITION")
        if not scale_in:
            return EntryDecision(False, "DUPLICATE_ENTRY")
        if max_entries is not None and pos.entries >= max_entries:
            return EntryDecision(False, "MAX_ENTRIES")
        return EntryDecision(True)

    def on_fill(self, order: Order, fill: OrderFill) -> Position:
        """Apply an OrderManager fill (signature of `OrderManager.add_fill_callback`)."""
        return self.apply_fill(
            fill.symbol,
            fill.side,
            fill.last_qty,
            fill.last_price,
            fill.fee,
            ts=fill.ts,
            order_id=str(fill.client_order_id),
        )

    def restore(self, fills: Iterable[OrderFill]) -> None:
        """Rebuild positions from fills an earlier run told already (a restart): nothing is published."""
        bus, self._bus = self._bus, None
        try:
            for fill in fills:
                self.on_fill(None, fill)  # type: ignore[arg-type]  # the order is not read
        finally:
            self._bus = bus

    def apply_fill(
        self,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        price: Decimal,
        fee: Decimal = _ZERO,
        *,
        ts: datetime,
        order_id: str = "",
    ) -> Position:
        """Apply one execution and return the new position."""
        if not (quantity > 0 and price > 0 and fee >= 0):
            raise ValueError(
                f"a fill needs quantity > 0, price > 0 and fee >= 0; got quantity {quantity}, price {price}, fee {fee}"
            )
        pos = self.position(symbol)
        self._events = []
        with _arithmetic():
            q, signed = pos.quantity, side.sign * quantity
            if q == 0 or (q > 0) == (signed > 0):
                pos = self._add(pos, signed, price, fee, ts, order_id)
            else:
                closed = min(quantity, abs(q))
                close_fee = fee if quantity <= abs(q) else fee * closed / quantity
                pos = self._reduce(pos, closed, price, close_fee, ts)
                rest = quantity - closed
                if rest > 0:  # the fill flipped the position
                    pos = self._add(pos, side.sign * rest, price, fee - close_fee, ts, order_id)
            self._positions[symbol] = pos
        # Outside the context: subscribers run in the caller's own.
        events, self._events = self._events, []
        for event in events:
            self._publish(event)
        return pos

    def _add(
        self,
        pos: Position,
        signed: Decimal,
        price: Decimal,
        fee: Decimal,
        ts: datetime,
        order_id: str,
    ) -> Position:
        q = pos.quantity
        new_q = q + signed
        avg = (
            price
            if q == 0
            else ((pos.avg_entry_price or _ZERO) * abs(q) + price * abs(signed)) / abs(new_q)
        )
        opening = q == 0
        if opening:
            self._count += 1
            trade_id = order_id or f"{pos.symbol}-{self._count}"
            side = PositionSide.LONG if signed > 0 else PositionSide.SHORT
            self._trips[pos.symbol] = _RoundTrip(trade_id, side)
            pos = replace(pos, trade_id=trade_id, opened_ts=ts)
        trip = self._trips[pos.symbol]
        trip.entry_qty += abs(signed)
        trip.fees += fee
        trip.entry_orders.add(order_id or f"fill-{len(trip.entry_orders)}")
        pos = replace(
            pos, quantity=new_q, avg_entry_price=avg, fees=pos.fees + fee, entries=len(trip.entry_orders)
        )
        if opening:
            self._events.append(
                TradeOpened(
                    ts=ts,
                    trade_id=trip.trade_id,
                    symbol=pos.symbol,
                    side=trip.side,
                    quantity=abs(signed),
                    entry_price=price,
                )
            )
        return pos

    def _reduce(
        self, pos: Position, closed: Decimal, price: Decimal, fee: Decimal, ts: datetime
    ) -> Position:
        assert pos.avg_entry_price is not None
        direction = 1 if pos.quantity > 0 else -1
        pnl = closed * (price - pos.avg_entry_price) * direction
        trip = self._trips[pos.symbol]
        trip.exit_qty += closed
        trip.exit_notional += closed * price
        trip.realised += pnl
        trip.fees += fee
        new_q = pos.quantity - direction * closed
        entry = pos.avg_entry_price
        pos = replace(pos, quantity=new_q, realised_pnl=pos.realised_pnl + pnl, fees=pos.fees + fee)
        if new_q == 0:
            pos = replace(pos, avg_entry_price=None, trade_id=None, opened_ts=None, entries=0)
            del self._trips[pos.symbol]
            self._events.append(
                TradeClosed(
                    ts=ts,
                    trade_id=trip.trade_id,
                    symbol=pos.symbol,
                    side=trip.side,
                    quantity=trip.entry_qty,
                    entry_price=entry,
                    exit_price=trip.exit_notional / trip.exit_qty,
                    realised_pnl=trip.realised,
                    fees=trip.fees,
                )
            )
        return pos

    def _publish(self, event: TradeOpened | TradeClosed) -> None:
        if self._bus is not None:
            self._bus.publish(event)
