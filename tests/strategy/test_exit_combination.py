"""Several exit mixins on one bot: the first exit that fires wins and its reason is recorded.

Layout as in exit_harness (signal close 100 at bar 4, entry at the open of bar 5). Market
exits (time, crossover) are asked at a close and fill at the next open; when two ask on the
same bar the one listed first wins. Resting stops and targets fill inside a bar, so they win
over a market exit asked later; of two stops the tighter one is the order that fills.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.strategy.exit_harness import ENTRY, PRE, View, check_trade, from_closes, run_exits, sided, tail

TIME2 = ("TimeBasedExitMixin", {"x_max_bars": 2})
TIME5 = ("TimeBasedExitMixin", {"x_max_bars": 5})
MA = ("MACrossoverExitMixin", {"x_fast_period": 2, "x_slow_period": 3, "x_ma_type": "sma"})
# SMA2/SMA3 at bar 5: both 100; bar 6: 99.5 < 99.67: a cross down (against a long) at bar 6.
CROSS_AT_6 = from_closes([100, 100, 100, 100, 100, 100, 99, 99, 99, 99, 99])


@pytest.mark.parametrize("side", ["long", "short"])
@pytest.mark.parametrize(
    ("exits", "reason"),
    [
        pytest.param([TIME2, MA], "time_exit", id="time_listed_first"),
        pytest.param([MA, TIME2], "ma_crossover", id="crossover_listed_first"),
    ],
)
def test_two_market_exits_on_one_bar_first_listed_wins(exits: list[Any], reason: str, side: str) -> None:
    # max_bars 2 decides at bar 6 (5 + 2 - 1), the cross is at bar 6 too: out at bar 7's open.
    candles = sided(CROSS_AT_6, side)

    result, frame = run_exits(candles, exits, side=side)

    (t,) = result.trades
    check_trade(t, frame, side=side, entry_bar=ENTRY, exit_bar=7, reason=reason, price=candles[7][0])


@pytest.mark.parametrize("side", ["long", "short"])
def test_earlier_market_exit_wins_whatever_the_order(side: str) -> None:
    # the cross at bar 6 comes before the 5 bars are up (bar 9)
    candles = sided(CROSS_AT_6, side)

    result, frame = run_exits(candles, [TIME5, MA], side=side)

    (t,) = result.trades
    check_trade(t, frame, side=side, entry_bar=ENTRY, exit_bar=7, reason="ma_crossover", price=candles[7][0])


FIXED = ("FixedRatioExitMixin", {"x_stop_pct": 0.03, "x_risk_reward": 2})  # stop 97, target 106
TRAIL = ("TrailingStopExitMixin", {"x_trail_pct": 0.02})  # 98 at entry (short 102): tighter


def trail_level(x: View, k: int) -> float:
    return x.best(k) * (1 - x.sign * 0.02)


@pytest.mark.parametrize("side", ["long", "short"])
@pytest.mark.parametrize("order", ["fixed_first", "trail_first"])
def test_tighter_trailing_stop_fills_with_its_reason(order: str, side: str) -> None:
    # long: k=0 best 101 -> 98.98, k=1 best 103 -> 100.94; k=2 trades down to 100 (no new best,
    # so both mixins give the same stop and its reason must stay trailing_stop).
    long_candles = PRE + [(100, 101, 99, 100.5), (100.5, 103, 100.5, 102.5), (102.5, 102.8, 100, 100.5)]
    candles = sided(long_candles + tail(long_candles), side)
    x = View(candles, 1 if side == "long" else -1)
    assert not x.beyond(x.adverse(1), trail_level(x, 0)) and not x.beyond(x.open(2), trail_level(x, 1))
    exits = [FIXED, TRAIL] if order == "fixed_first" else [TRAIL, FIXED]

    result, frame = run_exits(candles, exits, side=side)

    (t,) = result.trades
    check_trade(t, frame, side=side, entry_bar=ENTRY, exit_bar=ENTRY + 2, reason="trailing_stop",
                price=trail_level(x, 1))


@pytest.mark.parametrize("side", ["long", "short"])
def test_target_of_one_mixin_and_stop_of_another(side: str) -> None:
    # k=1 reaches 106 (short 94) without touching the trailed stop 98.98 (short 101.0)
    long_candles = PRE + [(100, 101, 99, 100.5), (100.5, 106.5, 100.5, 106)]
    candles = sided(long_candles + tail(long_candles), side)

    result, frame = run_exits(candles, [TRAIL, FIXED], side=side)

    (t,) = result.trades
    check_trade(t, frame, side=side, entry_bar=ENTRY, exit_bar=ENTRY + 1, reason="take_profit",
                price=106.0 if side == "long" else 94.0)


@pytest.mark.parametrize("side", ["long", "short"])
@pytest.mark.parametrize(
    ("after", "exit_k", "reason", "price"),
    [
        # k=1 trades through the 97 stop (short 103) before the time exit decided at its close
        pytest.param([(100, 100.5, 99, 99.5), (99.5, 99.8, 96.5, 97.5)], 1, "stop_loss", 97.0, id="stop_first"),
        # no level touched: the time exit decided at k=1's close fills at k=2's open
        pytest.param([(100, 100.5, 99, 99.5), (99.5, 99.8, 98, 98.5), (98.4, 99, 98, 98.6)], 2, "time_exit", 98.4,
                     id="time_exit_first"),
    ],
)
def test_resting_stop_and_market_exit(after: list[Any], exit_k: int, reason: str, price: float, side: str) -> None:
    long_candles = PRE + after
    candles = sided(long_candles + tail(long_candles), side)
    expected = price if side == "long" else 200 - price

    result, frame = run_exits(candles, [TIME2, FIXED], side=side)

    (t,) = result.trades
    check_trade(t, frame, side=side, entry_bar=ENTRY, exit_bar=ENTRY + exit_k, reason=reason, price=expected)
