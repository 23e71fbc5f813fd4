"""WalCheckpointer: the audit writer's SQLite WAL checkpoints, kept out of its commits.

In WAL mode SQLite checkpoints inside the commit that takes the log past 1,000 pages: two
fsyncs in the writer's transaction, which set the writer's p99 (docs/persistence.md,
"Benchmark"). While a writer runs, its engine's connections do not checkpoint
(`db.defer_wal_checkpoints`) and this class does it on a connection of its own:

* ``wal_checkpoint(PASSIVE)`` on its thread, `interval` seconds after a write, or at once
  when a commit leaves the WAL larger than `wal_bytes` (a burst does not wait for the
  timer). PASSIVE takes no lock a writer needs: the writer commits meanwhile.
* SQLite starts the log again from its beginning only when a write begins after a
  checkpoint that copied every frame, so a writer committing through every checkpoint (a
  sustained burst) would grow the WAL without bound. Past ``FORCE_FACTOR * wal_bytes`` the
  writer's own thread runs the checkpoint between two batches (`after_write`): what SQLite's
  automatic checkpoint did, in a long burst only.
* A checkpoint that fails or cannot finish (a reader on an older snapshot, another
  checkpoint running, an I/O error) is logged and tried again; it never reaches the writer.
* `close` stops the thread, then ``wal_checkpoint(TRUNCATE)`` empties the WAL.

Only for SQLite files: PostgreSQL and in-memory databases get none (`for_engine`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import Engine

from trading.persistence.db import defer_wal_checkpoints

log = logging.getLogger(__name__)

#: The WAL size that wakes the checkpointer early: SQLite's own 1,000 pages of 4 KiB.
DEFAULT_WAL_BYTES = 4 * 1024 * 1024
#: Past this many times `wal_bytes`, the writer's thread checkpoints between two batches.
FORCE_FACTOR = 4
_MODES = frozenset({"PASSIVE", "TRUNCATE"})


def sqlite_file(engine: Engine) -> Path | None:
    """Return the absolute path of `engine`'s SQLite file; None for another backend or memory."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(os.path.abspath(database))


class WalCheckpointer:
    """Checkpoint one SQLite file's WAL off the writer's commits; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        path: Path,
        *,
        interval: float = 1.0,
        wal_bytes: int = DEFAULT_WAL_BYTES,
        busy_timeout: float = 1.0,
    ) -> None:
        if interval <= 0 or wal_bytes <= 0:
            raise ValueError("checkpoint interval and wal_bytes must be positive")
        self.engine = engine
        self.path = path
        self.wal_path = path.with_name(path.name + "-wal")
        self.interval = interval
        self.wal_bytes = wal_bytes
        self.force_bytes = FORCE_FACTOR * wal_bytes
        self.busy_timeout = busy_timeout
        self.complete = 0  # checkpoints that copied every frame of the log
        self.incomplete = 0  # could not copy every frame (a reader on an older snapshot)
        self.failures = 0  # raised (busy, locked, I/O, the connection)
        self.forced = 0  # run on the writer's thread, the WAL past force_bytes
        self.last_error: str | None = None
        self._failing = False
        self._lock = threading.Lock()  # one checkpoint at a time on the connection
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._dirty = False  # a write since the last checkpoint
        self._force_at = self.force_bytes
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
        try:
            return os.stat(self.wal_path).st_size
        except FileNotFoundError:
            return 0

    def start(self) -> WalCheckpointer:
        """Turn off the automatic checkpoints of the engine's connections; start the thread."""
        if self._undo is None and not self._stop.is_set():
            self._undo = defer_wal_checkpoints(self.engine, journal_size_limit=self.wal_bytes)
            self._thread.start()
        return self

    def after_write(self) -> None:
        """Note a commit (on the writer's thread): wake the thread early, or checkpoint here."""
        if self._undo is None:
            return  # not started (SQLite checkpoints as usual) or closed
        self._dirty = True
        size = self.wal_size()
        if size <= self.wal_bytes:
            self._force_at = self.force_bytes
        elif size <= self._force_at:
            self._wake.set()
        else:
            self.forced += 1
            failures = self.failures
            if self.checkpoint("PASSIVE"):
                self._force_at = self.force_bytes
                return
            self._force_at = size + self.wal_bytes  # try again once it has grown this much
            if self.failures == failures:
                log.warning(
                    "WAL of %s is %.1f MB and cannot be checkpointed: a reader holds an old "
                    "snapshot",
                    self.path,
                    size / 1e6,
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
        done = truncate and self.checkpoint("TRUNCATE")
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        return done

    def checkpoint(self, mode: str = "PASSIVE") -> bool:
        """Run one checkpoint; True if it copied every frame. Errors are logged, not raised."""
        if mode not in _MODES:
            raise ValueError(f"checkpoint mode must be one of {sorted(_MODES)}")
        with self._lock:
            try:
                if self._conn is None:  # mode=rw: never create a missing database
                    self._conn = sqlite3.connect(
                        self.path.as_uri() + "?mode=rw",
                        uri=True,
                        timeout=self.busy_timeout,
                        isolation_level=None,
                        check_same_thread=False,
                    )
                busy, frames, copied = self._conn.execute(
                    f"PRAGMA wal_checkpoint({mode})"
                ).fetchall()[0]
            except Exception as exc:  # noqa: BLE001 - logged and retried, never the writer's
                self._failed(exc)
                return False
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
