"""Position sizing: each method and each cap, worked by hand (docs/backtesting.md, "Sizing")."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.config import RiskSection, SizingConfig
from trading.sizing import position_quantity

NO_RISK = RiskSection()


def qty(sizing: dict, risk: RiskSection = NO_RISK, *, equity: float = 10_000.0, price: float = 100.0,
        stop: float | None = 95.0) -> tuple[float, str | None]:
    return position_quantity(SizingConfig(**sizing), risk, equity=equity, price=price, stop=stop)


@pytest.mark.parametrize(
    ("sizing", "risk", "expected"),
    [
        # fixed: the quantity itself
        ({"method": "fixed", "quantity": 3}, NO_RISK, 3.0),
        # percent_equity: 10 000 * 0.25 / 100 = 25
        ({"method": "percent_equity", "percent": 0.25}, NO_RISK, 25.0),
        # risk_per_trade: 10 000 * 0.01 / |100 - 95| = 20
        ({"method": "risk_per_trade", "risk": 0.01}, NO_RISK, 20.0),
        # max_percent caps the notional: 10 000 * 0.5 / 100 = 50 < 200 (risk 0.1 / 5)
        ({"method": "risk_per_trade", "risk": 0.1, "max_percent": 0.5}, NO_RISK, 50.0),
        # risk_management.max_position_size: 10 000 * 0.2 / 100 = 20 < 25
        ({"method": "percent_equity", "percent": 0.25}, RiskSection(max_position_size=0.2), 20.0),
        # risk_management.risk_per_trade: loss at the stop <= 10 000 * 0.005 -> 50 / 5 = 10 < 25
        ({"method": "percent_equity", "percent": 0.25}, RiskSection(risk_per_trade=0.005), 10.0),
        # lot_size rounds down: 10 000 * 0.0333 / 100 = 3.33 -> 3.3 in lots of 0.1 (not 3.4)
        ({"method": "percent_equity", "percent": 0.0333, "lot_size": 0.1}, NO_RISK, 3.3),
        # lots that divide exactly are kept (0.3 / 0.1 must not become 2 lots)
        ({"method": "fixed", "quantity": 0.3, "lot_size": 0.1}, NO_RISK, 0.3),
    ],
)
def test_methods_and_caps_match_hand_computation(sizing: dict, risk: RiskSection, expected: float) -> None:
    q, reason = qty(sizing, risk)
    assert reason is None
    assert q == pytest.approx(expected, rel=1e-12)


def test_risk_sizing_without_a_stop_is_refused() -> None:
    assert qty({"method": "risk_per_trade", "risk": 0.01}, stop=None) == (0.0, "NO_STOP_FOR_RISK_SIZING")


def test_quantity_below_one_lot_is_refused() -> None:
    # 10 000 * 0.001 / 100 = 0.1 units, lot 1 -> nothing to buy
    assert qty({"method": "percent_equity", "percent": 0.001, "lot_size": 1}) == (0.0, "QUANTITY_BELOW_LOT")


@pytest.mark.parametrize(("equity", "price", "reason"), [(0.0, 100.0, "NO_EQUITY"), (-5.0, 100.0, "NO_EQUITY"),
                                                         (10_000.0, 0.0, "INVALID_PRICE"),
                                                         (10_000.0, math.nan, "INVALID_PRICE")])
def test_no_equity_or_bad_price_is_refused(equity: float, price: float, reason: str) -> None:
    assert qty({"method": "fixed", "quantity": 1}, equity=equity, price=price) == (0.0, reason)


@settings(max_examples=200, deadline=None)
@given(
    equity=st.floats(100, 1e7),
    price=st.floats(0.01, 1e5),
    stop_frac=st.floats(0.001, 0.5),
    percent=st.floats(0.001, 1.0),
    cap=st.floats(0.01, 1.0),
    risk_cap=st.floats(0.001, 0.1),
)
def test_caps_are_never_exceeded(equity: float, price: float, stop_frac: float, percent: float, cap: float,
                                 risk_cap: float) -> None:
    stop = price * (1 - stop_frac)
    risk = RiskSection(max_position_size=cap, risk_per_trade=risk_cap)
    q, reason = qty({"method": "percent_equity", "percent": percent}, risk, equity=equity, price=price, stop=stop)
    assert reason is None and q > 0
    assert q * price <= equity * min(percent, cap) * (1 + 1e-9)
    assert q * (price - stop) <= equity * risk_cap * (1 + 1e-9)
