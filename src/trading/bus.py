"""EventBus: deliver trading events to subscribers without ever holding up the publisher.

Guarantees (see docs/trading-core.md):

* `publish` never blocks on a consumer and never raises into the caller.
* Inline subscribers (sync, `inline=True`) run inside `publish`, in subscription order; an
  exception is logged and counted, the next subscriber still runs.
* Every other subscriber has its own bounded in-memory queue and its own asyncio task; sync
  handlers run on the subscriber's own worker thread, so a slow or failing consumer delays
  only itself.
* A full queue spills to the subscriber's JSON-lines spool file (``<spool_dir>/<name>.jsonl``)
  instead of dropping; the consumer replays the spool in order before taking newer events.
  Events published after `close()` go to the spool too; a spool left by an earlier process
  is replayed first, so delivery across a crash is at least once for spilled events.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import re
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from trading.events import Event, decode_event, encode_event

log = logging.getLogger(__name__)

Handler = Callable[[Event], None] | Callable[[Event], Awaitable[None]]


@dataclass(eq=False)
class Subscription:
    """One subscriber and its delivery counters."""

    name: str
    handler: Handler
    event_types: tuple[type[Event], ...]
    inline: bool
    processed: int = 0
    failed: int = 0
    spilled: int = 0

    def wants(self, event: Event) -> bool:
        """Return whether this subscriber takes the event."""
        return not self.event_types or isinstance(event, self.event_types)


@dataclass(frozen=True)
class HandlerFailure:
    """An exception a subscriber raised, kept for inspection (the bus also logs it)."""

    subscriber: str
    event: Event
    error: str


class _Spool:
    """An append-only JSON-lines file of the events that did not fit in memory, in order."""

    def __init__(self, path: Path, fsync: bool) -> None:
        self.path = path
        self.fsync = fsync
        self.read_pos = 0
        self.pending = 0
        if path.exists():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                # A torn last line (crash mid-write) must not swallow the next record.
                with open(path, "ab") as f:
                    f.write(b"\n")
                data += b"\n"
            self.pending = data.count(b"\n")

    def append(self, event: Event) -> None:
        line = json.dumps(encode_event(event), separators=(",", ":")) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        self.pending += 1

    def read(self, n: int) -> tuple[list[Event], int, int]:
        """Read up to n complete lines from the read position; return (events, lines, new pos)."""
        events: list[Event] = []
        lines = 0
        with open(self.path, "rb") as f:
            f.seek(self.read_pos)
            while lines < n:
                raw = f.readline()
                if not raw.endswith(b"\n"):
                    break
                lines += 1
                try:
                    events.append(decode_event(json.loads(raw)))
                except Exception:  # noqa: BLE001 - a bad line must not block the rest
                    log.error("unreadable spool record in %s skipped: %r", self.path, raw)
            return events, lines, f.tell()


class _Mailbox:
    """A bounded FIFO in memory, continued on disk once full."""

    def __init__(self, capacity: int, spool: _Spool | None) -> None:
        self.capacity = capacity
        self.spool = spool
        self.buf: deque[Event] = deque()
        self.lock = threading.Lock()
        self.closed = False

    def put(self, event: Event) -> bool:
        """Queue the event; return True when it went to the spool."""
        with self.lock:
            spool = self.spool
            if spool is None or (
                not self.closed and spool.pending == 0 and len(self.buf) < self.capacity
            ):
                self.buf.append(event)
                return False
            try:
                spool.append(event)
                return True
            except OSError:
                # Disk trouble: keeping it in memory (even out of order) beats losing it.
                log.critical(
                    "spool %s not writable; event kept in memory", spool.path, exc_info=True
                )
                self.buf.append(event)
                return False

    def empty(self) -> bool:
        with self.lock:
            return not self.buf and (self.spool is None or self.spool.pending == 0)


class _Consumer:
    def __init__(self, sub: Subscription, mailbox: _Mailbox) -> None:
        self.sub = sub
        self.mailbox = mailbox
        self.task: asyncio.Task[None] | None = None
        self.wake: asyncio.Event | None = None
        self.busy = False
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"bus-{sub.name}")

    def idle(self) -> bool:
        return not self.busy and self.mailbox.empty()

    async def next_event(self) -> Event | None:
        box = self.mailbox
        with box.lock:
            if box.buf:
                self.busy = True
                return box.buf.popleft()
            spool = box.spool
            if spool is None or spool.pending == 0:
                return None
            want = min(box.capacity, spool.pending)
        # Read the spool off the event loop; only this consumer reads or deletes it.
        loop = asyncio.get_running_loop()
        events, lines, pos = await loop.run_in_executor(self.worker, spool.read, want)
        with box.lock:
            spool.read_pos = pos
            spool.pending -= lines
            box.buf.extend(events)
            if spool.pending == 0:
                spool.path.unlink(missing_ok=True)
                spool.read_pos = 0
            if not box.buf:
                return None
            self.busy = True
            return box.buf.popleft()


class EventBus:
    """Publish events to inline and queued subscribers; see the module docstring."""

    def __init__(
        self, spool_dir: str | Path | None = None, *, queue_size: int = 1024, fsync: bool = True
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._spool_dir = Path(spool_dir) if spool_dir is not None else None
        self._queue_size = queue_size
        self._fsync = fsync
        self._inline: list[Subscription] = []
        self._consumers: list[_Consumer] = []
        self._names: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._closed = False
        self.failures: deque[HandlerFailure] = deque(maxlen=1000)

    # ------------------------------------------------------------------ subscribing

    def subscribe(
        self,
        handler: Handler,
        *event_types: type[Event],
        inline: bool = False,
        name: str | None = None,
    ) -> Subscription:
        """Register a handler for the given event types (all events when none are given).

        `inline=True` runs a sync handler inside `publish`; keep such handlers quick and
        free of I/O. Queued subscribers need `spool_dir`; `name` names the spool file and must
        stay the same across restarts for a left-over spool to be replayed.
        """
        if inline and inspect.iscoroutinefunction(handler):
            raise TypeError("an inline handler must be synchronous")
        name = (
            name
            or f"{getattr(handler, '__module__', '')}.{getattr(handler, '__qualname__', repr(handler))}"
        )
        if name in self._names:
            raise ValueError(f"a subscriber named {name!r} exists; pass a distinct name=")
        sub = Subscription(
            name=name, handler=handler, event_types=tuple(event_types), inline=inline
        )
        self._names.add(name)
        if inline:
            self._inline.append(sub)
            return sub
        if self._spool_dir is None:
            raise ValueError(
                "queued subscribers need EventBus(spool_dir=...) so overflow is never dropped"
            )
        safe = re.sub(r"[^A-Za-z0-9_.\-]+", "_", name)
        consumer = _Consumer(
            sub, _Mailbox(self._queue_size, _Spool(self._spool_dir / f"{safe}.jsonl", self._fsync))
        )
        self._consumers.append(consumer)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._start_consumer, consumer)
        return sub

    # ------------------------------------------------------------------ publishing

    def publish(self, event: Event) -> None:
        """Deliver the event to inline handlers now and queue it for the others; never raise."""
        for sub in self._inline:
            try:
                if sub.wants(event):
                    sub.handler(event)
                    sub.processed += 1
            except Exception as exc:  # noqa: BLE001 - isolate subscribers
                self._failed(sub, event, exc)
        for consumer in self._consumers:
            try:
                if not consumer.sub.wants(event):
                    continue
                if consumer.mailbox.put(event):
                    consumer.sub.spilled += 1
                self._wake(consumer)
            except Exception:
                log.exception("could not queue %s for %s", type(event).__name__, consumer.sub.name)

    def _wake(self, consumer: _Consumer) -> None:
        loop = self._loop
        if loop is None or consumer.wake is None:
            return  # the consumer finds the event when it starts
        if threading.get_ident() == self._loop_thread:
            consumer.wake.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(consumer.wake.set)

    def _failed(self, sub: Subscription, event: Event, exc: Exception) -> None:
        sub.failed += 1
        self.failures.append(HandlerFailure(sub.name, event, repr(exc)))
        log.error("subscriber %s failed on %s", sub.name, type(event).__name__, exc_info=exc)

    # ------------------------------------------------------------------ running

    async def start(self) -> None:
        """Bind to the running loop and start the consumer tasks (done by drain too)."""
        if self._closed:
            raise RuntimeError("the bus is closed")
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
        for consumer in self._consumers:
            self._start_consumer(consumer)

    def _start_consumer(self, consumer: _Consumer) -> None:
        if consumer.task is None and not self._closed:
            consumer.wake = asyncio.Event()
            consumer.task = asyncio.get_running_loop().create_task(
                self._run(consumer), name=consumer.sub.name
            )

    async def _run(self, consumer: _Consumer) -> None:
        sub, loop = consumer.sub, asyncio.get_running_loop()
        assert consumer.wake is not None
        while True:
            event = await consumer.next_event()
            if event is None:
                if self._closed:
                    return
                consumer.wake.clear()
                if consumer.mailbox.empty():  # re-check: a publish may have come in meanwhile
                    await consumer.wake.wait()
                continue
            try:
                if inspect.iscoroutinefunction(sub.handler):
                    await sub.handler(event)
                else:
                    result = await loop.run_in_executor(consumer.worker, sub.handler, event)
                    if inspect.isawaitable(result):
                        await result
                sub.processed += 1
            except asyncio.CancelledError:
                # Closing mid-event: put it back so it is spooled, not lost (at least once).
                with consumer.mailbox.lock:
                    consumer.mailbox.buf.appendleft(event)
                raise
            except Exception as exc:  # noqa: BLE001 - isolate subscribers
                self._failed(sub, event, exc)
            finally:
                consumer.busy = False

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until every queued subscriber has handled everything published so far."""
        await self.start()

        async def settled() -> None:
            while not all(c.idle() for c in self._consumers):
                await asyncio.sleep(0.005)

        await asyncio.wait_for(settled(), timeout)

    async def close(self, timeout: float | None = None) -> None:
        """Drain, stop the consumer tasks; later events for queued subscribers go to their spool.

        On timeout the unhandled events stay queued: those in memory are written to the front
        of the spool so that a later process replays them in order.
        """
        try:
            await self.drain(timeout)
        except TimeoutError:
            log.warning("event bus closed before its consumers caught up; unhandled events spooled")
        self._closed = True
        for consumer in self._consumers:
            if consumer.task is not None:
                consumer.task.cancel()
                await asyncio.gather(consumer.task, return_exceptions=True)
            consumer.worker.shutdown(wait=False)
            _persist_backlog(consumer.mailbox)


def _persist_backlog(box: _Mailbox) -> None:
    """Move in-memory events to the head of the spool file and send later events there."""
    with box.lock:
        box.closed = True
        spool = box.spool
        if spool is None or not box.buf:
            return
        rest = b""
        if spool.path.exists():
            with open(spool.path, "rb") as f:
                f.seek(spool.read_pos)
                rest = f.read()
        head = "".join(json.dumps(encode_event(e), separators=(",", ":")) + "\n" for e in box.buf)
        tmp = spool.path.with_suffix(".jsonl.tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(head.encode("utf-8") + rest)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, spool.path)
        spool.pending += len(box.buf)
        spool.read_pos = 0
        box.buf.clear()
