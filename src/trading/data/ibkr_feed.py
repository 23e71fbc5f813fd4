"""IBKRLiveFeed: a backtrader feed of closed bars from Interactive Brokers, warm-up history first.

Like `ReplayFeed`, it is not preloaded and its `_load` blocks until the next bar arrives, so
Cerebro runs in a thread of its own while the IB loop fills the queue. Before blocking, it
lets the broker send the orders the strategy made on the bar just processed (`flush`), so a
market order goes out as soon as the strategy has decided.

Bars from history are warm-up: `warmup_end` is the time (backtrader day number) of the last
one delivered, and a broker must not send orders made on such bars (the IBKR broker refuses
them, unless IB already holds them from before a restart). `finish()` ends the feed; `wake()`
has `_load` return once without a bar, so Cerebro's loop runs a pass between bars (its
broker's `wake`: an emergency stop acts at once), except while Cerebro waits for the bar of
a step another feed has delivered.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, cast

import backtrader as bt

from trading.data.ibkr_bars import Bar, BarStream

log = logging.getLogger(__name__)

_END = None
_WAKE = object()  # return to Cerebro's loop without a bar
_EPOCH_NUM = 719163.0  # backtrader's day number of 1970-01-01


class IBKRLiveFeed(bt.feeds.DataBase):
    """Closed bars of one symbol at `timeframe` from an `IBKRAdapter`."""

    params = (
        ("adapter", None),  # trading.brokers.ibkr.IBKRAdapter
        ("symbol", None),  # the bot symbol (mapped to a contract by the adapter's settings)
        ("interval", "1h"),  # the bot timeframe ("timeframe" is backtrader's own parameter)
        ("warmup_bars", None),  # default: the adapter settings' warmup_bars
        ("source", None),  # keep_up_to_date | realtime; default: the adapter settings' live_bars
    )

    def __init__(self) -> None:
        super().__init__()
        if self.p.adapter is None or not self.p.symbol:
            raise ValueError("IBKRLiveFeed needs adapter= and symbol=")
        self.bars: queue.Queue[tuple[Bar, bool] | object | None] = queue.Queue()
        self.warmup_end = float("-inf")
        self.delivered = 0
        self.historical = 0
        self._idle = threading.Event()
        self._stream: BarStream | None = None
        self._wake_lock = threading.Lock()
        self._wake_queued = False  # one wake-up at a time in the queue
        self._step_bar = False  # Cerebro asks for the bar of a step another feed delivered

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        super().start()
        self._tick_nullify()
        adapter = self.p.adapter
        s = adapter.settings
        adapter.connect()
        self._stream = BarStream(
            adapter, self.p.symbol, self.p.interval, self._put,
            warmup_bars=s.warmup_bars if self.p.warmup_bars is None else self.p.warmup_bars,
            source=self.p.source or s.live_bars,
        )
        adapter.loop.run(self._stream.start, timeout=s.request_timeout * 2)

    def stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None and self.p.adapter.loop.running:
            self.p.adapter.loop.call(stream.stop)
        super().stop()

    def _put(self, bar: Bar, historical: bool) -> None:
        self.bars.put((bar, historical))

    def finish(self) -> None:
        """End the feed after the bars already queued (thread-safe)."""
        self.bars.put(_END)

    def wake(self) -> None:
        """Return to Cerebro's loop once without a bar (thread-safe)."""
        with self._wake_lock:
            if self._wake_queued:
                return
            self._wake_queued = True
        self.bars.put(_WAKE)

    # ------------------------------------------------------------------ bars

    def next(self, datamaster: Any = None, ticks: bool = True) -> Any:
        self._step_bar = datamaster is not None  # Cerebro's retry for a step's bar: wait for the bar
        try:
            return super().next(datamaster=datamaster, ticks=ticks)
        finally:
            self._step_bar = False

    def _load(self) -> bool | None:
        self._flush_broker()
        self._idle.set()
        item = self.bars.get()
        while item is _WAKE and self._step_bar:  # the pass comes with the bar: aligned steps first
            self._unwake()
            item = self.bars.get()
        self._idle.clear()
        if item is _WAKE:
            self._unwake()
            return None
        if item is _END:
            return False
        bar, historical = cast(tuple[Bar, bool], item)
        num = _EPOCH_NUM + bar.start / 86_400.0
        lines = self.lines
        lines.datetime[0] = num
        lines.open[0], lines.high[0], lines.low[0], lines.close[0] = bar.open, bar.high, bar.low, bar.close
        lines.volume[0], lines.openinterest[0] = bar.volume, 0.0
        if historical:
            self.warmup_end = num
            self.historical += 1
        self.delivered += 1
        return True

    def _unwake(self) -> None:
        with self._wake_lock:
            self._wake_queued = False

    def _flush_broker(self) -> None:
        env = getattr(self, "_env", None)
        flush = getattr(getattr(env, "broker", None), "flush", None)
        if callable(flush):
            flush()

    def wait_idle(self, delivered: int, timeout: float = 10.0) -> None:
        """Wait until `delivered` bars went out and the feed waits for the next one (tests, pacing)."""
        deadline = time.monotonic() + timeout
        while not (self.delivered >= delivered and self._idle.is_set() and self.bars.empty()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.p.symbol}: {self.delivered} of {delivered} bars processed")
            time.sleep(0.001)

    def islive(self) -> bool:
        return False  # blocking feed: cerebro's standard path (see ReplayFeed)


def build_ibkr_feeds(adapter: Any, symbols: list[str], timeframe: str,
                     warmup_bars: int | None = None) -> dict[str, IBKRLiveFeed]:
    """Return one live feed per bot symbol, all on `adapter`'s connection.

    `warmup_bars` (a bot's ``data.warmup_bars``) overrides the adapter settings' own.
    """
    return {
        sym: IBKRLiveFeed(adapter=adapter, symbol=sym, interval=timeframe, warmup_bars=warmup_bars)  # type: ignore[call-arg]
        for sym in symbols
    }
