"""RSIOrBBEntryMixin: enter on an RSI extreme OR a close beyond a Bollinger band."""

from __future__ import annotations

import numpy as np
import talib
from pydantic import Field

from strategy.indicators.memory import recursive_memory
from strategy.indicators.windows import bollinger
from strategy.mixins.base import Bars, EntryMixin, EntryParams, Side
from strategy.registry import register


@register
class RSIOrBBEntryMixin(EntryMixin):
    """Long when RSI < oversold or close <= lower band; short when RSI > overbought or close >= upper band."""

    description = "RSI below oversold OR close at/below the lower Bollinger band (mirrored for shorts)."

    class Params(EntryParams):
        e_rsi_period: int = Field(14, ge=2, description="RSI period (Wilder).")
        e_rsi_oversold: float = Field(30.0, gt=0, lt=100, description="Long when RSI is below this.")
        e_rsi_overbought: float = Field(70.0, gt=0, lt=100, description="Short when RSI is above this.")
        e_bb_period: int = Field(20, ge=2, description="Bollinger moving-average period.")
        e_bb_dev: float = Field(2.0, gt=0, description="Bollinger band width in standard deviations.")

    long_signal: list[bool]
    short_signal: list[bool]

    def compute(self, bars: Bars) -> dict[str, np.ndarray]:
        p = self.p
        close = bars.close
        upper, _, lower = bollinger(close, p.e_bb_period, p.e_bb_dev)
        rsi = talib.RSI(close, p.e_rsi_period)
        with np.errstate(invalid="ignore"):  # NaN during warm-up compares False
            # The rule is a pure function of past bars: evaluate it for every bar at once.
            return {
                "long_signal": (rsi < p.e_rsi_oversold) | (close <= lower),
                "short_signal": (rsi > p.e_rsi_overbought) | (close >= upper),
            }

    def warmup(self) -> int:
        return max(self.p.e_rsi_period, self.p.e_bb_period - 1)

    def memory(self) -> int:
        return max(recursive_memory(self.p.e_rsi_period), self.p.e_bb_period)

    def signal(self, i: int, side: Side) -> bool:
        return self.long_signal[i] if side is Side.LONG else self.short_signal[i]

    def signal_array(self, side: Side) -> list[bool]:
        return self.long_signal if side is Side.LONG else self.short_signal
