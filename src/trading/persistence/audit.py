"""Write trading events to the audit tables: one transaction per batch, idempotent on replay.

`apply_events` turns each event into its record set (a fill: the order row, its
``order_events`` row, its ``fills`` row and the position; a trade close: the trade row) and
writes the whole batch in one transaction. Every order and risk event has a key, the SHA-256
of its JSON encoding, unique per bot instance: an event seen before is skipped, so replaying
a spool (or the same batch twice) adds nothing. Trade and bot events are idempotent by
construction (keyed by ``trade_key``, or plain updates).

Optional attributes an event may carry (read with ``getattr``, so richer event types need
no change here): fills ``bid``, ``ask``, ``strategy_names``, ``strategy_weights``,
``correlation_id``, ``fee_currency``; trade closes ``exit_reason``, ``entry_tag``, ``strategy``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection, Engine

from trading.events import (
    BotStarted,
    BotStopped,
    Event,
    Halted,
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderExpired,
    OrderFill,
    OrderFilled,
    OrderModified,
    OrderPendingCancel,
    OrderRejected,
    OrderSubmitted,
    Resumed,
    RiskDenied,
    RiskWarning,
    TradeClosed,
    TradeOpened,
    encode_event,
)
from trading.exceptions import DatabaseError
from trading.orders import TRANSITIONS, OrderSide, OrderStatus
from trading.persistence.bots import record_bot_event
from trading.persistence.columns import json_safe
from trading.persistence.models import (
    BotInstance,
    FillRecord,
    OrderEventRecord,
    OrderRecord,
    RiskEventRecord,
    table,
)
from trading.persistence.position_book import PositionBook
from trading.persistence.risk_log import record_risk_event
from trading.persistence.round_trips import close_trade, open_trade
from trading.persistence.sql import insert_ignore, update_by_id

log = logging.getLogger(__name__)

BOTS = table(BotInstance)
ORDERS = table(OrderRecord)
EVENTS = table(OrderEventRecord)
FILLS = table(FillRecord)
RISK = table(RiskEventRecord)

FILL_EXTRAS = ("bid", "ask", "strategy_names", "strategy_weights", "correlation_id")
_ROLES = {
    "entry": "entry",
    "exit": "exit",
    "sl": "stop_loss",
    "stop": "stop_loss",
    "stop_loss": "stop_loss",
    "tp": "take_profit",
    "take_profit": "take_profit",
}
_BOT_FOR_UPDATE = select(BOTS).where(BOTS.c.id == bindparam("bot")).with_for_update()
_ORDER_BY_CID = select(ORDERS).where(
    ORDERS.c.bot_instance_id == bindparam("bot"), ORDERS.c.client_order_id == bindparam("cid")
)
_CID_LEG = re.compile(r"^atf-[0-9a-f]{16}-([a-z0-9]{1,8})-\d{1,2}$")
_KEY_CHUNK = 500


def event_key(event: Event) -> str:
    """Return the idempotency key of an event: SHA-256 of its canonical JSON encoding."""
    text = json.dumps(event_payload(event), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def apply_events(engine: Engine, events: Sequence[Event], bot_instance_id: int) -> None:
    """Record `events` of one bot instance in one transaction; events seen before are skipped.

    Raise `DatabaseError` if the bot instance does not exist; any database error rolls the
    whole batch back (nothing half-written), so the caller can retry or spool it as is.
    """
    if not events:
        return
    with engine.begin() as conn:
        AuditBatch(conn, bot_instance_id).apply(events)


def event_payload(event: Event) -> dict[str, Any]:
    """Return the event's JSON (the bus codec; extra fields of richer events made JSON-safe)."""
    return json_safe(encode_event(event))  # type: ignore[no-any-return]


def _now() -> datetime:
    return datetime.now(UTC)


def order_role(tag: str | None, client_order_id: str) -> str | None:
    """Return entry / exit / stop_loss / take_profit from the order's tag or id leg, or None."""
    role = _ROLES.get((tag or "").strip().lower())
    if role is None:
        leg = _CID_LEG.match(client_order_id)
        role = _ROLES.get(leg.group(1)) if leg else None
    return role


class AuditBatch:
    """Apply events on one connection inside the caller's transaction (see `apply_events`)."""

    def __init__(self, conn: Connection, bot_instance_id: int) -> None:
        self.conn = conn
        bot = conn.execute(_BOT_FOR_UPDATE, {"bot": bot_instance_id}).one_or_none()
        if bot is None:
            raise DatabaseError(
                f"no bot instance with id {bot_instance_id}: call register_bot_instance first"
            )
        self.bot = bot
        self.bot_id = bot_instance_id
        self.seq = self._start_seq = int(bot.last_seq)
        self.positions = PositionBook(conn, bot_instance_id)
        self._orders: dict[str, dict[str, Any] | None] = {}

    # ------------------------------------------------------------------ driver
    def apply(self, events: Iterable[Event]) -> None:
        keyed = [(event_key(e), e) for e in events]
        seen = self._known_keys({k for k, _ in keyed})
        for key, event in keyed:
            if key in seen:
                continue
            seen.add(key)
            handler = _handler(event)
            if handler is None:
                log.debug("no audit record for %s", type(event).__name__)
                continue
            handler(self, event, key)
        self.finish()

    def finish(self) -> None:
        """Store the bot's last sequence number (call once, before the transaction commits)."""
        if self.seq != self._start_seq:
            update_by_id(self.conn, BOTS, self.bot_id, {"last_seq": self.seq})
            self._start_seq = self.seq

    def _known_keys(self, keys: set[str]) -> set[str]:
        known: set[str] = set()
        ordered = sorted(keys)
        for log_table in (EVENTS, RISK):
            for i in range(0, len(ordered), _KEY_CHUNK):
                chunk = ordered[i : i + _KEY_CHUNK]
                rows = self.conn.execute(
                    select(log_table.c.event_key).where(
                        log_table.c.bot_instance_id == self.bot_id, log_table.c.event_key.in_(chunk)
                    )
                )
                known.update(r[0] for r in rows)
        return known

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    # ------------------------------------------------------------------ order rows
    def order(self, cid: str) -> dict[str, Any] | None:
        """Return the order row (cached for the batch), or None if it was never submitted."""
        if cid not in self._orders:
            row = self.conn.execute(_ORDER_BY_CID, {"bot": self.bot_id, "cid": cid}).one_or_none()
            self._orders[cid] = None if row is None else dict(row._mapping)
        return self._orders[cid]

    def update_order(self, order: dict[str, Any], ts: datetime, **values: Any) -> None:
        values["updated_at"] = max(ts, order["updated_at"])
        update_by_id(self.conn, ORDERS, order["id"], values)
        order.update(values)

    def _advance(self, order: dict[str, Any] | None, target: OrderStatus) -> str:
        """Return the status after `target`; an edge the lifecycle lacks keeps the current one."""
        if order is None:
            return target.value
        current = OrderStatus(order["status"])
        if target is current or target in TRANSITIONS[current]:
            return target.value
        log.info(
            "order %s stays %s (got %s)", order["client_order_id"], current.value, target.value
        )
        return current.value

    def _kind(self, order: dict[str, Any] | None, event: OrderEvent, side: OrderSide | None) -> str:
        if order is not None and order["role"]:
            return str(order["role"])
        role = order_role(None, str(event.client_order_id))
        if role is None and side is not None:
            role = "exit" if self.positions.reduces(event.symbol, side) else "entry"
        return role or "entry"

    def log_event(
        self,
        event: Event,
        key: str,
        *,
        kind: str,
        status: str | None,
        client_order_id: str | None,
        symbol: str | None,
    ) -> int | None:
        """Append the `order_events` row of `event`; return its id, or None if already there."""
        return self.append_event(
            event_type=type(event).__name__,
            ts=event.ts,
            key=key,
            kind=kind,
            status=status,
            client_order_id=client_order_id,
            symbol=symbol,
            payload=event_payload(event),
        )

    def append_event(
        self,
        *,
        event_type: str,
        ts: datetime,
        key: str,
        kind: str,
        status: str | None,
        client_order_id: str | None,
        symbol: str | None,
        payload: dict[str, Any],
    ) -> int | None:
        """Append one `order_events` row with the next sequence number (None: key known)."""
        return insert_ignore(
            self.conn,
            EVENTS,
            {
                "bot_instance_id": self.bot_id,
                "seq": self.next_seq(),
                "event_key": key,
                "client_order_id": client_order_id,
                "symbol": symbol,
                "event_type": event_type,
                "kind": kind,
                "status": status,
                "ts": ts,
                "recorded_at": _now(),
                "payload": payload,
            },
            ("bot_instance_id", "event_key"),
        )

    # ------------------------------------------------------------------ handlers
    def on_submitted(self, e: OrderSubmitted, key: str) -> None:
        cid = str(e.client_order_id)
        order = self.order(cid)
        if order is None:
            role = order_role(e.tag, cid)
            if role is None:
                role = "exit" if self.positions.reduces(e.symbol, e.side) else "entry"
            values = {
                "bot_instance_id": self.bot_id,
                "client_order_id": cid,
                "exchange": self.bot.exchange,
                "symbol": e.symbol,
                "order_type": e.order_type.value,
                "side": e.side.value,
                "role": role,
                "quantity": e.quantity,
                "price": e.price,
                "stop_price": e.stop_price,
                "status": OrderStatus.NEW.value,
                "filled_qty": Decimal(0),
                "remaining_qty": e.quantity,
                "fee": Decimal(0),
                "parent_client_order_id": None if e.parent_id is None else str(e.parent_id),
                "oco_client_order_id": None if e.oco_id is None else str(e.oco_id),
                "tag": e.tag or None,
                "strategy": getattr(e, "strategy", None) or self.bot.strategy,
                "created_at": e.ts,
                "updated_at": e.ts,
            }
            insert_ignore(self.conn, ORDERS, values, ("bot_instance_id", "client_order_id"))
            self._orders.pop(cid, None)
            order = self.order(cid)
        assert order is not None
        self.log_event(
            e,
            key,
            kind=order["role"] or "entry",
            status=order["status"],
            client_order_id=cid,
            symbol=e.symbol,
        )

    def _on_status(
        self, e: OrderEvent, key: str, target: OrderStatus, kind: str | None, **values: Any
    ) -> None:
        cid = str(e.client_order_id)
        order = self.order(cid)
        status = self._advance(order, target)
        event_id = self.log_event(
            e,
            key,
            kind=kind or self._kind(order, e, None),
            status=status,
            client_order_id=cid,
            symbol=e.symbol,
        )
        if event_id is None:
            return
        if order is None:
            log.warning("%s for order %s that was never submitted", type(e).__name__, cid)
            return
        filled = values.pop("filled_qty", None)
        if filled is not None and filled > order["filled_qty"]:
            values["filled_qty"] = filled
            values["remaining_qty"] = max(order["quantity"] - filled, Decimal(0))
        self.update_order(order, e.ts, status=status, **values)

    def on_accepted(self, e: OrderAccepted, key: str) -> None:
        extra = {"venue_order_id": e.venue_order_id} if e.venue_order_id else {}
        self._on_status(e, key, OrderStatus.ACCEPTED, None, **extra)

    def on_pending_cancel(self, e: OrderPendingCancel, key: str) -> None:
        self._on_status(
            e, key, OrderStatus.PENDING_CANCEL, "cancel", status_reason=e.reason or None
        )

    def on_cancelled(self, e: OrderCancelled, key: str) -> None:
        self._on_status(
            e,
            key,
            OrderStatus.CANCELLED,
            "cancel",
            status_reason=e.reason or None,
            filled_qty=e.filled_qty,
        )

    def on_expired(self, e: OrderExpired, key: str) -> None:
        self._on_status(e, key, OrderStatus.EXPIRED, "cancel", filled_qty=e.filled_qty)

    def on_rejected(self, e: OrderRejected, key: str) -> None:
        self._on_status(e, key, OrderStatus.REJECTED, "failed", status_reason=e.reason)

    def on_modified(self, e: OrderModified, key: str) -> None:
        cid = str(e.client_order_id)
        order = self.order(cid)
        status = None if order is None else order["status"]
        if (
            self.log_event(
                e, key, kind="modify", status=status, client_order_id=cid, symbol=e.symbol
            )
            is None
            or order is None
        ):
            return
        self.update_order(
            order,
            e.ts,
            quantity=e.quantity,
            price=e.price,
            stop_price=e.stop_price,
            remaining_qty=max(e.quantity - order["filled_qty"], Decimal(0)),
        )

    def on_fill(self, e: OrderFill, key: str) -> None:
        cid = str(e.client_order_id)
        order = self.order(cid)
        target = OrderStatus.FILLED if isinstance(e, OrderFilled) else OrderStatus.PARTIALLY_FILLED
        status = self._advance(order, target)
        kind = self._kind(order, e, e.side)
        event_id = self.log_event(
            e, key, kind=kind, status=status, client_order_id=cid, symbol=e.symbol
        )
        if event_id is None:
            return
        venue = self.bot.exchange or self.bot.mode
        fill = {
            "order_event_id": event_id,
            "bot_instance_id": self.bot_id,
            "client_order_id": cid,
            "symbol": e.symbol,
            "side": e.side.value,
            "quantity": e.last_qty,
            "price": e.last_price,
            "fee": e.fee,
            "fee_currency": getattr(e, "fee_currency", None),
            "ts": e.ts,
            "order_type": None if order is None else order["order_type"],
            "venue": venue,
            "venue_trade_id": e.trade_id,
            **{name: getattr(e, name, None) for name in FILL_EXTRAS},
        }
        if fill["strategy_names"] is None and self.bot.strategy:
            fill["strategy_names"] = [self.bot.strategy]
            fill["strategy_weights"] = {self.bot.strategy: "1"}
        elif isinstance(fill["strategy_weights"], dict):
            fill["strategy_weights"] = {k: str(v) for k, v in fill["strategy_weights"].items()}
        fill_id = insert_ignore(self.conn, FILLS, fill, ("venue", "venue_trade_id"))
        if fill_id is None:  # the venue reported this execution before, under another event
            log.info("fill %s of %s already recorded", e.trade_id, cid)
            return
        trade_key = self.positions.apply_fill(e, cid)
        update_by_id(self.conn, FILLS, fill_id, {"trade_key": trade_key})
        if order is None:
            log.warning("fill for order %s that was never submitted", cid)
            return
        values: dict[str, Any] = {
            "status": status,
            "avg_fill_price": e.avg_price,
            "fee": order["fee"] + e.fee,
        }
        if e.filled_qty >= order["filled_qty"]:
            values["filled_qty"] = e.filled_qty
            values["remaining_qty"] = e.remaining_qty
        if order["trade_key"] is None:
            values["trade_key"] = trade_key
        self.update_order(order, e.ts, **values)

    def on_trade_opened(self, e: TradeOpened, _key: str) -> None:
        open_trade(self, e)

    def on_trade_closed(self, e: TradeClosed, _key: str) -> None:
        close_trade(self, e)


_HANDLERS: dict[type[Event], Callable[[AuditBatch, Any, str], None]] = {
    OrderSubmitted: AuditBatch.on_submitted,
    OrderAccepted: AuditBatch.on_accepted,
    OrderFill: AuditBatch.on_fill,
    OrderPendingCancel: AuditBatch.on_pending_cancel,
    OrderCancelled: AuditBatch.on_cancelled,
    OrderExpired: AuditBatch.on_expired,
    OrderModified: AuditBatch.on_modified,
    OrderRejected: AuditBatch.on_rejected,
    TradeOpened: AuditBatch.on_trade_opened,
    TradeClosed: AuditBatch.on_trade_closed,
    RiskDenied: record_risk_event,
    RiskWarning: record_risk_event,
    Halted: record_risk_event,
    Resumed: record_risk_event,
    BotStarted: lambda batch, e, _key: record_bot_event(batch.conn, batch.bot_id, e),
    BotStopped: lambda batch, e, _key: record_bot_event(batch.conn, batch.bot_id, e),
}


def _handler(event: Event) -> Callable[[AuditBatch, Any, str], None] | None:
    for cls in type(event).__mro__:
        found = _HANDLERS.get(cls)
        if found is not None:
            return found
    return None
