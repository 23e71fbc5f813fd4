"""ORM models of the atf database (schema changes go through Alembic migrations only).

Column types live in `columns`: money and quantities are `Money` (exact Decimal), times are
`UTCDateTime` (tz-aware UTC). Value lists (statuses, sides, kinds) are CHECK constraints;
the tuples below are their single source in Python, and the migrations spell them out.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from trading.persistence.columns import (
    MONEY_PRECISION,
    MONEY_SCALE,
    BigIntPK,
    JSONDoc,
    Money,
    UTCDateTime,
    finite_or_none,
    to_decimal,
)

__all__ = [
    "MONEY_PRECISION",
    "MONEY_SCALE",
    "BacktestRun",
    "Base",
    "BotInstance",
    "EquitySnapshot",
    "FillRecord",
    "Money",
    "OrderEventRecord",
    "OrderRecord",
    "PositionRecord",
    "RiskEventRecord",
    "Trade",
    "UTCDateTime",
    "finite_or_none",
    "to_decimal",
]

TRADE_TYPES = ("backtest", "paper", "live")
TRADE_STATUSES = ("open", "closed")
BOT_MODES = TRADE_TYPES
BOT_STATUSES = ("running", "stopped")
ORDER_SIDES = ("buy", "sell")
ORDER_TYPES = ("market", "limit", "stop", "stop_limit", "trailing_stop")
ORDER_STATUSES = (
    "new",
    "accepted",
    "partially_filled",
    "pending_cancel",
    "filled",
    "cancelled",
    "rejected",
    "expired",
)
ORDER_ROLES = ("entry", "exit", "stop_loss", "take_profit")
#: `order_events.kind`: the order's role for its lifecycle events, else what happened to it.
EVENT_KINDS = (*ORDER_ROLES, "cancel", "modify", "failed", "reconciliation")
POSITION_SIDES = ("flat", "long", "short")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def table(model: type[Base]) -> Table:
    """Return the Core `Table` of a model (typed: `Model.__table__` is a FromClause to mypy)."""
    return cast(Table, model.__table__)


def one_of(column: str, values: tuple[str, ...]) -> str:
    """Return the SQL of a CHECK that `column` is one of `values`."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention (batch migrations need names)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _bot_fk() -> Any:
    return ForeignKey("bot_instances.id")


class BacktestRun(Base):
    """One saved backtest: its summary numbers, metrics and resolved config."""

    __tablename__ = "backtest_runs"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    run_uuid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String, index=True)
    symbols: Mapped[list[str]] = mapped_column(JSONDoc)
    timeframe: Mapped[str] = mapped_column(String)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    data_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    data_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    bars: Mapped[int] = mapped_column(Integer)
    initial_cash: Mapped[Decimal] = mapped_column(Money)
    final_value: Mapped[Decimal] = mapped_column(Money)
    total_trades: Mapped[int] = mapped_column(Integer)
    total_pnl: Mapped[Decimal] = mapped_column(Money)
    win_rate: Mapped[float | None] = mapped_column(Float)
    sharpe_ratio: Mapped[float | None] = mapped_column(Float)
    max_drawdown_pct: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    config: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    report_path: Mapped[str | None] = mapped_column(String)

    trades: Mapped[list[Trade]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True
    )


class Trade(Base):
    """A round trip: a backtest trade (`run_id` set) or a paper/live trade (`bot_instance_id` set).

    Paper and live trades are inserted `open` when the position opens and closed in place;
    backtest trades are always `closed`. A closed trade has its exit time, exit price and pnl.
    """

    __tablename__ = "trades"
    __table_args__ = (
        CheckConstraint(one_of("trade_type", TRADE_TYPES), name="trade_type"),
        CheckConstraint(one_of("status", TRADE_STATUSES), name="status"),
        CheckConstraint(
            "status = 'open' OR (exit_time IS NOT NULL AND exit_price IS NOT NULL "
            "AND gross_pnl IS NOT NULL AND pnl IS NOT NULL)",
            name="closed_has_exit",
        ),
        UniqueConstraint("bot_instance_id", "trade_key"),
        Index("ix_trades_symbol_exit_time", "symbol", "exit_time"),
        Index("ix_trades_bot_name_entry_time", "bot_name", "entry_time"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("backtest_runs.id", ondelete="CASCADE"), index=True
    )
    trade_no: Mapped[int | None] = mapped_column(Integer)
    trade_type: Mapped[str] = mapped_column(String(16))
    bot_name: Mapped[str | None] = mapped_column(String)
    symbol: Mapped[str] = mapped_column(String)
    side: Mapped[str] = mapped_column(String)
    entry_time: Mapped[datetime] = mapped_column(UTCDateTime)
    exit_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    entry_price: Mapped[Decimal] = mapped_column(Money)
    exit_price: Mapped[Decimal | None] = mapped_column(Money)
    quantity: Mapped[Decimal] = mapped_column(Money)
    gross_pnl: Mapped[Decimal | None] = mapped_column(Money)
    fees: Mapped[Decimal] = mapped_column(Money)
    pnl: Mapped[Decimal | None] = mapped_column(Money)
    pnl_pct: Mapped[float | None] = mapped_column(Float)
    exit_reason: Mapped[str | None] = mapped_column(String)
    entry_tag: Mapped[str | None] = mapped_column(String)
    strategy: Mapped[str | None] = mapped_column(String, index=True)
    bars_held: Mapped[int | None] = mapped_column(Integer)
    mae_pct: Mapped[float | None] = mapped_column(Float)
    mfe_pct: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(8), server_default="closed")
    bot_instance_id: Mapped[int | None] = mapped_column(BigIntPK, _bot_fk(), index=True)
    trade_key: Mapped[str | None] = mapped_column(String(64))

    run: Mapped[BacktestRun | None] = relationship(back_populates="trades")


class BotInstance(Base):
    """One run of a paper or live bot; a restart that resumes keeps the row (and its records)."""

    __tablename__ = "bot_instances"
    __table_args__ = (
        CheckConstraint(one_of("mode", BOT_MODES), name="mode"),
        CheckConstraint(one_of("status", BOT_STATUSES), name="status"),
        Index("ix_bot_instances_name_mode", "name", "mode"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    mode: Mapped[str] = mapped_column(String(16))
    exchange: Mapped[str | None] = mapped_column(String(64))
    strategy: Mapped[str | None] = mapped_column(String)
    config_hash: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stop_reason: Mapped[str | None] = mapped_column(String)
    last_heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The last `seq` handed to an order or risk event of this bot.
    last_seq: Mapped[int] = mapped_column(BigInteger, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OrderRecord(Base):
    """The current state of one order; its history is in `order_events`."""

    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint(one_of("side", ORDER_SIDES), name="side"),
        CheckConstraint(one_of("order_type", ORDER_TYPES), name="order_type"),
        CheckConstraint(one_of("status", ORDER_STATUSES), name="status"),
        CheckConstraint(f"role IS NULL OR {one_of('role', ORDER_ROLES)}", name="role"),
        UniqueConstraint("bot_instance_id", "client_order_id"),
        Index("ix_orders_bot_instance_id_status", "bot_instance_id", "status"),
        Index("ix_orders_symbol_created_at", "symbol", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    bot_instance_id: Mapped[int] = mapped_column(BigIntPK, _bot_fk())
    client_order_id: Mapped[str] = mapped_column(String(36))
    venue_order_id: Mapped[str | None] = mapped_column(String(128), index=True)
    trade_key: Mapped[str | None] = mapped_column(String(64))
    exchange: Mapped[str | None] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(64))
    order_type: Mapped[str] = mapped_column(String(16))
    side: Mapped[str] = mapped_column(String(4))
    role: Mapped[str | None] = mapped_column(String(16))
    quantity: Mapped[Decimal] = mapped_column(Money)
    price: Mapped[Decimal | None] = mapped_column(Money)
    stop_price: Mapped[Decimal | None] = mapped_column(Money)
    status: Mapped[str] = mapped_column(String(20))
    filled_qty: Mapped[Decimal] = mapped_column(Money)
    remaining_qty: Mapped[Decimal] = mapped_column(Money)
    avg_fill_price: Mapped[Decimal | None] = mapped_column(Money)
    fee: Mapped[Decimal] = mapped_column(Money)
    fee_currency: Mapped[str | None] = mapped_column(String(16))
    parent_client_order_id: Mapped[str | None] = mapped_column(String(36))
    oco_client_order_id: Mapped[str | None] = mapped_column(String(36))
    tag: Mapped[str | None] = mapped_column(String(64))
    strategy: Mapped[str | None] = mapped_column(String, index=True)
    status_reason: Mapped[str | None] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OrderEventRecord(Base):
    """Append-only: one row per order event, never updated or deleted.

    `event_key` (SHA-256 of the event's JSON) makes a replayed event a no-op; `seq` orders
    the events of one bot (shared with `risk_events`). Orders are linked by client order id
    (not a foreign key) so that an event the broker reports for an order the database never
    saw submitted is still kept.
    """

    __tablename__ = "order_events"
    __table_args__ = (
        CheckConstraint(one_of("kind", EVENT_KINDS), name="kind"),
        UniqueConstraint("bot_instance_id", "event_key"),
        UniqueConstraint("bot_instance_id", "seq"),
        Index(
            "ix_order_events_bot_instance_id_client_order_id", "bot_instance_id", "client_order_id"
        ),
        Index("ix_order_events_ts", "ts"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    bot_instance_id: Mapped[int] = mapped_column(BigIntPK, _bot_fk())
    seq: Mapped[int] = mapped_column(BigInteger)
    event_key: Mapped[str] = mapped_column(String(64))
    client_order_id: Mapped[str | None] = mapped_column(String(36))
    symbol: Mapped[str | None] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str | None] = mapped_column(String(20))
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDoc)


class FillRecord(Base):
    """The trade ledger: one row per execution, written with its order event."""

    __tablename__ = "fills"
    __table_args__ = (
        CheckConstraint(one_of("side", ORDER_SIDES), name="side"),
        UniqueConstraint("venue", "venue_trade_id"),
        Index("ix_fills_bot_instance_id_ts", "bot_instance_id", "ts"),
        Index("ix_fills_symbol_ts", "symbol", "ts"),
        Index("ix_fills_bot_instance_id_client_order_id", "bot_instance_id", "client_order_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    order_event_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("order_events.id"), unique=True
    )
    bot_instance_id: Mapped[int] = mapped_column(BigIntPK, _bot_fk())
    client_order_id: Mapped[str] = mapped_column(String(36))
    trade_key: Mapped[str | None] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(64))
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[Decimal] = mapped_column(Money)
    price: Mapped[Decimal] = mapped_column(Money)
    bid: Mapped[Decimal | None] = mapped_column(Money)
    ask: Mapped[Decimal | None] = mapped_column(Money)
    fee: Mapped[Decimal] = mapped_column(Money)
    fee_currency: Mapped[str | None] = mapped_column(String(16))
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    order_type: Mapped[str | None] = mapped_column(String(16))
    strategy_names: Mapped[list[str] | None] = mapped_column(JSONDoc)
    strategy_weights: Mapped[dict[str, str] | None] = mapped_column(JSONDoc)
    correlation_id: Mapped[str | None] = mapped_column(String(64), index=True)
    venue: Mapped[str | None] = mapped_column(String(64))
    venue_trade_id: Mapped[str | None] = mapped_column(String(128))


class PositionRecord(Base):
    """The position of one bot in one symbol; `quantity` is signed (long > 0, short < 0)."""

    __tablename__ = "positions"
    __table_args__ = (
        CheckConstraint(one_of("side", POSITION_SIDES), name="side"),
        UniqueConstraint("bot_instance_id", "symbol"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    bot_instance_id: Mapped[int] = mapped_column(BigIntPK, _bot_fk())
    symbol: Mapped[str] = mapped_column(String(64))
    side: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[Decimal] = mapped_column(Money)
    avg_entry_price: Mapped[Decimal | None] = mapped_column(Money)
    realised_pnl: Mapped[Decimal] = mapped_column(Money)
    fees: Mapped[Decimal] = mapped_column(Money)
    trade_key: Mapped[str | None] = mapped_column(String(64))
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EquitySnapshot(Base):
    """The account value of one bot at one time (one row per bot and `ts`)."""

    __tablename__ = "equity_snapshots"
    __table_args__ = (UniqueConstraint("bot_instance_id", "ts"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    bot_instance_id: Mapped[int] = mapped_column(BigIntPK, _bot_fk())
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    equity: Mapped[Decimal] = mapped_column(Money)
    cash: Mapped[Decimal | None] = mapped_column(Money)
    unrealised_pnl: Mapped[Decimal | None] = mapped_column(Money)
    realised_pnl: Mapped[Decimal | None] = mapped_column(Money)


class RiskEventRecord(Base):
    """Append-only: risk denials, warnings, halts and resumes (keys as in `order_events`)."""

    __tablename__ = "risk_events"
    __table_args__ = (
        UniqueConstraint("bot_instance_id", "event_key"),
        UniqueConstraint("bot_instance_id", "seq"),
        Index("ix_risk_events_ts", "ts"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    bot_instance_id: Mapped[int] = mapped_column(BigIntPK, _bot_fk())
    seq: Mapped[int] = mapped_column(BigInteger)
    event_key: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String)
    symbol: Mapped[str | None] = mapped_column(String(64))
    client_order_id: Mapped[str | None] = mapped_column(String(36))
    detail: Mapped[str | None] = mapped_column(String)
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
