"""MACrossoverExitMixin: close when the fast MA crosses the slow MA against the position."""

from __future__ import annotations

from typing import Literal, Self

import numpy as np
import talib
from pydantic import Field, model_validator

from strategy.indicators.memory import recursive_memory
from strategy.indicators.windows import sma
from strategy.mixins.base import Bars, ExitMixin, ExitParams, ExitPlan, OpenTrade, Side
from strategy.registry import register


@register
class MACrossoverExitMixin(ExitMixin):
    """Exit at the next open when fast MA crosses the slow MA against the position at bar i.

    Long: fast[i] < slow[i] and fast[i-1] >= slow[i-1]; short: fast[i] > slow[i] and
    fast[i-1] <= slow[i-1] (`ma_crossover`). MAs are SMA or EMA (TA-Lib) of the closes.
    Only a fresh cross exits: a position entered while the MAs are already crossed against
    it is kept until they cross back and then against it again. Checked from the close of
    the entry bar on, so a cross on the entry bar counts and one on the signal bar does not.
    """

    description = "Close when the fast MA crosses the slow MA against the position (SMA or EMA)."

    class Params(ExitParams):
        x_fast_period: int = Field(10, ge=1, description="Fast moving-average period.")
        x_slow_period: int = Field(30, ge=2, description="Slow moving-average period.")
        x_ma_type: Literal["sma", "ema"] = Field("ema", description="Moving average: sma or ema.")

        @model_validator(mode="after")
        def _fast_below_slow(self) -> Self:
            if self.x_fast_period >= self.x_slow_period:
                fast, slow = self.x_fast_period, self.x_slow_period
                raise ValueError(f"x_fast_period ({fast}) must be below x_slow_period ({slow})")
            return self

    cross_down: list[bool]
    cross_up: list[bool]

    def compute(self, bars: Bars) -> dict[str, np.ndarray]:
        p = self.p
        ma = sma if p.x_ma_type == "sma" else talib.EMA
        fast, slow = ma(bars.close, p.x_fast_period), ma(bars.close, p.x_slow_period)
        prev_fast, prev_slow = np.roll(fast, 1), np.roll(slow, 1)
        prev_fast[:1] = prev_slow[:1] = np.nan  # bar 0 has no previous bar
        with np.errstate(invalid="ignore"):  # NaN during warm-up compares False
            # A pure function of bars 0..i, evaluated for every bar at once.
            return {
                "cross_down": (fast < slow) & (prev_fast >= prev_slow),
                "cross_up": (fast > slow) & (prev_fast <= prev_slow),
            }

    def warmup(self) -> int:
        return self.p.x_slow_period  # first bar with both MAs at i and i - 1

    def memory(self) -> int:
        slow = self.p.x_slow_period
        return (slow if self.p.x_ma_type == "sma" else recursive_memory(slow)) + 1  # + bar i - 1

    def on_bar(self, trade: OpenTrade, i: int) -> ExitPlan:
        plan = ExitPlan(trade.stop, trade.stop_reason, trade.take_profit, trade.take_profit_reason)
        against = self.cross_down if trade.side is Side.LONG else self.cross_up
        if against[i]:
            plan.exit_now = "ma_crossover"
        return plan
