"""sql.Prepared: the audit batch's statements sent to the driver exactly as SQLAlchemy sends them."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Integer, bindparam, event, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, StatementError

from trading.persistence import apply_events, register_bot_instance, sql
from trading.persistence.audit_rows import EVENTS, ORDERS
from trading.persistence.sql import Prepared

from .builders import at, submit
from .test_audit_bulk import mixed_events, new_bot, trips


@dataclass
class Call:
    """One statement a batch ran through `Prepared`, and what the driver got."""

    stmt: Any
    params: Any  # the caller's: a mapping, or a list of them (executemany)
    sql: str
    sent: Any
    rows: list[tuple[Any, ...]] | None


@contextmanager
def prepared_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Call]]:
    """Record every statement run through `Prepared` (the statement, its parameters, the SQL
    and parameters the driver got, the rows read)."""
    calls: list[Call] = []
    real = sql.prepared

    def recording(
        conn: Connection, stmt: Any, params: Mapping[str, Any], *, many: bool = False
    ) -> Prepared | None:
        ready = real(conn, stmt, params, many=many)
        if ready is None:
            return None
        proxy = _Recorder(ready, stmt, calls)
        return proxy  # type: ignore[return-value]

    monkeypatch.setattr(sql, "prepared", recording)
    yield calls
    monkeypatch.setattr(sql, "prepared", real)


class _Recorder:
    def __init__(self, ready: Prepared, stmt: Any, calls: list[Call]) -> None:
        self.ready, self.stmt, self.calls = ready, stmt, calls
        self.verb = ready.verb

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> int:
        self.calls.append(Call(self.stmt, dict(params), self.ready.sql, self._sent(params), None))
        return self.ready.execute(conn, params)

    def execute_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
        sent = [self._sent(r) for r in rows]
        self.calls.append(Call(self.stmt, [dict(r) for r in rows], self.ready.sql, sent, None))
        return self.ready.execute_many(conn, rows)

    def fetch(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        rows = self.ready.fetch(conn, params)
        got = [tuple(r) for r in rows]
        self.calls.append(Call(self.stmt, dict(params), self.ready.sql, self._sent(params), got))
        return rows

    def _sent(self, params: Mapping[str, Any]) -> Any:
        return comparable(self.ready.parameters(params))


def comparable(value: Any) -> Any:
    """`value` with psycopg's JSON wrappers (equal only to themselves) as (type, document)."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [comparable(v) for v in value]
    if hasattr(value, "obj") and hasattr(value, "dumps"):  # psycopg.types.json.Json / Jsonb
        return (type(value).__name__, value.obj)
    return value


class _Stop(Exception):
    """Raised before the driver runs a write that `sqlalchemy_sends` only wants to see."""


def sqlalchemy_sends(engine: Engine, call: Call) -> tuple[str, Any, list[tuple[Any, ...]] | None]:
    """Give `call`'s statement to `conn.execute`; return the SQL and parameters it sends the
    driver, and the rows of a read. A write is stopped before the driver runs it (run again
    after the batch, it would clash with the rows the batch wrote)."""
    seen: list[tuple[str, Any]] = []

    def record(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        if not statement.startswith("BEGIN"):
            seen.append((statement, parameters))
            if call.rows is None:
                raise _Stop

    rows = None
    with engine.connect() as conn:
        event.listen(engine, "before_cursor_execute", record)
        try:
            rows = [tuple(r) for r in conn.execute(call.stmt, call.params)]
        except (_Stop, StatementError) as stop:
            assert call.rows is None, stop
        finally:
            event.remove(engine, "before_cursor_execute", record)
            conn.rollback()
    [(statement, parameters)] = seen
    if isinstance(call.params, list) and len(call.params) == 1:
        # SQLAlchemy runs a list of one row as one execute, and on PostgreSQL an INSERT run
        # once returns the new id (inserted_primary_key), which the executemany does not
        parameters = [parameters]
        statement = re.sub(r" RETURNING \w+\.id$", "", statement)
    return statement, comparable(parameters), rows


@pytest.mark.parametrize("events", ["mixed", "round_trips"])
def test_the_driver_gets_what_sqlalchemy_would_send(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, events: str
) -> None:
    bot = new_bot(engine, "v")
    batch = mixed_events() if events == "mixed" else trips(4)
    with prepared_calls(monkeypatch) as calls:
        # one event a batch: later batches update stored orders and trades and look up the
        # last stored fill (a close without exit reason); then the rest as one batch
        for event in batch[:-4]:
            apply_events(engine, [event], bot)
        apply_events(engine, batch[-4:], bot)
    ran = {" ".join(c.sql.split()[:3]) for c in calls}
    for statement in ("UPDATE orders SET", "UPDATE trades SET", "SELECT fills.ts, fills.id,"):
        assert statement in ran or events == "round_trips"
    for call in calls:
        expected = sqlalchemy_sends(engine, call)
        assert (call.sql, call.sent) == expected[:2], call.sql
        if call.rows is not None:
            # read again after the batch: the same rows, through SQLAlchemy's result types
            with engine.connect() as conn:
                assert sql.fetch(conn, call.stmt, call.params) == expected[2]


def test_rows_read_carry_sqlalchemy_types(engine: Engine, bot: int) -> None:
    apply_events(engine, [submit(1)], bot)
    stmt = select(ORDERS).where(ORDERS.c.bot_instance_id == bindparam("bot"))
    with engine.connect() as conn:
        [row] = sql.fetch(conn, stmt, {"bot": bot})
        [expected] = conn.execute(stmt, {"bot": bot}).all()
    assert row._asdict() == expected._asdict()
    assert isinstance(row.quantity, Decimal) and isinstance(row.created_at, datetime)
    assert row.created_at == at(0) and row.created_at.utcoffset() is not None


def test_executemany_counts_the_rows_inserted_not_the_clashes(engine: Engine, bot: int) -> None:
    rows = [
        {
            "bot_instance_id": bot,
            "seq": n,
            "event_key": f"k{n % 2}",  # the third row clashes with the first
            "client_order_id": None,
            "symbol": None,
            "event_type": "X",
            "kind": "entry",
            "status": None,
            "ts": at(n),
            "recorded_at": at(n),
            "payload": {"n": n},
        }
        for n in range(3)
    ]
    with engine.begin() as conn:
        assert sql.insert_many(conn, EVENTS, rows, ("bot_instance_id", "event_key")) == 2
        assert sql.insert_many(conn, EVENTS, rows, ("bot_instance_id", "event_key")) == 0


def test_driver_errors_are_sqlalchemy_errors(engine: Engine, bot: int) -> None:
    apply_events(engine, [submit(1)], bot)
    with engine.connect() as conn:
        [order_id] = [r.id for r in sql.fetch(conn, select(ORDERS.c.id), {})]
    with pytest.raises(IntegrityError), engine.begin() as conn:
        sql.update_many(conn, ORDERS, [{"id": order_id, "status": None}], ("id",))


def test_a_statement_sqlalchemy_renders_per_call_stays_on_conn_execute(engine: Engine) -> None:
    stmt = select(bindparam("x", type_=Integer, literal_execute=True))
    with engine.connect() as conn:
        assert sql.prepared(conn, stmt, {"x": 7}) is None
        assert [tuple(r) for r in sql.fetch(conn, stmt, {"x": 7})] == [(7,)]


def test_statements_run_on_the_driver_are_counted(engine: Engine) -> None:
    bot = register_bot_instance(engine, "counted", "paper", resume=False).id
    before = sql.sent(engine)
    apply_events(engine, [submit(1)], bot)
    ran = sql.sent(engine) - before
    # the bot, the known keys, the order; insert order_events and orders; the bot's last seq
    assert ran == {"SELECT": 3, "INSERT": 2, "UPDATE": 1}
