"""Ichimoku Kinko Hyo, causal: index t holds only what is known at the close of bar t.

With ``mid(n)[t] = (highest high + lowest low of bars t-n+1..t) / 2`` and d = displacement:

* Tenkan-sen ``tenkan[t] = mid(tenkan)[t]``; Kijun-sen ``kijun[t] = mid(kijun)[t]``.
* Senkou spans: a chart draws ``(tenkan + kijun) / 2`` and ``mid(senkou_b)`` d bars *ahead*
  of the bar that computed them. So the cloud drawn at bar t was computed at bar t-d:
  ``senkou_a[t] = (tenkan[t-d] + kijun[t-d]) / 2`` and ``senkou_b[t] = mid(senkou_b)[t-d]``.
  "Price above the cloud" at t compares ``close[t]`` with these two values.
* Chikou span: a chart draws ``close[t]`` d bars *back*; comparing it with the price there
  means comparing ``close[t]`` with ``close[t-d]`` (``chikou_ref[t]``), never ``close[t+d]``.

Warm-up (first non-NaN index, 0-based): tenkan ``tenkan-1``, kijun ``kijun-1``, senkou_a
``max(tenkan, kijun)-1+d``, senkou_b ``senkou_b-1+d``, chikou_ref ``d``; all lines from
`ichimoku_warmup` (77 with the standard 9/26/52/26). Earlier values are NaN.

backtrader's own ``bt.indicators.Ichimoku`` shifts the spans into the future for plotting;
`Ichimoku` here keeps every line causal so a strategy can read ``[0]`` safely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import backtrader as bt
import numpy as np
import talib


@dataclass(frozen=True, slots=True)
class IchimokuLines:
    """Ichimoku lines aligned so that index t holds what is known at the close of bar t."""

    tenkan: np.ndarray
    kijun: np.ndarray
    senkou_a: np.ndarray  # cloud edge drawn at t (computed at t - displacement)
    senkou_b: np.ndarray  # cloud edge drawn at t (computed at t - displacement)
    chikou_ref: np.ndarray  # close[t - displacement]: what the Chikou span is compared with


def ichimoku_warmup(
    tenkan: int = 9, kijun: int = 26, senkou_b: int = 52, displacement: int = 26
) -> int:
    """Return the first bar index at which every Ichimoku line has a value."""
    return max(senkou_b - 1, max(tenkan, kijun) - 1, 0) + displacement


def _check(tenkan: int, kijun: int, senkou_b: int, displacement: int) -> None:
    if min(tenkan, kijun, senkou_b) < 2 or displacement < 0:
        raise ValueError("Ichimoku periods must be >= 2 and the displacement >= 0")


def _midpoint(high: np.ndarray, low: np.ndarray, period: int) -> np.ndarray:
    return (talib.MAX(high, period) + talib.MIN(low, period)) / 2.0


def _lag(x: np.ndarray, d: int) -> np.ndarray:
    """Return x delayed by d bars: out[t] = x[t-d], NaN for t < d."""
    if d == 0:
        return x.copy()
    out = np.full(len(x), np.nan)
    out[d:] = x[:-d]
    return out


def ichimoku(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    tenkan: int = 9,
    kijun: int = 26,
    senkou_b: int = 52,
    displacement: int = 26,
) -> IchimokuLines:
    """Compute the causal Ichimoku lines over whole arrays (vectorised)."""
    _check(tenkan, kijun, senkou_b, displacement)
    h = np.asarray(high, dtype=np.float64)
    lo = np.asarray(low, dtype=np.float64)
    c = np.asarray(close, dtype=np.float64)
    tk = _midpoint(h, lo, tenkan)
    kj = _midpoint(h, lo, kijun)
    return IchimokuLines(
        tenkan=tk,
        kijun=kj,
        senkou_a=_lag((tk + kj) / 2.0, displacement),
        senkou_b=_lag(_midpoint(h, lo, senkou_b), displacement),
        chikou_ref=_lag(c, displacement),
    )


class Ichimoku(bt.Indicator):
    """Causal Ichimoku on a data feed's high, low and close (see the module docstring)."""

    lines: Any = ("tenkan", "kijun", "senkou_a", "senkou_b", "chikou_ref")  # bt turns it into Lines
    params = (("tenkan", 9), ("kijun", 26), ("senkou_b", 52), ("displacement", 26))

    def __init__(self) -> None:
        p = self.p
        _check(p.tenkan, p.kijun, p.senkou_b, p.displacement)
        self.addminperiod(ichimoku_warmup(p.tenkan, p.kijun, p.senkou_b, p.displacement) + 1)

    # runonce: preonce/oncestart would split the buffer; compute all of it in `once` instead.
    def preonce(self, start: int, end: int) -> None:
        pass

    def oncestart(self, start: int, end: int) -> None:
        pass

    def once(self, start: int, end: int) -> None:
        d, p = self.data, self.p
        res = ichimoku(
            np.asarray(d.high.array[:end]),
            np.asarray(d.low.array[:end]),
            np.asarray(d.close.array[:end]),
            p.tenkan,
            p.kijun,
            p.senkou_b,
            p.displacement,
        )
        for name in self.lines.getlinealiases():
            arr = getattr(self.lines, name).array
            arr[:end] = type(arr)("d", getattr(res, name).tolist())

    def prenext(self) -> None:
        self.next()  # fill the lines that are already valid during the warm-up

    def next(self) -> None:
        p, n = self.p, len(self)
        high, low, close = self.data.high, self.data.low, self.data.close
        nan = math.nan

        def mid(period: int, ago: int) -> float:
            if n - ago < period:
                return nan
            return (
                max(high.get(ago=-ago, size=period)) + min(low.get(ago=-ago, size=period))
            ) / 2.0

        dsp = p.displacement
        self.lines.tenkan[0] = mid(p.tenkan, 0)
        self.lines.kijun[0] = mid(p.kijun, 0)
        # The spans drawn now were computed dsp bars ago, from bars up to then.
        self.lines.senkou_a[0] = (mid(p.tenkan, dsp) + mid(p.kijun, dsp)) / 2.0
        self.lines.senkou_b[0] = mid(p.senkou_b, dsp)
        self.lines.chikou_ref[0] = close[-dsp] if n > dsp else nan
