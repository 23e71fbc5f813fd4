"""Equity snapshots: the account value of a bot over time, one row per bot and timestamp."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy.engine import Engine

from trading.persistence.models import EquitySnapshot, table
from trading.persistence.sql import insert_ignore

SNAPSHOTS = table(EquitySnapshot)


def record_equity_snapshot(
    engine: Engine,
    bot_instance_id: int,
    *,
    ts: datetime,
    equity: Decimal,
    cash: Decimal | None = None,
    unrealised_pnl: Decimal | None = None,
    realised_pnl: Decimal | None = None,
) -> bool:
    """Store the bot's equity at `ts`; return False if a snapshot at `ts` was already there."""
    with engine.begin() as conn:
        new_id = insert_ignore(
            conn,
            SNAPSHOTS,
            {
                "bot_instance_id": bot_instance_id,
                "ts": ts,
                "equity": equity,
                "cash": cash,
                "unrealised_pnl": unrealised_pnl,
                "realised_pnl": realised_pnl,
            },
            ("bot_instance_id", "ts"),
        )
    return new_id is not None
