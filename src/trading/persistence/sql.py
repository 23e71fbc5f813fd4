"""The few statements that SQLite and PostgreSQL spell differently: insert-or-ignore, JSON search."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Table, bindparam, exists, func, select, type_coerce, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from trading.exceptions import DatabaseError

SUPPORTED = ("sqlite", "postgresql")


def _dialect(conn: Connection) -> str:
    name = conn.dialect.name
    if name not in SUPPORTED:
        raise DatabaseError(f"atf supports SQLite and PostgreSQL, not {name}")
    return name


# Statements built once and executed with parameters: a `.values(...)` statement per row
# costs more in SQLAlchemy's statement building than the database spends on the row.
_STATEMENTS: dict[tuple[str, str, str, tuple[str, ...]], Any] = {}


def insert_ignore(
    conn: Connection, table: Table, values: dict[str, Any], conflict: Sequence[str]
) -> int | None:
    """Insert one row unless it clashes on the unique key `conflict`; return its id or None.

    ``INSERT ... ON CONFLICT (conflict) DO NOTHING RETURNING id`` on both backends: a
    replayed record is a no-op and the caller learns that it was one.
    """
    dialect = _dialect(conn)
    key = ("insert_ignore", dialect, table.name, tuple(conflict))
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        module: Any = sqlite if dialect == "sqlite" else postgresql
        stmt = (
            module.insert(table)
            .on_conflict_do_nothing(index_elements=list(conflict))
            .returning(table.c.id)
        )
        _STATEMENTS[key] = stmt
    inserted = conn.execute(stmt, values).scalar_one_or_none()
    return None if inserted is None else int(inserted)


def update_by_id(conn: Connection, table: Table, row_id: int, values: dict[str, Any]) -> None:
    """``UPDATE table SET values WHERE id = row_id`` (one cached statement per table)."""
    key = ("update_by_id", conn.dialect.name, table.name, ())
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        stmt = update(table).where(table.c.id == bindparam("_row_id"))
        _STATEMENTS[key] = stmt
    conn.execute(stmt, {**values, "_row_id": row_id})


def json_array_contains(conn: Connection, column: Any, value: str) -> ColumnElement[bool]:
    """Return a condition: the JSON array in `column` holds the string `value`."""
    if _dialect(conn) == "postgresql":
        return type_coerce(column, postgresql.JSONB).contains([value])
    items = func.json_each(column).table_valued("value")
    return exists(select(items.c.value).where(items.c.value == value))
