"""Bars from Interactive Brokers at the bot's timeframe: closed bars only, warm-up first.

IB serves a fixed set of bar sizes. The bot's timeframe is built from the largest IB size
that divides it (a 90m bot reads 30-minute bars, three to a bar), aligned to multiples of
the timeframe since the Unix epoch (UTC). A bar is delivered when it is closed: when the last
base bar inside it has closed, or when a base bar of a later bar arrives.

`BarStream` runs on the adapter's loop: it fetches `warmup_bars` closed bars of history, then
follows IB live, either with ``keepUpToDate`` historical bars (a base bar is closed when IB
starts the next one) or with 5-second real-time bars. After a reconnect it asks for history
again and delivers what closed meanwhile, once, as history.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from trading.data.timeframes import timeframe_seconds

log = logging.getLogger(__name__)

IB_BAR_SIZES: tuple[tuple[int, str], ...] = (
    (1, "1 secs"), (5, "5 secs"), (10, "10 secs"), (15, "15 secs"), (30, "30 secs"), (60, "1 min"),
    (120, "2 mins"), (180, "3 mins"), (300, "5 mins"), (600, "10 mins"), (900, "15 mins"), (1200, "20 mins"),
    (1800, "30 mins"), (3600, "1 hour"), (7200, "2 hours"), (10800, "3 hours"), (14400, "4 hours"),
    (28800, "8 hours"), (86400, "1 day"),
)
REALTIME_SECONDS = 5


@dataclass(frozen=True)
class Bar:
    start: int  # epoch seconds (UTC) of the bar's open
    open: float
    high: float
    low: float
    close: float
    volume: float

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.start, UTC)


def ib_bar_size(timeframe: str) -> tuple[str, int]:
    """Return the IB bar size to request for `timeframe` and its length in seconds."""
    seconds = timeframe_seconds(timeframe)
    for base, text in reversed(IB_BAR_SIZES):
        if seconds % base == 0:
            return text, base
    raise ValueError(f"timeframe {timeframe!r} is not a whole number of seconds")  # pragma: no cover


def duration_for(seconds: float) -> str:
    """Return an IB duration string covering at least `seconds`."""
    if seconds <= 86_400:
        return f"{max(60, math.ceil(seconds))} S"
    days = math.ceil(seconds / 86_400)
    return f"{days} D" if days <= 365 else f"{math.ceil(days / 365)} Y"


def epoch_of(value: Any) -> int:
    """Epoch seconds of an IB bar date (a datetime, or a date for daily bars: UTC midnight)."""
    if isinstance(value, datetime):
        return int((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())
    if isinstance(value, date):
        return int(datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp())
    return int(value)


class BarAggregator:
    """Combine closed base bars into closed bars of `bucket` seconds.

    The first bar is dropped when its first base bar was not seen (the data began inside it).
    """

    def __init__(self, bucket: int, base: int) -> None:
        self.bucket, self.base = bucket, base
        self._start: int | None = None
        self._bar: list[float] = []
        self._first = True
        self._whole = False
        self.last_base = -1  # start of the last base bar taken (later duplicates are ignored)

    def add(self, start: int, o: float, h: float, lo: float, c: float, v: float) -> list[Bar]:
        if start <= self.last_base:
            return []
        self.last_base = start
        out: list[Bar] = []
        bucket = start - start % self.bucket
        if self._start is not None and bucket != self._start:
            out += self._emit()
        if self._start is None:
            self._start, self._bar, self._whole = bucket, [o, h, lo, c, v], start == bucket
        else:
            b = self._bar
            b[1], b[2], b[3], b[4] = max(b[1], h), min(b[2], lo), c, b[4] + v
        if start + self.base >= bucket + self.bucket:
            out += self._emit()
        return out

    def _emit(self) -> list[Bar]:
        start, bar = self._start, self._bar
        partial_first = self._first and not self._whole
        self._start, self._bar, self._first = None, [], False
        if start is None or partial_first:
            return []
        return [Bar(start, *bar)]


Deliver = Callable[[Bar, bool], None]  # (bar, historical)


class BarStream:
    """Closed bars of one symbol from IB: history, then live; restarted after a reconnect."""

    def __init__(self, adapter: Any, symbol: str, timeframe: str, deliver: Deliver, *, warmup_bars: int,
                 source: str = "keep_up_to_date") -> None:
        if source not in ("keep_up_to_date", "realtime"):
            raise ValueError(f"live bar source must be keep_up_to_date or realtime, got {source!r}")
        self.adapter, self.symbol, self.deliver = adapter, symbol, deliver
        self.bucket = timeframe_seconds(timeframe)
        self.bar_size, self.base = ib_bar_size(timeframe)
        self.warmup_bars, self.source = warmup_bars, source
        self.last_start = -1  # start of the last bar delivered
        self._live: Any = None
        self._agg: BarAggregator | None = None
        self.stopped = False

    async def start(self) -> None:
        """Deliver the warm-up bars and subscribe to live bars (on the adapter's loop)."""
        await self._catch_up()
        self.adapter.add_reconnect_callback(self.restart)

    async def restart(self) -> None:
        """After a reconnect: deliver the bars that closed meanwhile, then follow IB live again."""
        if not self.stopped:
            self._unsubscribe()
            await self._catch_up()

    async def _catch_up(self) -> None:
        """Fetch history (the warm-up, or all since the last bar delivered) and subscribe to live bars."""
        keep = self.source == "keep_up_to_date"
        if self.last_start < 0:
            # Calendar time for the warm-up, with room for nights, weekends and holidays.
            span = self.bucket * (self.warmup_bars + 2) * (5.5 if self.bucket < 86_400 else 1.5)
        else:
            now = epoch_of(await self.adapter.ib.reqCurrentTimeAsync())
            span = now - self.last_start + 2 * self.bucket
        bars = await self.adapter.history(self.symbol, self.bar_size, duration_for(span), keep_up_to_date=keep)
        agg = BarAggregator(self.bucket, self.base)
        done: list[Bar] = []
        for b in list(bars)[:-1]:  # IB's last bar is the one forming now
            done += agg.add(epoch_of(b.date), b.open, b.high, b.low, b.close, b.volume)
        fresh = [b for b in done if b.start > self.last_start]
        if self.last_start < 0:
            fresh = fresh[-self.warmup_bars :] if self.warmup_bars else []
        for bar in fresh:
            self._send(bar, historical=True)
        if keep:
            self._agg, self._live = agg, bars
            bars.updateEvent += self._on_update
        else:
            # 5-second bars start now: the bar in progress is incomplete and is dropped.
            self._agg = BarAggregator(self.bucket, REALTIME_SECONDS)
            self._live = await self.adapter.realtime_bars(self.symbol)
            self._live.updateEvent += self._on_realtime

    def _send(self, bar: Bar, *, historical: bool) -> None:
        if bar.start <= self.last_start:
            return
        self.last_start = bar.start
        self.deliver(bar, historical)

    def _on_update(self, bars: Any, has_new_bar: bool) -> None:
        if not has_new_bar or len(bars) < 2 or self._agg is None:
            return
        b = bars[-2]  # IB started a new bar: the one before it is closed
        for bar in self._agg.add(epoch_of(b.date), b.open, b.high, b.low, b.close, b.volume):
            self._send(bar, historical=False)

    def _on_realtime(self, bars: Any, has_new_bar: bool) -> None:
        if not bars or self._agg is None:
            return
        b = bars[-1]
        for bar in self._agg.add(epoch_of(b.time), b.open_, b.high, b.low, b.close, b.volume):
            self._send(bar, historical=False)

    def _unsubscribe(self) -> None:
        live, self._live = self._live, None
        if live is None:
            return
        try:
            if self.source == "keep_up_to_date":
                live.updateEvent -= self._on_update
                if self.adapter.connected.is_set():
                    self.adapter.ib.cancelHistoricalData(live)
            else:
                live.updateEvent -= self._on_realtime
                if self.adapter.connected.is_set():
                    self.adapter.ib.cancelRealTimeBars(live)
        except Exception:  # a subscription IB already dropped
            log.debug("cancelling the %s bar subscription failed", self.symbol, exc_info=True)

    def stop(self) -> None:
        """Stop following IB (on the adapter's loop)."""
        self.stopped = True
        self._unsubscribe()
