"""How the audit writer handles a batch the database refuses (not an outage): the quarantine.

`is_outage` tells an outage (the database out of reach: spool, back off, replay in order)
from a refusal (a constraint, a value the database rejects, an event the audit code cannot
turn into rows: retrying would never succeed). `RefusalHandling` is the part of `AuditWriter`
that writes a refused batch, live or a spool chunk on replay, again one event at a time and
puts an event refused on its own in the spool's quarantine file (``<spool file>.quarantine``,
see `EventSpool.quarantine`), logged at CRITICAL and counted (`quarantined`); the writer goes
on with the next records. An outage in the middle of this spools the events not yet written,
in order, as any outage does. See the `writer` module docstring for the whole picture.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import exc as sa_exc

from trading.exceptions import DatabaseError
from trading.persistence.spool import EventSpool, SpoolChunk
from trading.persistence.writer_health import scrub

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from trading.events import Event

log = logging.getLogger("trading.persistence.writer")  # one logger for the whole writer

__all__ = ["OUTAGE_ERRORS", "RefusalHandling", "is_outage"]


#: Failures of the database's availability, not of the records: spool, back off, retry.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,  # connection refused/lost, admin shutdown, SQLite locked, disk I/O
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # no pooled connection in time
    OSError,
    TimeoutError,
    DatabaseError,  # atf's: no bot instance / wrong revision / a write race lost 4 times
)


def is_outage(exc: BaseException) -> bool:
    """True if `exc` says the database is out of reach (retry later), False for a refusal.

    A refusal (IntegrityError, DataError, ProgrammingError, or a TypeError, ValueError, ...
    raised while the rows are built) will fail again however often it is retried.
    """
    if isinstance(exc, OUTAGE_ERRORS):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)



class RefusalHandling:
    """The refusal path of `AuditWriter` (a mixin: it uses the writer's spool, counters and
    `_write`, `_written`, `_failed`, `_to_spool`)."""

    engine: Engine
    spool: EventSpool
    replayed: int
    quarantined: int
    _committed: int  # events `_write` committed before it raised

    def _write(self, events: Sequence[Event]) -> None: ...  # pragma: no cover - AuditWriter's
    def _written(self, batch: Sequence[tuple[float, Event]]) -> None: ...  # pragma: no cover
    def _failed(self, exc: BaseException) -> None: ...  # pragma: no cover
    def _to_spool(self, batch: list[tuple[float, Event]]) -> bool: ...  # pragma: no cover

    def _isolate(self, batch: list[tuple[float, Event]], refusal: Exception) -> int:
        """Write a refused batch event by event; return how many are written/spooled/quarantined.

        The events `_write` committed before the refusal are not written again. An event
        refused alone is quarantined; on an outage the events not yet written are spooled.
        """
        done = self._committed
        self._written(batch[:done])
        log.warning(
            "audit database refused a batch of %d events (%s): writing them one by one",
            len(batch),
            self._describe(refusal),
        )
        for i in range(done, len(batch)):
            event = batch[i][1]
            try:
                self._write([event])
            except Exception as exc:  # noqa: BLE001
                if is_outage(exc):
                    self._failed(exc)
                    return i + (len(batch) - i if self._to_spool(batch[i:]) else 0)
                try:
                    self._quarantine(event, exc)
                except OSError as disk:  # no quarantine file: spool it, isolated again later
                    self._quarantine_failed(disk)
                    return i + (len(batch) - i if self._to_spool(batch[i:]) else 0)
            else:
                self._written(batch[i : i + 1])
        return len(batch)

    def _isolate_chunk(self, chunk: SpoolChunk, refusal: Exception) -> bool:
        """Replay a refused spool chunk event by event (see `_isolate`); False on an outage.

        Each event is consumed from the spool once it is written or quarantined, so an
        outage in the middle leaves exactly the events not yet handled at the spool's front.
        """
        head, rest = chunk.split(self._committed)
        self.spool.consume(head)
        self.replayed += len(head.events)
        log.warning(
            "audit database refused %d spooled events (%s): replaying them one by one",
            len(chunk.events),
            self._describe(refusal),
        )
        while rest.events:
            event = rest.events[0]
            try:
                self._write([event])
            except Exception as exc:  # noqa: BLE001
                if is_outage(exc):
                    self._failed(exc)
                    return False
                try:
                    self._quarantine(event, exc)
                except OSError as disk:  # it stays at the spool's front, isolated again later
                    self._quarantine_failed(disk)
                    return False
            else:
                self.replayed += 1
            head, rest = rest.split(1)
            self.spool.consume(head)
        if rest.lines:  # only unreadable lines left (split gives them to the last event)
            self.spool.consume(rest)
        return True

    def _quarantine(self, event: Event, exc: BaseException) -> None:
        """Put one refused event in the quarantine file (fsynced); raise OSError if it fails."""
        error = type(exc).__name__
        orig = getattr(exc, "orig", None)  # the driver's error under SQLAlchemy's
        cause = orig if orig is not None else exc
        message = str(cause) if cause is exc else f"{type(cause).__name__}: {cause}"
        message = scrub(message, self.engine)[:2000]
        self.spool.quarantine(event, error, message)
        self.quarantined += 1
        subject = getattr(event, "client_order_id", None) or getattr(event, "trade_id", None)
        log.critical(
            "audit database refused %s %s (%s: %s): quarantined in %s (%d so far); "
            "the writer goes on with the next records",
            type(event).__name__,
            subject or "-",  # the order (or trade) it belongs to
            error,
            (message.splitlines() or [""])[0][:300],
            self.spool.quarantine_path,
            self.quarantined,
        )

    def _quarantine_failed(self, exc: OSError) -> None:
        log.critical("audit quarantine %s not writable: %s", self.spool.quarantine_path, exc)
        self._failed(exc)

    def _describe(self, exc: BaseException) -> str:
        text = scrub(f"{type(exc).__name__}: {getattr(exc, 'orig', None) or exc}", self.engine)
        return (text.splitlines() or [""])[0][:500]
