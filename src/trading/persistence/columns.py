"""Column types of the atf database: exact money, UTC timestamps, portable keys and JSON.

Money and quantities are `Decimal`: NUMERIC(28, 10) on PostgreSQL, and on SQLite a
canonical decimal string (SQLite's NUMERIC affinity would silently store a 15-digit
float). Timestamps are tz-aware UTC on the way in and on the way out.
"""

from __future__ import annotations

import enum
import math
import numbers
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import PurePath
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Dialect, Integer, Numeric, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

MONEY_PRECISION = 28
MONEY_SCALE = 10
#: The last digit a money or quantity column keeps (1e-10).
MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
_QUANTUM = MONEY_QUANTUM
_MONEY_LIMIT = Decimal(10) ** (MONEY_PRECISION - MONEY_SCALE)


def at_scale(value: Decimal) -> Decimal:
    """Round a Decimal to the columns' scale (what the database would store)."""
    return value.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN)


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
        value = value.astimezone(UTC)
        # SQLite has no timezone storage: keep the UTC wall time.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def finite_or_none(value: Any) -> float | None:
    """Return `value` as a float, or None for None/NaN/inf."""
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


#: Integer on SQLite (needed for its rowid alias), BIGINT elsewhere.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")
JSONDoc = JSON().with_variant(JSONB(), "postgresql")


def json_safe(value: Any) -> Any:
    """Return `value` as plain JSON: NaN/inf -> None, numpy -> Python, dates -> ISO text."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if isinstance(value, enum.Enum):
        return json_safe(value.value)
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return json_safe(value.tolist())
    if hasattr(value, "isoformat"):  # pandas.Timestamp and friends
        return value.isoformat()
    return str(value)
