"""Read the audit trail: orders, trades, fills and order events, filtered the same way.

Every list takes the same keyword filters (`bot` name, `symbol`, `strategy`, `since`
inclusive, `until` exclusive, `status`, `limit`) and returns rows oldest first; with `limit`
they are the newest `limit` rows. CLI, Telegram and the REST API should all read from here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, Table, and_, or_, select
from sqlalchemy.engine import Connection, Engine

from trading.persistence.db import read_connection
from trading.persistence.models import (
    ORDER_STATUSES,
    TRADE_STATUSES,
    TRADE_TYPES,
    BotInstance,
    FillRecord,
    OrderEventRecord,
    OrderRecord,
    Trade,
    table,
)
from trading.persistence.recovery import OPEN_STATUSES
from trading.persistence.sql import json_array_contains

BOTS = table(BotInstance)
ORDERS = table(OrderRecord)
TRADES = table(Trade)
FILLS = table(FillRecord)
EVENTS = table(OrderEventRecord)

#: `status` filter of orders: a status, or `open` (still working) / `done` (terminal).
ORDER_STATUS_FILTERS = (*ORDER_STATUSES, "open", "done")


@dataclass(frozen=True, slots=True)
class OrderView:
    id: int
    bot: str
    client_order_id: str
    venue_order_id: str | None
    symbol: str
    side: str
    order_type: str
    role: str | None
    quantity: Decimal
    price: Decimal | None
    stop_price: Decimal | None
    status: str
    filled_qty: Decimal
    remaining_qty: Decimal
    avg_fill_price: Decimal | None
    fee: Decimal
    fee_currency: str | None
    strategy: str | None
    tag: str | None
    trade_key: str | None
    status_reason: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class TradeView:
    id: int
    bot: str | None
    trade_type: str
    status: str
    symbol: str
    side: str
    strategy: str | None
    entry_tag: str | None
    entry_time: datetime
    exit_time: datetime | None
    entry_price: Decimal
    exit_price: Decimal | None
    quantity: Decimal
    gross_pnl: Decimal | None
    fees: Decimal
    pnl: Decimal | None
    pnl_pct: float | None
    exit_reason: str | None
    trade_key: str | None
    run_id: int | None


@dataclass(frozen=True, slots=True)
class FillView:
    id: int
    bot: str
    client_order_id: str
    symbol: str
    side: str
    quantity: Decimal
    price: Decimal
    bid: Decimal | None
    ask: Decimal | None
    fee: Decimal
    fee_currency: str | None
    ts: datetime
    order_type: str | None
    strategy_names: list[str] | None
    strategy_weights: dict[str, str] | None
    correlation_id: str | None
    venue: str | None
    venue_trade_id: str | None
    trade_key: str | None


@dataclass(frozen=True, slots=True)
class OrderEventView:
    seq: int
    bot: str
    client_order_id: str | None
    symbol: str | None
    event_type: str
    kind: str
    status: str | None
    ts: datetime
    payload: dict[str, Any]


V = TypeVar("V")


def _check(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        hint = difflib.get_close_matches(value, allowed, n=1)
        more = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}{more}")


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{name} must be timezone-aware, got {value.isoformat()}")


def _window(column: Any, since: datetime | None, until: datetime | None) -> ColumnElement[bool]:
    _aware("since", since)
    _aware("until", until)
    parts = []
    if since is not None:
        parts.append(column >= since)
    if until is not None:
        parts.append(column < until)
    return and_(True, *parts)


def _run(
    engine: Engine,
    query: Select[Any] | Callable[[Connection], Select[Any]],
    view: type[V],
    order: Sequence[Any],
    limit: int | None,
) -> list[V]:
    """Run `query` (or build it on the read connection), newest `limit` rows, oldest first."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be positive or None, got {limit}")
    names = [f.name for f in fields(view)]  # type: ignore[arg-type]
    with read_connection(engine) as conn:
        stmt = query if isinstance(query, Select) else query(conn)
        stmt = stmt.order_by(*(c.desc() for c in order))
        if limit is not None:
            stmt = stmt.limit(limit)
        rows = list(conn.execute(stmt))
    rows.reverse()
    return [view(**{n: r._mapping[n] for n in names}) for r in rows]


def _equal(*pairs: tuple[Any, Any]) -> list[ColumnElement[bool]]:
    """Return ``column == value`` for each (column, value) pair whose value is given."""
    return [column == value for column, value in pairs if value is not None]


def _with_bot(rows: Table) -> Select[Any]:
    """Select every column of `rows` and the name of its bot instance as ``bot``."""
    return select(rows, BOTS.c.name.label("bot")).join(BOTS, BOTS.c.id == rows.c.bot_instance_id)


def list_orders(
    engine: Engine,
    *,
    bot: str | None = None,
    symbol: str | None = None,
    strategy: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    status: str | None = None,
    limit: int | None = None,
) -> list[OrderView]:
    """Return orders created in [since, until); `status` may also be ``open`` or ``done``."""
    if status is not None:
        _check("status", status, ORDER_STATUS_FILTERS)
    conds = [
        _window(ORDERS.c.created_at, since, until),
        *_equal((BOTS.c.name, bot), (ORDERS.c.symbol, symbol), (ORDERS.c.strategy, strategy)),
    ]
    if status == "open":
        conds.append(ORDERS.c.status.in_(OPEN_STATUSES))
    elif status == "done":
        conds.append(ORDERS.c.status.not_in(OPEN_STATUSES))
    else:
        conds += _equal((ORDERS.c.status, status))
    stmt = _with_bot(ORDERS).where(*conds)
    return _run(engine, stmt, OrderView, (ORDERS.c.created_at, ORDERS.c.id), limit)


def list_trades(
    engine: Engine,
    *,
    bot: str | None = None,
    symbol: str | None = None,
    strategy: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    status: str | None = None,
    trade_type: str | None = None,
    limit: int | None = None,
) -> list[TradeView]:
    """Return round trips of every kind (backtest, paper, live).

    The window applies to the exit time of closed trades and the entry time of open ones.
    """
    if status is not None:
        _check("status", status, TRADE_STATUSES)
    if trade_type is not None:
        _check("trade_type", trade_type, TRADE_TYPES)
    conds = [
        or_(
            and_(TRADES.c.status == "closed", _window(TRADES.c.exit_time, since, until)),
            and_(TRADES.c.status == "open", _window(TRADES.c.entry_time, since, until)),
        ),
        *_equal(
            (TRADES.c.bot_name, bot),
            (TRADES.c.symbol, symbol),
            (TRADES.c.strategy, strategy),
            (TRADES.c.status, status),
            (TRADES.c.trade_type, trade_type),
        ),
    ]
    stmt = select(TRADES, TRADES.c.bot_name.label("bot")).where(*conds)
    return _run(engine, stmt, TradeView, (TRADES.c.entry_time, TRADES.c.id), limit)


def list_fills(
    engine: Engine,
    *,
    bot: str | None = None,
    symbol: str | None = None,
    strategy: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    correlation_id: str | None = None,
    limit: int | None = None,
) -> list[FillView]:
    """Return the trade ledger; `strategy` matches any strategy the fill is attributed to."""
    conds = [
        _window(FILLS.c.ts, since, until),
        *_equal(
            (BOTS.c.name, bot),
            (FILLS.c.symbol, symbol),
            (FILLS.c.correlation_id, correlation_id),
        ),
    ]

    def build(conn: Connection) -> Select[Any]:
        stmt = _with_bot(FILLS).where(*conds)
        if strategy is not None:  # how a JSON array is searched depends on the dialect
            stmt = stmt.where(json_array_contains(conn, FILLS.c.strategy_names, strategy))
        return stmt

    return _run(engine, build, FillView, (FILLS.c.ts, FILLS.c.id), limit)


def list_order_events(
    engine: Engine,
    *,
    bot: str | None = None,
    client_order_id: str | None = None,
    symbol: str | None = None,
    kind: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
) -> list[OrderEventView]:
    """Return the order event log in sequence order (one bot's `seq` is gap-free per run)."""
    conds = [
        _window(EVENTS.c.ts, since, until),
        *_equal(
            (BOTS.c.name, bot),
            (EVENTS.c.client_order_id, client_order_id),
            (EVENTS.c.symbol, symbol),
            (EVENTS.c.kind, kind),
        ),
    ]
    stmt = _with_bot(EVENTS).where(*conds)
    return _run(engine, stmt, OrderEventView, (EVENTS.c.ts, EVENTS.c.seq), limit)
