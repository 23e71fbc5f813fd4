"""ATRExitMixin: an ATR stop that trails the best price with the current ATR."""

from __future__ import annotations

import math

import numpy as np
import talib
from pydantic import Field

from strategy.indicators.memory import recursive_memory
from strategy.mixins.base import Bars, ExitMixin, ExitParams, ExitPlan, OpenTrade
from strategy.registry import register


@register
class ATRExitMixin(ExitMixin):
    """Stop x_atr_multiplier x ATR from the signal close, then trail it behind the best price.

    For a long (mirrored for a short), with ATR_i = ATR(x_atr_period) at bar i:

    * on entry (signal bar i): stop = close_i - x_atr_multiplier x ATR_i (`stop_loss`);
    * after the close of every bar i in the position, with best = highest high since the
      entry bar (inclusive): level = best - x_atr_multiplier x ATR_i; the stop moves there
      if that is tighter (`trailing_stop`), never looser. No target.
    """

    description = "ATR stop loss that trails the best price by a multiple of the current ATR."

    class Params(ExitParams):
        x_atr_period: int = Field(14, ge=1, description="ATR period (Wilder).")
        x_atr_multiplier: float = Field(2.0, gt=0, description="Stop and trailing distance in ATRs.")

    atr: list[float]

    def compute(self, bars: Bars) -> dict[str, np.ndarray]:
        return {"atr": talib.ATR(bars.high, bars.low, bars.close, self.p.x_atr_period)}

    def warmup(self) -> int:
        return self.p.x_atr_period  # first bar with an ATR value

    def memory(self) -> int:
        return recursive_memory(self.p.x_atr_period)

    def on_entry(self, trade: OpenTrade, i: int) -> ExitPlan:
        atr = self.atr[i]
        if not (math.isfinite(atr) and atr > 0):
            return ExitPlan()
        stop = trade.ref_price - trade.side.sign * self.p.x_atr_multiplier * atr
        return ExitPlan(stop=stop, stop_reason="stop_loss")

    def on_bar(self, trade: OpenTrade, i: int) -> ExitPlan:
        sign = trade.side.sign
        plan = ExitPlan(trade.stop, trade.stop_reason, trade.take_profit, trade.take_profit_reason)
        atr = self.atr[i]
        if not (atr > 0):  # NaN during warm-up: keep the levels
            return plan
        level = trade.best_price - sign * self.p.x_atr_multiplier * atr
        if math.isfinite(level) and (plan.stop is None or sign * (level - plan.stop) > 0):
            plan.stop, plan.stop_reason = level, "trailing_stop"
        return plan
