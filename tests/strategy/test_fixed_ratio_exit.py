"""FixedRatioExitMixin through the real engine: stop one risk unit away, target R units away.

Layout (see exit_harness): signal close C = 100 and ATR(3) = A = 2 at bar 4, entry at the open
of bar 5 (k = 0). Percent mode (x_stop_pct 2 %, x_risk_reward 2): risk 2, stop 98, target 104
(short: 102 and 96). ATR mode (x_atr_multiplier 1.5, x_atr_period 3, x_risk_reward 3): risk
1.5 x 2 = 3, stop 97, target 109 (short: 103 and 91). Both are symmetric around C = 100, so
short cases are the long candles mirrored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from strategy.mixins.exit.fixed_ratio import FixedRatioExitMixin
from tests.strategy.conftest import make_config
from tests.strategy.exit_harness import ENTRY, PRE, View, check_trade, run_exits, sided, tail, wilder_atr
from trading.exceptions import ConfigError

PCT = {"x_stop_pct": 0.02, "x_risk_reward": 2.0}
ATR = {"x_atr_multiplier": 1.5, "x_atr_period": 3, "x_risk_reward": 3.0}
# (stop, target) from the module doc, by (mode, side)
HAND = {("pct", 1): (98, 104), ("pct", -1): (102, 96), ("atr", 1): (97, 109), ("atr", -1): (103, 91)}


def levels(x: View, params: dict[str, Any]) -> tuple[float, float]:
    """(stop, target) by the rule: risk = C x pct or multiplier x ATR at the signal bar."""
    if "x_stop_pct" in params:
        risk = x.C * params["x_stop_pct"]
    else:
        risk = params["x_atr_multiplier"] * wilder_atr(x.candles, params["x_atr_period"])[ENTRY - 1]
    return x.C - x.sign * risk, x.C + x.sign * params["x_risk_reward"] * risk


@dataclass(frozen=True)
class Case:
    id: str
    after: list[tuple[float, float, float, float]]  # long form, from the entry bar (k = 0)
    exit_k: int
    reason: str
    price: str  # "stop", "target" or "open" (of the exit bar)
    params: dict[str, Any] = field(default_factory=lambda: dict(PCT))


CASES = [
    Case("stop_traded_through_fills_at_stop", [(100, 100.5, 99, 99.5), (99.5, 99.8, 97, 97.5)], 1, "stop_loss", "stop"),
    Case("target_touched_fills_at_target", [(100, 101, 99, 100.5), (100.5, 104.5, 100, 104.2)], 1, "take_profit",
         "target"),
    Case("gap_through_stop_fills_at_open", [(100, 100.5, 99, 99.5), (96, 97, 95, 96.5)], 1, "stop_loss", "open"),
    Case("gap_beyond_target_fills_at_open", [(100, 101, 99, 100.5), (105, 106, 104.5, 105.5)], 1, "take_profit",
         "open"),
    # Both levels inside one bar: the stop is assumed to fill first (docs/backtesting.md).
    Case("stop_and_target_in_one_bar_is_stop_loss", [(100, 100.5, 99, 99.5), (99.5, 105, 97, 100)], 1, "stop_loss",
         "stop"),
    Case("entry_bar_touching_target_takes_profit", [(100, 104.5, 99.5, 104)], 0, "take_profit", "target"),
    # A run up to 103.5 (short 96.5) does not move the stop: it is still 98 when the price falls.
    Case("levels_stay_fixed_after_a_favourable_move", [(100, 103.5, 99.5, 103), (103, 103.2, 97.5, 98)], 1,
         "stop_loss", "stop"),
    Case("atr_risk_unit_target", [(100, 101, 99, 100.5), (100.5, 109.5, 100, 109)], 1, "take_profit", "target",
         dict(ATR)),
    Case("atr_risk_unit_stop", [(100, 100.5, 98, 98.5), (98.5, 99, 96, 96.5)], 1, "stop_loss", "stop", dict(ATR)),
]


@pytest.mark.parametrize("side", ["long", "short"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_fixed_ratio_table(case: Case, side: str) -> None:
    long_candles = PRE + case.after
    candles = sided(long_candles + tail(long_candles), side)
    x = View(candles, 1 if side == "long" else -1)
    stop, target = levels(x, case.params)
    assert (stop, target) == pytest.approx(HAND["pct" if "x_stop_pct" in case.params else "atr", x.sign])
    # premise: nothing touched a level before the exit bar, and the exit bar touches the expected one
    for k in range(case.exit_k):
        assert not x.beyond(x.adverse(k), stop) and not x.reaches(x.favour(k), target)
    k = case.exit_k
    hit = stop if case.reason == "stop_loss" else target
    assert x.beyond(x.adverse(k), stop) if hit == stop else x.reaches(x.favour(k), target)
    price = {"stop": stop, "target": target, "open": x.open(k)}[case.price]

    result, frame = run_exits(candles, [("FixedRatioExitMixin", case.params)], side=side)

    (t,) = result.trades
    check_trade(t, frame, side=side, entry_bar=ENTRY, exit_bar=ENTRY + k, reason=case.reason, price=price)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"x_risk_reward": 2}, "set exactly one of x_stop_pct or x_atr_multiplier"),
        ({"x_stop_pct": 0.02, "x_atr_multiplier": 2}, "set exactly one of x_stop_pct or x_atr_multiplier"),
        ({"x_stop_pct": 0.02, "x_atr_period": 10}, "x_atr_period applies only with x_atr_multiplier"),
        ({"x_stop_pct": 1.5}, "x_stop_pct"),
        ({"x_atr_multiplier": 2, "x_risk_reward": 0}, "x_risk_reward"),
    ],
)
def test_invalid_parameters_are_config_errors(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        make_config({"strategy": {"exit_mixins": [{"name": "FixedRatioExitMixin", "parameters": params}]}})
    assert "strategy.exit_mixins[0].parameters" in str(err.value)


def test_defaults_and_warmup() -> None:
    pct = FixedRatioExitMixin({"x_stop_pct": 0.01})
    atr = FixedRatioExitMixin({"x_atr_multiplier": 2})
    assert (pct.p.x_risk_reward, atr.p.x_atr_period) == (2.0, 14)
    assert (pct.warmup(), atr.warmup()) == (0, 14)
