"""AuditWriter batching, counted in `batches`: what is queued while a batch is written is the next."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine

from trading.bus import EventBus
from trading.persistence.spool import EventSpool
from trading.persistence.writer import AuditWriter

from .builders import round_trip


def make_writer(engine: Engine, bot: int, tmp_path: Path, **kw: object) -> AuditWriter:
    kw.setdefault("heartbeat_interval", None)
    return AuditWriter(engine, bot, EventSpool(tmp_path / "spool.jsonl"), **kw)  # type: ignore[arg-type]


def test_a_bar_published_while_a_batch_is_committing_is_written_as_the_next_batch_whole(
    engine: Engine, bot: int, tmp_path: Path
) -> None:
    committing, release = threading.Event(), threading.Event()

    def hold_first_commit(_conn: Any) -> None:
        if not release.is_set():
            committing.set()
            assert release.wait(30)

    sa_event.listen(engine, "commit", hold_first_commit)
    writer = make_writer(engine, bot, tmp_path).start()
    bus = EventBus()
    writer.subscribe(bus)
    first, bar = round_trip(1), round_trip(2)
    bus.publish(first[0])  # the writer takes it alone and commits it ...
    assert committing.wait(30)
    for e in first[1:] + bar:  # ... while the rest arrives: one burst
        bus.publish(e)
    release.set()
    assert writer.flush(timeout=30)
    assert writer.close()
    sa_event.remove(engine, "commit", hold_first_commit)
    assert (writer.batches, writer.written, writer.spooled) == (2, len(first + bar), 0)


def test_events_queued_before_start_are_taken_batch_size_at_a_time(
    engine: Engine, bot: int, tmp_path: Path
) -> None:
    writer = make_writer(engine, bot, tmp_path, batch_size=5)
    events = round_trip(1) + round_trip(2)  # 14: 5 + 5 + 4
    for e in events:
        writer.submit(e)
    writer.start()
    assert writer.close(timeout=30)
    assert (writer.batches, writer.written) == (3, 14)
