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
from dataclasses import dataclass
from typing import Any

import backtrader as bt
import numpy as np
import talib


def _check(period: int, multiplier: float) -> None:
    if period < 1 or not multiplier > 0:
        raise ValueError("SuperTrend needs period >= 1 and multiplier > 0")


@dataclass(frozen=True, slots=True)
class Ratchet:
    """The SuperTrend state after a bar: final bands, direction and that bar's close."""

    upper: float
    lower: float
    direction: float
    close: float


def supertrend(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 10, multiplier: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """Return (line, direction) arrays; direction is +1.0 (up), -1.0 (down) or NaN (warm-up)."""
    line, direction, _ = supertrend_state(high, low, close, period, multiplier)
    return line, direction


def supertrend_state(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 10, multiplier: float = 3.0
) -> tuple[np.ndarray, np.ndarray, Ratchet | None]:
    """Return (line, direction, state after the last bar); the state is None during warm-up."""
    _check(period, multiplier)
    h = np.asarray(high, dtype=np.float64)
    lo = np.asarray(low, dtype=np.float64)
    c = np.asarray(close, dtype=np.float64)
    n = len(c)
    if n <= period:
        return np.full(n, np.nan), np.full(n, np.nan), None
    atr = talib.ATR(h, lo, c, period)
    hl2 = (h + lo) / 2.0
    t0 = period
    # On the first bar with an ATR the bands are the basic ones and the bar's close says
    # which side the price is on.
    d = 1.0 if c[t0] >= hl2[t0] else -1.0
    first = Ratchet(hl2[t0] + multiplier * atr[t0], hl2[t0] - multiplier * atr[t0], d, float(c[t0]))
    line, direction, state = supertrend_resume(
        first, h[t0 + 1 :], lo[t0 + 1 :], c[t0 + 1 :], atr[t0 + 1 :], multiplier
    )
    head = np.full(t0 + 1, np.nan)
    head_dir = head.copy()
    head[t0], head_dir[t0] = (first.lower if d > 0 else first.upper), d
    return np.concatenate([head, line]), np.concatenate([head_dir, direction]), state


def supertrend_resume(
    state: Ratchet,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    atr: np.ndarray,
    multiplier: float,
) -> tuple[np.ndarray, np.ndarray, Ratchet]:
    """Continue the ratchet from `state` over the bars that follow it, given their ATR.

    Streamed bars carry the state from call to call: the bands are path-dependent, so a
    window of bars could not rebuild them.
    """
    hl2 = (np.asarray(high, dtype=np.float64) + np.asarray(low, dtype=np.float64)) / 2.0
    # The ratchet is path-dependent: a plain loop over lists (list indexing is much
    # cheaper than numpy scalar access).
    bu = (hl2 + multiplier * atr).tolist()
    bl = (hl2 - multiplier * atr).tolist()
    cl = np.asarray(close, dtype=np.float64).tolist()
    upper, lower, d, prev_close = state.upper, state.lower, state.direction, state.close
    out_line = [math.nan] * len(cl)
    out_dir = [math.nan] * len(cl)
    for t, c_t in enumerate(cl):
        b = bl[t]
        if b > lower or prev_close < lower:
            lower = b
        b = bu[t]
        if b < upper or prev_close > upper:
            upper = b
        if d > 0:
            if c_t < lower:
                d = -1.0
        elif c_t > upper:
            d = 1.0
        out_line[t] = lower if d > 0 else upper
        out_dir[t] = d
        prev_close = c_t
    return np.array(out_line), np.array(out_dir), Ratchet(upper, lower, d, prev_close)


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
