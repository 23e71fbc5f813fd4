"""Live bars from a ccxt exchange: closed candles only, warm-up history first.

`CcxtOHLCVProducer` is an asyncio task (like `ReplayProducer`) that polls the exchange's OHLCV
at each timeframe boundary and hands every new *closed* candle to a `LiveGate`; one
`CcxtLiveFeed` per symbol takes them from the gate inside Cerebro's thread.

* Closed only: a candle is delivered once its close (open + timeframe) is at or before the
  exchange's server time (`fetch_time`); the forming candle the API also returns is dropped.
* Warm-up: at start the last `warmup` closed candles are delivered first, flagged as history,
  so indicators are ready on the first live bar. History is never traded: while a feed
  delivers it, `feed.backfilling` is True and the live broker rejects orders (``WARMUP``).
  Candles caught up after an outage, all but the newest, count as history too.
* One step at a time: the candles of every symbol for one time go through the gate together,
  so several symbols stay aligned as in a backtest.
* The feed is live (`islive`): between candles it returns to Cerebro's loop every `qcheck`
  seconds, so the broker can poll the venue while the strategy waits for the next bar. With
  ``blocking=True`` (paper runs on the SimBroker) it is not: `_load` waits for the next candle
  like `ReplayFeed`, so the simulated broker sees exactly the bar sequence of a backtest.
* Bot symbols (``BTCUSDT``) are mapped to the exchange's unified symbols once its markets load.
* Network failures are retried with backoff and never end the feed; `stop()` ends it.
* Outages are published on `bus` (the bot's): after `failures` failed fetches in a row (the
  circuit breaker of `trading.brokers.ccxt_resilience`) one `ConnectionLost`, however long the
  venue stays down; when the venue answers again (candles, or a server time that says the
  next candle is not due yet) one `ConnectionRestored` with the downtime since the first
  failure. The candles that closed meanwhile are fetched then (from the last delivered one
  on), so none is skipped or delivered twice.
* Paper bots that keep an audit trail give the producer a `BarLog` (`trading.data.bar_log`):
  each candle's open time and whether it went as history is written there before the candle
  reaches the gate. A restarted paper bot's producer then starts at the earlier run's first
  warm-up candle instead of the last `warmup` ones, and hands every candle up to the earlier
  run's last one to the gate as that run had it (history or live), so the SimBroker re-runs the
  same bars (`trading.recovery`); candles that closed while the bot was down are history, all
  but the newest, as after an outage (no entry on them; the working orders fill on them).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import backtrader as bt
import pandas as pd

from trading.brokers.ccxt_resilience import CircuitBreaker, Scrubber
from trading.data.bar_log import BarLog
from trading.data.feed import datetime_to_num
from trading.data.timeframes import parse_timeframe, timeframe_seconds
from trading.events import ConnectionLost, ConnectionRestored

log = logging.getLogger(__name__)
Bar = tuple[int, float, float, float, float, float, bool]  # open ms, o, h, l, c, v, historical
_END = object()
_BT_FRAMES = {"s": (bt.TimeFrame.Seconds, 1), "m": (bt.TimeFrame.Minutes, 1), "h": (bt.TimeFrame.Minutes, 60),
              "d": (bt.TimeFrame.Days, 1), "w": (bt.TimeFrame.Weeks, 1)}


class LiveGate:
    """Hands one time step's bars to every symbol's feed at once (thread-safe)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[str, deque[Bar]] = defaultdict(deque)
        self._finished = False

    def deliver(self, step: Mapping[str, Bar]) -> None:
        with self._cond:
            for symbol, bar in step.items():
                self._pending[symbol].append(bar)
            self._cond.notify_all()

    def finish(self) -> None:
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def has(self, symbol: str) -> bool:
        with self._cond:
            return bool(self._pending[symbol])

    def take(self, symbol: str, timeout: float) -> Bar | object | None:
        """The next bar of `symbol`; None if none came within `timeout`; `_END` once finished."""
        with self._cond:
            if not self._pending[symbol] and not self._finished and timeout > 0:
                self._cond.wait(timeout)
            if self._pending[symbol]:
                return self._pending[symbol].popleft()
            return _END if self._finished else None


class CcxtLiveFeed(bt.feeds.DataBase):
    """A backtrader feed of one symbol's closed candles from a `LiveGate` (see the module docstring)."""

    params = (("gate", None), ("symbol", None), ("timeframe_str", "1h"), ("qcheck", 0.5), ("blocking", False))

    def __init__(self) -> None:
        super().__init__()
        n, unit = parse_timeframe(self.p.timeframe_str)
        frame, mult = _BT_FRAMES[unit]
        self._timeframe, self._compression = frame, n * mult
        self.backfilling = True
        self.delivered = 0
        self.historical = 0  # warm-up (and caught-up) candles among the delivered

    def islive(self) -> bool:
        return not self.p.blocking

    def haslivedata(self) -> bool:
        return self.p.gate.has(self._symbol())

    def _symbol(self) -> str:
        return self.p.symbol or self._name

    def start(self) -> None:
        super().start()
        self._tick_nullify()
        self.put_notification(self.DELAYED)

    def _load(self) -> bool | None:
        item = self.p.gate.take(self._symbol(), self._qcheck)
        while item is None and self.p.blocking:
            item = self.p.gate.take(self._symbol(), self.p.qcheck)
        if item is _END:
            return False
        if item is None:
            return None
        ms, o, h, low, c, v, historical = item  # type: ignore[misc]
        if self.backfilling and not historical:
            self.put_notification(self.LIVE)
        self.backfilling = historical
        self.historical += historical
        lines = self.lines
        lines.datetime[0] = datetime_to_num_ms(ms)
        lines.open[0], lines.high[0], lines.low[0], lines.close[0], lines.volume[0] = o, h, low, c, v
        lines.openinterest[0] = 0.0
        self.delivered += 1
        return True


def datetime_to_num_ms(ms: int) -> float:
    """A backtrader day number from epoch milliseconds (UTC)."""
    return float(datetime_to_num(pd.DatetimeIndex([pd.Timestamp(ms, unit="ms", tz="UTC")]))[0])


class CcxtOHLCVProducer:
    """Poll closed candles of `symbols` (bot symbol -> ccxt symbol) into `gate` (see the module docstring).

    `exchange` is a ``ccxt.async_support`` exchange (closed by `run` when it ends, if `owns`).
    `max_wait` caps one sleep, so a clock that runs faster than real time (tests) is followed.
    `bus` gets ConnectionLost after `failures` failed fetches in a row, and ConnectionRestored.
    `bar_log` records the delivered candles (an anchored one is re-run first; see the module docstring).
    """

    def __init__(
        self,
        exchange: Any,
        symbols: Mapping[str, str],
        timeframe: str,
        gate: LiveGate,
        *,
        warmup: int = 200,
        settle: float = 1.0,
        max_wait: float = 30.0,
        retry_delay: float = 1.0,
        owns: bool = True,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        bus: Any = None,
        failures: int = 5,
        bar_log: BarLog | None = None,
    ) -> None:
        if warmup < 0:
            raise ValueError(f"warmup must be 0 or more bars, got {warmup}")
        self.exchange, self.symbols, self.gate = exchange, dict(symbols), gate
        self.timeframe, self.tf_ms = timeframe, timeframe_seconds(timeframe) * 1000
        self.warmup, self.settle_ms, self.max_wait = warmup, int(settle * 1000), max_wait
        self.retry_delay, self.owns, self._sleep = retry_delay, owns, sleep
        self._stopped = False
        self.last_open: int | None = None  # open time of the last delivered candle
        self.delivered = 0
        self.failures = 0
        self.bus = bus
        # Opens once per outage (an endless cooldown: no re-trip while down); the first answer closes it.
        self.breaker = CircuitBreaker(failures, math.inf, on_open=self._connection_lost,
                                      on_close=self._connection_restored)
        self._scrub = Scrubber()
        self.bar_log = bar_log

    @property
    def venue(self) -> str:
        return str(getattr(self.exchange, "id", "") or "ccxt")

    def _connection_lost(self, detail: str) -> None:
        self._publish(ConnectionLost(ts=datetime.now(UTC), venue=self.venue, detail=f"live feed: {detail}"))

    def _connection_restored(self) -> None:
        self._publish(ConnectionRestored(ts=datetime.now(UTC), venue=self.venue,
                                         downtime_s=self.breaker.last_downtime))

    def _publish(self, event: Any) -> None:
        if self.bus is None:
            return
        try:
            self.bus.publish(event)
        except Exception:
            log.exception("live feed: could not publish %s", type(event).__name__)

    def stop(self) -> None:
        """End the feeds after the bars already delivered; thread-safe."""
        self._stopped = True
        self.gate.finish()

    async def run(self) -> None:
        """Deliver the warm-up, then every closed candle until `stop()` (the feeds end then)."""
        try:
            await self._retrying(self._load_markets)
            await self._retrying(self._warm_up)
            while not self._stopped:
                await self._retrying(self._next_candles)
        finally:
            self.gate.finish()
            if self.owns:
                await self.exchange.close()

    async def _retrying(self, step: Callable[[], Awaitable[None]]) -> None:
        from ccxt.base.errors import OperationFailed

        delay = self.retry_delay
        while not self._stopped:
            try:
                await step()
                self.failures = 0
                self.breaker.record_success()
                return
            except OperationFailed as exc:  # network errors, timeouts, 429, 5xx: retry, never end
                self.failures += 1
                self.breaker.record_failure(f"{step.__name__}: {self._scrub(exc)}"[:300])
                log.warning("live feed: %s failed (%s); retrying in %.1fs", step.__name__, exc, delay)
                await self._sleep(delay)
                delay = min(delay * 2, 60.0)

    async def _load_markets(self) -> None:
        from trading.brokers.ccxt_venue import unified_symbol

        await self.exchange.load_markets()
        self.symbols = {sym: unified_symbol(self.exchange, name) for sym, name in self.symbols.items()}

    async def server_ms(self) -> int:
        return int(await self.exchange.fetch_time())

    async def _warm_up(self) -> None:
        now = await self.server_ms()
        last_closed = (now // self.tf_ms) * self.tf_ms - self.tf_ms
        bars = self.bar_log
        if bars is not None and bars.anchored:
            await self._rerun(bars, now)
            return
        if self.warmup == 0:
            self.last_open = last_closed
            if bars is not None:
                bars.anchor(last_closed + self.tf_ms, last_closed)
            return
        since = last_closed - (self.warmup - 1) * self.tf_ms
        candles = {sym: await self._fetch(unified, since, now) for sym, unified in self.symbols.items()}
        times = _times(candles)
        if bars is not None:
            bars.anchor(times[0] if times else since, times[-1] if times else last_closed)
        self._deliver(candles, lambda t: True)
        self.last_open = int(max((c[-1][0] for c in candles.values() if c), default=last_closed))

    async def _rerun(self, bars: BarLog, now: int) -> None:
        """A restarted paper bot: every candle from the earlier run's first one, as that run had them."""
        assert bars.first_open is not None and bars.last_open is not None
        first, last = bars.first_open, bars.last_open
        candles = {sym: await self._fetch(unified, first, now) for sym, unified in self.symbols.items()}
        times = _times(candles)
        if not times or times[0] > first:
            log.error("live feed: the exchange no longer serves the candles from %s on (first: %s): the "
                      "restarted paper bot cannot re-run its earlier run", _iso(first),
                      _iso(times[0]) if times else "none")
        flags = {t: bars.flag(t) if t <= last else t + 2 * self.tf_ms <= now for t in times}
        log.info("live feed: re-running %d %s step(s) from %s (the earlier run's to %s)",
                 sum(f is not None for f in flags.values()), self.timeframe, _iso(first), _iso(last))
        self._deliver(candles, flags.get)
        self.last_open = int(max([last, *times]))

    async def _next_candles(self) -> None:
        assert self.last_open is not None
        due = self.last_open + 2 * self.tf_ms + self.settle_ms  # the next candle's close, plus settling
        while not self._stopped:
            now = await self.server_ms()
            if now >= due:
                break
            self.breaker.record_success()  # the venue answers; no candle is due yet
            await self._sleep(min((due - now) / 1000, self.max_wait))
        if self._stopped:
            return
        since = self.last_open + self.tf_ms
        candles = {sym: await self._fetch(unified, since, now) for sym, unified in self.symbols.items()}
        if not any(candles.values()):
            await self._sleep(min(1.0, self.max_wait))  # the exchange has not published it yet
            return
        self._deliver(candles, lambda t: t + 2 * self.tf_ms <= now)  # a newer candle closed since: history
        self.last_open = int(max(c[-1][0] for c in candles.values() if c))

    async def _fetch(self, symbol: str, since: int, now: int) -> list[list[float]]:
        """Closed candles of `symbol` from `since` on, paging through the exchange's limit."""
        out: list[list[float]] = []
        cursor = since
        while cursor + self.tf_ms <= now:
            page = await self.exchange.fetch_ohlcv(symbol, self.timeframe, since=cursor, limit=1000)
            page = [c for c in page if c[0] >= cursor and c[0] + self.tf_ms <= now]  # closed only
            if not page:
                break
            out.extend(page)
            cursor = int(page[-1][0]) + self.tf_ms
        return out

    def _deliver(self, candles: Mapping[str, list[list[float]]], history: Callable[[int], bool | None]) -> None:
        """Hand the candles to the gate one time step at a time; `history(t)`: the step's history flag
        (None: leave it out). The bar log, if any, has them first."""
        rows = {sym: {int(c[0]): c for c in cs} for sym, cs in candles.items()}
        steps = [(t, bool(h)) for t in sorted({t for r in rows.values() for t in r}) if (h := history(t)) is not None]
        if self.bar_log is not None and self.bar_log.anchored:
            self.bar_log.record(steps)  # before the strategy can see them
        for t, stale in steps:
            step = {sym: (t, float(c[1]), float(c[2]), float(c[3]), float(c[4]), float(c[5] or 0.0), stale)
                    for sym, r in rows.items() if (c := r.get(t)) is not None}
            self.gate.deliver(step)
            self.delivered += 1
        if steps:
            log.info("live feed: %d %s step(s) up to %s%s", len(steps), self.timeframe, _iso(steps[-1][0]),
                     " (history)" if all(s for _, s in steps) else "")


def _times(candles: Mapping[str, list[list[float]]]) -> list[int]:
    return sorted({int(c[0]) for cs in candles.values() for c in cs})


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def start_in_thread(producer: CcxtOHLCVProducer) -> threading.Thread:
    """Run the producer on its own event loop in a daemon thread (when no asyncio loop hosts it)."""
    thread = threading.Thread(target=lambda: asyncio.run(producer.run()), name="ccxt-live-feed", daemon=True)
    thread.start()
    return thread
