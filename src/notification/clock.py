"""Clocks for the report scheduler: the system clock, and a manual one for tests."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Return the current time, timezone-aware UTC."""
        ...

    async def sleep_until(self, when: datetime) -> None:
        """Return once `now()` has reached `when`."""
        ...


class SystemClock:
    """Wall-clock time; sleeps in slices so a changed system clock is noticed within a minute."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        while (left := (when - self.now()).total_seconds()) > 0:
            await asyncio.sleep(min(left, 60.0))


class ManualClock:
    """A clock that moves only when told (`set`/`advance`), from any thread."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._waiters: list[tuple[datetime, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = max(self._now, when)
            due = [w for w in self._waiters if w[0] <= self._now]
            self._waiters = [w for w in self._waiters if w[0] > self._now]
        for _, loop, fut in due:
            loop.call_soon_threadsafe(_resolve, fut)

    def advance(self, seconds: float) -> None:
        from datetime import timedelta

        self.set(self.now() + timedelta(seconds=seconds))

    async def sleep_until(self, when: datetime) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if when <= self._now:
                return
            self._waiters.append((when, loop, fut))
        await fut

    @property
    def sleepers(self) -> int:
        """How many tasks wait for a later time (a test waits for the scheduler to sleep)."""
        with self._lock:
            return len(self._waiters)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
