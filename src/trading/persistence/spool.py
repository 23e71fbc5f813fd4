"""EventSpool: the audit writer's durable local queue (JSON lines, fsynced, replayed in order).

One file per bot instance. A batch the database did not take is appended in one write and
fsynced before the writer moves on; later batches queue behind it in the same file, so the
file is always the continuation of what the database holds. Replay reads it from the front,
chunk by chunk; once everything is in the database the file is truncated.

A crash in the middle of an append leaves a torn last line: on open it is cut off (those
events were never acknowledged as spooled) and every complete line before it is kept. A
complete line that cannot be decoded is moved to ``<file>.rejected`` rather than dropped or
allowed to block the lines behind it.

An event the database refuses for good (see `trading.persistence.writer`: a constraint or a
value it rejects, not an outage) is appended to ``<file>.quarantine`` by `quarantine`: one
JSON object per line, ``{"quarantined_at", "error", "message", "event"}`` with the event in
the spool's own encoding, fsynced. `read_quarantine` reads it back.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import trading.persistence.audit_events  # noqa: F401 - its events must decode from the spool
from trading.events import Event, decode_event, encode_event

log = logging.getLogger(__name__)


def spool_path(spool_dir: str | Path, bot_name: str, bot_instance_id: int) -> Path:
    """Return the spool file of one bot instance (one spool folder per database)."""
    safe = re.sub(r"[^A-Za-z0-9_.\-]+", "_", bot_name) or "bot"
    return Path(spool_dir) / f"audit-{safe}-{bot_instance_id}.jsonl"


def encode_line(event: Event) -> bytes:
    """Return the event as one JSON line (the bus codec: Decimal as text, ISO datetimes)."""
    return (json.dumps(encode_event(event), separators=(",", ":"), default=str) + "\n").encode()


def decode_line(line: bytes) -> Event:
    return decode_event(json.loads(line))


@dataclass(frozen=True)
class QuarantinedEvent:
    """One line of a quarantine file: the refused event, why, and when."""

    event: Event
    error: str
    message: str
    quarantined_at: datetime


@dataclass(frozen=True)
class SpoolChunk:
    """Events read from the front of the spool; `consume` it once they are in the database."""

    events: list[Event]
    start: int
    end: int
    lines: int
    #: per event: the end offset of its line and the lines read up to it (for `split`)
    marks: tuple[tuple[int, int], ...] = field(default=(), repr=False)

    def split(self, n: int) -> tuple[SpoolChunk, SpoolChunk]:
        """Return the chunk of the first `n` events (and the lines before them) and the rest.

        Consume the first, then the second: the spool can be consumed event by event.
        """
        if n <= 0:
            return SpoolChunk([], self.start, self.start, 0), self
        if n >= len(self.events):
            return self, SpoolChunk([], self.end, self.end, 0)
        end, lines = self.marks[n - 1]
        head = SpoolChunk(self.events[:n], self.start, end, lines, self.marks[:n])
        rest_marks = tuple((e, k - lines) for e, k in self.marks[n:])
        rest = SpoolChunk(self.events[n:], end, self.end, self.lines - lines, rest_marks)
        return head, rest


class EventSpool:
    """A durable FIFO of events on disk; thread-safe. See the module docstring."""

    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._read_pos = 0
        self.pending = 0  # complete lines not yet consumed
        self.torn_bytes = 0  # bytes of a torn last line cut off when the file was opened
        self.rejected = 0  # undecodable lines moved aside
        self.inexact = 0  # events whose JSON does not decode back to an equal event
        self._recover()

    def __len__(self) -> int:
        return self.pending

    @property
    def rejected_path(self) -> Path:
        return self.path.with_name(self.path.name + ".rejected")

    @property
    def quarantine_path(self) -> Path:
        return self.path.with_name(self.path.name + ".quarantine")

    def _recover(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep < len(data):
            self.torn_bytes = len(data) - keep
            log.warning(
                "spool %s ends in a torn line (%d bytes, a crash mid-append): cut off; "
                "the %d complete lines before it are kept",
                self.path,
                self.torn_bytes,
                data[:keep].count(b"\n"),
            )
            with open(self.path, "r+b") as f:
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())
        self.pending = data[:keep].count(b"\n")

    def append(self, events: Sequence[Event]) -> None:
        """Append `events` in one write and fsync; raise OSError if the disk refuses."""
        if not events:
            return
        lines = []
        for event in events:
            line = encode_line(event)
            if decode_line(line) != event:
                self.inexact += 1
                log.error("spooled %s does not round-trip exactly: %r", type(event).__name__, event)
            lines.append(line)
        blob = b"".join(lines)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:
                start = f.tell()
                try:
                    f.write(blob)
                    f.flush()
                    if self.fsync:
                        os.fsync(f.fileno())
                except OSError:
                    f.truncate(start)  # never leave half a batch behind a failed append
                    raise
            self.pending += len(lines)

    def peek(self, max_events: int) -> SpoolChunk:
        """Read up to `max_events` events from the front without consuming them."""
        with self._lock:
            start = pos = self._read_pos
            events: list[Event] = []
            marks: list[tuple[int, int]] = []
            lines = 0
            if self.pending == 0:
                return SpoolChunk([], start, start, 0)
            with open(self.path, "rb") as f:
                f.seek(start)
                while lines < max_events:
                    raw = f.readline()
                    if not raw.endswith(b"\n"):
                        break
                    lines += 1
                    pos += len(raw)
                    try:
                        events.append(decode_line(raw))
                    except Exception:  # noqa: BLE001 - one bad line must not block the rest
                        self._reject(raw)
                    else:
                        marks.append((pos, lines))
            return SpoolChunk(events, start, pos, lines, tuple(marks))

    def consume(self, chunk: SpoolChunk) -> None:
        """Mark `chunk` as written; truncate the file when nothing is left."""
        with self._lock:
            if chunk.start != self._read_pos:
                raise ValueError("spool chunks must be consumed in order")
            self._read_pos = chunk.end
            self.pending -= chunk.lines
            if self.pending == 0:
                self._truncate()

    def _truncate(self) -> None:
        with open(self.path, "r+b") as f:
            f.truncate(0)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        self._read_pos = 0

    def quarantine(self, event: Event, error: str, message: str) -> None:
        """Append `event`, refused by the database, to the quarantine file and fsync it.

        Raise OSError if the disk refuses (the caller keeps the event in the spool then).
        """
        record = {
            "quarantined_at": datetime.now(UTC).isoformat(),
            "error": error,
            "message": message,
            "event": encode_event(event),
        }
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.quarantine_path, "ab") as f:
                start = f.tell()
                try:
                    f.write(line)
                    f.flush()
                    if self.fsync:
                        os.fsync(f.fileno())
                except OSError:
                    f.truncate(start)
                    raise

    def read_quarantine(self) -> list[QuarantinedEvent]:
        """Return the quarantined events, oldest first (an empty list if there are none)."""
        return read_quarantine(self.quarantine_path)

    def _reject(self, raw: bytes) -> None:
        self.rejected += 1
        log.error("unreadable spool line moved to %s: %r", self.rejected_path, raw[:200])
        with open(self.rejected_path, "ab") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())


def read_quarantine(path: str | Path) -> list[QuarantinedEvent]:
    """Read a quarantine file (``<spool file>.quarantine``); [] if it does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for raw in path.read_bytes().splitlines():
        if not raw.strip():
            continue
        record = json.loads(raw)
        out.append(
            QuarantinedEvent(
                event=decode_event(record["event"]),
                error=str(record["error"]),
                message=str(record["message"]),
                quarantined_at=datetime.fromisoformat(record["quarantined_at"]),
            )
        )
    return out
