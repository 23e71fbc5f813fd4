"""FillModel: the seeded cost and microstructure model shared by backtests and paper trading.

Pure arithmetic plus one seeded `numpy.random.Generator`; SimBroker asks it, per order and
per bar, how much fills, at what price and when. Every formula is in docs/fill-model.md.

For the default settings (percent or fixed slippage, no impact, no latency, no random
partials or rejections) the prices are computed with exactly the expressions backtrader's
own slippage uses, so those fills stay bit-identical to a plain BackBroker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import backtrader as bt
import numpy as np

MS_PER_DAY = 86_400_000.0
# A random partial fill takes this share range of what the bar could give the order.
PARTIAL_FRACTION_RANGE = (0.1, 1.0)
REJECT_REASON = "VENUE_REJECTED"


@dataclass
class FillModel:
    """Slippage, market impact, volume cap, latency, partial fills, rejections and commission."""

    slippage_model: str = "percent"  # percent | fixed | linear | sqrt
    base_slippage: float = 0.0
    market_impact_enabled: bool = False
    market_impact_factor: float = 0.0
    max_volume_share: float | None = None  # cap on one order's fill per bar, share of bar volume
    latency_simulation: bool = False
    min_latency_ms: float = 0.0
    max_latency_ms: float = 0.0
    partial_fill_probability: float = 0.0
    reject_probability: float = 0.0
    commission_rate: float = 0.0
    commission_per_share: float | None = None
    commission_minimum: float = 0.0
    seed: int = 0
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    @classmethod
    def from_config(cls, ptc: Any, *, commission_rate: float = 0.0,
                    commission_per_share: float | None = None, commission_minimum: float = 0.0) -> FillModel:
        """Build the model from a resolved `PaperTradingConfig` and the broker's commission keys."""
        return cls(
            slippage_model=ptc.slippage_model,
            base_slippage=ptc.base_slippage,
            market_impact_enabled=bool(ptc.market_impact_enabled),
            market_impact_factor=ptc.market_impact_factor if ptc.market_impact_enabled else 0.0,
            max_volume_share=ptc.max_volume_share,
            latency_simulation=bool(ptc.latency_simulation),
            min_latency_ms=ptc.min_latency_ms,
            max_latency_ms=ptc.max_latency_ms,
            partial_fill_probability=ptc.partial_fill_probability,
            reject_probability=ptc.reject_probability,
            commission_rate=commission_rate,
            commission_per_share=commission_per_share,
            commission_minimum=commission_minimum,
            seed=ptc.seed,
        )

    # ------------------------------------------------------------------ prices
    @property
    def size_dependent(self) -> bool:
        """True when the slippage depends on the order's share of the bar volume."""
        return self.slippage_model in ("linear", "sqrt") or (
            self.market_impact_enabled and self.market_impact_factor > 0
        )

    def slippage(self, price: float, qty: float, volume: float) -> float:
        """Return the adverse price move (price units, >= 0) for `qty` filled out of `volume`.

        percent: b*P; fixed: b; linear: b*(1 + x)*P; sqrt: b*(1 + sqrt(x))*P, with x = qty/volume
        (0 when the bar has no volume). Market impact adds f*x*P.
        """
        x = participation(qty, volume)
        model, b = self.slippage_model, self.base_slippage
        impact = self.market_impact_factor * x if self.market_impact_enabled else 0.0
        if model == "fixed":
            return b + price * impact if impact else b
        if model == "linear":
            frac = b * (1.0 + x)
        elif model == "sqrt":
            frac = b * (1.0 + math.sqrt(x))
        else:
            frac = b
        return price * (frac + impact) if impact else price * frac

    def slipped(self, price: float, is_buy: bool, qty: float, volume: float, low: float, high: float) -> float:
        """Move `price` against the order and clip it to the bar's [low, high]."""
        model, b = self.slippage_model, self.base_slippage
        if model == "percent" and not self.market_impact_enabled:
            # backtrader's own expression, kept for bit-identical default fills
            p = price * (1 + b) if is_buy else price * (1 - b)
        elif model == "fixed" and not self.market_impact_enabled:
            p = price + b if is_buy else price - b
        else:
            slip = self.slippage(price, qty, volume)
            p = price + slip if is_buy else price - slip
        return min(p, high) if is_buy else max(p, low)

    # ------------------------------------------------------------------ quantity
    def bar_capacity(self, volume: float) -> float:
        """Return the most one order may fill on a bar (inf without a cap or a known volume)."""
        if self.max_volume_share is None or not (volume > 0):
            return math.inf
        return self.max_volume_share * volume

    def fill_quantity(self, remaining: float, volume: float) -> float:
        """Return how much of `remaining` (> 0) fills on this bar; may be less, never 0 unless capped to 0."""
        qty = min(remaining, self.bar_capacity(volume))
        if self.partial_fill_probability > 0 and self.rng.random() < self.partial_fill_probability:
            lo, hi = PARTIAL_FRACTION_RANGE
            qty *= self.rng.uniform(lo, hi)
        return qty

    # ------------------------------------------------------------------ time and refusals
    def latency_ms(self) -> float:
        """Draw one order's latency in milliseconds (0 when latency is off)."""
        if not self.latency_simulation:
            return 0.0
        if self.max_latency_ms <= self.min_latency_ms:
            return self.min_latency_ms
        return float(self.rng.uniform(self.min_latency_ms, self.max_latency_ms))

    def rejects(self) -> bool:
        """Draw whether the venue rejects a new order."""
        return self.reject_probability > 0 and bool(self.rng.random() < self.reject_probability)

    # ------------------------------------------------------------------ commission
    def commission(self, qty: float, price: float) -> float:
        """Return the commission of one fill: rate*|q|*P or per_share*|q|, at least the minimum."""
        if self.commission_per_share is not None:
            fee = abs(qty) * self.commission_per_share
        else:
            fee = abs(qty) * price * self.commission_rate
        return max(fee, self.commission_minimum) if self.commission_minimum and qty else fee

    def comminfo(self) -> bt.CommInfoBase | None:
        """Return a backtrader commission scheme when the stock percentage one does not fit."""
        if self.commission_per_share is None and not self.commission_minimum:
            return None
        return _FillModelCommission(model=self)


def participation(qty: float, volume: float) -> float:
    """Return qty / volume, or 0 when the bar's volume is unknown (0 or NaN)."""
    return abs(qty) / volume if volume > 0 else 0.0


def path_price(open_: float, high: float, low: float, close: float, frac: float) -> float:
    """Price at `frac` (0..1) of the bar along the straight open->close path, inside [low, high]."""
    frac = min(max(frac, 0.0), 1.0)
    return min(max(open_ + (close - open_) * frac, low), high)


class _FillModelCommission(bt.CommInfoBase):
    """Stock-like commission computed by a FillModel (per share and/or with a minimum)."""

    params = (("model", None), ("stocklike", True), ("commtype", bt.CommInfoBase.COMM_FIXED))

    def _getcommission(self, size: float, price: float, pseudoexec: bool) -> float:
        return self.p.model.commission(size, price)
