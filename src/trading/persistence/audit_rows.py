"""The rows one audit batch writes, kept in memory while its events are applied.

`AuditBatch` (audit.py) reads what its events need up front, one query per table (the
orders they name, the positions of their symbols, the trades they name and the open ones,
the venue trade ids of their fills), applies the events to those rows in memory and writes
them at its end with one executemany per table and kind: ``INSERT ... ON CONFLICT DO
NOTHING`` of the new rows (``order_events``, ``orders``, ``fills``; positions and trades in
their own modules), ``UPDATE ... WHERE id = ?`` of the changed ones. Row by row this was
about four statements per event; the database work is the same, the statement overhead
(SQLAlchemy's, and on PostgreSQL a round trip) is paid once per table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

from trading.exceptions import DatabaseError
from trading.persistence.columns import to_decimal
from trading.persistence.models import FillRecord, OrderEventRecord, OrderRecord, table
from trading.persistence.sql import full_rows, insert_many, select_in, update_many

ORDERS = table(OrderRecord)
EVENTS = table(OrderEventRecord)
FILLS = table(FillRecord)

_ROLES = {
    "entry": "entry",
    "exit": "exit",
    "sl": "stop_loss",
    "stop": "stop_loss",
    "stop_loss": "stop_loss",
    "tp": "take_profit",
    "take_profit": "take_profit",
}
_CID_LEG = re.compile(r"^atf-[0-9a-f]{16}-([a-z0-9]{1,8})-\d{1,2}$")
_ORDER_KEY = ("bot_instance_id", "client_order_id")
#: The columns events change on a stored order (the UPDATE leaves the others, and their
#: indexes, alone).
ORDER_CHANGES = frozenset(
    {
        "status",
        "status_reason",
        "venue_order_id",
        "quantity",
        "price",
        "stop_price",
        "filled_qty",
        "remaining_qty",
        "avg_fill_price",
        "fee",
        "fee_currency",
        "trade_key",
        "updated_at",
    }
)
_ORDERS_OF = select(ORDERS).where(
    ORDERS.c.bot_instance_id == bindparam("bot"),
    ORDERS.c.client_order_id.in_(bindparam("keys", expanding=True)),
)
# A fill's order_event_id, read in its INSERT from the event row inserted just before (the
# unique (bot_instance_id, event_key)): no RETURNING, which costs more than the lookup.
_FILL_EVENT_ID = {
    "order_event_id": select(EVENTS.c.id)
    .where(
        EVENTS.c.bot_instance_id == bindparam("event_bot"),
        EVENTS.c.event_key == bindparam("event_key"),
    )
    .scalar_subquery()
}
_FILLS_OF = select(FILLS.c.venue_trade_id).where(
    FILLS.c.venue == bindparam("venue"),
    FILLS.c.venue_trade_id.in_(bindparam("keys", expanding=True)),
)


class WriteRace(DatabaseError):
    """Another transaction stored a row this batch was about to insert: apply the batch again."""


def order_role(tag: str | None, client_order_id: str) -> str | None:
    """Return entry / exit / stop_loss / take_profit from the order's tag or id leg, or None."""
    role = _ROLES.get((tag or "").strip().lower())
    if role is None:
        leg = _CID_LEG.match(client_order_id)
        role = _ROLES.get(leg.group(1)) if leg else None
    return role


def _stored(value: Any) -> Any:
    """Return `value` as its column gives it back (money at 10 decimals)."""
    return to_decimal(value) if isinstance(value, Decimal) else value


class BatchRows:
    """The order events, orders and fills of one batch: read once, written by `flush`."""

    def __init__(self, conn: Connection, bot_instance_id: int) -> None:
        self.conn = conn
        self.bot_id = bot_instance_id
        self.orders: dict[str, dict[str, Any] | None] = {}  # client order id -> row (None: none)
        self._dirty: dict[str, None] = {}  # orders to write, in order (new ones have no id)
        self.events: list[dict[str, Any]] = []
        self.fills: list[tuple[str, dict[str, Any]]] = []  # (its order event's key, row)
        self._trade_ids: dict[str, bool] = {}  # venue trade id -> already in the ledger

    # ------------------------------------------------------------------ orders
    def load_orders(self, client_order_ids: Iterable[str]) -> None:
        wanted = set(client_order_ids) - self.orders.keys()
        if not wanted:
            return
        for r in select_in(self.conn, _ORDERS_OF, wanted, bot=self.bot_id):
            self.orders[r.client_order_id] = r._asdict()
        for cid in wanted:
            self.orders.setdefault(cid, None)

    def order(self, client_order_id: str) -> dict[str, Any] | None:
        if client_order_id not in self.orders:
            self.load_orders([client_order_id])
        return self.orders[client_order_id]

    def add_order(self, values: dict[str, Any]) -> dict[str, Any]:
        """Keep a new order row (every column, as stored) to insert; return it."""
        [row] = full_rows(ORDERS, [{k: _stored(v) for k, v in values.items()}])
        cid = row["client_order_id"]
        self.orders[cid] = row
        self._dirty[cid] = None
        return row

    def changed(self, client_order_id: str, columns: Iterable[str]) -> None:
        """Mark the order's `columns` changed in its row (one of `ORDER_CHANGES` each)."""
        unknown = set(columns) - ORDER_CHANGES
        if unknown:
            raise ValueError(f"orders columns {sorted(unknown)} are not in ORDER_CHANGES")
        self._dirty[client_order_id] = None

    # ------------------------------------------------------------------ fills
    def load_trade_ids(self, venue: str | None, trade_ids: Iterable[str | None]) -> None:
        wanted = {t for t in trade_ids if t is not None} - self._trade_ids.keys()
        if not wanted:
            return
        stored = {r[0] for r in select_in(self.conn, _FILLS_OF, wanted, venue=venue)}
        self._trade_ids.update((t, t in stored) for t in wanted)

    def fill_recorded(self, venue: str | None, trade_id: str | None) -> bool:
        """Return whether the venue's execution `trade_id` is in the ledger (or this batch)."""
        if trade_id is None:
            return False  # NULLs never clash
        self.load_trade_ids(venue, [trade_id])
        return self._trade_ids[trade_id]

    def add_fill(self, event_key: str, row: dict[str, Any]) -> None:
        """Keep the ledger row of the fill whose order event has `event_key`."""
        self.fills.append((event_key, row))
        if row["venue_trade_id"] is not None:
            self._trade_ids[row["venue_trade_id"]] = True

    def last_fill(
        self, symbol: str, ts: datetime, known: Callable[[str], bool]
    ) -> dict[str, Any] | None:
        """Return this batch's latest fill of `symbol` up to `ts` whose order is `known`."""
        best: dict[str, Any] | None = None
        for _, row in self.fills:  # in order: a later one wins a tie on ts, as a higher id
            later = best is None or row["ts"] >= best["ts"]
            if (
                row["symbol"] == symbol
                and row["ts"] <= ts
                and later
                and known(row["client_order_id"])
            ):
                best = row
        return best

    def relink(self, old: str, new: str) -> None:
        """Move the batch's orders and fills of round trip `old` to `new` (stored ones: SQL)."""
        for row in self.orders.values():
            if row is not None and row["trade_key"] == old:
                row["trade_key"] = new
        for _, row in self.fills:
            if row["trade_key"] == old:
                row["trade_key"] = new

    # ------------------------------------------------------------------ write
    def flush(self) -> None:
        """Write the kept rows: order events, then orders, then fills (they need event ids)."""
        insert_many(self.conn, EVENTS, self.events, ("bot_instance_id", "event_key"))
        orders = [r for r in (self.orders[cid] for cid in self._dirty) if r is not None]
        insert_many(self.conn, ORDERS, [r for r in orders if "id" not in r], _ORDER_KEY)
        update_many(
            self.conn,
            ORDERS,
            [{"id": r["id"], **{c: r[c] for c in ORDER_CHANGES}} for r in orders if "id" in r],
            ("id",),
        )
        if self.fills:
            keys = [key for key, _ in self.fills]
            rows = full_rows(FILLS, (row for _, row in self.fills), but=("order_event_id",))
            fills = [
                {**row, "event_bot": self.bot_id, "event_key": key}
                for key, row in zip(keys, rows, strict=True)
            ]
            conflict = ("venue", "venue_trade_id")
            if insert_many(self.conn, FILLS, fills, conflict, _FILL_EVENT_ID) != len(fills):
                raise WriteRace("a fill of this batch was stored by another transaction")
        self.events.clear()
        self.fills.clear()
        self._dirty.clear()
