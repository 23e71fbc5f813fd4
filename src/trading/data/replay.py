"""Replay: stream recorded bars into backtrader one by one, as a live feed would deliver them.

`ReplayFeed` is a non-preloaded backtrader feed whose `_load` waits on a thread-safe queue;
`ReplayProducer` is the asyncio task that fills those queues, every symbol's bar of one time
together, paced at N× real time (`speed=N`) or as fast as the strategy consumes them
(`speed=None`). Cerebro runs in a worker thread and blocks in `_load` until the producer
delivers, so the asyncio loop stays free and bars from several symbols stay aligned by time.
Neither side polls: the feed blocks on its queue, and a producer whose feeds hold
`max_backlog` bars waits on an event the feeds set (from cerebro's thread) once they have
taken half of them.

The feed does not report `islive()`: backtrader's live path polls feeds and moves its clock
on its own, while a blocking feed goes through exactly the same synchronisation as a
backtest over the same bars, which is what makes paper replay and backtest trade the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Mapping

import backtrader as bt
import numpy as np
import pandas as pd

from trading.data.feed import datetime_to_num

_END = None  # queue sentinel: no more bars
_COLUMNS = ("open", "high", "low", "close", "volume")
Bar = tuple[float, float, float, float, float, float]  # day number, open, high, low, close, volume


class ReplayFeed(bt.feeds.DataBase):
    """A feed fed bar by bar from a queue; `_load` blocks until a bar or the end arrives."""

    params = (("maxsize", 0),)

    def __init__(self) -> None:
        super().__init__()
        self.bars: queue.Queue[Bar | None] = queue.Queue(maxsize=self.p.maxsize)
        self.halt = threading.Event()  # set between bars: the feed ends before the next one
        self.delivered = 0
        # Called in cerebro's thread after each bar taken off the queue (set by ReplayProducer).
        self.on_take: Callable[[ReplayFeed], None] | None = None

    def put(self, bar: Bar) -> None:
        """Queue one bar (called from the producer's thread)."""
        self.bars.put(bar)

    def finish(self) -> None:
        """Tell the feed that no bar follows the ones already queued."""
        self.bars.put(_END)

    def start(self) -> None:
        super().start()
        self._tick_nullify()  # tick_* stay None: the broker then reads the bar itself

    def _load(self) -> bool:
        if self.halt.is_set():
            return False
        bar = self.bars.get()
        taken = self.on_take
        if taken is not None:
            taken(self)
        if bar is _END or self.halt.is_set():
            return False
        lines = self.lines
        lines.datetime[0], lines.open[0], lines.high[0], lines.low[0], lines.close[0], lines.volume[0] = bar
        lines.openinterest[0] = 0.0
        self.delivered += 1
        return True


def replay_schedule(frames: Mapping[str, pd.DataFrame]) -> list[pd.Timestamp]:
    """Return every bar time of every symbol once, in order (the producer's steps)."""
    index = pd.DatetimeIndex([])
    for df in frames.values():
        index = index.union(df.index)
    return list(index)


class ReplayProducer:
    """Deliver the bars of `frames` to their feeds at `speed`× real time (None: at once).

    Step k (the k-th distinct bar time t_k) is due `(t_k - t_0) / speed` seconds after the
    start, k × bar_seconds / speed for regular bars. `clock` and `sleep` are injectable so
    the schedule can be tested without waiting. With `speed=None` a feed holds at most
    `max_backlog` bars: the producer then waits (no polling) until every feed is down to
    half of that, or until `stop`.
    """

    def __init__(
        self,
        frames: Mapping[str, pd.DataFrame],
        feeds: Mapping[str, ReplayFeed],
        *,
        speed: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_backlog: int = 256,
    ) -> None:
        if speed is not None and speed <= 0:
            raise ValueError(f"speed must be positive or None (as fast as possible), got {speed}")
        if max_backlog < 1:
            raise ValueError(f"max_backlog must be at least 1, got {max_backlog}")
        self.frames, self.feeds, self.speed = frames, feeds, speed
        self._clock, self._sleep = clock, sleep
        self._max_backlog = max_backlog
        self._resume_at = max_backlog // 2  # bars left in a feed when a waiting producer resumes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._room: asyncio.Event | None = None  # set when the feeds have room, or on stop
        self._waiting = False  # the producer waits on `_room`: the feeds' takes wake it
        self._stop = False
        self.sent = 0  # steps delivered so far
        self._rows = {
            sym: (
                pd.DatetimeIndex(df.index),
                np.column_stack([datetime_to_num(pd.DatetimeIndex(df.index))]
                                + [df[c].to_numpy(dtype=np.float64) for c in _COLUMNS]),
            )
            for sym, df in frames.items()
        }

    def due_times(self) -> list[float]:
        """Return the offset in seconds from the start at which each step is due."""
        steps = replay_schedule(self.frames)
        if not steps or self.speed is None:
            return [0.0] * len(steps)
        t0 = steps[0]
        return [(t - t0).total_seconds() / self.speed for t in steps]

    def stop(self) -> None:
        """Deliver no further bar; the feeds then end after what they already hold. Thread-safe."""
        self._stop = True
        self._wake()

    def _wake(self) -> None:
        """Set `_room` on the producer's loop (callable from any thread)."""
        loop, room = self._loop, self._room
        if loop is None or room is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(room.set)

    def _taken(self, feed: ReplayFeed) -> None:
        """A feed took a bar (cerebro's thread): wake a waiting producer once the feed has room."""
        if self._waiting and feed.bars.qsize() <= self._resume_at:
            self._wake()

    def _backlog(self) -> int:
        return max((f.bars.qsize() for f in self.feeds.values()), default=0)

    async def _wait_for_room(self) -> None:
        """Return once every feed holds fewer than `max_backlog` bars (or on stop), without polling."""
        room = self._room
        assert room is not None
        if self._backlog() < self._max_backlog:
            return
        try:
            while True:
                room.clear()
                self._waiting = True  # from here on, a take that leaves room sets `room`
                if self._stop or self._backlog() <= self._resume_at:
                    return
                await room.wait()
        finally:
            self._waiting = False

    async def run(self) -> None:
        """Deliver every step on time, then end the feeds (also when stopped or cancelled)."""
        steps = replay_schedule(self.frames)
        due = self.due_times()
        cursor = dict.fromkeys(self._rows, 0)
        start = self._clock()
        self._loop, self._room = asyncio.get_running_loop(), asyncio.Event()
        for feed in self.feeds.values():
            feed.on_take = self._taken
        try:
            for k, ts in enumerate(steps):
                if self._stop:
                    break
                if self.speed is not None:
                    wait = start + due[k] - self._clock()
                    if wait > 0:
                        await self._sleep(wait)
                else:
                    # As fast as possible, but keep the queues short and let the loop breathe.
                    await self._wait_for_room()
                    await self._sleep(0)
                if self._stop:
                    break
                # Every symbol's bar of this time goes out together, without yielding, so a
                # stop request never lands between two symbols of one step.
                for sym, (index, rows) in self._rows.items():
                    i = cursor[sym]
                    if i < len(index) and index[i] == ts:
                        self.feeds[sym].put(tuple(rows[i].tolist()))  # type: ignore[arg-type]
                        cursor[sym] = i + 1
                self.sent = k + 1
        finally:
            for feed in self.feeds.values():
                feed.on_take = None
                feed.finish()
            self._loop = None
