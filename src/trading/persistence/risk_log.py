"""Risk events (denials, warnings, halts, resumes): append-only rows in the bot's sequence."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from trading.events import Event, RiskWarning
from trading.persistence.models import RiskEventRecord, table
from trading.persistence.sql import insert_ignore

if TYPE_CHECKING:
    from trading.persistence.audit import AuditBatch

RISK = table(RiskEventRecord)


def record_risk_event(batch: AuditBatch, e: Event, key: str) -> None:
    """Append the `risk_events` row of `e` (a replay with the same key adds nothing)."""
    from trading.persistence.audit import event_payload

    reason = getattr(e, "reason", None) or getattr(e, "control", None)
    detail = getattr(e, "detail", None)
    if isinstance(e, RiskWarning):
        detail = f"{e.value} of {e.limit} ({e.fraction})"
    cid = getattr(e, "client_order_id", None)
    insert_ignore(
        batch.conn,
        RISK,
        {
            "bot_instance_id": batch.bot_id,
            "seq": batch.next_seq(),
            "event_key": key,
            "event_type": type(e).__name__,
            "reason": reason,
            "symbol": getattr(e, "symbol", None),
            "client_order_id": None if cid is None else str(cid),
            "detail": detail or None,
            "ts": e.ts,
            "recorded_at": datetime.now(UTC),
            "payload": event_payload(e),
        },
        ("bot_instance_id", "event_key"),
    )
