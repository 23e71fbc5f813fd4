"""Outbox: one recipient's queue with rate limit, burst merging, timeouts, retries and drops.

Rules (docs/notifications.md, reliability):

* `put` never blocks and never raises; past `queue_size` waiting messages the oldest is
  dropped and counted.
* At most one send every `min_interval` seconds. A message that arrives while others wait is
  merged into the last one (mergeable ones only, up to `max_chars`), so a burst costs a few
  sends, not one each, and fills the queue slowly.
* Each send has `timeout` seconds. A failure is retried after `backoff`, doubling up to
  `backoff_max`; a `RetryLater` from the server waits what it asks. After `max_attempts`
  failed attempts the message is dropped and logged: nothing is retried forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from notification.messages import Message
from notification.redact import scrub

log = logging.getLogger(__name__)


class RetryLater(Exception):
    """The server asked to wait `seconds` before the next send (HTTP 429)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"retry after {seconds:g} s")
        self.seconds = seconds


class ChannelError(Exception):
    """A send failed; the text is safe to log (secrets scrubbed)."""


@dataclass
class OutboxStats:
    queued: int = 0
    sends: int = 0  # successful sends (a merged burst counts once)
    delivered: int = 0  # messages in successful sends
    merged: int = 0  # messages folded into an earlier one
    failed_attempts: int = 0
    dropped: int = 0  # messages given up on (attempts exhausted, overflow or close)


class Outbox:
    def __init__(
        self,
        name: str,
        send: Callable[[Message], Awaitable[None]],
        *,
        min_interval: float,
        timeout: float,
        max_attempts: int,
        backoff: float,
        backoff_max: float,
        queue_size: int = 1000,
        max_chars: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._send = send
        self.min_interval = min_interval
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.max_chars = max_chars
        self._queue: deque[tuple[Message, int]] = deque()  # (message, messages folded into it)
        self._size = queue_size
        self._clock = clock
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._next_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self.stats = OutboxStats()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"outbox-{self.name}")

    def put(self, msg: Message) -> None:
        """Queue a message (call on the outbox's event loop)."""
        self.stats.queued += 1
        if self._queue and self._fits(self._queue[-1][0], msg):
            last, n = self._queue.pop()  # fold a burst in as it arrives: the queue holds few, long messages
            self._queue.append((last.merged(msg), n + 1))
            self.stats.merged += 1
        else:
            if len(self._queue) >= self._size:
                old, n = self._queue.popleft()
                self.stats.dropped += n
                if self.stats.dropped == n or self.stats.dropped % 100 < n:  # first, then every 100th
                    log.error("%s: queue full, dropped the oldest %d message(s) (%d so far): %s",
                              self.name, n, self.stats.dropped, _head(old))
            self._queue.append((msg, 1))
        self._idle.clear()
        self._wake.set()

    @property
    def pending(self) -> int:
        return sum(n for _, n in self._queue)

    async def wait_idle(self) -> None:
        """Return once everything queued so far was sent or dropped."""
        await self._idle.wait()

    async def close(self) -> None:
        """Stop sending; what is still queued is dropped and logged."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        left = self.pending
        if left:
            self.stats.dropped += left
            log.error("%s: closed with %d message(s) not delivered", self.name, left)
        self._queue.clear()
        self._idle.set()

    # ------------------------------------------------------------------ worker

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = self._next_at - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)  # messages arriving now merge into this send
            msg, count = self._take()
            await self._deliver(msg, count)
            self._next_at = self._clock() + self.min_interval

    def _fits(self, a: Message, b: Message) -> bool:
        return (a.mergeable and b.mergeable and a.chat_id == b.chat_id
                and (self.max_chars is None or len(a.text) + 1 + len(b.text) <= self.max_chars))

    def _take(self) -> tuple[Message, int]:
        msg, count = self._queue.popleft()
        if self.max_chars is not None and len(msg.text) > self.max_chars:
            msg = replace(msg, text=msg.text[: self.max_chars - 1] + "…")
        return msg, count

    async def _deliver(self, msg: Message, count: int) -> None:
        for attempt in range(1, self.max_attempts + 1):
            try:
                await asyncio.wait_for(self._send(msg), self.timeout)
            except asyncio.CancelledError:
                self._queue.appendleft((msg, count))  # close() counts it as not delivered
                raise
            except RetryLater as exc:
                delay, why = exc.seconds, str(exc)
            except TimeoutError:
                delay, why = self._backoff(attempt), f"no answer within {self.timeout:g} s"
            except ChannelError as exc:
                delay, why = self._backoff(attempt), scrub(exc)
            except Exception as exc:  # noqa: BLE001 - any failure is retried, then dropped
                delay, why = self._backoff(attempt), scrub(f"{type(exc).__name__}: {exc}")
            else:
                self.stats.sends += 1
                self.stats.delivered += count
                return
            self.stats.failed_attempts += 1
            if attempt == self.max_attempts:
                break
            log.warning("%s: send failed (attempt %d of %d, retry in %.2g s): %s",
                        self.name, attempt, self.max_attempts, delay, why)
            await asyncio.sleep(delay)
        self.stats.dropped += count
        log.error("%s: dropped %d message(s) after %d failed attempts (%s): %s",
                  self.name, count, self.max_attempts, why, _head(msg))

    def _backoff(self, attempt: int) -> float:
        return float(min(self.backoff * 2 ** (attempt - 1), self.backoff_max))


def _head(msg: Message) -> str:
    first = msg.text.splitlines()[0] if msg.text else ""
    return scrub(first[:120])
