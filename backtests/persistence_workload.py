"""The audit benchmark's workload (the events of realistic round trips, 14 per trade) and
its baseline writer (one raw executemany of prepared ``order_events`` rows per batch).

Kept apart from `bench_persistence` so that the benchmark can run the same workload against
an older checkout of ``src/`` (its before/after comparison imports this with that ``src``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import insert

from trading.events import (
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderModified,
    OrderPendingCancel,
    OrderSubmitted,
    TradeClosed,
    TradeOpened,
)
from trading.orders import ClientOrderId, OrderSide, OrderType
from trading.persistence import event_key
from trading.persistence.audit import event_payload
from trading.persistence.models import OrderEventRecord, table
from trading.persistence.writer import AuditWriter
from trading.positions import PositionSide

T0 = datetime(2024, 1, 1, tzinfo=UTC)
D = Decimal
EVENTS = table(OrderEventRecord)


def round_trip(n: int, symbol: str) -> list[Event]:
    """The 14 events of one long round trip (bracketed, stop moved twice, take profit hit)."""
    ts = T0 + timedelta(hours=n)

    def cid(leg: str) -> ClientOrderId:
        return ClientOrderId.for_signal("bench", symbol, ts, leg)

    qty, entry, tp, sl = D("0.123456789"), D("100.5"), D("104.25"), D("98.1")
    e, s, t = cid("entry"), cid("sl"), cid("tp")
    fill: dict[str, Any] = {
        "symbol": symbol,
        "fee": D("0.0124"),
        "remaining_qty": D(0),
        "filled_qty": qty,
    }
    return [
        OrderSubmitted(
            ts=ts,
            client_order_id=e,
            symbol=symbol,
            side=OrderSide.BUY,
            order_type=OrderType.MARKET,
            quantity=qty,
            tag="entry",
        ),
        OrderAccepted(ts=ts, client_order_id=e, symbol=symbol, venue_order_id=f"v{n}e"),
        OrderFilled(
            ts=ts,
            client_order_id=e,
            side=OrderSide.BUY,
            last_qty=qty,
            last_price=entry,
            avg_price=entry,
            trade_id=f"x{n}e",
            **fill,
        ),
        TradeOpened(
            ts=ts,
            trade_id=str(e),
            symbol=symbol,
            side=PositionSide.LONG,
            quantity=qty,
            entry_price=entry,
        ),
        OrderSubmitted(
            ts=ts,
            client_order_id=s,
            symbol=symbol,
            side=OrderSide.SELL,
            order_type=OrderType.STOP,
            quantity=qty,
            stop_price=sl,
            parent_id=e,
            oco_id=t,
        ),
        OrderAccepted(ts=ts, client_order_id=s, symbol=symbol, venue_order_id=f"v{n}s"),
        OrderSubmitted(
            ts=ts,
            client_order_id=t,
            symbol=symbol,
            side=OrderSide.SELL,
            order_type=OrderType.LIMIT,
            quantity=qty,
            price=tp,
            parent_id=e,
            oco_id=s,
        ),
        OrderAccepted(ts=ts, client_order_id=t, symbol=symbol, venue_order_id=f"v{n}t"),
        OrderModified(
            ts=ts + timedelta(minutes=10),
            client_order_id=s,
            symbol=symbol,
            quantity=qty,
            stop_price=sl + 1,
        ),
        OrderModified(
            ts=ts + timedelta(minutes=20),
            client_order_id=s,
            symbol=symbol,
            quantity=qty,
            stop_price=sl + 2,
        ),
        OrderFilled(
            ts=ts + timedelta(minutes=30),
            client_order_id=t,
            side=OrderSide.SELL,
            last_qty=qty,
            last_price=tp,
            avg_price=tp,
            trade_id=f"x{n}t",
            **fill,
        ),
        OrderPendingCancel(
            ts=ts + timedelta(minutes=30), client_order_id=s, symbol=symbol, reason="OCO"
        ),
        OrderCancelled(
            ts=ts + timedelta(minutes=30), client_order_id=s, symbol=symbol, reason="OCO"
        ),
        TradeClosed(
            ts=ts + timedelta(minutes=30),
            trade_id=str(e),
            symbol=symbol,
            side=PositionSide.LONG,
            quantity=qty,
            entry_price=entry,
            exit_price=tp,
            realised_pnl=qty * (tp - entry),
            fees=D("0.0248"),
        ),
    ]


def make_events(n: int, start: int = 0) -> list[Event]:
    out: list[Event] = []
    trip = start
    while len(out) < n:
        out += round_trip(trip, ("BTC/USDT", "ETH/USDT", "SOL/USDT")[trip % 3])
        trip += 1
    return out[:n]


class RawInsertWriter(AuditWriter):
    """The baseline: the same queue and thread, one executemany of prepared rows per batch."""

    rows: dict[int, dict[str, Any]]

    def _write(self, events: Sequence[Event]) -> None:
        rows = [self.rows[id(e)] for e in events if id(e) in self.rows]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(EVENTS), rows)
        checkpointer = getattr(self, "checkpointer", None)  # none in an older src/
        if checkpointer is not None:
            checkpointer.after_write()


def prepare_rows(events: Sequence[Event], bot: int) -> dict[int, dict[str, Any]]:
    now = datetime.now(UTC)
    return {
        id(e): {
            "bot_instance_id": bot,
            "seq": i + 1,
            "event_key": event_key(e),
            "client_order_id": str(getattr(e, "client_order_id", "")) or None,
            "symbol": getattr(e, "symbol", None),
            "event_type": type(e).__name__,
            "kind": "entry",
            "status": None,
            "ts": e.ts,
            "recorded_at": now,
            "payload": event_payload(e),
        }
        for i, e in enumerate(events)
    }
