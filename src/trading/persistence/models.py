"""ORM models of the atf database (schema changes go through Alembic migrations only).

Money and quantities are `Decimal`: NUMERIC(28, 10) on PostgreSQL, and on SQLite a
canonical decimal string (SQLite's NUMERIC affinity would silently store a 15-digit
float). Timestamps are tz-aware UTC on the way in and on the way out.
"""

from __future__ import annotations

import math
import numbers
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator, TypeEngine

MONEY_PRECISION = 28
MONEY_SCALE = 10
_QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
_MONEY_LIMIT = Decimal(10) ** (MONEY_PRECISION - MONEY_SCALE)

TRADE_TYPES = ("backtest", "paper", "live")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def to_decimal(value: Any) -> Decimal:
    """Convert a number to a Decimal rounded to the money scale; floats go through repr()."""
    kind = type(value)
    if kind is float:  # fast path: this runs for every money field of every trade
        d = Decimal(repr(value))  # shortest repr: 0.3 -> Decimal('0.3'), not 0.2999...
    elif kind is Decimal:
        d = value
    elif kind is int:
        d = Decimal(value)
    elif isinstance(value, Decimal):
        d = value
    elif isinstance(value, bool):
        raise TypeError("a bool is not a money amount")
    elif isinstance(value, numbers.Integral):
        d = Decimal(int(value))
    elif isinstance(value, numbers.Real):
        d = Decimal(repr(float(value)))  # numpy floats: repr(np.float64) is not a number
    elif isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except InvalidOperation as exc:
            raise ValueError(f"not a decimal number: {value!r}") from exc
    else:
        raise TypeError(f"cannot store {type(value).__name__} as a money amount")
    if not d.is_finite():
        raise ValueError(f"money amounts must be finite, got {value!r}")
    if abs(d) >= _MONEY_LIMIT:
        raise ValueError(f"{value!r} does not fit NUMERIC({MONEY_PRECISION}, {MONEY_SCALE})")
    return d.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN)


class Money(TypeDecorator[Decimal]):
    """Exact decimal: NUMERIC(28, 10), stored as decimal text on SQLite."""

    impl = Numeric(MONEY_PRECISION, MONEY_SCALE, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(40))
        return dialect.type_descriptor(Numeric(MONEY_PRECISION, MONEY_SCALE, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        d = to_decimal(value)
        return format(d, "f") if dialect.name == "sqlite" else d

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamp that only accepts tz-aware datetimes and always returns UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if hasattr(value, "to_pydatetime"):  # pandas.Timestamp
            value = value.to_pydatetime()
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} rejected: attach a timezone")
        value = value.astimezone(timezone.utc)
        # SQLite has no timezone storage: keep the UTC wall time.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def finite_or_none(value: Any) -> float | None:
    """Return `value` as a float, or None for None/NaN/inf."""
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


#: Integer on SQLite (needed for its rowid alias), BIGINT elsewhere.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")
JSONDoc = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention (batch migrations need names)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


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
    """A closed trade; `run_id` is set for backtests and NULL for paper/live trades."""

    __tablename__ = "trades"
    __table_args__ = (
        CheckConstraint("trade_type IN ('backtest', 'paper', 'live')", name="trade_type"),
        Index("ix_trades_symbol_exit_time", "symbol", "exit_time"),
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
    exit_time: Mapped[datetime] = mapped_column(UTCDateTime)
    entry_price: Mapped[Decimal] = mapped_column(Money)
    exit_price: Mapped[Decimal] = mapped_column(Money)
    quantity: Mapped[Decimal] = mapped_column(Money)
    gross_pnl: Mapped[Decimal] = mapped_column(Money)
    fees: Mapped[Decimal] = mapped_column(Money)
    pnl: Mapped[Decimal] = mapped_column(Money)
    pnl_pct: Mapped[float | None] = mapped_column(Float)
    exit_reason: Mapped[str | None] = mapped_column(String)
    entry_tag: Mapped[str | None] = mapped_column(String)
    strategy: Mapped[str | None] = mapped_column(String)
    bars_held: Mapped[int | None] = mapped_column(Integer)
    mae_pct: Mapped[float | None] = mapped_column(Float)
    mfe_pct: Mapped[float | None] = mapped_column(Float)

    run: Mapped[BacktestRun | None] = relationship(back_populates="trades")
