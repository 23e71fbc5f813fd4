"""NumpyFeed: a backtrader data feed that loads a whole OHLCV frame in one step.

backtrader's PandasData reads every value of every bar through pandas indexing, which costs
more than the rest of a simple backtest. NumpyFeed converts the frame to numpy once and, when
cerebro preloads, copies each column straight into the line buffers. Without preloading
(streamed bars) it serves one bar per `_load` from the same arrays.

Once preloaded, the per-bar work left to a feed is moving its line cursors (`advance`) and
telling cerebro the next bar's time (`advance_peek`). Stock backtrader does both through
several layers of proxies and properties, about a third of an empty strategy's run time;
NumpyFeed does them on the line buffers directly.
"""

from __future__ import annotations

from array import array

import backtrader as bt
import numpy as np
import pandas as pd
from backtrader.linebuffer import LineBuffer

# backtrader stores time as days since 0001-01-01 plus one (matplotlib's old epoch).
_EPOCH_NUM = 719163.0  # bt.date2num(datetime(1970, 1, 1))
_COLUMNS = ("open", "high", "low", "close", "volume")


def datetime_to_num(index: pd.DatetimeIndex) -> np.ndarray:
    """Convert a (UTC or naive-UTC) DatetimeIndex to backtrader's float day numbers."""
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    ns = index.as_unit("ns").asi8
    days, rem = np.divmod(ns, 86_400 * 10**9)
    return _EPOCH_NUM + days.astype(np.float64) + rem.astype(np.float64) / (86_400 * 10**9)


class NumpyFeed(bt.feeds.DataBase):
    """A feed over a canonical OHLCV DataFrame (UTC DatetimeIndex, open/high/low/close/volume)."""

    params = (("frame", None),)

    def __init__(self) -> None:
        super().__init__()
        frame: pd.DataFrame = self.p.frame
        if frame is None or not isinstance(frame.index, pd.DatetimeIndex):
            raise TypeError("NumpyFeed needs frame=DataFrame with a DatetimeIndex")
        missing = [c for c in _COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"NumpyFeed frame lacks columns: {', '.join(missing)}")
        self._arrays = {"datetime": datetime_to_num(frame.index)}
        for col in _COLUMNS:
            self._arrays[col] = np.ascontiguousarray(frame[col].to_numpy(dtype=np.float64))
        self._arrays["openinterest"] = np.zeros(len(frame))
        self._n = len(frame)
        self._i = -1
        # Bind each line as an instance attribute: `data.close` is then found at once rather
        # than through LineSeries.__getattr__ and the alias descriptor (backtrader's own comment
        # there allows it). The broker reads the bar this way several times per bar.
        for name in self.lines.getlinealiases():
            setattr(self, name, getattr(self.lines, name))
        # Set once preloaded (the fast path is then on): every line buffer, and the datetime one.
        self._buffers: list[LineBuffer] | None = None
        self._time_line: LineBuffer | None = None

    def start(self) -> None:
        super().start()
        self._i = -1
        self._buffers = self._time_line = None
        self._tick_nullify()  # tick_* stay None: the broker then reads the bar itself

    def advance(self, size: int = 1, datamaster: object = None, ticks: bool = True) -> None:
        """Move every line one bar (or `size` bars) forward."""
        buffers = self._buffers
        if buffers is not None and datamaster is None:
            # Same effect as LineBuffer.advance on an unbounded buffer, without the
            # LineSeries proxy and the idx property; nothing else is due for a preloaded
            # complete-bar feed (the base class's tail only refills tick_* values).
            for line in buffers:
                line._idx += size
                line.lencount += size
            return
        # Tick bookkeeping only matters when bars are replayed or built from ticks; a
        # complete-bar feed skips it (it costs ~10 % of a simple backtest).
        super().advance(size, datamaster, ticks=False)

    def advance_peek(self) -> float:
        """Return the time of the next bar, or +inf after the last one."""
        clock = self._time_line
        if clock is None:
            return super().advance_peek()
        if clock.lencount < len(clock.array) - clock.extension:
            return clock.array[clock._idx + 1]
        return float("inf")

    def preload(self) -> None:
        if self._filters or self._ffilters or self._tzinput is not None:
            super().preload()  # filters need the bar-by-bar path
            return
        for name, values in self._arrays.items():
            line = getattr(self.lines, name)
            buf = array("d")
            buf.frombytes(values.tobytes())
            line.array = buf
        self._i = self._n - 1
        self._last()
        self.home()
        buffers = list(self.lines)
        # The fast cursor moves assume plain unbounded buffers (no exactbars/qbuffer).
        if all(type(b) is LineBuffer and b.mode == LineBuffer.UnBounded for b in buffers):
            self._buffers, self._time_line = buffers, self.lines.datetime

    def _load(self) -> bool:
        self._i += 1
        if self._i >= self._n:
            return False
        i = self._i
        lines = self.lines
        a = self._arrays
        lines.datetime[0] = a["datetime"][i]
        lines.open[0] = a["open"][i]
        lines.high[0] = a["high"][i]
        lines.low[0] = a["low"][i]
        lines.close[0] = a["close"][i]
        lines.volume[0] = a["volume"][i]
        lines.openinterest[0] = 0.0
        return True
