"""Paper and live round trips in `trades`: inserted open on TradeOpened, closed on TradeClosed."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select

from trading.events import TradeClosed, TradeOpened
from trading.persistence.models import FillRecord, OrderRecord, Trade, table
from trading.persistence.sql import insert_ignore, update_by_id

if TYPE_CHECKING:
    from trading.persistence.audit import AuditBatch

TRADES = table(Trade)
FILLS = table(FillRecord)
ORDERS = table(OrderRecord)

#: exit_reason of a trade closed by an order of this role (when the event does not say).
EXIT_REASONS = {
    "stop_loss": "stop_loss",
    "take_profit": "take_profit",
    "exit": "exit_signal",
    "entry": "reversal",
}
_KEY = ("bot_instance_id", "trade_key")
_TRADE_BY_KEY = select(TRADES.c.id, TRADES.c.status).where(
    TRADES.c.bot_instance_id == bindparam("bot"), TRADES.c.trade_key == bindparam("key")
)
_LAST_FILL_ROLE = (
    select(ORDERS.c.role)
    .select_from(FILLS)
    .join(
        ORDERS,
        (ORDERS.c.bot_instance_id == FILLS.c.bot_instance_id)
        & (ORDERS.c.client_order_id == FILLS.c.client_order_id),
    )
    .where(
        FILLS.c.bot_instance_id == bindparam("bot"),
        FILLS.c.symbol == bindparam("symbol"),
        FILLS.c.ts <= bindparam("ts", type_=FILLS.c.ts.type),
    )
    .order_by(FILLS.c.ts.desc(), FILLS.c.id.desc())
    .limit(1)
)


def open_trade(batch: AuditBatch, e: TradeOpened) -> None:
    """Insert the open trade (a replay finds it there) and name the position's round trip."""
    insert_ignore(
        batch.conn,
        TRADES,
        {
            "trade_type": batch.bot.mode,
            "bot_name": batch.bot.name,
            "bot_instance_id": batch.bot_id,
            "trade_key": e.trade_id,
            "symbol": e.symbol,
            "side": e.side.value,
            "entry_time": e.ts,
            "entry_price": e.entry_price,
            "quantity": e.quantity,
            "fees": 0,
            "status": "open",
            "entry_tag": getattr(e, "entry_tag", None),
            "strategy": getattr(e, "strategy", None) or batch.bot.strategy,
        },
        _KEY,
    )
    batch.positions.adopt_trade_key(e.symbol, e.trade_id, e.ts)


def close_trade(batch: AuditBatch, e: TradeClosed) -> None:
    """Close the open trade `e.trade_id` (or insert it closed); a closed one is left alone."""
    row = batch.conn.execute(_TRADE_BY_KEY, {"bot": batch.bot_id, "key": e.trade_id}).one_or_none()
    if row is not None and row.status == "closed":
        return
    pnl = e.realised_pnl - e.fees
    basis = e.entry_price * e.quantity
    values: dict[str, Any] = {
        "status": "closed",
        "exit_time": e.ts,
        "exit_price": e.exit_price,
        "entry_price": e.entry_price,
        "quantity": e.quantity,
        "gross_pnl": e.realised_pnl,
        "fees": e.fees,
        "pnl": pnl,
        "pnl_pct": float(pnl / basis * 100) if basis else None,
        "exit_reason": getattr(e, "exit_reason", None) or _exit_reason(batch, e),
    }
    for name in ("entry_tag", "strategy"):
        if getattr(e, name, None):
            values[name] = getattr(e, name)
    if row is not None:
        update_by_id(batch.conn, TRADES, row.id, values)
        return
    entry_time: datetime = batch.positions.opened_at(e.symbol, e.trade_id) or e.ts
    values.setdefault("strategy", batch.bot.strategy)
    insert_ignore(
        batch.conn,
        TRADES,
        {
            "trade_type": batch.bot.mode,
            "bot_name": batch.bot.name,
            "bot_instance_id": batch.bot_id,
            "trade_key": e.trade_id,
            "symbol": e.symbol,
            "side": e.side.value,
            "entry_time": entry_time,
            **values,
        },
        _KEY,
    )


def _exit_reason(batch: AuditBatch, e: TradeClosed) -> str | None:
    """Name the exit by the role of the order whose fill last traded the symbol."""
    role = batch.conn.execute(
        _LAST_FILL_ROLE, {"bot": batch.bot_id, "symbol": e.symbol, "ts": e.ts}
    ).scalar()
    return EXIT_REASONS.get(role) if role else None
