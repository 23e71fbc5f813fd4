"""RSIVolumeSuperTrendEntryMixin: enter when SuperTrend turns, confirmed by RSI and volume.

Long at the close of bar t when all of these hold (mirrored for shorts):

1. SuperTrend(``e_st_period``, ``e_st_multiplier``) turned up (direction -1 -> +1) on one of
   the last ``e_flip_lookback`` bars (t included) and is still up at t (1 = the flip bar only);
2. RSI(``e_rsi_period``)[t] > ``e_rsi_long_min`` (short: < ``e_rsi_short_max``);
3. volume[t] > ``e_vol_multiplier`` × SMA(volume, ``e_vol_period``)[t] (the SMA includes bar t).

All three are causal (see `strategy.indicators.supertrend`); a flip needs the direction of
the bar before, so the first possible signal is at bar ``e_st_period + 1``.
"""

from __future__ import annotations

import numpy as np
import talib
from pydantic import Field

from strategy.indicators.memory import recursive_memory
from strategy.indicators.supertrend import supertrend_resume, supertrend_state
from strategy.indicators.windows import sma
from strategy.indicators.windows import true_within as _within
from strategy.mixins.base import Bars, EntryMixin, EntryParams, Side
from strategy.registry import register


@register
class RSIVolumeSuperTrendEntryMixin(EntryMixin):
    """Long on a recent SuperTrend turn up with RSI above a level and volume above its average."""

    description = (
        "SuperTrend flip in the trade direction, confirmed by RSI and above-average volume."
    )

    class Params(EntryParams):
        e_st_period: int = Field(10, ge=1, description="SuperTrend ATR period (Wilder).")
        e_st_multiplier: float = Field(3.0, gt=0, description="SuperTrend band width in ATRs.")
        e_flip_lookback: int = Field(
            3, ge=1, description="Bars (this one included) in which the flip must have happened."
        )
        e_rsi_period: int = Field(14, ge=2, description="RSI period (Wilder).")
        e_rsi_long_min: float = Field(
            50.0, gt=0, lt=100, description="Long only when RSI is above this."
        )
        e_rsi_short_max: float = Field(
            50.0, gt=0, lt=100, description="Short only when RSI is below this."
        )
        e_vol_period: int = Field(20, ge=2, description="Volume SMA period.")
        e_vol_multiplier: float = Field(
            1.2, gt=0, description="Volume must exceed this multiple of its SMA."
        )

    long_signal: list[bool]
    short_signal: list[bool]
    direction: list[float]

    def prepare(self, bars: Bars) -> None:
        p = self.p
        _, direction, self._ratchet = supertrend_state(
            bars.high, bars.low, bars.close, p.e_st_period, p.e_st_multiplier
        )
        self.direction = direction.tolist()
        long_, short = self._rule(bars, direction)
        self.long_signal, self.short_signal = long_.tolist(), short.tolist()

    def extend(self, bars: Bars, start: int) -> None:
        """Carry the SuperTrend ratchet over the new bars; the rest over a rolling window."""
        p, n = self.p, len(bars)
        lo = start - self.memory() + 1
        if lo <= 0 or self._ratchet is None:
            self.prepare(bars)
            return
        window, new = bars.tail(lo), bars.tail(start)
        atr = talib.ATR(window.high, window.low, window.close, p.e_st_period)[start - lo :]
        _, direction, self._ratchet = supertrend_resume(
            self._ratchet, new.high, new.low, new.close, atr, p.e_st_multiplier
        )
        self.direction.extend(direction.tolist())
        long_, short = self._rule(window, np.array(self.direction[lo:n]))
        self.long_signal.extend(long_[start - lo :].tolist())
        self.short_signal.extend(short[start - lo :].tolist())

    def _rule(self, bars: Bars, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = self.p
        rsi = talib.RSI(bars.close, p.e_rsi_period)
        volume = np.asarray(bars.volume, dtype=np.float64)
        prev = np.concatenate([[np.nan], direction[:-1]])
        with np.errstate(invalid="ignore"):  # NaN during warm-up compares False
            loud = volume > p.e_vol_multiplier * sma(volume, p.e_vol_period)
            up = direction > 0
            down = direction < 0
            long_ = (
                _within(up & (prev < 0), p.e_flip_lookback) & up & (rsi > p.e_rsi_long_min) & loud
            )
            short = (
                _within(down & (prev > 0), p.e_flip_lookback)
                & down
                & (rsi < p.e_rsi_short_max)
                & loud
            )
        return long_, short

    def memory(self) -> int:
        # The rolling window of ATR, RSI and the volume SMA, plus the bars in which a flip
        # counts (a flip reads the bar before). The bands are carried (`extend`).
        p = self.p
        smoothers = recursive_memory(max(p.e_st_period, p.e_rsi_period))
        return max(smoothers, p.e_vol_period) + p.e_flip_lookback + 1

    def warmup(self) -> int:
        p = self.p
        return max(p.e_st_period + 1, p.e_rsi_period, p.e_vol_period - 1)

    def signal(self, i: int, side: Side) -> bool:
        return self.long_signal[i] if side is Side.LONG else self.short_signal[i]

    def signal_array(self, side: Side) -> list[bool]:
        return self.long_signal if side is Side.LONG else self.short_signal
