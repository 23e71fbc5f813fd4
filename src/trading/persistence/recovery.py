"""Crash recovery: load a bot's open orders and positions, record what reconciliation corrected."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from trading.events import OrderPartiallyFilled
from trading.orders import ClientOrderId, Order, OrderSide, OrderStatus, OrderType
from trading.persistence.audit import AuditBatch
from trading.persistence.db import read_connection
from trading.persistence.models import FillRecord, OrderRecord, PositionRecord, Trade, table
from trading.persistence.position_book import side_of
from trading.positions import Position

ORDERS = table(OrderRecord)
POSITIONS = table(PositionRecord)
FILLS = table(FillRecord)
TRADES = table(Trade)
OPEN_STATUSES = tuple(s.value for s in OrderStatus if s.is_open)


@dataclass(frozen=True, slots=True)
class StoredOrder:
    """An order as the database last saw it."""

    client_order_id: str
    symbol: str
    side: OrderSide
    order_type: OrderType
    quantity: Decimal
    price: Decimal | None
    stop_price: Decimal | None
    status: OrderStatus
    filled_qty: Decimal
    remaining_qty: Decimal
    avg_fill_price: Decimal | None
    fee: Decimal
    venue_order_id: str | None
    parent_client_order_id: str | None
    oco_client_order_id: str | None
    role: str | None
    tag: str | None
    trade_key: str | None
    created_at: datetime
    updated_at: datetime

    def to_order(self) -> Order:
        """Rebuild the `Order` for an OrderManager.

        Raise `InvalidOrder` for a trailing stop: its trail is not stored, so the caller has
        to re-derive it from its own config.
        """
        return Order(
            client_order_id=ClientOrderId(self.client_order_id),
            symbol=self.symbol,
            side=self.side,
            order_type=self.order_type,
            quantity=self.quantity,
            price=self.price,
            stop_price=self.stop_price,
            parent_id=_cid(self.parent_client_order_id),
            oco_id=_cid(self.oco_client_order_id),
            tag=self.tag or "",
            status=self.status,
            filled_qty=self.filled_qty,
            avg_fill_price=self.avg_fill_price,
            fees=self.fee,
            venue_order_id=self.venue_order_id,
            created_ts=self.created_at,
            updated_ts=self.updated_at,
        )


def _cid(value: str | None) -> ClientOrderId | None:
    return None if value is None else ClientOrderId(value)


def load_open_orders(engine: Engine, bot_instance_id: int) -> list[StoredOrder]:
    """Return the bot's orders that are still working (new, accepted, partially filled,
    pending cancel), oldest first."""
    stmt = (
        select(ORDERS)
        .where(ORDERS.c.bot_instance_id == bot_instance_id, ORDERS.c.status.in_(OPEN_STATUSES))
        .order_by(ORDERS.c.created_at, ORDERS.c.id)
    )
    with read_connection(engine) as conn:
        rows = [r._mapping for r in conn.execute(stmt)]
    return [
        StoredOrder(
            **{f: r[f] for f in StoredOrder.__slots__ if f not in ("side", "order_type", "status")},
            side=OrderSide(r["side"]),
            order_type=OrderType(r["order_type"]),
            status=OrderStatus(r["status"]),
        )
        for r in rows
    ]


def load_positions(
    engine: Engine, bot_instance_id: int, *, include_flat: bool = False
) -> list[Position]:
    """Return the bot's positions as `PositionManager` snapshots (signed quantity), by symbol."""
    stmt = select(POSITIONS).where(POSITIONS.c.bot_instance_id == bot_instance_id)
    if not include_flat:
        stmt = stmt.where(POSITIONS.c.side != "flat")
    with read_connection(engine) as conn:
        rows = [r._mapping for r in conn.execute(stmt.order_by(POSITIONS.c.symbol))]
    return [
        Position(
            symbol=r["symbol"],
            quantity=r["quantity"],
            avg_entry_price=r["avg_entry_price"],
            realised_pnl=r["realised_pnl"],
            fees=r["fees"],
            trade_id=r["trade_key"] if r["quantity"] != 0 else None,
            opened_ts=r["opened_at"] if r["quantity"] != 0 else None,
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class OpenRoundTrip:
    """The open trade of a position: its row's entry tag and time, and the fills it has so far."""

    trade_key: str
    symbol: str
    entry_tag: str | None
    entry_time: datetime | None
    fills: list[OrderPartiallyFilled]
    signal_time: datetime | None = None  # when the entry order was made (the strategy's signal bar)


def load_round_trip(engine: Engine, bot_instance_id: int, trade_key: str) -> OpenRoundTrip:
    """Return the trade `trade_key` with its fills, oldest first (a restart rebuilds the position)."""
    fills = (
        select(FILLS)
        .where(FILLS.c.bot_instance_id == bot_instance_id, FILLS.c.trade_key == trade_key)
        .order_by(FILLS.c.ts, FILLS.c.id)
    )
    trade = select(TRADES.c.entry_tag, TRADES.c.entry_time).where(
        TRADES.c.bot_instance_id == bot_instance_id, TRADES.c.trade_key == trade_key
    )
    entry = select(ORDERS.c.created_at).where(
        ORDERS.c.bot_instance_id == bot_instance_id, ORDERS.c.client_order_id == trade_key
    )
    with read_connection(engine) as conn:
        rows = [r._mapping for r in conn.execute(fills)]
        row = conn.execute(trade).first()
        signal = conn.execute(entry).scalar()
    told = [
        OrderPartiallyFilled(
            ts=r["ts"], client_order_id=ClientOrderId(r["client_order_id"]), symbol=r["symbol"],
            side=OrderSide(r["side"]), last_qty=r["quantity"], last_price=r["price"], fee=r["fee"],
            filled_qty=r["quantity"], remaining_qty=Decimal(0), avg_price=r["price"],
            trade_id=r["venue_trade_id"],
        )
        for r in rows
    ]
    symbol = rows[0]["symbol"] if rows else ""
    return OpenRoundTrip(trade_key, symbol, None if row is None else row[0], None if row is None else row[1], told,
                         signal)


def record_reconciliation(
    engine: Engine,
    bot_instance_id: int,
    *,
    ts: datetime,
    reason: str,
    symbol: str | None = None,
    client_order_id: str | None = None,
    details: Mapping[str, Any] | None = None,
    order_status: OrderStatus | None = None,
    position: Position | None = None,
) -> bool:
    """Record one correction found by reconciliation, and apply it, in one transaction.

    Appends an ``order_events`` row of kind ``reconciliation`` (`reason` is an UPPER_SNAKE
    code, `details` what the database and the broker said). With `order_status`, the order
    `client_order_id` is set to it; with `position`, the symbol's position is overwritten
    (the broker's view wins). Return False if this very correction was recorded before.
    """
    payload: dict[str, Any] = {
        "type": "Reconciliation",
        "ts": ts.isoformat(),
        "reason": reason,
        "symbol": symbol,
        "client_order_id": client_order_id,
        "details": dict(details or {}),
        "order_status": None if order_status is None else order_status.value,
        "position": None if position is None else _position_json(position),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    key = hashlib.sha256(text.encode()).hexdigest()
    payload = json.loads(text)
    with engine.begin() as conn:
        batch = AuditBatch(conn, bot_instance_id)
        event_id = batch.append_event(
            event_type="Reconciliation",
            ts=ts,
            key=key,
            kind="reconciliation",
            status=None if order_status is None else order_status.value,
            client_order_id=client_order_id,
            symbol=symbol,
            payload=payload,
        )
        if event_id is None:
            return False
        if order_status is not None and client_order_id is not None:
            order = batch.order(client_order_id)
            if order is not None:
                batch.update_order(
                    order, ts, status=order_status.value, status_reason=f"reconciled: {reason}"
                )
        if position is not None:
            _overwrite_position(batch, position, ts)
        batch.finish()
    return True


def _position_json(p: Position) -> dict[str, Any]:
    return {
        "symbol": p.symbol,
        "quantity": str(p.quantity),
        "avg_entry_price": None if p.avg_entry_price is None else str(p.avg_entry_price),
        "realised_pnl": str(p.realised_pnl),
        "fees": str(p.fees),
        "trade_id": p.trade_id,
    }


def _overwrite_position(batch: AuditBatch, p: Position, ts: datetime) -> None:
    row = batch.positions.row(p.symbol)
    values = {
        "side": side_of(p.quantity),
        "quantity": p.quantity,
        "avg_entry_price": p.avg_entry_price if p.quantity != 0 else None,
        "realised_pnl": p.realised_pnl,
        "fees": p.fees,
        "trade_key": p.trade_id if p.trade_id is not None else (row or {}).get("trade_key"),
        "opened_at": p.opened_ts if p.opened_ts is not None else (row or {}).get("opened_at"),
        "updated_at": ts,
    }
    batch.positions.save(p.symbol, row, values)
