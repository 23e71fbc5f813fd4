"""WalCheckpointer: the audit writer's SQLite WAL checkpoints, kept out of its commits.

In WAL mode SQLite checkpoints inside the commit that takes the log past 1,000 pages: two
fsyncs in the writer's transaction, which set the writer's p99 (docs/persistence.md,
"Benchmark"). While a writer runs, its engine's connections do not checkpoint
(`db.defer_wal_checkpoints`) and this class does it on a connection of its own:

* ``wal_checkpoint(PASSIVE)`` on its thread, `interval` seconds after a write, or at once
  when a commit leaves `wal_bytes` of log not yet copied to the database (a burst does not
  wait for the timer; the log is read from the WAL index, `WalGauge`). Only new frames
  wake it: at 1,000 events/s, waking on every commit of a long log ran some 50 PASSIVE
  checkpoints a second, two fsyncs each, and none of them restarted the log.
  PASSIVE takes no lock a writer needs: the writer commits meanwhile.
* SQLite starts the log again from its beginning only when a write begins after a
  checkpoint that copied every frame. A writer committing every few milliseconds commits
  through every checkpoint of the thread (copying seconds of log takes tens of ms), so at
  1,000 events/s the log never restarted: it grew until the writer had to copy 16 MB and
  more itself, a 40-100 ms stall that alone set the p99. So once the log is past
  `restart_bytes` the thread copies its bulk early (woken when more than `tail_bytes` is
  left), and the writer's own thread copies the last `tail_bytes` or less when its queue is
  empty (`restarts`): no commit can race that one, the next transaction restarts the log,
  and it costs the writer a few frames and the two fsyncs, not seconds of log.
* Past `force_bytes` of log (a reader pinning an old snapshot, a burst with no idle
  moment) the writer's thread checkpoints whatever is left between two batches, when its
  queue is empty if it can wait (up to twice as long): the backstop (`forced`).
* ``journal_size_limit`` is `force_bytes`: a restart truncates only a WAL that went past
  it, so the file is not cut back and grown again every few seconds.
* A checkpoint that fails or cannot finish (a reader on an older snapshot, another
  checkpoint running, an I/O error) is logged and tried again; it never reaches the writer.
* `close` stops the thread, then ``wal_checkpoint(TRUNCATE)`` empties the WAL.

Only for SQLite files: PostgreSQL and in-memory databases get none (`for_engine`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import Engine

from trading.persistence.db import defer_wal_checkpoints

log = logging.getLogger(__name__)

#: New log (not yet copied) that wakes the checkpointer before its timer: 16 MB, about two
#: seconds of a 1,000 events/s writer (at 4 MB, SQLite's own 1,000 pages, the p99 at
#: 1,000/s was 1.4x worse in the A/B of docs/persistence.md, "Checkpoint settings").
DEFAULT_WAL_BYTES = 16 * 1024 * 1024
#: Past this many times `wal_bytes` of log, the writer's thread checkpoints between two batches.
FORCE_FACTOR = 4
#: Log left to copy that the writer's thread copies itself to restart the log: a few
#: commits of a 1,000 events/s writer (each about 80 KB of frames).
DEFAULT_TAIL_BYTES = 256 * 1024
_MODES = frozenset({"PASSIVE", "TRUNCATE"})


def sqlite_file(engine: Engine) -> Path | None:
    """Return the absolute path of `engine`'s SQLite file; None for another backend or memory."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(os.path.abspath(database))


class WalGauge:
    """Read the log's length and how much of it is checkpointed from the WAL index (-shm).

    The first 136 bytes of the ``-shm`` file are SQLite's documented wal-index header
    (sqlite.org/walformat.html): ``mxFrame`` (frames in the log) at byte 16 and
    ``nBackfill`` (frames copied to the database) at byte 96, native byte order. The file
    size of the WAL says neither once the log restarts within a larger file. A header read
    while a commit changes it may be stale or torn: the numbers only decide when to wake.

    The header is read with ``pread`` on the descriptor SQLite itself holds open for the
    ``-shm`` in this process (found in ``/proc/self/fd``), never by opening the file: closing
    any descriptor of a file drops every POSIX lock the process holds on it, SQLite's
    "dead man switch" read lock included, and the next process to open the database would
    then truncate the ``-shm`` that this process's SQLite has mapped (SIGBUS; "How To
    Corrupt An SQLite Database File", 2.2). Without such a descriptor (no connection open
    here, no ``/proc``) the WAL file's size stands in for both numbers.
    """

    _PAGE_AND_FRAMES = struct.Struct("=HI")  # szPage at byte 14, mxFrame at byte 16
    _BACKFILL = struct.Struct("=I")  # nBackfill at byte 96
    _FDS = Path("/proc/self/fd")

    def __init__(self, path: Path) -> None:
        self.shm_path = path.with_name(path.name + "-shm")
        self.wal_path = path.with_name(path.name + "-wal")
        self._target = os.path.realpath(self.shm_path)
        self._fd: int | None = None

    def read(self) -> tuple[int, int]:
        """Return (log bytes, log bytes not yet copied to the database); the WAL file's size
        for both if the index cannot be read."""
        head = self._header()
        if head is None:
            size = self.file_size()
            return size, size
        page, frames = self._PAGE_AND_FRAMES.unpack_from(head, 14)
        (backfill,) = self._BACKFILL.unpack_from(head, 96)
        frame = (65536 if page == 1 else page) + 24  # a frame: its page and a 24-byte header
        return frames * frame, max(frames - backfill, 0) * frame

    def _header(self) -> bytes | None:
        for fd in ([self._fd] if self._fd is not None else []) + [None]:
            fd = fd if fd is not None else self._find()
            if fd is None:
                return None
            try:
                if os.readlink(self._FDS / str(fd)) != self._target:
                    raise OSError("descriptor reused")
                head = os.pread(fd, 100, 0)
            except OSError:
                self._fd = None
                continue
            self._fd = fd
            return head if len(head) == 100 else None
        return None

    def _find(self) -> int | None:
        """Return the descriptor SQLite holds for the -shm file, without opening the file."""
        try:
            names = os.listdir(self._FDS)
        except OSError:
            return None
        for name in names:
            try:
                if os.readlink(self._FDS / name) == self._target:
                    return int(name)
            except (OSError, ValueError):
                continue
        return None

    def file_size(self) -> int:
        try:
            return os.stat(self.wal_path).st_size
        except FileNotFoundError:
            return 0


class WalCheckpointer:
    """Checkpoint one SQLite file's WAL off the writer's commits; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        path: Path,
        *,
        interval: float = 1.0,
        wal_bytes: int = DEFAULT_WAL_BYTES,
        force_bytes: int | None = None,
        idle_bytes: int | None = None,
        restart_bytes: int | None = None,
        tail_bytes: int | None = None,
        journal_size_limit: int | None = None,
        busy_timeout: float = 1.0,
    ) -> None:
        if interval <= 0 or wal_bytes <= 0:
            raise ValueError("checkpoint interval and wal_bytes must be positive")
        self.engine = engine
        self.path = path
        self.gauge = WalGauge(path)
        self.wal_path = self.gauge.wal_path
        self.interval = interval
        self.wal_bytes = wal_bytes
        self.force_bytes = FORCE_FACTOR * wal_bytes if force_bytes is None else force_bytes
        #: New log that wakes the thread when the writer's queue is empty (wal_bytes if None)
        self.idle_bytes = wal_bytes if idle_bytes is None else idle_bytes
        #: A log longer than this is restarted (the writer copies its tail; wal_bytes if None)
        self.restart_bytes = wal_bytes if restart_bytes is None else restart_bytes
        #: What the writer's thread copies at most to restart the log
        self.tail_bytes = (
            min(DEFAULT_TAIL_BYTES, max(self.restart_bytes // 4, 1))
            if tail_bytes is None
            else tail_bytes
        )
        self.journal_size_limit = (
            self.force_bytes if journal_size_limit is None else journal_size_limit
        )
        self.busy_timeout = busy_timeout
        self.complete = 0  # checkpoints that copied every frame of the log
        self.incomplete = 0  # could not copy every frame (a reader on an older snapshot)
        self.failures = 0  # raised (busy, locked, I/O, the connection)
        self.forced = 0  # run on the writer's thread, the log past force_bytes
        self.restarts = 0  # tails copied on the writer's thread to restart a long log
        self.woken = 0  # early wake-ups by the writer's commits
        self.last_error: str | None = None
        self._failing = False
        self._lock = threading.Lock()  # one checkpoint at a time on the connection
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._dirty = False  # a write since the last checkpoint
        self._force_at = self.force_bytes
        self._restart_at = self.restart_bytes
        self._conn: sqlite3.Connection | None = None
        self._undo: Callable[[], None] | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"wal-checkpointer-{path.name}", daemon=True
        )

    @classmethod
    def for_engine(
        cls, engine: Engine, interval: float | None, wal_bytes: int = DEFAULT_WAL_BYTES
    ) -> WalCheckpointer | None:
        """Return a checkpointer for `engine`'s SQLite file; None when there is nothing to do
        (PostgreSQL, an in-memory database) or `interval` is None (SQLite's own checkpoints)."""
        path = sqlite_file(engine)
        if interval is None or path is None:
            return None
        return cls(engine, path, interval=interval, wal_bytes=wal_bytes)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wal_size(self) -> int:
        """Return the WAL file's size in bytes."""
        return self.gauge.file_size()

    def start(self) -> WalCheckpointer:
        """Turn off the automatic checkpoints of the engine's connections; start the thread."""
        if self._undo is None and not self._stop.is_set():
            self._force_at = self.force_bytes
            self._undo = defer_wal_checkpoints(
                self.engine, journal_size_limit=self.journal_size_limit
            )
            self._thread.start()
        return self

    def after_write(self, idle: bool = True) -> None:
        """Note a commit (on the writer's thread; `idle`: its queue is empty): wake the
        thread when enough new log waits for it, or checkpoint here past `force_bytes`."""
        if self._undo is None:
            return  # not started (SQLite checkpoints as usual) or closed
        self._dirty = True
        log_bytes, pending = self.gauge.read()
        if log_bytes <= self.restart_bytes:
            self._restart_at = self.restart_bytes
        long_log = log_bytes > self._restart_at
        if long_log and idle and 0 < pending <= self.tail_bytes:
            self._restart(log_bytes)
            return
        if log_bytes <= self.force_bytes:
            self._force_at = self.force_bytes
        elif log_bytes > self._force_at and (idle or log_bytes > 2 * self._force_at):
            self._force(log_bytes)
            return
        wake_at = self.idle_bytes if idle else self.wal_bytes
        if long_log:
            wake_at = min(wake_at, self.tail_bytes + 1)  # copy the bulk: the tail is ours
        if pending >= wake_at and not self._lock.locked():
            self.woken += 1  # (a checkpoint running now leaves the frames after it to the next)
            self._wake.set()

    def _restart(self, log_bytes: int) -> None:
        """Copy the log's last frames on the writer's thread: the next write restarts it.

        A copy that cannot finish (a reader on an older snapshot) is not tried again before
        the log has grown by `restart_bytes`: the writer does not pay fsyncs for nothing.
        """
        done = self.checkpoint("PASSIVE", wait=False)
        if done:
            self.restarts += 1
        elif done is not None:  # None: the thread is copying; try at the next idle commit
            self._restart_at = log_bytes + self.restart_bytes

    def _force(self, log_bytes: int) -> None:
        """Checkpoint on the writer's thread: no commit can race it, so the log restarts."""
        self.forced += 1
        failures = self.failures
        if self.checkpoint("PASSIVE"):
            self._force_at = self.force_bytes
            return
        self._force_at = log_bytes + self.wal_bytes  # try again once it has grown this much
        if self.failures == failures:
            log.warning(
                "WAL of %s is %.1f MB and cannot be checkpointed: a reader holds an old snapshot",
                self.path,
                log_bytes / 1e6,
            )

    def close(self, timeout: float | None = None, *, truncate: bool = True) -> bool:
        """Stop the thread, give the engine SQLite's checkpoints back, empty the WAL
        (TRUNCATE) unless `truncate` is False; True if the WAL was emptied."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._undo is not None:
            self._undo()
            self._undo = None
        if self._thread.is_alive():  # stuck in I/O: leave its connection to it
            return False
        done = truncate and self.checkpoint("TRUNCATE") is True
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        return done

    def checkpoint(self, mode: str = "PASSIVE", *, wait: bool = True) -> bool | None:
        """Run one checkpoint; True if it copied every frame. Errors are logged, not raised.

        `wait=False`: if the thread is running a checkpoint, return None at once without
        one (the writer's tail copy never waits behind the thread's bulk copy).
        """
        if mode not in _MODES:
            raise ValueError(f"checkpoint mode must be one of {sorted(_MODES)}")
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            if self._conn is None:  # mode=rw: never create a missing database
                self._conn = sqlite3.connect(
                    self.path.as_uri() + "?mode=rw",
                    uri=True,
                    timeout=self.busy_timeout,
                    isolation_level=None,
                    check_same_thread=False,
                )
            result = self._conn.execute(f"PRAGMA wal_checkpoint({mode})")
            busy, frames, copied = result.fetchone()
        except Exception as exc:  # noqa: BLE001 - logged and retried, never the writer's
            self._failed(exc)
            return False
        finally:
            self._lock.release()
        if self._failing:
            log.info("WAL checkpoints of %s work again", self.path)
            self._failing = False
        done = not busy and frames == copied
        if done:
            self.complete += 1
        else:
            self.incomplete += 1
            log.debug("checkpoint of %s: %s of %s frames copied", self.path, copied, frames)
        return done

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if not self._failing:
            log.warning("WAL checkpoint of %s failed (%s); retrying", self.path, self.last_error)
            self._failing = True
        if self._conn is not None:  # a fresh connection next time
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._dirty and not self._stop.is_set():
                self._dirty = False
                self.checkpoint("PASSIVE")
