"""AuditWriter on real SQLite and PostgreSQL: batches, outages, the spool, close, heartbeats."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from trading.events import Event, OrderEvent
from trading.orders import OrderSide
from trading.persistence import event_key, make_engine
from trading.persistence.audit_events import EquitySampled
from trading.persistence.spool import EventSpool
from trading.persistence.writer import AuditWriter

from .builders import T0, count, counts, round_trip

Outage = Callable[[], AbstractContextManager[None]]


@pytest.fixture
def writer_engine(db_url: str, backend: str) -> Iterator[Engine]:
    """The writer's engine; on SQLite it gives up on a held lock after 50 ms, not 30 s."""
    eng = make_engine(db_url, connect_args={"timeout": 0.05} if backend == "sqlite" else None)
    yield eng
    eng.dispose()


@pytest.fixture
def outage(backend: str, db_url: str, request: pytest.FixtureRequest) -> Outage:
    """A real failure of the database: PostgreSQL stopped, or SQLite's write lock held."""

    @contextmanager
    def postgres_down() -> Iterator[None]:
        server = request.getfixturevalue("postgres_server")
        with server.stopped():
            yield

    @contextmanager
    def sqlite_locked() -> Iterator[None]:
        holder = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()

    return postgres_down if backend == "postgresql" else sqlite_locked


def make_writer(engine: Engine, bot: int, tmp_path: Path, **kw: object) -> AuditWriter:
    kw.setdefault("heartbeat_interval", None)
    kw.setdefault("retry_initial", 0.05)
    kw.setdefault("retry_max", 0.2)
    return AuditWriter(engine, bot, EventSpool(tmp_path / "spool.jsonl"), **kw)  # type: ignore[arg-type]


def keyed(events: list[Event]) -> list[str]:
    return [event_key(e) for e in events if isinstance(e, OrderEvent)]


def recorded_keys(engine: Engine, bot: int) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT event_key FROM order_events WHERE bot_instance_id = :b ORDER BY seq"),
            {"b": bot},
        )
        return [r[0] for r in rows]


def test_queued_events_are_written_in_batches_of_batch_size_one_commit_each(
    engine: Engine, bot: int, tmp_path: Path
) -> None:
    events = [e for n in range(1, 5) for e in round_trip(n)]  # 28 events
    commits: list[int] = []
    sa_event.listen(engine, "commit", lambda _conn: commits.append(1))
    writer = make_writer(engine, bot, tmp_path, batch_size=10)
    for e in events:  # queued before the thread starts: 10 + 10 + 8
        writer.submit(e)
    writer.start()
    assert writer.flush(timeout=30)
    assert len(commits) == 3
    assert writer.close()
    assert recorded_keys(engine, bot) == keyed(events)
    h = writer.health()
    assert (h.state, h.written, h.spooled, h.failures, h.queued) == ("closed", 28, 0, 0, 0)
    assert h.latency_p99_ms is not None and h.latency_p99_ms >= h.latency_p50_ms  # type: ignore[operator]


def test_a_batch_waits_batch_delay_for_more_events_unless_it_is_full(
    engine: Engine, bot: int, tmp_path: Path
) -> None:
    writer = make_writer(engine, bot, tmp_path, batch_size=7, batch_delay=60.0).start()
    first, second = round_trip(1), round_trip(2)
    for e in first[:3]:
        writer.submit(e)
    time.sleep(0.5)
    assert count(engine, "order_events") == 0  # waiting for the batch to fill
    for e in first[3:]:
        writer.submit(e)  # 7 queued: a full batch goes now
    assert writer.flush(timeout=30)
    assert count(engine, "orders") == 2
    for e in second[:2]:
        writer.submit(e)
    assert writer.close(timeout=30)  # close writes the partial batch without waiting
    assert recorded_keys(engine, bot) == keyed(first + second[:2])


def test_an_outage_spools_every_later_event_in_order_and_replays_it_when_the_database_returns(
    writer_engine: Engine,
    engine: Engine,
    bot: int,
    tmp_path: Path,
    outage: Outage,
    db_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    writer = make_writer(writer_engine, bot, tmp_path, batch_size=3).start()
    before, during, after = round_trip(1), round_trip(2) + round_trip(3), round_trip(4)
    for e in before:
        writer.submit(e)
    assert writer.flush(timeout=30) and writer.health().state == "ok"
    with outage():
        slowest = 0.0
        for e in during:
            t = time.perf_counter()
            writer.submit(e)  # trading goes on: never waits for the database
            slowest = max(slowest, time.perf_counter() - t)
        assert slowest < 0.05
        assert writer.flush(timeout=30)  # everything is written or spooled
        h = writer.health()
        assert h.state == "spooling" and h.failures >= 1
        assert h.spool_pending == h.spooled == len(during)
        assert h.last_error
        time.sleep(0.5)  # retries fail meanwhile; nothing is lost or reordered
        assert writer.health().spool_pending == len(during)
    for e in after:
        writer.submit(e)  # queued behind the spool, not ahead of it
    assert writer.wait_written(timeout=60)
    assert writer.close(timeout=30)
    assert recorded_keys(engine, bot) == keyed(before + during + after)
    h = writer.health()
    assert h.replayed == h.spooled >= len(during)
    assert h.written + h.replayed == len(before + during + after)
    assert writer.spool.path.stat().st_size == 0
    password = make_engine(db_url).url.password
    if password:  # PostgreSQL: the password is in the URL, never in a log or the health
        assert password not in caplog.text and password not in str(h)


def test_a_spool_left_by_a_dead_process_is_replayed_before_new_events(
    engine: Engine, bot: int, tmp_path: Path
) -> None:
    left, new = round_trip(1) + round_trip(2), round_trip(3)
    EventSpool(tmp_path / "spool.jsonl").append(left)  # the previous process spooled these
    writer = make_writer(engine, bot, tmp_path)
    assert writer.health().spool_pending == len(left)
    writer.start()
    for e in new:
        writer.submit(e)
    assert writer.wait_written(timeout=30)
    writer.close()
    assert recorded_keys(engine, bot) == keyed(left + new)
    assert writer.replayed == len(left) and writer.written == len(new)


def test_replaying_events_the_database_already_has_adds_nothing(
    engine: Engine, bot: int, tmp_path: Path
) -> None:
    events = round_trip(1) + round_trip(2)
    writer = make_writer(engine, bot, tmp_path).start()
    for e in events:
        writer.submit(e)
    writer.close()
    before = counts(engine)
    EventSpool(tmp_path / "spool.jsonl").append(events)  # e.g. spooled by a close that timed out
    again = make_writer(engine, bot, tmp_path)
    assert again.replay_spool()
    again.close()
    assert counts(engine) == before


def test_close_on_a_hung_database_spools_what_is_in_memory_and_nothing_is_lost(
    sqlite_url: str, tmp_path: Path
) -> None:
    from trading.persistence import ensure_database, register_bot_instance

    engine = ensure_database(sqlite_url)
    bot = register_bot_instance(engine, "b", "paper").id
    slow = make_engine(sqlite_url, connect_args={"timeout": 3.0})  # waits 3 s for the lock
    writer = make_writer(slow, bot, tmp_path, batch_size=4).start()
    events = round_trip(1) + round_trip(2)
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    for e in events:
        writer.submit(e)
    t = time.monotonic()
    assert writer.close(timeout=0.5) is False  # the writer hangs on the lock
    assert time.monotonic() - t < 2.0
    assert len(writer.spool) == len(events)  # in flight + queued, in order
    holder.execute("ROLLBACK")
    holder.close()
    writer._thread.join(10)  # the hung batch may still commit: the replay must not double it
    again = make_writer(engine, bot, tmp_path)
    assert again.replay_spool()
    assert recorded_keys(engine, bot) == keyed(events)
    slow.dispose()
    engine.dispose()


def test_heartbeats_and_equity_samples_come_at_their_interval(
    engine: Engine, bot: int, tmp_path: Path
) -> None:
    samples = iter(range(1000))

    def equity() -> EquitySampled:
        i = next(samples)
        return EquitySampled(
            ts=T0 + timedelta(minutes=i), equity=Decimal(10_000 + i), cash=Decimal(5)
        )

    with engine.connect() as conn:
        registered = conn.execute(text("SELECT last_heartbeat FROM bot_instances")).scalar_one()
    writer = make_writer(
        engine, bot, tmp_path, heartbeat_interval=0.05, equity_interval=0.1, equity_source=equity
    ).start()
    time.sleep(0.8)
    writer.close()
    with engine.connect() as conn:
        beat = conn.execute(text("SELECT last_heartbeat FROM bot_instances")).scalar_one()
        rows = conn.execute(text("SELECT equity FROM equity_snapshots ORDER BY ts")).all()
    assert str(beat) > str(registered)
    assert 3 <= len(rows) <= 10
    assert [Decimal(str(r[0])) for r in rows] == [Decimal(10_000 + i) for i in range(len(rows))]


def test_an_event_after_close_goes_to_the_spool_for_the_next_start(
    engine: Engine, bot: int, tmp_path: Path
) -> None:
    writer = make_writer(engine, bot, tmp_path).start()
    writer.close()
    late = round_trip(1)[0]
    writer.submit(late)
    assert EventSpool(tmp_path / "spool.jsonl").peek(10).events == [late]
    with engine.connect() as conn:
        assert conn.execute(select(text("count(*)")).select_from(text("orders"))).scalar() == 0


@pytest.mark.parametrize("qty", ["18.956936713678022", "1.00000000004"])  # rounds up / down
def test_a_position_closed_in_a_later_batch_than_it_opened_is_flat(
    engine: Engine, bot: int, qty: str
) -> None:
    from trading.persistence import apply_events, list_trades, load_positions

    from .builders import cid, closed, fill, opened, submit

    entry = [submit(1, qty=qty), fill(1, qty=qty), opened(str(cid(1)), qty=qty)]
    exit_ = [
        submit(1, leg="tp", side=OrderSide.SELL, qty=qty),
        fill(1, leg="tp", side=OrderSide.SELL, qty=qty, price="110", minute=5),
        closed(str(cid(1)), qty=qty),
    ]
    apply_events(engine, entry, bot)  # two batches: the stored quantity has 10 decimals
    apply_events(engine, exit_, bot)
    (pos,) = load_positions(engine, bot, include_flat=True)
    assert (pos.quantity, pos.avg_entry_price, pos.side.value) == (0, None, "flat")
    assert [t.status for t in list_trades(engine)] == ["closed"]  # no residue, no bogus flip
