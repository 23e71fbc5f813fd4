"""Small causal helpers over rolling windows: recent True values, sums, SMA, Bollinger bands.

`rolling_sum`, `sma` and `bollinger` give at bar t a value that depends on bars
t-period+1..t only, to the last bit: every window is added up by the same tree. TA-Lib's
SMA and BBANDS keep one running sum over the whole series instead, whose rounding carries
the history (about 1e-13 relative), so on a flat stretch, where a close equals its band,
the comparison would come out differently over a window of recent bars than over every
bar. With these, the rolling window of streamed bars decides exactly as the backtest.
"""

from __future__ import annotations

import numpy as np


def true_within(x: np.ndarray, bars: int) -> np.ndarray:
    """Return True at t when x was True on any of bars t-bars+1..t (reads nothing after t)."""
    cs = np.concatenate([[0], np.cumsum(x, dtype=np.int64)])
    start = np.maximum(np.arange(len(x)) + 1 - bars, 0)
    return cs[1:] - cs[start] > 0


def rolling_sum(x: np.ndarray, period: int) -> np.ndarray:
    """Return x[t-period+1] + ... + x[t] at t (NaN before bar period-1), one fixed tree per window.

    Sums of 1, 2, 4, ... consecutive values are built by doubling (pairs of pairs), and each
    window adds the blocks of its period's binary digits, oldest first: about log2(period)
    vector operations instead of period, and the same operations for every window. Sums
    along the last axis, so several series can share the vector operations.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[-1]
    out = np.full(x.shape, np.nan)
    m = n - period + 1
    if m <= 0:
        return out
    acc: np.ndarray | None = None
    block, span, offset, bits = x, 1, 0, period  # block[..., i] = x[..., i] + ... + x[..., i+span-1]
    while True:
        if bits & 1:
            part = block[..., offset : offset + m]
            acc = part.copy() if acc is None else acc + part
            offset += span
        bits >>= 1
        if not bits:
            break
        block = block[..., :-span] + block[..., span:]
        span *= 2
    out[..., period - 1 :] = acc
    return out


def sma(x: np.ndarray, period: int) -> np.ndarray:
    """Return the simple moving average over `period` bars (NaN during warm-up)."""
    return rolling_sum(x, period) / period


def bollinger(
    close: np.ndarray, period: int, dev: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (upper, middle, lower): SMA ± dev × population standard deviation, as TA-Lib's BBANDS.

    The variance is mean(x²) - mean(x)², TA-Lib's formula, floored at 0 against rounding.
    """
    both = np.empty((2, len(close)))  # close and close², summed in one pass
    both[0] = close
    np.multiply(both[0], both[0], out=both[1])
    mean, mean_sq = sma(both, period)
    std = np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))  # NaN in warm-up stays NaN, silently
    band = std * dev
    return mean + band, mean, mean - band
