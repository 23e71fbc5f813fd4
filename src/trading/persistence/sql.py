"""The few statements that SQLite and PostgreSQL spell differently: insert-or-ignore, JSON
search; and the bulk forms the audit batch writes with (a list of rows, one executemany)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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
_STATEMENTS: dict[tuple[Any, ...], Any] = {}


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
        stmt = (
            _module(conn)
            .insert(table)
            .on_conflict_do_nothing(index_elements=list(conflict))
            .returning(table.c.id)
        )
        _STATEMENTS[key] = stmt
    inserted = conn.execute(stmt, values).scalar_one_or_none()
    return None if inserted is None else int(inserted)


def _module(conn: Connection) -> Any:
    return sqlite if _dialect(conn) == "sqlite" else postgresql


def insert_many(
    conn: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    conflict: Sequence[str],
    computed: Mapping[str, Any] | None = None,
    returning: Sequence[str] = (),
) -> list[Any]:
    """Insert `rows` (same keys in each) in one executemany, skipping clashes on `conflict`.

    `computed` maps columns to SQL expressions of each row's parameters (a module constant:
    the statement is cached by its identity). Return the `returning` columns of the rows
    inserted (a clash returns nothing); RETURNING costs SQLAlchemy a multi-row ``INSERT ...
    VALUES`` built per call, so only ask for it when needed.
    """
    if not rows:
        return []
    extra = tuple((name, id(expr)) for name, expr in sorted((computed or {}).items()))
    key = ("insert_many", conn.dialect.name, table.name, tuple(conflict), extra, tuple(returning))
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        stmt = _module(conn).insert(table).on_conflict_do_nothing(index_elements=list(conflict))
        if computed:
            stmt = stmt.values(dict(computed))
        if returning:
            stmt = stmt.returning(*(table.c[c] for c in returning))
        _STATEMENTS[key] = stmt
    result = conn.execute(stmt, list(rows))
    return list(result.all()) if returning else []


def update_many(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], where: Sequence[str]
) -> None:
    """``UPDATE table SET ... WHERE where = ...`` for each row: one executemany per column set."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    for names, group in groups.items():
        key = ("update_many", conn.dialect.name, table.name, tuple(where), names)
        stmt = _STATEMENTS.get(key)
        if stmt is None:
            # bind names apart from the column names, which SQLAlchemy keeps for SET itself
            cond = [table.c[c] == bindparam(f"w_{c}") for c in where]
            values: dict[str, Any] = {c: bindparam(f"v_{c}") for c in names if c not in where}
            stmt = update(table).where(*cond).values(values)
            _STATEMENTS[key] = stmt
        conn.execute(
            stmt, [{(f"w_{c}" if c in where else f"v_{c}"): v for c, v in r.items()} for r in group]
        )


#: Keys per IN (...) list: well under SQLite's and PostgreSQL's bound-parameter limits.
CHUNK = 500


def select_in(conn: Connection, stmt: Any, keys: Iterable[str], **params: Any) -> list[Any]:
    """Run `stmt` (its expanding parameter ``keys``) over `keys` in chunks of `CHUNK`."""
    ordered = sorted(set(keys))
    out: list[Any] = []
    for i in range(0, len(ordered), CHUNK):
        out += conn.execute(stmt, {**params, "keys": ordered[i : i + CHUNK]}).all()
    return out


def full_rows(
    table: Table, rows: Iterable[dict[str, Any]], but: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Return `rows` with every column but ``id`` and `but` (None where missing): one shape.

    A column left None is NULL, not its server default: callers set those columns.
    """
    names = [c.name for c in table.columns if c.name != "id" and c.name not in but]
    return [{n: row.get(n) for n in names} for row in rows]


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
