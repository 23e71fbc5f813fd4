"""FixedRatioExitMixin: a fixed stop and a take profit at R times the risk."""

from __future__ import annotations

import math
from typing import Self

import numpy as np
import talib
from pydantic import Field, model_validator

from strategy.indicators.memory import recursive_memory
from strategy.mixins.base import Bars, ExitMixin, ExitParams, ExitPlan, OpenTrade
from strategy.registry import register


@register
class FixedRatioExitMixin(ExitMixin):
    """Stop one risk unit from the signal close, target x_risk_reward risk units the other way.

    With C the signal bar's close, the risk unit R is C x x_stop_pct or
    x_atr_multiplier x ATR(x_atr_period) at the signal bar (exactly one of the two). For a long
    (mirrored for a short): stop C - R (`stop_loss`), target C + x_risk_reward x R
    (`take_profit`). Both stay where they are until one fills.
    """

    description = "Stop at a percent or ATR distance, take profit at a multiple of that risk."

    class Params(ExitParams):
        x_stop_pct: float | None = Field(
            None, gt=0, lt=1, description="Risk unit as a fraction of the signal close."
        )
        x_atr_multiplier: float | None = Field(
            None, gt=0, description="Risk unit in ATRs at the signal bar."
        )
        x_atr_period: int = Field(
            14, ge=1, description="ATR period (Wilder), with x_atr_multiplier."
        )
        x_risk_reward: float = Field(2.0, gt=0, description="Target distance in risk units.")

        @model_validator(mode="after")
        def _one_risk_unit(self) -> Self:
            if (self.x_stop_pct is None) == (self.x_atr_multiplier is None):
                raise ValueError("set exactly one of x_stop_pct or x_atr_multiplier")
            if self.x_stop_pct is not None and "x_atr_period" in self.model_fields_set:
                raise ValueError("x_atr_period applies only with x_atr_multiplier")
            return self

    atr: list[float]

    def compute(self, bars: Bars) -> dict[str, np.ndarray]:
        if self.p.x_atr_multiplier is None:
            return {}
        return {"atr": talib.ATR(bars.high, bars.low, bars.close, self.p.x_atr_period)}

    def warmup(self) -> int:
        return self.p.x_atr_period if self.p.x_atr_multiplier is not None else 0

    def memory(self) -> int:
        return recursive_memory(self.p.x_atr_period) if self.p.x_atr_multiplier is not None else 1

    def on_entry(self, trade: OpenTrade, i: int) -> ExitPlan:
        p, ref, sign = self.p, trade.ref_price, trade.side.sign
        risk = ref * p.x_stop_pct if p.x_stop_pct is not None else p.x_atr_multiplier * self.atr[i]
        if not (math.isfinite(risk) and risk > 0):  # no ATR yet: no levels
            return ExitPlan()
        return ExitPlan(stop=ref - sign * risk, take_profit=ref + sign * p.x_risk_reward * risk)

    def on_bar(self, trade: OpenTrade, i: int) -> ExitPlan:
        # Fixed levels: pass them through with their reasons (another mixin may have moved them).
        return ExitPlan(trade.stop, trade.stop_reason, trade.take_profit, trade.take_profit_reason)
