"""AuditWriter: bus events to the audit database on one thread, never blocking, never losing.

`subscribe(bus)` adds an inline subscriber that only appends the event to an in-memory
queue (a lock and a deque: microseconds on the strategy's thread). The writer's own thread
takes what is queued, up to `batch_size` events (waiting up to `batch_delay` seconds for a
batch to fill, 0 by default: whatever came in while the last batch was being written forms
the next one), and writes it with `apply_events`, one transaction per batch (`batches`
counts them).

If a write fails because the database is out of reach (`is_outage`: the connection, a lock
timeout, a full disk) trading goes on: the batch goes to the `EventSpool` (fsynced JSON lines)
and so does every later batch, in order, until the spool has been replayed. The writer
retries with exponential backoff (`retry_initial` up to `retry_max` seconds); when the
database answers, the spool is replayed from the front, chunk by chunk, and truncated. A
spool left by an earlier process is replayed first.

Any other failure is a refusal (a constraint, a value the database rejects, an event the
audit code cannot turn into rows): the batch is written again one event at a time and an
event refused on its own is quarantined (`writer_refusals`), so every event is in the
database, in the spool or in the quarantine file, and never half-written.

Heartbeats (`heartbeat_interval`) and equity samples (`equity_interval`, from
`equity_source`) are taken on the writer's thread; equity samples are queued like events.
On a SQLite file, a `WalCheckpointer` checkpoints the WAL every `checkpoint_interval` seconds
on a thread of its own, so no commit of the writer runs one (None: SQLite's own, in commits).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from trading.events import (
    BotStarted,
    BotStopped,
    Event,
    Halted,
    OrderEvent,
    Resumed,
    RiskDenied,
    RiskWarning,
    TradeClosed,
    TradeOpened,
)
from trading.persistence.audit import apply_events
from trading.persistence.audit_events import EquitySampled, Reconciled
from trading.persistence.bots import record_heartbeat
from trading.persistence.checkpointer import DEFAULT_WAL_BYTES, WalCheckpointer
from trading.persistence.equity import record_equity_snapshot
from trading.persistence.recovery import record_reconciliation
from trading.persistence.spool import EventSpool
from trading.persistence.writer_health import WriterHealth, pct
from trading.persistence.writer_refusals import RefusalHandling, is_outage

if TYPE_CHECKING:
    from trading.bus import EventBus, Subscription

log = logging.getLogger(__name__)

#: The events the writer records (everything of an order, trade, risk control or the bot).
AUDITED: tuple[type[Event], ...] = (
    OrderEvent,
    TradeOpened,
    TradeClosed,
    RiskDenied,
    RiskWarning,
    Halted,
    Resumed,
    BotStarted,
    BotStopped,
    Reconciled,
)

class AuditWriter(RefusalHandling):
    """Write one bot instance's events to the audit tables; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        bot_instance_id: int,
        spool: EventSpool,
        *,
        batch_size: int = 500,
        batch_delay: float = 0.0,
        retry_initial: float = 0.1,
        retry_max: float = 5.0,
        heartbeat_interval: float | None = 10.0,
        equity_interval: float | None = None,
        equity_source: Callable[[], EquitySampled | None] | None = None,
        periodic: Sequence[tuple[float, Callable[[], None]]] = (),
        checkpoint_interval: float | None = 1.0,
        checkpoint_wal_bytes: int = DEFAULT_WAL_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if retry_initial <= 0 or retry_max < retry_initial:
            raise ValueError("need 0 < retry_initial <= retry_max")
        self.engine = engine
        self.bot_instance_id = bot_instance_id
        self.spool = spool
        self.batch_size = batch_size
        self.batch_delay = batch_delay
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._clock = clock
        self._equity_source = equity_source
        # (interval, job, next due); heartbeats and equity samples are periodic jobs too
        self._jobs: list[list[object]] = []
        if heartbeat_interval:
            self._jobs.append([heartbeat_interval, self._heartbeat, 0.0])
        if equity_interval and equity_source is not None:
            self._jobs.append([equity_interval, self._sample_equity, 0.0])
        self._jobs.extend([interval, job, 0.0] for interval, job in periodic)
        lock = threading.Lock()
        self._work = threading.Condition(lock)  # the writer waits here for events
        self._idle = threading.Condition(lock)  # flush() waits here for the writer
        self._queue: deque[tuple[float, Event]] = deque()
        self._inflight: list[Event] = []
        self._submitted = 0
        self._done = 0  # events written or spooled
        self._stopping = False
        self._closed = False
        self._degraded = len(spool) > 0  # a spool left by an earlier process: replay it first
        self._retry_at = 0.0
        self._backoff = retry_initial
        self.written = 0
        self.batches = 0  # batches taken from the queue (written or spooled)
        self.spooled = 0
        self.replayed = 0
        self.failures = 0
        self.quarantined = 0  # events the database refused on their own: in the quarantine file
        self._committed = 0  # events of the last _write() committed before it failed
        self.last_error: str | None = None
        self.last_write: datetime | None = None
        self.latencies: deque[float] = deque(maxlen=200_000)  # publish -> commit, seconds
        self.unsaved: list[Event] = []  # neither written nor spooled (disk and database failed)
        self._thread = threading.Thread(
            target=self._run, name=f"audit-writer-{bot_instance_id}", daemon=True
        )
        self._started = False
        self.checkpointer = WalCheckpointer.for_engine(
            engine, checkpoint_interval, checkpoint_wal_bytes
        )

    # ------------------------------------------------------------------ producer side
    def subscribe(self, bus: EventBus) -> Subscription:
        """Feed the writer from `bus` (inline: the handler only queues the event)."""
        return bus.subscribe(
            self.submit, *AUDITED, inline=True, name=f"audit-writer-{self.bot_instance_id}"
        )

    def submit(self, event: Event) -> None:
        """Queue one event; never blocks on the database, never raises."""
        with self._work:
            closed = self._closed
            if not closed:
                self._queue.append((self._clock(), event))
                self._submitted += 1
                n = len(self._queue)
                if n == 1 or n == self.batch_size:
                    self._work.notify()
        if closed:  # after close: straight to the spool, replayed by the next start
            try:
                self.spool.append([event])
                self.spooled += 1
            except OSError:
                log.critical("audit event after close could not be spooled: %r", event)

    # ------------------------------------------------------------------ control
    def start(self) -> AuditWriter:
        """Start the writer's thread (it replays a left-over spool first)."""
        if not self._started:
            self._started = True
            if self.checkpointer is not None:
                self.checkpointer.start()
            self._thread.start()
            _LIVE.add(self)
        return self

    def replay_spool(self) -> bool:
        """Replay the spool now, on the caller's thread (before `start`); True if it is empty."""
        if self._started:
            raise RuntimeError("replay_spool is for before start(); the thread replays after")
        if len(self.spool):
            self._replay()
        return len(self.spool) == 0

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event submitted so far is written or spooled; False on timeout."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._idle:
            target = self._submitted
            while self._done < target:
                left = None if deadline is None else deadline - self._clock()
                if (left is not None and left <= 0) or not self._thread.is_alive():
                    return False
                self._idle.wait(left if left is None else min(left, 0.5))
        return True

    def wait_written(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is in the database (spool replayed too)."""
        deadline = None if timeout is None else self._clock() + timeout
        if not self.flush(timeout):
            return False
        with self._idle:
            while len(self.spool) or self._degraded:
                left = None if deadline is None else deadline - self._clock()
                if (left is not None and left <= 0) or not self._thread.is_alive():
                    return False
                self._work.notify()  # let a waiting writer retry now
                self._idle.wait(0.05 if left is None else min(left, 0.05))
        return True

    def close(self, timeout: float | None = 30.0) -> bool:
        """Write or spool everything, stop the thread; True if all of it reached the database.

        Quarantined records (refused by the database for good) do not make it False: a
        restart would not write them either; the count and the file are logged.

        On timeout (a database call that hangs), whatever is still in memory is appended to
        the spool from this thread, so nothing is lost; the next start replays it.
        """
        deadline = None if timeout is None else self._clock() + timeout
        with self._work:
            self._stopping = True  # no more waiting for batches to fill: write what is queued
            self._work.notify()
        if self._started:
            left = None if deadline is None else max(deadline - self._clock(), 0.0)
            self._thread.join(left)
        if self.checkpointer is not None:  # TRUNCATE: an empty WAL, unless a write hangs
            left = None if deadline is None else max(deadline - self._clock(), 0.0)
            self.checkpointer.close(left, truncate=not self._thread.is_alive())
        with self._work:
            self._closed = True
            leftovers = list(self._inflight) + [e for _, e in self._queue]
            self._queue.clear()
        if leftovers and (self._thread.is_alive() or not self._started):
            log.error("audit writer stopped with %d events in memory: spooled", len(leftovers))
            try:
                self.spool.append(leftovers)
                self.spooled += len(leftovers)
            except OSError:
                log.critical("%d audit events could not be spooled", len(leftovers), exc_info=True)
                self.unsaved.extend(leftovers)
        _LIVE.discard(self)
        if self.quarantined:
            log.error(
                "%d audit records were refused by the database and are not in it: see %s",
                self.quarantined,
                self.spool.quarantine_path,
            )
        return len(self.spool) == 0 and not leftovers and not self.unsaved

    def health(self) -> WriterHealth:
        with self._work:
            queued = len(self._queue) + len(self._inflight)
            lat = list(self.latencies)
        lat.sort()  # outside the lock: submit() must not wait for this
        state = "closed" if self._closed else "spooling" if self._degraded else "ok"
        return WriterHealth(
            state=state,
            queued=queued,
            spool_pending=len(self.spool),
            written=self.written,
            spooled=self.spooled,
            replayed=self.replayed,
            failures=self.failures,
            quarantined=self.quarantined,
            last_error=self.last_error,
            last_write=self.last_write,
            latency_p50_ms=pct(lat, 0.50),
            latency_p99_ms=pct(lat, 0.99),
        )

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        try:
            while True:
                batch = self._next_batch()
                if self._degraded and (batch is None or self._clock() >= self._retry_at):
                    self._replay()
                if batch:
                    self._handle(batch)
                if batch is None:
                    return
                self._run_jobs()
        except BaseException:
            log.critical("audit writer thread died", exc_info=True)
            raise
        finally:
            with self._idle:
                self._idle.notify_all()

    def _next_due(self) -> float:
        due = [float(job[2]) for job in self._jobs]  # type: ignore[arg-type]
        if self._degraded:
            due.append(self._retry_at)
        return min(due, default=self._clock() + 3600.0)

    def _next_batch(self) -> list[tuple[float, Event]] | None:
        """Wait for events (or a job due); return up to batch_size of them, None to stop."""
        with self._work:
            while not self._queue and not self._stopping:
                wait = self._next_due() - self._clock()
                if wait <= 0:
                    return []
                self._work.wait(wait)
            if self.batch_delay > 0 and not self._stopping:
                first = self._queue[0][0]
                while len(self._queue) < self.batch_size and not self._stopping:
                    now = self._clock()
                    left = first + self.batch_delay - now
                    if left <= 0:
                        break
                    job_wait = self._next_due() - now
                    if job_wait <= 0:
                        return []  # run the jobs; the batch keeps filling meanwhile
                    self._work.wait(min(left, job_wait))
            if not self._queue:
                return None  # stopping and nothing left
            n = min(len(self._queue), self.batch_size)
            batch = [self._queue.popleft() for _ in range(n)]
            self._inflight = [e for _, e in batch]
            self.batches += 1
            return batch

    def _handle(self, batch: list[tuple[float, Event]]) -> None:
        events = [e for _, e in batch]
        settled = len(events)  # events written, spooled or quarantined (the rest: queued again)
        if not self._degraded:
            try:
                self._write(events)
                self._written(batch)
            except Exception as exc:  # noqa: BLE001 - an outage or a refusal (is_outage)
                if is_outage(exc):
                    self._failed(exc)
                    settled = len(events) if self._to_spool(batch) else 0
                else:
                    settled = self._isolate(batch, exc)
        else:
            settled = len(events) if self._to_spool(batch) else 0
        with self._idle:
            self._inflight = []
            self._done += settled
            self._idle.notify_all()

    def _written(self, batch: Sequence[tuple[float, Event]]) -> None:
        now = self._clock()
        with self._work:
            self.latencies.extend(now - t for t, _ in batch)
        self.written += len(batch)

    def _to_spool(self, batch: list[tuple[float, Event]]) -> bool:
        """Append the batch to the spool; on a disk error put it back at the queue's front."""
        events = [e for _, e in batch]
        try:
            self.spool.append(events)
        except OSError:
            # Database and disk both failing: keep the batch in memory, in order, and retry.
            log.critical("audit spool %s not writable", self.spool.path, exc_info=True)
            with self._work:
                if self._stopping:
                    self.unsaved.extend(events)
                    log.critical(
                        "%d audit events could be neither written nor spooled", len(events)
                    )
                    return True
                self._queue.extendleft(reversed(batch))
            time.sleep(min(self._backoff, 1.0))
            return False
        self.spooled += len(events)
        self._degraded = True
        return True

    def _write(self, events: Sequence[Event]) -> None:
        """Write `events` in order: audit events one transaction per run, records one each.

        `_committed` counts the events committed so far (those before a failure are in).
        """
        self._committed = 0
        run: list[Event] = []
        for event in events:
            if isinstance(event, (EquitySampled, Reconciled)):
                if run:
                    apply_events(self.engine, run, self.bot_instance_id)
                    self._committed += len(run)
                    run = []
                self._write_record(event)
                self._committed += 1
            else:
                run.append(event)
        if run:
            apply_events(self.engine, run, self.bot_instance_id)
            self._committed += len(run)
        self.last_write = datetime.now(UTC)
        if self.checkpointer is not None:  # idle: nothing queued, no commit due at once
            self.checkpointer.after_write(idle=not self._queue)

    def _write_record(self, event: EquitySampled | Reconciled) -> None:
        if isinstance(event, EquitySampled):
            record_equity_snapshot(
                self.engine,
                self.bot_instance_id,
                ts=event.ts,
                equity=event.equity,
                cash=event.cash,
                unrealised_pnl=event.unrealised_pnl,
                realised_pnl=event.realised_pnl,
            )
        else:
            record_reconciliation(
                self.engine,
                self.bot_instance_id,
                ts=event.ts,
                reason=event.reason,
                symbol=event.symbol,
                client_order_id=event.client_order_id,
                details=event.details_dict(),
            )

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = self._describe(exc)
        if not self._degraded:
            log.warning(
                "audit database write failed (%s); trading goes on, records go to %s until it is back",
                self.last_error,
                self.spool.path,
            )
        self._degraded = True
        self._retry_at = self._clock() + self._backoff
        self._backoff = min(self._backoff * 2, self.retry_max)

    def _replay(self) -> None:
        """Write the spool to the database from the front; stop at the first outage.

        A chunk the database refuses is replayed event by event (`_isolate_chunk`).
        """
        total = 0
        while len(self.spool):
            chunk = self.spool.peek(self.batch_size)
            try:
                if chunk.events:
                    self._write(chunk.events)
            except Exception as exc:  # noqa: BLE001
                if is_outage(exc):
                    self._failed(exc)
                    return
                if not self._isolate_chunk(chunk, exc):
                    return
                total += len(chunk.events)
                continue
            self.spool.consume(chunk)
            self.replayed += len(chunk.events)
            total += len(chunk.events)
        if total:
            log.warning("audit database reachable again: %d spooled records replayed", total)
        self._degraded = False
        self._backoff = self.retry_initial
        with self._idle:
            self._idle.notify_all()

    def _run_jobs(self) -> None:
        now = self._clock()
        for job in self._jobs:
            interval, fn, due = job
            if now >= due:  # type: ignore[operator]
                job[2] = now + interval  # type: ignore[operator]
                try:
                    fn()  # type: ignore[operator]
                except Exception:
                    log.warning(
                        "audit writer job %s failed", getattr(fn, "__name__", fn), exc_info=True
                    )

    def _heartbeat(self) -> None:
        if self._degraded:
            return
        try:
            record_heartbeat(self.engine, self.bot_instance_id)
        except Exception as exc:  # noqa: BLE001 - the database is down: spool from now on
            if is_outage(exc):
                self._failed(exc)
            else:
                log.warning("audit heartbeat refused: %s", self._describe(exc))

    def _sample_equity(self) -> None:
        assert self._equity_source is not None
        sample = self._equity_source()
        if sample is not None:
            self.submit(sample)


_LIVE: weakref.WeakSet[AuditWriter] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """Write or spool what running writers still hold when the interpreter exits."""
    for writer in list(_LIVE):
        writer.close(5.0)
