"""The audit writer's WAL checkpoints on real SQLite files: off the writer's commits, bounded,
emptied on close, and never an error of the writer's."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Connection, Engine

from trading.events import Event
from trading.persistence import make_engine
from trading.persistence.checkpointer import FORCE_FACTOR, WalCheckpointer, WalGauge
from trading.persistence.db import defer_wal_checkpoints, read_connection
from trading.persistence.writer import AuditWriter

from .builders import round_trip
from .test_writer import keyed, make_writer, recorded_keys

#: Small enough that 60 round trips (about 120 KB of WAL each) cross it many times.
WAL_BYTES = 64 * 1024


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """SQLite only: PostgreSQL has no WAL file of ours to checkpoint."""
    return str(request.param)


@pytest.fixture
def wal(sqlite_url: str, bot: int) -> Path:
    """The WAL file, emptied once the schema and the bot are in: sizes are the tests' own."""
    path = sqlite_url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0][0] == 0
    conn.close()
    return Path(path + "-wal")


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith("wal-checkpointer")]
    assert not left, f"checkpointer threads still running: {left}"


def write_round_trips(
    writer: AuditWriter, wal: Path, n: int, first: int = 1
) -> tuple[list[Event], list[int]]:
    """Submit `n` round trips, one batch each; return the events and the WAL size after each."""
    events: list[Event] = []
    sizes: list[int] = []
    for i in range(first, first + n):
        trip = round_trip(i)
        for e in trip:
            writer.submit(e)
        assert writer.flush(timeout=60)
        events += trip
        sizes.append(wal.stat().st_size)
    return events, sizes


def pragma(conn: sqlite3.Connection | Connection, name: str) -> int:
    if isinstance(conn, Connection):
        return int(conn.exec_driver_sql(f"PRAGMA {name}").scalar_one())
    return int(conn.execute(f"PRAGMA {name}").fetchall()[0][0])


def test_the_wal_stays_bounded_while_the_writer_commits_batch_after_batch(
    engine: Engine, bot: int, tmp_path: Path, wal: Path
) -> None:
    # The timer never fires: only the size triggers keep the log short.
    writer = make_writer(
        engine, bot, tmp_path, checkpoint_interval=3600.0, checkpoint_wal_bytes=WAL_BYTES
    ).start()
    events, sizes = write_round_trips(writer, wal, 60)
    # the log restarts after a complete checkpoint: at most the forcing size plus two batches
    assert max(sizes) <= FORCE_FACTOR * WAL_BYTES + 2 * sizes[0]
    ckpt = writer.checkpointer
    assert ckpt is not None and ckpt.complete > 0 and ckpt.failures == 0
    assert writer.close()
    assert recorded_keys(engine, bot) == keyed(events)


def test_without_the_checkpointer_the_same_batches_grow_the_wal_past_that_bound(
    engine: Engine, bot: int, tmp_path: Path, wal: Path
) -> None:
    undo = defer_wal_checkpoints(engine, journal_size_limit=-1)  # no checkpoint at all
    writer = make_writer(engine, bot, tmp_path, checkpoint_interval=None).start()
    _, sizes = write_round_trips(writer, wal, 60)
    assert writer.checkpointer is None
    assert max(sizes) > FORCE_FACTOR * WAL_BYTES + 2 * sizes[0]  # the bound above would fail
    assert sizes[-1] >= 30 * sizes[0]  # every batch appended: the log never restarted
    assert writer.close()
    undo()


def test_the_wal_index_gives_the_log_and_what_is_left_to_copy_when_it_restarts_in_a_big_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "gauge.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE t (x BLOB)")
    gauge = WalGauge(path)
    conn.execute("INSERT INTO t VALUES (randomblob(100000))")
    log, pending = gauge.read()
    frame = pragma(conn, "page_size") + 24
    assert log == pending == gauge.file_size() - 32 and log % frame == 0  # 32: the WAL header
    assert log > 100_000
    busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
    assert (busy, frames, copied) == (0, log // frame, log // frame)
    assert gauge.read() == (log, 0)  # all of it copied, nothing new
    conn.execute("INSERT INTO t VALUES (1)")  # the log restarts at the file's beginning
    small, pending = gauge.read()
    assert 0 < pending == small < log // 10 and gauge.file_size() == log + 32  # the file did not
    conn.close()


_SHM_DMS = 128  # SQLite's "dead man switch" byte in the -shm file (unix VFS): a read lock per process

_LOCK_PROBE = """
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
probe = struct.pack("hhqqi", fcntl.F_WRLCK, 0, int(sys.argv[2]), 1, 0)
kind = struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, probe))[0]
print("held" if kind != fcntl.F_UNLCK else "free")
"""


def _dms_lock_held_by_another_process(shm: Path) -> bool:
    """Ask from a child process whether some process holds a lock on the -shm's DMS byte."""
    out = subprocess.run([sys.executable, "-c", _LOCK_PROBE, str(shm), str(_SHM_DMS)],
                         capture_output=True, text=True, check=True).stdout.strip()
    return out == "held"


def test_reading_the_wal_index_keeps_sqlites_locks_on_it(tmp_path: Path) -> None:
    """Opening and closing the -shm would drop this process's POSIX locks on it; another
    process opening the database would then truncate the -shm under SQLite's map (SIGBUS)."""
    path = tmp_path / "locks.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x BLOB)")
    conn.execute("INSERT INTO t VALUES (randomblob(10000))")
    shm = path.with_name(path.name + "-shm")
    assert _dms_lock_held_by_another_process(shm)  # SQLite's connection here holds it
    gauge = WalGauge(path)
    for _ in range(3):
        log, _pending = gauge.read()
    assert log > 10_000  # read from the index, through SQLite's own descriptor
    assert _dms_lock_held_by_another_process(shm)  # still held after the reads
    with open(shm, "rb") as f:  # what reading the index by opening the file does
        f.read(100)
    assert not _dms_lock_held_by_another_process(shm)  # the probe can see the lock go
    conn.close()


def test_a_long_log_already_copied_does_not_wake_the_checkpointer_again(
    engine: Engine, sqlite_url: str
) -> None:
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    ckpt = WalCheckpointer(engine, path, interval=3600.0, wal_bytes=WAL_BYTES).start()
    pin = sqlite3.connect(path, isolation_level=None)  # holds the log: it cannot restart

    def write(n: int) -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS blobs (x BLOB)")
            conn.exec_driver_sql(f"INSERT INTO blobs VALUES (randomblob({n}))")

    write(2 * WAL_BYTES)
    pin.execute("BEGIN")
    pin.execute("SELECT count(*) FROM blobs").fetchall()
    ckpt.after_write(idle=False)
    assert ckpt.woken == 1
    ckpt.checkpoint("PASSIVE")  # copies what the reader's snapshot has: all of it
    for _ in range(3):
        write(1000)  # the log is long, but only these frames are new
        ckpt.after_write(idle=False)
    assert ckpt.woken == 1 and ckpt.forced == 0
    write(2 * WAL_BYTES)
    ckpt.after_write(idle=False)
    assert ckpt.woken == 2
    pin.execute("COMMIT")
    pin.close()
    assert ckpt.close()


def _blob_writer(engine: Engine) -> Callable[[int], None]:
    def write(n: int) -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS blobs (x BLOB)")
            conn.exec_driver_sql(f"INSERT INTO blobs VALUES (randomblob({n}))")

    return write


def _copied_but_the_last_commit(engine: Engine, path: Path, ckpt: WalCheckpointer) -> int:
    """Leave a long log whose frames are all copied but the last commit's, as when the
    thread's checkpoint runs while the writer commits (a reader pins the snapshot it copies
    up to); return the log's length."""
    write = _blob_writer(engine)
    write(4 * WAL_BYTES)
    pin = sqlite3.connect(path, isolation_level=None)
    pin.execute("BEGIN")
    pin.execute("SELECT count(*) FROM blobs").fetchall()
    write(WAL_BYTES // 32)  # the commit that raced the checkpoint
    assert not ckpt.checkpoint("PASSIVE")  # copies up to the pinned snapshot only
    pin.execute("COMMIT")
    pin.close()
    log_bytes, pending = ckpt.gauge.read()
    assert log_bytes > 4 * WAL_BYTES and 0 < pending <= ckpt.tail_bytes
    return log_bytes


def test_the_writer_copies_the_last_frames_of_a_long_log_itself_so_the_log_restarts(
    engine: Engine, sqlite_url: str
) -> None:
    """At 1,000 events/s every checkpoint of the thread raced a commit: the log never
    restarted until the writer had to copy 16 MB and more itself (a 40-100 ms stall)."""
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    ckpt = WalCheckpointer(engine, path, interval=3600.0, wal_bytes=WAL_BYTES).start()
    log_bytes = _copied_but_the_last_commit(engine, path, ckpt)
    ckpt.after_write(idle=False)  # the writer has more to write: not now
    assert ckpt.restarts == 0 and ckpt.gauge.read()[1] > 0
    with ckpt._lock:  # the thread is copying: the writer does not wait behind it
        ckpt.after_write(idle=True)
    assert ckpt.restarts == 0 and ckpt.complete + ckpt.incomplete == 1
    copies = ckpt.complete
    ckpt.after_write(idle=True)  # on this (the writer's) thread, before it returns
    assert ckpt.restarts == 1 and ckpt.complete == copies + 1 and ckpt.forced == 0
    assert ckpt.gauge.read() == (log_bytes, 0)
    _blob_writer(engine)(1000)
    after, pending = ckpt.gauge.read()
    assert after == pending < 4 * 4096 + 200  # the log started again from its beginning
    assert ckpt.close()


def test_without_the_tail_copy_the_same_log_goes_on_growing(
    engine: Engine, sqlite_url: str
) -> None:
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    never = 100 * WAL_BYTES  # neither the tail copy nor the backstop
    ckpt = WalCheckpointer(
        engine, path, interval=3600.0, wal_bytes=WAL_BYTES, restart_bytes=never, force_bytes=never
    ).start()
    log_bytes = _copied_but_the_last_commit(engine, path, ckpt)
    ckpt.after_write(idle=True)
    assert ckpt.restarts == ckpt.forced == 0
    _blob_writer(engine)(1000)
    assert ckpt.gauge.read()[0] > log_bytes  # appended: the log did not restart
    assert ckpt.close()


def test_a_tail_copy_that_cannot_finish_is_not_tried_again_at_every_commit(
    engine: Engine, sqlite_url: str
) -> None:
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    ckpt = WalCheckpointer(  # the backstop has a backoff of its own: out of the way
        engine, path, interval=3600.0, wal_bytes=WAL_BYTES, force_bytes=100 * WAL_BYTES
    ).start()
    write = _blob_writer(engine)
    write(4 * WAL_BYTES)
    pin = sqlite3.connect(path, isolation_level=None)  # an old snapshot: nothing more copies
    pin.execute("BEGIN")
    pin.execute("SELECT count(*) FROM blobs").fetchall()
    write(1000)
    ckpt.checkpoint("PASSIVE")  # up to the pinned snapshot
    tries = []
    for _ in range(5):
        write(1000)
        before = ckpt.complete + ckpt.incomplete
        ckpt.after_write(idle=True)
        tries.append(ckpt.complete + ckpt.incomplete - before)
    assert tries == [1, 0, 0, 0, 0] and ckpt.restarts == 0  # one try, then wait for growth
    woken = ckpt.woken
    write(WAL_BYTES)  # more than a tail: the thread's to copy, not the writer's
    ckpt.after_write(idle=True)
    assert ckpt.woken == woken + 1 and ckpt.restarts == 0
    pin.execute("COMMIT")
    pin.close()
    assert ckpt.close()


def test_close_empties_the_wal_and_stops_the_checkpointer_thread(
    engine: Engine, bot: int, tmp_path: Path, wal: Path
) -> None:
    writer = make_writer(engine, bot, tmp_path).start()
    ckpt = writer.checkpointer
    assert ckpt is not None and ckpt.running
    write_round_trips(writer, wal, 5)
    assert wal.stat().st_size > 0
    assert writer.close()
    assert not ckpt.running
    assert not wal.exists() or wal.stat().st_size == 0  # wal_checkpoint(TRUNCATE)


def test_the_writers_connections_do_not_checkpoint_while_other_connections_do(
    engine: Engine, bot: int, sqlite_url: str, tmp_path: Path
) -> None:
    writer = make_writer(engine, bot, tmp_path, checkpoint_wal_bytes=WAL_BYTES).start()
    reader_engine = make_engine(sqlite_url)
    with read_connection(engine) as mine, read_connection(reader_engine) as reader:
        assert pragma(mine, "wal_autocheckpoint") == 0
        # a restart truncates only a WAL past the forcing size, not every WAL past wal_bytes
        assert pragma(mine, "journal_size_limit") == FORCE_FACTOR * WAL_BYTES
        assert pragma(reader, "wal_autocheckpoint") == 1000  # SQLite's default
        assert pragma(reader, "journal_size_limit") == -1
    raw = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    assert pragma(raw, "wal_autocheckpoint") == 1000
    raw.close()
    assert writer.close()
    with read_connection(engine) as after:  # a stopped writer gives SQLite its checkpoints back
        assert pragma(after, "wal_autocheckpoint") == 1000
        assert pragma(after, "journal_size_limit") == -1
    reader_engine.dispose()


def test_a_reader_pinning_the_wal_leaves_checkpoints_unfinished_and_writing_unaffected(
    engine: Engine,
    bot: int,
    sqlite_url: str,
    tmp_path: Path,
    wal: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = make_writer(
        engine, bot, tmp_path, checkpoint_interval=3600.0, checkpoint_wal_bytes=WAL_BYTES
    ).start()
    reader = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM order_events").fetchall()  # a snapshot held open
    with caplog.at_level(logging.WARNING, logger="trading.persistence.checkpointer"):
        pinned, sizes = write_round_trips(writer, wal, 20)
    ckpt = writer.checkpointer
    assert ckpt is not None and ckpt.incomplete > 0 and ckpt.complete == 0
    assert "a reader holds an old snapshot" in caplog.text
    assert sizes[-1] > FORCE_FACTOR * WAL_BYTES  # nothing could be copied: the log grew
    reader.execute("COMMIT")
    reader.close()
    more, _ = write_round_trips(writer, wal, 25, first=21)  # the next checkpoints finish
    assert ckpt.complete > 0 and writer.failures == writer.spooled == 0
    assert writer.close()
    assert recorded_keys(engine, bot) == keyed(pinned + more)
    assert not wal.exists() or wal.stat().st_size == 0


def test_a_checkpointer_that_cannot_open_the_database_is_logged_and_loses_nothing(
    engine: Engine, bot: int, tmp_path: Path, wal: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = make_writer(
        engine, bot, tmp_path, checkpoint_interval=3600.0, checkpoint_wal_bytes=WAL_BYTES
    )
    ckpt = writer.checkpointer
    assert ckpt is not None
    ckpt.path = tmp_path / "missing" / "atf.db"  # every connect fails: unable to open
    writer.start()
    with caplog.at_level(logging.WARNING, logger="trading.persistence.checkpointer"):
        events, _ = write_round_trips(writer, wal, 20)
        assert writer.close()
    assert ckpt.failures > 0 and ckpt.complete == 0
    assert "unable to open database file" in str(ckpt.last_error)
    assert caplog.text.count("WAL checkpoint of") == 1  # once, not at every retry
    assert (writer.failures, writer.spooled, len(writer.spool)) == (0, 0, 0)
    assert recorded_keys(engine, bot) == keyed(events)
    assert not ckpt.running


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_database_has_no_wal_and_no_checkpointer(url: str) -> None:
    engine = make_engine(url)
    assert WalCheckpointer.for_engine(engine, 1.0) is None
    engine.dispose()


def test_a_postgresql_engine_gets_no_checkpointer_and_keeps_its_settings(
    postgres_url: str,
) -> None:
    engine = make_engine(postgres_url)
    assert WalCheckpointer.for_engine(engine, 1.0) is None
    defer_wal_checkpoints(engine, journal_size_limit=0)()  # a no-op: no pragma reaches it
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
    engine.dispose()


def test_checkpoint_interval_none_leaves_checkpoints_to_sqlite(
    engine: Engine, bot: int, tmp_path: Path
) -> None:
    writer = make_writer(engine, bot, tmp_path, checkpoint_interval=None).start()
    assert writer.checkpointer is None
    with read_connection(engine) as conn:
        assert pragma(conn, "wal_autocheckpoint") == 1000
    assert writer.close()
