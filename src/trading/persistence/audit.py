"""Write trading events to the audit tables: one transaction per batch, idempotent on replay.

`apply_events` turns each event into its record set (a fill: the order row, its
``order_events`` row, its ``fills`` row and the position; a trade close: the trade row) and
writes the whole batch in one transaction. Every order and risk event has a key, the SHA-256
of its JSON encoding, unique per bot instance: an event seen before is skipped, so replaying
a spool (or the same batch twice) adds nothing. Trade and bot events are idempotent by
construction (keyed by ``trade_key``, or plain updates).

The batch is applied in bulk (see `audit_rows`): the rows its events touch are read with a
query per table, changed in memory event by event, and written at the end with one
executemany per table, so a batch costs about a dozen statements whatever its length.

Optional attributes an event may carry (read with ``getattr``, so richer event types need
no change here): fills ``bid``, ``ask``, ``strategy_names``, ``strategy_weights``,
``correlation_id``, ``fee_currency`` (`OrderFill` has them all; a fill without attribution
gets the bot's strategy with weight 1; an order takes the ``fee_currency`` of its first fill
that names one); trade closes ``exit_reason``, ``entry_tag``, ``strategy``.

Those fill details are annotations, not part of the fill's identity: the idempotency key
leaves them out (`FILL_ANNOTATIONS`), so the same fill seen once with a quote and once
without, or stamped by two runs with their own correlation ids (a restarted paper bot
re-running its bars), is one record; and the keys of events written before the details
existed do not change.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
from trading.persistence.audit_rows import BatchRows, WriteRace, order_role
from trading.persistence.bots import record_bot_event
from trading.persistence.columns import json_safe
from trading.persistence.models import BotInstance, OrderEventRecord, RiskEventRecord, table
from trading.persistence.position_book import PositionBook
from trading.persistence.risk_log import record_risk_event
from trading.persistence.round_trips import TradeBook, close_trade, open_trade
from trading.persistence.sql import fetch, select_in, update_by_id

log = logging.getLogger(__name__)

BOTS = table(BotInstance)
EVENTS = table(OrderEventRecord)
RISK = table(RiskEventRecord)

FILL_EXTRAS = ("bid", "ask", "strategy_names", "strategy_weights", "correlation_id")
#: Payload fields the idempotency key leaves out (see the module docstring).
FILL_ANNOTATIONS = frozenset((*FILL_EXTRAS, "fee_currency"))
_BOT_FOR_UPDATE = select(BOTS).where(BOTS.c.id == bindparam("bot")).with_for_update()
_KNOWN_KEYS = (
    select(EVENTS.c.event_key)
    .where(
        EVENTS.c.bot_instance_id == bindparam("bot"),
        EVENTS.c.event_key.in_(bindparam("keys", expanding=True)),
    )
    .union_all(
        select(RISK.c.event_key).where(
            RISK.c.bot_instance_id == bindparam("bot"),
            RISK.c.event_key.in_(bindparam("keys", expanding=True)),
        )
    )
)
#: Times a batch is applied again after losing a race for a fill's venue trade id.
_RACE_RETRIES = 3


def event_key(event: Event) -> str:
    """Return the idempotency key of an event: SHA-256 of its canonical JSON encoding."""
    return _key_of(event_payload(event))


def _key_of(payload: dict[str, Any]) -> str:
    identity = {k: v for k, v in payload.items() if k not in FILL_ANNOTATIONS}
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def apply_events(engine: Engine, events: Sequence[Event], bot_instance_id: int) -> None:
    """Record `events` of one bot instance in one transaction; events seen before are skipped.

    Raise `DatabaseError` if the bot instance does not exist; any database error rolls the
    whole batch back (nothing half-written), so the caller can retry or spool it as is.
    """
    if not events:
        return
    for attempt in range(_RACE_RETRIES + 1):
        try:
            with engine.begin() as conn:
                AuditBatch(conn, bot_instance_id).apply(events)
            return
        except WriteRace:
            if attempt == _RACE_RETRIES:
                raise
            log.info("audit batch of %d events raced another writer: applied again", len(events))


def event_payload(event: Event) -> dict[str, Any]:
    """Return the event's JSON (the bus codec; extra fields of richer events made JSON-safe)."""
    return json_safe(encode_event(event))  # type: ignore[no-any-return]


def _now() -> datetime:
    return datetime.now(UTC)


class AuditBatch:
    """Apply events on one connection inside the caller's transaction (see `apply_events`).

    Handlers change rows in memory; `finish` writes them (call it once, before the commit).
    """

    def __init__(self, conn: Connection, bot_instance_id: int) -> None:
        self.conn = conn
        found = fetch(conn, _BOT_FOR_UPDATE, {"bot": bot_instance_id})
        if not found:
            raise DatabaseError(
                f"no bot instance with id {bot_instance_id}: call register_bot_instance first"
            )
        self.bot = bot = found[0]
        self.bot_id = bot_instance_id
        self.venue: str = bot.exchange or bot.mode
        self.seq = self._start_seq = int(bot.last_seq)
        self.rows = BatchRows(conn, bot_instance_id)
        self.trades = TradeBook(conn, bot_instance_id)
        self.positions = PositionBook(conn, bot_instance_id, self.trades, self.rows.relink)
        self._keys: set[str] = set()  # keys classified: known before, or appended since
        self._payloads: dict[int, dict[str, Any]] = {}

    # ------------------------------------------------------------------ driver
    def apply(self, events: Iterable[Event]) -> None:
        fresh: list[tuple[str, Event]] = []
        payloads = [(event_payload(e), e) for e in events]
        keyed = [(_key_of(p), p, e) for p, e in payloads]
        seen = self._known_keys({k for k, _, _ in keyed})
        for key, payload, event in keyed:
            if key not in seen:
                seen.add(key)
                fresh.append((key, event))
                self._payloads[id(event)] = payload
        self._read_ahead([e for _, e in fresh])
        for key, event in fresh:
            handler = _handler(event)
            if handler is None:
                log.debug("no audit record for %s", type(event).__name__)
                continue
            handler(self, event, key)
        self.finish()

    def _read_ahead(self, events: Sequence[Event]) -> None:
        """Read what `events` will need: one query per table instead of one per event."""
        fills = [e for e in events if isinstance(e, OrderFill)]
        trades = [e for e in events if isinstance(e, TradeOpened | TradeClosed)]
        self.rows.load_orders(str(e.client_order_id) for e in events if isinstance(e, OrderEvent))
        self.positions.symbols.update(
            e.symbol for e in events if isinstance(e, OrderEvent | TradeOpened | TradeClosed)
        )
        if fills or trades:
            self.trades.load(
                symbols={e.symbol for e in [*fills, *trades]}, keys={e.trade_id for e in trades}
            )
        if fills:
            self.rows.load_trade_ids(self.venue, (e.trade_id for e in fills))

    def finish(self) -> None:
        """Write the batch's rows and the bot's last sequence number (once, before the commit)."""
        self.rows.flush()
        self.positions.flush()
        self.trades.flush()
        if self.seq != self._start_seq:
            update_by_id(self.conn, BOTS, self.bot_id, {"last_seq": self.seq})
            self._start_seq = self.seq

    def _known_keys(self, keys: set[str]) -> set[str]:
        self._keys |= keys
        return {r[0] for r in select_in(self.conn, _KNOWN_KEYS, keys, bot=self.bot_id)}

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    # ------------------------------------------------------------------ order rows
    def order(self, cid: str) -> dict[str, Any] | None:
        """Return the order row (read once per batch), or None if it was never submitted."""
        return self.rows.order(cid)

    def update_order(self, order: dict[str, Any], ts: datetime, **values: Any) -> None:
        values["updated_at"] = max(ts, order["updated_at"])
        order.update(values)
        self.rows.changed(order["client_order_id"], values)

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
        """Append the `order_events` row of `event`; return its seq, or None if already there."""
        payload = self._payloads.pop(id(event), None)
        return self.append_event(
            event_type=type(event).__name__,
            ts=event.ts,
            key=key,
            kind=kind,
            status=status,
            client_order_id=client_order_id,
            symbol=symbol,
            payload=event_payload(event) if payload is None else payload,
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
        """Append one `order_events` row with the next sequence number (None: key known).

        Return the row's seq; the row is written by `finish`.
        """
        if key not in self._keys and self._known_keys({key}):
            return None
        self._keys.add(key)
        seq = self.next_seq()
        self.rows.events.append(
            {
                "bot_instance_id": self.bot_id,
                "seq": seq,
                "event_key": key,
                "client_order_id": client_order_id,
                "symbol": symbol,
                "event_type": event_type,
                "kind": kind,
                "status": status,
                "ts": ts,
                "recorded_at": _now(),
                "payload": payload,
            }
        )
        return seq

    # ------------------------------------------------------------------ handlers
    def on_submitted(self, e: OrderSubmitted, key: str) -> None:
        cid = str(e.client_order_id)
        order = self.order(cid)
        if order is None:
            role = order_role(e.tag, cid)
            if role is None:
                role = "exit" if self.positions.reduces(e.symbol, e.side) else "entry"
            order = self.rows.add_order(
                {
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
            )
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
        if (
            self.log_event(e, key, kind=kind, status=status, client_order_id=cid, symbol=e.symbol)
            is None
        ):
            return
        if self.rows.fill_recorded(self.venue, e.trade_id):
            # the venue reported this execution before, under another event
            log.info("fill %s of %s already recorded", e.trade_id, cid)
            return
        fill = {
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
            "venue": self.venue,
            "venue_trade_id": e.trade_id,
            **{name: getattr(e, name, None) for name in FILL_EXTRAS},
        }
        names: Any = fill["strategy_names"]
        weights: Any = fill["strategy_weights"]
        if not names and self.bot.strategy:
            fill["strategy_names"] = [self.bot.strategy]
            fill["strategy_weights"] = {self.bot.strategy: "1"}
        elif names:
            fill["strategy_names"] = list(names)
            if isinstance(weights, dict):
                fill["strategy_weights"] = {k: str(v) for k, v in weights.items()}
            elif weights is not None:  # parallel to the names (OrderFill)
                fill["strategy_weights"] = {n: str(w) for n, w in zip(names, weights, strict=True)}
        trade_key = self.positions.apply_fill(e, cid)
        self.rows.add_fill(key, {**fill, "trade_key": trade_key})
        if order is None:
            log.warning("fill for order %s that was never submitted", cid)
            return
        values: dict[str, Any] = {
            "status": status,
            "avg_fill_price": e.avg_price,
            "fee": order["fee"] + e.fee,
        }
        if fill["fee_currency"] and not order["fee_currency"]:
            values["fee_currency"] = fill["fee_currency"]  # the order's fees are in its fills' currency
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
