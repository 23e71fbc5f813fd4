"""RSIIchimokuEntryMixin: buy an RSI pullback inside an Ichimoku uptrend (mirrored for shorts).

Long at the close of bar t when all of these hold:

1. RSI(``e_rsi_period``) was below ``e_rsi_oversold`` on one of the last ``e_lookback``
   bars (t included): a pullback. In a trend RSI rarely reaches 30, hence the default 40;
2. the close is above the cloud: ``close[t] > max(senkou_a[t], senkou_b[t])``;
3. ``tenkan[t] >= kijun[t]``; with ``e_require_tk_cross`` Tenkan must also have crossed up
   through Kijun (from below to at-or-above) within the last ``e_lookback`` bars;
4. with ``e_require_chikou``: ``close[t] > close[t - e_displacement]`` (Chikou above price).

Short: RSI above ``e_rsi_overbought`` within the window, close below the cloud,
``tenkan <= kijun`` (a cross down if required), ``close[t] < close[t - e_displacement]``.

No lookahead: a chart draws the cloud ``e_displacement`` bars ahead of the bar that computed
it, so the cloud at bar t is the spans computed at t - e_displacement (from bars up to then)
and that is what close[t] is compared with. The Chikou span (close[t] drawn e_displacement
bars back) is compared with close[t - e_displacement], never close[t + e_displacement].
See `strategy.indicators.ichimoku`.
"""

from __future__ import annotations

import numpy as np
import talib
from pydantic import Field

from strategy.indicators.ichimoku import ichimoku, ichimoku_warmup
from strategy.indicators.memory import recursive_memory
from strategy.indicators.windows import true_within as _within
from strategy.mixins.base import Bars, EntryMixin, EntryParams, Side
from strategy.registry import register


@register
class RSIIchimokuEntryMixin(EntryMixin):
    """Long on a recent RSI dip above the cloud with Tenkan >= Kijun; mirrored for shorts."""

    description = (
        "Recent RSI pullback, confirmed by Ichimoku: close beyond the cloud, Tenkan/Kijun."
    )

    class Params(EntryParams):
        e_rsi_period: int = Field(14, ge=2, description="RSI period (Wilder).")
        e_rsi_oversold: float = Field(
            40.0, gt=0, lt=100, description="Long: RSI dipped below this within the window."
        )
        e_rsi_overbought: float = Field(
            60.0, gt=0, lt=100, description="Short: RSI rose above this within the window."
        )
        e_lookback: int = Field(
            5,
            ge=1,
            description="Bars (this one included) holding the RSI extreme (and a required cross).",
        )
        e_tenkan: int = Field(9, ge=2, description="Tenkan-sen period.")
        e_kijun: int = Field(26, ge=2, description="Kijun-sen period.")
        e_senkou_b: int = Field(52, ge=2, description="Senkou span B period.")
        e_displacement: int = Field(
            26, ge=0, description="Bars the cloud is drawn ahead and the Chikou span behind."
        )
        e_require_tk_cross: bool = Field(
            False,
            description="Require a Tenkan/Kijun cross in the trade direction within the window.",
        )
        e_require_chikou: bool = Field(
            False, description="Require close beyond the close e_displacement bars ago."
        )

    long_signal: list[bool]
    short_signal: list[bool]

    def compute(self, bars: Bars) -> dict[str, np.ndarray]:
        p = self.p
        close = bars.close
        ich = ichimoku(
            bars.high, bars.low, close, p.e_tenkan, p.e_kijun, p.e_senkou_b, p.e_displacement
        )
        rsi = talib.RSI(close, p.e_rsi_period)
        tk, kj = ich.tenkan, ich.kijun
        with np.errstate(invalid="ignore"):  # NaN during warm-up compares False
            # np.maximum/minimum propagate NaN: no cloud, no signal
            above = close > np.maximum(ich.senkou_a, ich.senkou_b)
            below = close < np.minimum(ich.senkou_a, ich.senkou_b)
            tk_up, tk_down = tk >= kj, tk <= kj
            long_ = _within(rsi < p.e_rsi_oversold, p.e_lookback) & above & tk_up
            short = _within(rsi > p.e_rsi_overbought, p.e_lookback) & below & tk_down
            if p.e_require_tk_cross:
                prev_below = np.concatenate([[False], tk[:-1] < kj[:-1]])
                prev_above = np.concatenate([[False], tk[:-1] > kj[:-1]])
                long_ &= _within(prev_below & tk_up, p.e_lookback)
                short &= _within(prev_above & tk_down, p.e_lookback)
            if p.e_require_chikou:
                long_ &= close > ich.chikou_ref
                short &= close < ich.chikou_ref
        return {"long_signal": long_, "short_signal": short}

    def warmup(self) -> int:
        p = self.p
        return max(
            p.e_rsi_period, ichimoku_warmup(p.e_tenkan, p.e_kijun, p.e_senkou_b, p.e_displacement)
        )

    def memory(self) -> int:
        # Every line at t (the cloud reads bars up to t - displacement), plus the lookback
        # window over the RSI extreme and the Tenkan/Kijun cross (which reads t - 1).
        p = self.p
        cloud = ichimoku_warmup(p.e_tenkan, p.e_kijun, p.e_senkou_b, p.e_displacement) + 1
        return max(recursive_memory(p.e_rsi_period), cloud) + p.e_lookback

    def signal(self, i: int, side: Side) -> bool:
        return self.long_signal[i] if side is Side.LONG else self.short_signal[i]

    def signal_array(self, side: Side) -> list[bool]:
        return self.long_signal if side is Side.LONG else self.short_signal
