"""AuditWriter quarantine: a record the database refuses for good never holds the rest back.

Real SQLite files and the real PostgreSQL (`db_url`), no mocked database: the poison events
are ones the database (or the audit code building their rows) really refuses, and the
outages are real (PostgreSQL stopped, SQLite's write lock held by another connection).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import Engine

from trading.events import Event
from trading.persistence import apply_events, make_engine
from trading.persistence.spool import EventSpool, read_quarantine
from trading.persistence.writer import AuditWriter, is_outage

from .builders import round_trip, submit
from .conftest import BACKENDS
from .test_audit_bulk import mixed_events, new_bot, snapshot

DUP = "DUP/USDT"


@pytest.fixture
def writer_engine(db_url: str, backend: str) -> Iterator[Engine]:
    """The writer's engine; on SQLite it gives up on a held lock after 50 ms, not 30 s."""
    eng = make_engine(db_url, connect_args={"timeout": 0.05} if backend == "sqlite" else None)
    yield eng
    eng.dispose()


class Outage:
    """A real outage started and ended at any moment, from any thread."""

    def __init__(self, backend: str, db_url: str, request: pytest.FixtureRequest) -> None:
        self.backend, self.db_url, self.request = backend, db_url, request
        self.holder: sqlite3.Connection | None = None
        self.active = False

    def start(self) -> None:
        if self.backend == "postgresql":
            self.request.getfixturevalue("postgres_server").stop()
        else:
            self.holder = sqlite3.connect(
                self.db_url.removeprefix("sqlite:///"),
                isolation_level=None,
                check_same_thread=False,
            )
            self.holder.execute("BEGIN IMMEDIATE")  # the write lock: writes fail "locked"
        self.active = True

    def end(self) -> None:
        if not self.active:
            return
        self.active = False
        if self.holder is not None:
            self.holder.execute("ROLLBACK")
            self.holder.close()
            self.holder = None
        else:
            self.request.getfixturevalue("postgres_server").start()


@pytest.fixture
def outage(backend: str, db_url: str, request: pytest.FixtureRequest) -> Iterator[Outage]:
    if backend == "postgresql":
        request.getfixturevalue("postgres_server")  # started before the test needs it
    o = Outage(backend, db_url, request)
    yield o
    o.end()


def make_writer(
    engine: Engine, bot: int, tmp_path: Path, spool: EventSpool | None = None, **kw: object
) -> AuditWriter:
    kw.setdefault("heartbeat_interval", None)
    kw.setdefault("retry_initial", 0.05)
    kw.setdefault("retry_max", 0.2)
    if spool is None:  # (an empty spool is falsy: len 0)
        spool = EventSpool(tmp_path / "spool.jsonl")
    return AuditWriter(engine, bot, spool, **kw)  # type: ignore[arg-type]


def poison(kind: str, backend: str, engine: Engine) -> tuple[list[Event], Event, str, str]:
    """Return (good events to put before the poison, the poison, its error class, a message part).

    * ``overflow``: a quantity of 1e20, which NUMERIC(28, 10) cannot hold (the `Money`
      column refuses it while the row is built);
    * ``duplicate``: a second order on a symbol a unique index (made here) allows once per
      bot: the database refuses it with an IntegrityError; the first order, earlier in the
      same batch, is committed before it;
    * ``too_long``: an order tag of 70 characters for a VARCHAR(64) (PostgreSQL: a
      DataError; SQLite does not enforce lengths).
    """
    if kind == "overflow":
        return [], submit(90, symbol="BAD/USDT", qty="1E+20"), "ValueError", "does not fit"
    if kind == "duplicate":
        with engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE UNIQUE INDEX ux_test_dup ON orders (bot_instance_id, symbol) "
                    f"WHERE symbol = '{DUP}'"
                )
            )
        return [submit(91, symbol=DUP)], submit(92, symbol=DUP), "IntegrityError", ""
    assert backend == "postgresql", "SQLite does not enforce VARCHAR lengths"
    bad = replace(submit(93, symbol="LONG/USDT"), tag="t" * 70)  # orders.tag is VARCHAR(64)
    return [], bad, "DataError", "too long"


def cids(engine: Engine, table: str, bot: int) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(f"SELECT client_order_id FROM {table} WHERE bot_instance_id = :b"), {"b": bot}
        )
        return {r[0] for r in rows}


# SQLite does not enforce VARCHAR lengths: "too_long" is a PostgreSQL case only.
REFUSALS = [
    (backend, kind)
    for backend in BACKENDS
    for kind in ("overflow", "duplicate", "too_long")
    if (backend, kind) != ("sqlite", "too_long")
]


@pytest.mark.parametrize(("backend", "kind"), REFUSALS, indirect=["backend"])
def test_an_event_the_database_refuses_is_quarantined_and_the_rest_of_its_batch_is_written(
    engine: Engine,
    backend: str,
    db_url: str,
    tmp_path: Path,
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot, reference = new_bot(engine, "isolated"), new_bot(engine, "whole")
    first, bad, error, message = poison(kind, backend, engine)
    mixed = mixed_events()
    good = first + mixed[:14] + mixed[14:]
    batch = first + mixed[:14] + [bad] + mixed[14:]  # fills of orders submitted earlier in it
    writer = make_writer(engine, bot, tmp_path, batch_size=1000)
    for e in batch:
        writer.submit(e)  # queued before the thread starts: one batch
    with caplog.at_level(logging.WARNING, logger="trading.persistence.writer"):
        writer.start()
        assert writer.flush(timeout=60)
    assert writer.batches == 1
    h = writer.health()
    assert (h.state, h.quarantined, h.spooled, h.spool_pending) == ("ok", 1, 0, 0)
    assert h.written == len(good) and h.failures == 0
    assert len(writer.spool) == 0 and not writer.spool.path.exists()
    (q,) = read_quarantine(writer.spool.quarantine_path)
    assert q.event == bad and q.error == error and message in q.message
    assert q.quarantined_at.tzinfo is not None
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and str(bad.client_order_id) in critical[0].getMessage()
    password = make_engine(db_url).url.password
    if password:
        assert password not in writer.spool.quarantine_path.read_text()

    # the same records as the good events written as one batch (the poison is in neither)
    apply_events(engine, good, reference)
    isolated = snapshot(engine, bot)
    assert isolated == snapshot(engine, reference)
    assert [len(isolated[t]) for t in ("orders", "order_events", "fills")] == [
        7 + len(first),
        18 + len(first),
        6,
    ]
    assert str(bad.client_order_id) not in cids(engine, "orders", bot) | cids(
        engine, "order_events", bot
    )

    later = round_trip(7, symbol="LTC/USDT")  # the writer goes on writing directly
    for e in later:
        writer.submit(e)
    assert writer.wait_written(timeout=30)
    assert writer.close()
    apply_events(engine, later, reference)
    assert snapshot(engine, bot) == snapshot(engine, reference)
    h = writer.health()
    assert (h.written, h.quarantined, h.spooled) == (len(good + later), 1, 0)


def test_a_spooled_poison_is_quarantined_on_replay_and_the_spool_drains(
    writer_engine: Engine,
    engine: Engine,
    backend: str,
    tmp_path: Path,
    outage: Outage,
) -> None:
    bot, reference = new_bot(engine, "replayed"), new_bot(engine, "whole")
    _, bad, error, message = poison("overflow", backend, engine)
    before, mixed, after = round_trip(1, symbol="LTC/USDT"), mixed_events(), round_trip(8)
    during = mixed[:10] + [bad] + mixed[10:]
    writer = make_writer(writer_engine, bot, tmp_path, batch_size=4).start()
    for e in before:
        writer.submit(e)
    assert writer.flush(timeout=30) and writer.health().state == "ok"
    outage.start()
    try:
        for e in during:
            writer.submit(e)
        assert writer.flush(timeout=60)  # everything spooled, the poison with the rest
        h = writer.health()
        assert h.state == "spooling" and h.spool_pending == len(during)
        assert h.quarantined == 0  # an outage is not a refusal
        assert not writer.spool.quarantine_path.exists()
    finally:
        outage.end()
    for e in after:
        writer.submit(e)  # queued behind the spool
    assert writer.wait_written(timeout=60)  # the replay went past the poison
    assert writer.close()
    h = writer.health()
    assert (h.spool_pending, h.quarantined) == (0, 1)
    assert h.replayed == h.spooled - 1 and h.written + h.replayed + 1 == len(
        before + during + after
    )
    assert writer.spool.path.stat().st_size == 0
    (q,) = writer.spool.read_quarantine()
    assert q.event == bad and q.error == error and message in q.message
    apply_events(engine, before + mixed + after, reference)
    assert snapshot(engine, bot) == snapshot(engine, reference)


class OutageAfterQuarantine(EventSpool):
    """A spool whose first quarantine starts a real outage: the next write fails."""

    outage: Outage

    def quarantine(self, event: Event, error: str, message: str) -> None:
        super().quarantine(event, error, message)
        if not self.outage.active:
            self.outage.start()


@pytest.mark.parametrize("path", ["live", "replay"])
def test_an_outage_while_a_refused_batch_is_isolated_spools_the_rest_in_order(
    writer_engine: Engine,
    engine: Engine,
    backend: str,
    tmp_path: Path,
    outage: Outage,
    path: str,
) -> None:
    bot, reference = new_bot(engine, "isolated"), new_bot(engine, "whole")
    _, bad, _, _ = poison("overflow", backend, engine)
    mixed = mixed_events()
    spool = OutageAfterQuarantine(tmp_path / "spool.jsonl")
    spool.outage = outage
    batch = mixed[:5] + [bad] + mixed[5:]
    if path == "replay":
        spool.append(batch)  # left by an earlier process: replayed first
    writer = make_writer(writer_engine, bot, tmp_path, spool, batch_size=1000)
    if path == "live":
        for e in batch:
            writer.submit(e)
    writer.start()
    assert writer.flush(timeout=60)
    deadline = time.monotonic() + 60
    while len(spool) != len(mixed) - 5 or not writer.failures:  # stopped by the outage
        assert time.monotonic() < deadline, len(spool)
        time.sleep(0.05)
    h = writer.health()
    assert h.state == "spooling" and h.quarantined == 1 and h.failures >= 1
    assert spool.peek(1000).events == mixed[5:]  # the events not yet written, in order
    outage.end()
    assert writer.wait_written(timeout=60)
    assert writer.close()
    assert len(spool.read_quarantine()) == 1  # quarantined once, not again on the replay
    apply_events(engine, mixed, reference)
    assert snapshot(engine, bot) == snapshot(engine, reference)
    h = writer.health()
    assert h.written + h.replayed == len(mixed) and h.spool_pending == 0


def test_outages_and_refusals_are_told_apart_on_real_errors(
    engine: Engine, backend: str, db_url: str, tmp_path: Path, outage: Outage
) -> None:
    bot = new_bot(engine, "classify")
    refused: list[BaseException] = []
    with pytest.raises(Exception) as overflow:
        apply_events(engine, [submit(1, qty="1E+20")], bot)
    refused.append(overflow.value)
    with engine.begin() as conn:
        conn.execute(text("CREATE UNIQUE INDEX ux_test_sym ON orders (symbol)"))
    apply_events(engine, [submit(2)], bot)
    with pytest.raises(sa_exc.IntegrityError) as dup:
        apply_events(engine, [submit(3)], bot)
    refused.append(dup.value)
    with pytest.raises(sa_exc.ProgrammingError) as unbindable, engine.connect() as conn:
        conn.execute(text("SELECT :x"), {"x": object()})  # the driver cannot send it
    refused.append(unbindable.value)
    refused += [TypeError("x"), ValueError("x"), KeyError("x")]
    assert not any(is_outage(e) for e in refused), refused

    lost: list[BaseException] = []
    quick = make_engine(db_url, connect_args={"timeout": 0.05} if backend == "sqlite" else None)
    outage.start()
    try:
        with pytest.raises(sa_exc.OperationalError) as down:
            apply_events(quick, [submit(4)], bot)
        lost.append(down.value)
    finally:
        outage.end()
        quick.dispose()
    nowhere = make_engine(f"sqlite:///{tmp_path}/no/such/folder/x.db")
    with pytest.raises(sa_exc.OperationalError) as unreachable:
        apply_events(nowhere, [submit(5)], bot)
    lost += [unreachable.value, OSError("disk"), TimeoutError()]
    assert all(is_outage(e) for e in lost), lost


def test_a_spool_chunk_is_consumed_event_by_event_across_unreadable_lines(
    tmp_path: Path,
) -> None:
    spool = EventSpool(tmp_path / "s.jsonl")
    events = round_trip(1)
    spool.append(events[:2])
    with open(spool.path, "ab") as f:
        f.write(b'{"type":"NoSuchEvent"}\n')
    spool.append(events[2:4])
    with open(spool.path, "ab") as f:
        f.write(b'{"type":"NoSuchEvent"}\n')
    spool = EventSpool(spool.path)
    chunk = spool.peek(100)
    assert chunk.events == events[:4] and chunk.lines == 6
    got, left, rest = [], [len(spool)], chunk
    while rest.events:
        head, rest = rest.split(1)
        got += head.events
        spool.consume(head)
        left.append(len(spool))
    assert got == events[:4]
    # an unreadable line goes with the event after it; the last event takes those after it
    assert left == [6, 5, 4, 2, 0] and rest.lines == 0
    assert len(spool) == 0 and spool.path.stat().st_size == 0
    spool.quarantine(events[2], "IntegrityError", "UNIQUE constraint failed")
    (q,) = spool.read_quarantine()
    assert (q.event, q.error, q.message) == (
        events[2],
        "IntegrityError",
        "UNIQUE constraint failed",
    )
