"""NumpyFeed: a backtrader data feed that loads a whole OHLCV frame in one step.

backtrader's PandasData reads every value of every bar through pandas indexing, which costs
more than the rest of a simple backtest. NumpyFeed converts the frame to numpy once and, when
cerebro preloads, copies each column straight into the line buffers. Without preloading
(streamed bars) it serves one bar per `_load` from the same arrays.
"""

from __future__ import annotations

from array import array

import backtrader as bt
import numpy as np
import pandas as pd

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

    def start(self) -> None:
        super().start()
        self._i = -1
        self._tick_nullify()  # tick_* stay None: the broker then reads the bar itself

    def advance(self, size: int = 1, datamaster: object = None, ticks: bool = True) -> None:
        # Tick bookkeeping only matters when bars are replayed or built from ticks; a
        # complete-bar feed skips it (it costs ~10 % of a simple backtest).
        super().advance(size, datamaster, ticks=False)

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
