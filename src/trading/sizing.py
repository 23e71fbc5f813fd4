"""Position sizing: fixed quantity, percent of equity, or risk per trade from the stop distance."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trading.config import RiskSection, SizingConfig


def position_quantity(
    sizing: SizingConfig,
    risk: RiskSection,
    *,
    equity: float,
    price: float,
    stop: float | None,
) -> tuple[float, str | None]:
    """Return (quantity, refusal reason). A zero quantity always comes with a reason.

    `price` is the reference price of the decision (the signal bar's close); the caps of
    `risk_management` (max_position_size, risk_per_trade) can only shrink the result.
    """
    if not (equity > 0 and price > 0 and math.isfinite(price)):
        return 0.0, "NO_EQUITY" if equity <= 0 else "INVALID_PRICE"
    dist = abs(price - stop) if stop is not None else None
    if sizing.method == "fixed":
        qty = float(sizing.quantity or 0.0)
    elif sizing.method == "percent_equity":
        qty = equity * float(sizing.percent or 0.0) / price
    else:  # risk_per_trade
        if not dist:
            return 0.0, "NO_STOP_FOR_RISK_SIZING"
        qty = equity * float(sizing.risk or 0.0) / dist
    qty = min(qty, equity * sizing.max_percent / price)
    if risk.max_position_size is not None:
        qty = min(qty, equity * risk.max_position_size / price)
    if risk.risk_per_trade is not None and dist:
        qty = min(qty, equity * risk.risk_per_trade / dist)
    if sizing.lot_size:
        # Round down in lots; the small epsilon keeps 0.3/0.1 from becoming 2 lots.
        qty = math.floor(qty / sizing.lot_size + 1e-9) * sizing.lot_size
    if qty <= 0:
        return 0.0, "QUANTITY_BELOW_LOT"
    return qty, None
