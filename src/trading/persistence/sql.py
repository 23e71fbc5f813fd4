"""The few statements that SQLite and PostgreSQL spell differently: insert-or-ignore, JSON
search; the bulk forms the audit batch writes with (a list of rows, one executemany); and
`execute` / `execute_many` / `fetch`, which run the audit batch's hot statements on the
driver directly (see `Prepared`)."""

from __future__ import annotations

import weakref
from collections import Counter, namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Table, bindparam, exists, func, select, type_coerce, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler

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


# ---------------------------------------------------------------------------- prepared
# SQLAlchemy's `conn.execute` of a cached statement costs ~0.05 ms before the driver sees it
# (execution context, parameter processing, result metadata); the driver call costs ~0.005
# ms, and an audit batch runs about a dozen statements. `Prepared` pays SQLAlchemy's
# compilation once and keeps what `conn.execute` derives on every call: the driver's SQL,
# the parameter order and SQLAlchemy's own bind and result processors, so the driver gets
# exactly the values `conn.execute` would send (test_sql_prepared.py compares the two on
# SQLite and PostgreSQL). Raw cursor calls bypass SQLAlchemy's cursor events: `sent` counts
# them instead.

#: Expanding (IN) lists up to this length keep their rendered SQL; longer ones (bulk reads,
#: where SQLAlchemy's overhead is amortised anyway) are rendered per call.
_EXPANDED_CACHED = 64

_Processor = Callable[[Any], Any]


class _Slot(NamedTuple):
    """Where a driver parameter comes from: the caller's `key` (its `item`th element if a list)."""

    key: str
    item: int | None


def _bind_processor(compiled: SQLCompiler, name: str, dialect: Dialect) -> _Processor | None:
    """SQLAlchemy's processor for the bind `name`: its type as this dialect implements it."""
    impl = compiled.binds[name].type.dialect_impl(dialect)
    return impl.bind_processor(dialect)  # type: ignore[no-any-return]


class Prepared:
    """One statement rendered for one dialect and one parameter shape, run on the driver.

    The connection's DBAPI cursor runs it inside the connection's transaction. A driver
    error is raised as SQLAlchemy's (`DBAPIError.instance`, so callers catch what they
    caught before) and a lost connection is invalidated, as `conn.execute` does.
    """

    def __init__(
        self,
        compiled: SQLCompiler,
        params: Mapping[str, Any],
        dialect: Dialect,
        columns: Sequence[Any] = (),
    ) -> None:
        binds = compiled.binds
        slots: dict[str, Any] = {
            key: (
                [_Slot(key, i) for i in range(len(value))]
                if binds[key].expanding
                else _Slot(key, None)
            )
            for key, value in params.items()
            if key in binds
        }
        state = compiled.construct_expanded_state(slots)
        self.sql: str = state.statement
        self.verb = self.sql.split(None, 1)[0].upper()
        order = state.positiontup if state.positiontup is not None else list(state.parameters)
        # (caller's key or None, index in its list or None, processor, the statement's own value)
        self._fields: list[tuple[str | None, int | None, _Processor | None, Any]] = []
        for name in order:
            value = state.parameters[name]
            if isinstance(value, _Slot):
                process = _bind_processor(compiled, value.key, dialect)
                self._fields.append((value.key, value.item, process, None))
            else:  # a value of the statement itself (a literal, a LIMIT): processed once
                process = _bind_processor(compiled, name, dialect)
                self._fields.append(
                    (None, None, None, value if process is None else process(value))
                )
        self._names = None if state.positiontup is not None else order
        self._sequence: Callable[[list[Any]], Sequence[Any]] = dialect.execute_sequence_format
        self._dialect = dialect
        self._columns = columns  # a query's selected columns: their result types
        self._reader: tuple[Callable[[Iterable[Any]], Any], list[_Processor | None]] | None = None

    def parameters(self, params: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        """Return what the driver gets for `params`: a sequence, or a dict for named styles."""
        values: list[Any] = []
        for key, index, process, const in self._fields:
            if key is None:
                values.append(const)
                continue
            value = params[key] if index is None else params[key][index]
            values.append(value if process is None else process(value))
        if self._names is None:
            return self._sequence(values)
        return dict(zip(self._names, values, strict=True))

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Run the statement once; return the driver's rowcount."""
        cursor = self._run(conn, self.parameters(params), many=False)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def execute_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        """Run the statement for each row in one executemany; return the rows it changed."""
        cursor = self._run(conn, [self.parameters(r) for r in rows], many=True)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def fetch(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        """Run the query; return its rows as named tuples (index, attribute, ``_asdict()``)."""
        cursor = self._run(conn, self.parameters(params), many=False)
        try:
            raw = cursor.fetchall()
            if self._reader is None:
                self._reader = self._read_with(cursor.description)
        finally:
            cursor.close()
        make, processors = self._reader
        return [
            make(v if p is None else p(v) for p, v in zip(processors, r, strict=True)) for r in raw
        ]

    def _read_with(
        self, description: Sequence[Sequence[Any]]
    ) -> tuple[Callable[[Iterable[Any]], Any], list[_Processor | None]]:
        """The row type and SQLAlchemy's result processors, given the driver's column types."""
        dialect = self._dialect
        processors = [
            col.type.dialect_impl(dialect).result_processor(dialect, desc[1])
            for col, desc in zip(self._columns, description, strict=True)
        ]
        row = namedtuple("Row", [col.key for col in self._columns])  # type: ignore[misc]
        return row._make, processors

    def _run(self, conn: Connection, params: Any, *, many: bool) -> Any:
        if not conn.in_transaction():
            conn.begin()  # what conn.execute's autobegin does (and the begin hooks with it)
        dialect = conn.dialect
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        cursor = dbapi.cursor()
        try:
            if many:
                cursor.executemany(self.sql, params)
            else:
                cursor.execute(self.sql, params)
        except dialect.loaded_dbapi.Error as err:
            cursor.close()
            lost = dialect.is_disconnect(err, dbapi, cursor)
            if lost:
                conn.invalidate(err)
            raise DBAPIError.instance(
                self.sql,
                params,
                err,
                dialect.loaded_dbapi.Error,
                connection_invalidated=lost,
                dialect=dialect,
                ismulti=many,
            ) from err
        _state(dialect).sent[self.verb] += 1
        return cursor


class _Compiled:
    """A statement compiled for one dialect and one set of parameter names."""

    def __init__(self, stmt: Any, names: tuple[str, ...], many: bool, dialect: Dialect) -> None:
        self.stmt = stmt  # kept: the cache is keyed by its id
        # as conn.execute compiles it: a single-row INSERT on PostgreSQL returns its id
        self.compiled: SQLCompiler = stmt.compile(
            dialect=dialect, column_keys=list(names), for_executemany=many
        )
        c = self.compiled
        # Python-side column defaults and literal-rendered parameters are computed per
        # execution by SQLAlchemy, and an executemany with RETURNING is rewritten by it
        # (insertmanyvalues): such a statement stays on conn.execute.
        self.columns = list(stmt.selected_columns) if stmt.is_select else []
        self.supported = not (
            c.insert_prefetch
            or c.update_prefetch
            or c.literal_execute_params
            or (many and c.effective_returning)
            or not all(c.key.isidentifier() and not c.key.startswith("_") for c in self.columns)
        )
        self.expanding = tuple(n for n in names if n in c.binds and c.binds[n].expanding)
        self.prepared: dict[tuple[int, ...], Prepared] = {}


class _DialectState:
    """Per dialect (so per engine): compiled statements and the statements `Prepared` sent."""

    def __init__(self) -> None:
        self.compiled: dict[tuple[int, tuple[str, ...], bool], _Compiled] = {}
        self.sent: Counter[str] = Counter()


_BY_DIALECT: weakref.WeakKeyDictionary[Dialect, _DialectState] = weakref.WeakKeyDictionary()


def _state(dialect: Dialect) -> _DialectState:
    state = _BY_DIALECT.get(dialect)
    if state is None:
        state = _BY_DIALECT[dialect] = _DialectState()
    return state


def prepared(
    conn: Connection, stmt: Any, params: Mapping[str, Any], *, many: bool = False
) -> Prepared | None:
    """Return `stmt` prepared for `conn`'s dialect and the shape of `params` (None: it can't be).

    `many`: for an executemany of rows shaped like `params`. `stmt` must live as long as the
    process (a module constant or a `_STATEMENTS` entry): the cache is keyed by its
    identity. Expanding parameters are rendered per list length.
    """
    dialect = conn.dialect
    state = _state(dialect)
    key = (id(stmt), tuple(sorted(params)), many)
    entry = state.compiled.get(key)
    if entry is None:
        entry = state.compiled[key] = _Compiled(stmt, key[1], many, dialect)
    if not entry.supported:
        return None
    lengths = tuple(len(params[n]) for n in entry.expanding)
    found = entry.prepared.get(lengths)
    if found is None:
        found = Prepared(entry.compiled, params, dialect, entry.columns)
        if all(n <= _EXPANDED_CACHED for n in lengths):
            entry.prepared[lengths] = found
    return found


def execute(conn: Connection, stmt: Any, params: Mapping[str, Any]) -> int:
    """Run the long-lived `stmt` with `params` (see `prepared`); return the rowcount."""
    ready = prepared(conn, stmt, params)
    if ready is None:
        return int(conn.execute(stmt, dict(params)).rowcount)
    return ready.execute(conn, params)


def execute_many(conn: Connection, stmt: Any, rows: Sequence[Mapping[str, Any]]) -> int:
    """Run the long-lived `stmt` once per row (same keys in each) in one executemany.

    Return the rows changed: sqlite3 and psycopg 3 both total an executemany's rowcount.
    """
    ready = prepared(conn, stmt, rows[0], many=True)
    if ready is None or ready.verb not in ("INSERT", "UPDATE", "DELETE"):
        return int(conn.execute(stmt, [dict(r) for r in rows]).rowcount)
    return ready.execute_many(conn, rows)


def fetch(conn: Connection, stmt: Any, params: Mapping[str, Any]) -> list[Any]:
    """Return the rows of the long-lived query `stmt` (see `prepared`): named tuples."""
    ready = prepared(conn, stmt, params)
    if ready is None:
        return list(conn.execute(stmt, dict(params)).all())
    return ready.fetch(conn, params)


def sent(engine: Engine) -> Counter[str]:
    """Return the statements `Prepared` ran on `engine`, by verb (an executemany is one).

    They bypass SQLAlchemy's ``before_cursor_execute`` event: add them to what it counts.
    """
    return Counter(_state(engine.dialect).sent)


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
) -> int:
    """Insert `rows` (same keys in each) in one executemany, skipping clashes on `conflict`.

    `computed` maps columns to SQL expressions of each row's parameters (a module constant:
    the statement is cached by its identity). Return how many rows were inserted (a clash
    inserts nothing): the executemany's rowcount, cheaper than RETURNING.
    """
    if not rows:
        return 0
    extra = tuple((name, id(expr)) for name, expr in sorted((computed or {}).items()))
    key = ("insert_many", conn.dialect.name, table.name, tuple(conflict), extra)
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        stmt = _module(conn).insert(table).on_conflict_do_nothing(index_elements=list(conflict))
        if computed:
            stmt = stmt.values(dict(computed))
        _STATEMENTS[key] = stmt
    return execute_many(conn, stmt, rows)


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
        execute_many(
            conn,
            stmt,
            [{(f"w_{c}" if c in where else f"v_{c}"): v for c, v in r.items()} for r in group],
        )


#: Keys per IN (...) list: well under SQLite's and PostgreSQL's bound-parameter limits.
CHUNK = 500


def select_in(conn: Connection, stmt: Any, keys: Iterable[str], **params: Any) -> list[Any]:
    """Run the long-lived `stmt` (its expanding parameter ``keys``) over `keys` in chunks of
    `CHUNK`; return its rows (see `fetch`)."""
    ordered = sorted(set(keys))
    out: list[Any] = []
    for i in range(0, len(ordered), CHUNK):
        out += fetch(conn, stmt, {**params, "keys": ordered[i : i + CHUNK]})
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
    execute(conn, stmt, {**values, "_row_id": row_id})


def json_array_contains(conn: Connection, column: Any, value: str) -> ColumnElement[bool]:
    """Return a condition: the JSON array in `column` holds the string `value`."""
    if _dialect(conn) == "postgresql":
        return type_coerce(column, postgresql.JSONB).contains([value])
    items = func.json_each(column).table_valued("value")
    return exists(select(items.c.value).where(items.c.value == value))
