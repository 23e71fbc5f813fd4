"""AdvancedATRExitMixin partial take profit: each closed part is its own trade leg with its reason.

test_advanced_atr_exit covers the stop, target, trailing and breakeven rules long and short;
this file adds the partial legs. Layout as there: signal close C = 100 and ATR(3) = A = 2, so
with x_partial_tp_multiplier 1.5 the partial target is C + 3 = 103, the stop C - 2A = 96 and
the target C + 3A = 106 (short: 97, 104, 94). Quantity 2 and x_partial_fraction 0.5: the first
leg closes 1 unit, the second the remaining 1. Short cases are the long candles mirrored.
"""

from __future__ import annotations

import pytest

from tests.strategy.exit_harness import CASH, ENTRY, PRE, check_trade, run_exits, sided, tail

PARAMS = {
    "x_atr_period": 3, "x_sl_multiplier": 2.0, "x_tp_multiplier": 3.0, "x_trailing_enabled": False,
    "x_breakeven_enabled": False, "x_partial_tp_multiplier": 1.5, "x_partial_fraction": 0.5,
}
EXITS = [("AdvancedATRExitMixin", PARAMS)]
FIXED_2 = {"strategy": {"sizing": {"method": "fixed", "quantity": 2}}}
HALF_WAY = (100.5, 103.5, 100, 103)  # touches 103 only

# (id, candles after the entry bar, legs as (bar k, reason, long price, quantity))
CASES = [
    ("partial_then_target", [HALF_WAY, (103, 106.5, 102.5, 106)],
     [(1, "partial_take_profit", 103.0, 1.0), (2, "take_profit", 106.0, 1.0)]),
    ("partial_then_stop", [HALF_WAY, (103, 103.2, 95, 96.5)],
     [(1, "partial_take_profit", 103.0, 1.0), (2, "stop_loss", 96.0, 1.0)]),
    # both targets inside one bar: the partial first, then the target for the rest
    ("partial_and_target_in_one_bar", [(100.5, 107, 100, 106.5)],
     [(1, "partial_take_profit", 103.0, 1.0), (1, "take_profit", 106.0, 1.0)]),
    # stop and partial target inside one bar: the stop is assumed first and closes everything
    ("stop_and_partial_in_one_bar_is_stop_loss", [(100.5, 104, 95, 100)], [(1, "stop_loss", 96.0, 2.0)]),
    # a gap beyond both targets: both limits fill at the open
    ("gap_beyond_both_targets_fills_at_open", [(108, 109, 107, 108)],
     [(1, "partial_take_profit", 108.0, 1.0), (1, "take_profit", 108.0, 1.0)]),
    # the rest is still open at the end: closed at the last close (103.5, from the tail)
    ("partial_then_end_of_data", [HALF_WAY, (103, 104, 102, 103.5)],
     [(1, "partial_take_profit", 103.0, 1.0), (4, "end_of_data", 103.5, 1.0)]),
]


@pytest.mark.parametrize("side", ["long", "short"])
@pytest.mark.parametrize(("after", "legs"), [pytest.param(a, lg, id=i) for i, a, lg in CASES])
def test_partial_legs(after: list[tuple[float, float, float, float]], legs: list[tuple[int, str, float, float]],
                      side: str) -> None:
    long_candles = PRE + [(100, 101, 99, 100.5), *after]
    candles = sided(long_candles + tail(long_candles), side)

    result, frame = run_exits(candles, EXITS, side=side, overrides=FIXED_2)

    assert len(result.trades) == len(legs)
    for t, (k, reason, price, qty) in zip(result.trades, legs, strict=True):
        expected = price if side == "long" else 200 - price
        check_trade(t, frame, side=side, entry_bar=ENTRY, exit_bar=ENTRY + k,
                    reason=reason, price=expected, quantity=qty)
    assert sum(t.pnl for t in result.trades) == pytest.approx(result.final_value - CASH, abs=1e-9)


@pytest.mark.parametrize("side", ["long", "short"])
def test_each_leg_pays_its_share_of_the_entry_commission(side: str) -> None:
    r = 0.001
    long_candles = PRE + [(100, 101, 99, 100.5), HALF_WAY, (103, 106.5, 102.5, 106)]
    candles = sided(long_candles + tail(long_candles), side)
    overrides = {**FIXED_2, "broker": {"commission_rate": r}}

    result, _ = run_exits(candles, EXITS, side=side, overrides=overrides)

    entry = 100.0
    legs = [103.0, 106.0] if side == "long" else [97.0, 94.0]
    assert [t.fees for t in result.trades] == pytest.approx([r * 1 * entry + r * 1 * p for p in legs], rel=1e-12)
    assert sum(t.pnl for t in result.trades) == pytest.approx(result.final_value - CASH, abs=1e-9)
