"""AdvancedATRExitMixin: ATR stop and target, trailing, and a move to breakeven."""

from __future__ import annotations

import math

import numpy as np
import talib
from pydantic import Field

from strategy.indicators.memory import recursive_memory
from strategy.mixins.base import Bars, ExitMixin, ExitParams, ExitPlan, OpenTrade
from strategy.registry import register


@register
class AdvancedATRExitMixin(ExitMixin):
    """Stop at x_sl_multiplier x ATR, target at x_tp_multiplier x ATR, trail and breakeven.

    Levels are anchored at the signal bar's close and ATR (known when the bracket is sent).
    With x_partial_tp_multiplier set, x_partial_fraction of the position is closed at that
    first target (a separate trade leg, `partial_take_profit`) and the rest keeps trailing.
    After each close the stop may only tighten: to the best price since entry minus
    x_trail_multiplier x ATR (trailing_stop), or to the entry price once the best price has
    gone x_breakeven_trigger x ATR in favour (breakeven_stop).
    """

    description = "ATR stop and take profit, ATR trailing stop, move to breakeven after a gain."

    class Params(ExitParams):
        x_atr_period: int = Field(14, ge=1, description="ATR period (Wilder).")
        x_sl_multiplier: float = Field(2.0, gt=0, description="Initial stop distance in ATRs.")
        x_tp_multiplier: float = Field(3.0, ge=0, description="Take-profit distance in ATRs; 0 disables.")
        x_trailing_enabled: bool = Field(True, description="Trail the stop behind the best price.")
        x_trail_multiplier: float | None = Field(
            None, gt=0, description="Trailing distance in ATRs; default x_sl_multiplier."
        )
        x_trail_use_current_atr: bool = Field(
            False, description="Trail with the latest ATR instead of the ATR at entry."
        )
        x_breakeven_enabled: bool = Field(True, description="Move the stop to the entry price after a gain.")
        x_breakeven_trigger: float = Field(1.0, gt=0, description="Gain in ATRs that moves the stop to breakeven.")
        x_breakeven_offset: float = Field(
            0.0, ge=0, lt=0.1, description="Breakeven stop beyond entry, fraction of price (covers fees)."
        )
        x_partial_tp_multiplier: float = Field(
            0.0, ge=0, description="First target in ATRs for a partial close; 0 disables."
        )
        x_partial_fraction: float = Field(0.5, gt=0, lt=1, description="Fraction of the position closed there.")

    atr: list[float]

    def compute(self, bars: Bars) -> dict[str, np.ndarray]:
        return {"atr": talib.ATR(bars.high, bars.low, bars.close, self.p.x_atr_period)}

    def warmup(self) -> int:
        return self.p.x_atr_period

    def memory(self) -> int:
        return recursive_memory(self.p.x_atr_period)

    def on_entry(self, trade: OpenTrade, i: int) -> ExitPlan:
        p, sign = self.p, trade.side.sign
        atr = self.atr[i]
        if not math.isfinite(atr) or atr <= 0:
            return ExitPlan()
        self._atr_entry = atr
        self._breakeven_done = False
        ref = trade.ref_price
        stop = ref - sign * p.x_sl_multiplier * atr
        target = ref + sign * p.x_tp_multiplier * atr if p.x_tp_multiplier > 0 else None
        plan = ExitPlan(stop=stop, stop_reason="stop_loss", take_profit=target)
        if p.x_partial_tp_multiplier > 0:
            plan.partial_target = ref + sign * p.x_partial_tp_multiplier * atr
            plan.partial_fraction = p.x_partial_fraction
        return plan

    def on_bar(self, trade: OpenTrade, i: int) -> ExitPlan:
        p, sign = self.p, trade.side.sign
        plan = ExitPlan(
            stop=trade.stop,
            stop_reason=trade.stop_reason,
            take_profit=trade.take_profit,
            take_profit_reason=trade.take_profit_reason,
        )
        atr0 = getattr(self, "_atr_entry", None)  # None: on_entry had no ATR (e.g. a trade adopted too early)
        if trade.stop is None or trade.entry_price is None or atr0 is None:
            return plan
        if p.x_breakeven_enabled and not self._breakeven_done:
            if sign * (trade.best_price - trade.entry_price) >= p.x_breakeven_trigger * atr0:
                self._breakeven_done = True
                level = trade.entry_price * (1 + sign * p.x_breakeven_offset)
                if sign * (level - plan.stop) > 0:
                    plan.stop, plan.stop_reason = level, "breakeven_stop"
        if p.x_trailing_enabled:
            atr = self.atr[i] if p.x_trail_use_current_atr else atr0
            dist = (p.x_trail_multiplier or p.x_sl_multiplier) * atr
            level = trade.best_price - sign * dist
            if math.isfinite(level) and sign * (level - plan.stop) > 0:
                plan.stop, plan.stop_reason = level, "trailing_stop"
        return plan
