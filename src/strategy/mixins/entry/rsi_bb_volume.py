"""RSIBBVolumeEntryMixin: the RSI/Bollinger signal, confirmed by a volume surge."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from strategy.indicators.windows import sma
from strategy.mixins.base import Bars
from strategy.mixins.entry.rsi_bb import RSIOrBBEntryMixin
from strategy.registry import register


@register
class RSIBBVolumeEntryMixin(RSIOrBBEntryMixin):
    """RSIOrBBEntryMixin's rule, taken only when volume[i] > e_vol_multiplier x SMA(volume, e_vol_period)[i].

    The volume average includes bar i itself (it is known at the close of bar i), so a
    spike must beat an average it is part of. Long and short use the same volume test.
    """

    description = "RSI/Bollinger signal confirmed by volume above a multiple of its moving average."

    class Params(RSIOrBBEntryMixin.Params):
        e_vol_period: int = Field(20, ge=2, description="Volume moving-average period.")
        e_vol_multiplier: float = Field(1.5, gt=0, description="Volume must exceed this multiple of its average.")

    def compute(self, bars: Bars) -> dict[str, np.ndarray]:
        out = super().compute(bars)  # the RSI/Bollinger signal arrays
        p = self.p
        with np.errstate(invalid="ignore"):  # NaN during warm-up compares False
            surge = bars.volume > p.e_vol_multiplier * sma(bars.volume, p.e_vol_period)
        return {name: values & surge for name, values in out.items()}

    def memory(self) -> int:
        return max(super().memory(), self.p.e_vol_period)

    def warmup(self) -> int:
        return max(super().warmup(), self.p.e_vol_period - 1)
