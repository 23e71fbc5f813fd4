"""SuperTrend: an ATR band that ratchets with the trend and flips when the close crosses it.

With ``hl2 = (high + low) / 2`` and ``A`` = Wilder ATR(period) (TA-Lib), the basic bands are
``hl2 ± multiplier × A``. The final bands ratchet (TradingView's ``ta.supertrend``):

* ``lower[t] = basic_lower[t]`` if it is above ``lower[t-1]`` or ``close[t-1] < lower[t-1]``,
  else ``lower[t-1]`` (the support only rises while the trend holds);
* ``upper[t] = basic_upper[t]`` if it is below ``upper[t-1]`` or ``close[t-1] > upper[t-1]``,
  else ``upper[t-1]``.

In an uptrend (direction +1) the direction turns to -1 when ``close[t] < lower[t]``; in a
downtrend it turns to +1 when ``close[t] > upper[t]``. The line is the lower band in an
uptrend and the upper band in a downtrend. On the first bar with an ATR the final bands are
the basic ones and the direction is +1 if the close is at or above ``hl2`` (nearer the upper
band), else -1: with no history, the bar itself says which side the price is on.

Warm-up: ATR(period) first exists at bar ``period`` (it needs ``period`` true ranges, the first
of which needs a previous close), so line and direction are NaN before index ``period``.
Every value at t depends only on bars 0..t.
"""

from __future__ import annotations

import math
from typing import Any

import backtrader as bt
import numpy as np
import talib


def _check(period: int, multiplier: float) -> None:
    if period < 1 or not multiplier > 0:
        raise ValueError("SuperTrend needs period >= 1 and multiplier > 0")


def supertrend(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 10, multiplier: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """Return (line, direction) arrays; direction is +1.0 (up), -1.0 (down) or NaN (warm-up)."""
    _check(period, multiplier)
    h = np.asarray(high, dtype=np.float64)
    lo = np.asarray(low, dtype=np.float64)
    c = np.asarray(close, dtype=np.float64)
    n = len(c)
    line = np.full(n, np.nan)
    direction = np.full(n, np.nan)
    if n <= period:
        return line, direction
    atr = talib.ATR(h, lo, c, period)
    hl2 = (h + lo) / 2.0
    # The ratchet is path-dependent: a plain loop over lists (list indexing is much
    # cheaper than numpy scalar access).
    bu = (hl2 + multiplier * atr).tolist()
    bl = (hl2 - multiplier * atr).tolist()
    cl = c.tolist()
    out_line = [math.nan] * n
    out_dir = [math.nan] * n
    t0 = period
    upper, lower = bu[t0], bl[t0]
    d = 1.0 if cl[t0] >= float(hl2[t0]) else -1.0
    out_line[t0], out_dir[t0] = (lower if d > 0 else upper), d
    for t in range(t0 + 1, n):
        prev_close = cl[t - 1]
        b = bl[t]
        if b > lower or prev_close < lower:
            lower = b
        b = bu[t]
        if b < upper or prev_close > upper:
            upper = b
        c_t = cl[t]
        if d > 0:
            if c_t < lower:
                d = -1.0
        elif c_t > upper:
            d = 1.0
        out_line[t] = lower if d > 0 else upper
        out_dir[t] = d
    return np.array(out_line), np.array(out_dir)


# bars seen, true-range sum (warm-up), ATR, close, upper band, lower band, direction
_State = tuple[int, float, float, float, float, float, float]


class SuperTrend(bt.Indicator):
    """SuperTrend on a data feed's high, low and close (see the module docstring).

    Lines: ``supertrend`` (the band to trail) and ``direction`` (+1 up, -1 down).
    """

    lines: Any = ("supertrend", "direction")  # bt turns it into Lines
    params = (("period", 10), ("multiplier", 3.0))

    def __init__(self) -> None:
        _check(self.p.period, self.p.multiplier)
        self.addminperiod(self.p.period + 1)
        # next() state after a bar (see _State).
        # backtrader may call next() again for the same bar (another feed advanced), so the
        # state before the current bar is kept and a repeated bar is recomputed from it.
        nan = math.nan
        self._state: _State = (0, 0.0, nan, nan, nan, nan, nan)
        self._before = self._state

    # runonce: preonce/oncestart would split the buffer; compute all of it in `once` instead.
    def preonce(self, start: int, end: int) -> None:
        pass

    def oncestart(self, start: int, end: int) -> None:
        pass

    def once(self, start: int, end: int) -> None:
        d = self.data
        line, direction = supertrend(
            np.asarray(d.high.array[:end]),
            np.asarray(d.low.array[:end]),
            np.asarray(d.close.array[:end]),
            self.p.period,
            self.p.multiplier,
        )
        self.lines.supertrend.array[:end] = type(self.lines.supertrend.array)("d", line.tolist())
        self.lines.direction.array[:end] = type(self.lines.direction.array)("d", direction.tolist())

    def prenext(self) -> None:
        self.next()  # keep the ATR state up to date during the warm-up

    def next(self) -> None:
        period, mult = self.p.period, self.p.multiplier
        n = len(self)  # bars seen, this one included; this bar's index is n - 1
        if n != self._state[0]:
            self._before = self._state
        _, tr_sum, atr, prev_close, upper, lower, direction = self._before
        h, lo, c = self.data.high[0], self.data.low[0], self.data.close[0]
        if n == 1:
            self._state = (n, 0.0, atr, c, upper, lower, direction)
            return
        tr = max(h - lo, abs(h - prev_close), abs(lo - prev_close))
        if n - 1 < period:
            self._state = (n, tr_sum + tr, atr, c, upper, lower, direction)
            return
        # Wilder: seeded with the mean of the first `period` true ranges, then smoothed
        atr = (tr_sum + tr) / period if n - 1 == period else (atr * (period - 1) + tr) / period
        hl2 = (h + lo) / 2.0
        bu, bl = hl2 + mult * atr, hl2 - mult * atr
        if n - 1 == period:
            upper, lower = bu, bl
            direction = 1.0 if c >= hl2 else -1.0
        else:
            if bl > lower or prev_close < lower:
                lower = bl
            if bu < upper or prev_close > upper:
                upper = bu
            if direction > 0:
                if c < lower:
                    direction = -1.0
            elif c > upper:
                direction = 1.0
        self._state = (n, tr_sum, atr, c, upper, lower, direction)
        self.lines.supertrend[0] = lower if direction > 0 else upper
        self.lines.direction[0] = direction
