"""The few statements that SQLite and PostgreSQL spell differently: insert-or-ignore, JSON search."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, exists, func, select, type_coerce
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from trading.exceptions import DatabaseError

SUPPORTED = ("sqlite", "postgresql")


def _dialect(conn: Connection) -> str:
    name = conn.dialect.name
    if name not in SUPPORTED:
        raise DatabaseError(f"atf supports SQLite and PostgreSQL, not {name}")
    return name


def insert_ignore(
    conn: Connection, table: Table, values: dict[str, Any], conflict: Sequence[str]
) -> int | None:
    """Insert one row unless it clashes on the unique key `conflict`; return its id or None.

    ``INSERT ... ON CONFLICT (conflict) DO NOTHING RETURNING id`` on both backends: a
    replayed record is a no-op and the caller learns that it was one.
    """
    module: Any = sqlite if _dialect(conn) == "sqlite" else postgresql
    stmt = (
        module.insert(table)
        .values(values)
        .on_conflict_do_nothing(index_elements=list(conflict))
        .returning(table.c.id)
    )
    inserted = conn.execute(stmt).scalar_one_or_none()
    return None if inserted is None else int(inserted)


def json_array_contains(conn: Connection, column: Any, value: str) -> ColumnElement[bool]:
    """Return a condition: the JSON array in `column` holds the string `value`."""
    if _dialect(conn) == "postgresql":
        return type_coerce(column, postgresql.JSONB).contains([value])
    items = func.json_each(column).table_valued("value")
    return exists(select(items.c.value).where(items.c.value == value))
