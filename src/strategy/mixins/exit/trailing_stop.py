"""TrailingStopExitMixin: a stop a fixed percentage behind the best price since entry."""

from __future__ import annotations

import math

from pydantic import Field

from strategy.mixins.base import ExitMixin, ExitParams, ExitPlan, OpenTrade
from strategy.registry import register


@register
class TrailingStopExitMixin(ExitMixin):
    """Keep the stop x_trail_pct behind the best price; it only ever tightens.

    For a long (mirrored for a short, with 1 + x_trail_pct):

    * on entry (signal bar): stop = signal close x (1 - x_trail_pct);
    * after the close of every bar in the position, with best = the highest high from the
      entry bar on (inclusive): level = best x (1 - x_trail_pct); the stop moves there if
      that is tighter. No target. Every stop it sets carries `trailing_stop`.
    """

    description = "Percentage trailing stop behind the best price since entry."

    class Params(ExitParams):
        x_trail_pct: float = Field(
            0.02, gt=0, lt=1, description="Stop distance behind the best price, fraction of price."
        )

    def on_entry(self, trade: OpenTrade, i: int) -> ExitPlan:
        stop = trade.ref_price * (1 - trade.side.sign * self.p.x_trail_pct)
        return ExitPlan(stop=stop, stop_reason="trailing_stop")

    def on_bar(self, trade: OpenTrade, i: int) -> ExitPlan:
        sign = trade.side.sign
        # Pass the current levels through with their reasons, so another mixin's stop keeps its own.
        plan = ExitPlan(trade.stop, trade.stop_reason, trade.take_profit, trade.take_profit_reason)
        level = trade.best_price * (1 - sign * self.p.x_trail_pct)
        if math.isfinite(level) and (plan.stop is None or sign * (level - plan.stop) > 0):
            plan.stop, plan.stop_reason = level, "trailing_stop"
        return plan
