"""Positions in the database, moved by fills with the same arithmetic as `PositionManager`.

Quantities are signed (long > 0, short < 0); `realised_pnl` is gross and `fees` sit beside
it. A fill that crosses zero closes the round trip and opens the next one with the rest.
Unlike `PositionManager`, every amount is kept at the columns' 10 decimals (see
`position_after_fill`), so the database, the paper broker's book and reconciliation agree
to the last digit whatever the batch boundaries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from trading.events import OrderFill
from trading.orders import OrderSide
from trading.persistence.columns import MONEY_QUANTUM, at_scale, to_decimal
from trading.persistence.models import FillRecord, OrderRecord, PositionRecord, table
from trading.persistence.sql import full_rows, insert_many, select_in, update_many

if TYPE_CHECKING:
    from trading.persistence.round_trips import TradeBook

POSITIONS = table(PositionRecord)
ORDERS = table(OrderRecord)
FILLS = table(FillRecord)
_ZERO = Decimal(0)
#: How far from zero a position may be and still be flat: ten quanta of the quantity column.
#: Fills are stored rounded to its 10 decimals, so a round trip of n fills may miss zero by
#: n/2 quanta; 1e-9 covers 20 fills and is far below any venue's lot size.
DUST = MONEY_QUANTUM * 10
_POSITIONS_OF = select(POSITIONS).where(
    POSITIONS.c.bot_instance_id == bindparam("bot"),
    POSITIONS.c.symbol.in_(bindparam("keys", expanding=True)),
)
_KEY = ("bot_instance_id", "symbol")


@dataclass(frozen=True, slots=True)
class PositionChange:
    """A position after one fill; `realised` is the pnl this fill realised."""

    quantity: Decimal
    avg_entry_price: Decimal | None
    realised: Decimal
    opened: bool  # a new round trip started (from flat, or by a flip)
    closed: bool  # the round trip that was open ended (back to flat, or by a flip)


def is_flat(quantity: Decimal) -> bool:
    """Return whether a position of `quantity` is flat (no more than `DUST` either way)."""
    return abs(quantity) <= DUST


def position_after_fill(
    quantity: Decimal,
    avg_entry_price: Decimal | None,
    side: OrderSide,
    qty: Decimal,
    price: Decimal,
) -> PositionChange:
    """Return the position after buying or selling `qty` at `price`, at the columns' scale.

    Every amount is rounded to the 10 decimals the database keeps, so the result does not
    depend on whether the previous position came from memory or from a row (a later batch,
    a spool replay, a recovery seeded from the database). A reducing fill within `DUST` of
    the open quantity closes it exactly: the roundings of several fills do not leave a
    residue, nor flip the position by one quantum.
    """
    qty, price = to_decimal(qty), to_decimal(price)
    if is_flat(quantity):
        quantity, avg_entry_price = _ZERO, None
    else:
        quantity = at_scale(quantity)
    signed = side.sign * qty
    if quantity == 0 or (quantity > 0) == (signed > 0):
        new_q = quantity + signed
        if quantity == 0 or avg_entry_price is None:
            avg = price
        else:
            avg = at_scale((avg_entry_price * abs(quantity) + price * qty) / abs(new_q))
        return PositionChange(new_q, avg, _ZERO, quantity == 0, False)
    assert avg_entry_price is not None
    direction = 1 if quantity > 0 else -1
    if is_flat(qty - abs(quantity)):  # closed exactly, or within the roundings of its fills
        closed, rest = abs(quantity), _ZERO
    else:
        closed = min(qty, abs(quantity))
        rest = qty - closed
    realised = at_scale(closed * (price - avg_entry_price) * direction)
    if rest > 0:  # flipped: the rest opens the other side at the fill price
        return PositionChange(side.sign * rest, price, realised, True, True)
    new_q = quantity - direction * closed
    if new_q == 0:
        return PositionChange(_ZERO, None, realised, False, True)
    return PositionChange(new_q, avg_entry_price, realised, False, False)


def side_of(quantity: Decimal) -> str:
    return "long" if quantity > 0 else "short" if quantity < 0 else "flat"


class PositionBook:
    """The positions of one bot in a batch: read together, changed in memory, written by `flush`.

    `trades` answers which round trips exist; `on_relink(old, new)` moves the batch's unwritten
    orders and fills from round trip `old` to `new` (stored ones are updated here).
    """

    def __init__(
        self,
        conn: Connection,
        bot_instance_id: int,
        trades: TradeBook,
        on_relink: Callable[[str, str], None],
    ) -> None:
        self.conn = conn
        self.bot_id = bot_instance_id
        self.trades = trades
        self.on_relink = on_relink
        self.symbols: set[str] = set()  # the batch's: read together with the first one asked
        self._rows: dict[str, dict[str, Any] | None] = {}
        self._dirty: dict[str, None] = {}

    def row(self, symbol: str) -> dict[str, Any] | None:
        if symbol not in self._rows:
            wanted = {symbol} | (self.symbols - self._rows.keys())
            found = {
                r.symbol: r._asdict()
                for r in select_in(self.conn, _POSITIONS_OF, wanted, bot=self.bot_id)
            }
            for s in wanted:
                self._rows[s] = found.get(s)
        return self._rows[symbol]

    def reduces(self, symbol: str, side: OrderSide) -> bool:
        """Return whether an order on `side` would reduce the open position."""
        row = self.row(symbol)
        q = _ZERO if row is None else row["quantity"]
        return not is_flat(q) and (q > 0) != (side is OrderSide.BUY)

    def apply_fill(self, fill: OrderFill, client_order_id: str) -> str | None:
        """Move the position by `fill`; return the key of the round trip the fill belongs to."""
        row = self.row(fill.symbol)
        q = _ZERO if row is None else row["quantity"]
        avg = None if row is None else row["avg_entry_price"]
        old_key = None if row is None else row["trade_key"]
        # Amounts at the column's scale: the cached row equals the stored one, so a position
        # moves the same whether its previous fill was in this batch or an earlier one.
        change = position_after_fill(q, avg, fill.side, fill.last_qty, fill.last_price)
        values: dict[str, Any] = {
            "side": side_of(change.quantity),
            "quantity": change.quantity,
            "avg_entry_price": change.avg_entry_price,
            "realised_pnl": (_ZERO if row is None else row["realised_pnl"]) + change.realised,
            "fees": (_ZERO if row is None else row["fees"]) + to_decimal(fill.fee),
            "updated_at": fill.ts,
        }
        if change.opened:
            values["trade_key"] = self._announced_trade(fill.symbol, old_key) or client_order_id
            values["opened_at"] = fill.ts
        self.save(fill.symbol, row, values)
        return old_key if change.closed or not change.opened else values["trade_key"]

    def adopt_trade_key(self, symbol: str, trade_key: str, ts: datetime) -> None:
        """Take the id a TradeOpened gives the open round trip, re-linking its orders and fills."""
        row = self.row(symbol)
        if row is None or is_flat(row["quantity"]) or row["trade_key"] == trade_key:
            return
        old = row["trade_key"]
        if old is not None and self._trade_exists(old):
            return  # the position belongs to another, announced round trip
        if old is not None:
            for linked in (ORDERS, FILLS):
                self.conn.execute(
                    update(linked)
                    .where(linked.c.bot_instance_id == self.bot_id, linked.c.trade_key == old)
                    .values(trade_key=trade_key)
                )
            self.on_relink(old, trade_key)
        self.save(symbol, row, {"trade_key": trade_key, "updated_at": max(ts, row["updated_at"])})

    def opened_at(self, symbol: str, trade_key: str) -> datetime | None:
        """Return when the round trip `trade_key` opened, if the position still knows it."""
        row = self.row(symbol)
        if row is not None and row["trade_key"] == trade_key:
            return row["opened_at"]  # type: ignore[no-any-return]
        return None

    def _trade_exists(self, trade_key: str) -> bool:
        return self.trades.get(trade_key) is not None

    def _announced_trade(self, symbol: str, previous: str | None) -> str | None:
        """Return the key of an open trade announced (TradeOpened) before its first fill."""
        return self.trades.announced(symbol, previous)

    def save(self, symbol: str, row: dict[str, Any] | None, values: dict[str, Any]) -> None:
        if row is None:
            row = {
                "bot_instance_id": self.bot_id,
                "symbol": symbol,
                "trade_key": None,
                "opened_at": None,
            }
            self._rows[symbol] = row
        row.update(values)
        self._dirty[symbol] = None

    def flush(self) -> None:
        """Write the changed positions: one INSERT for the new ones, one UPDATE for the rest."""
        rows = [r for r in (self._rows[s] for s in self._dirty) if r is not None]
        insert_many(
            self.conn, POSITIONS, full_rows(POSITIONS, [r for r in rows if "id" not in r]), _KEY
        )
        changed = [{k: v for k, v in r.items() if k not in _KEY} for r in rows if "id" in r]
        update_many(self.conn, POSITIONS, changed, ("id",))
        self._dirty.clear()
