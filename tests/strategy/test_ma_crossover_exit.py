"""MACrossoverExitMixin through the real engine: exit at the next open after a cross against the position.

Closes are hand-written (bars open at the previous close, wicks of 0.5); bars 0..3 are flat at
100, the signal is at bar 4 and the entry fills at the open of bar 5. With x_fast_period 2 and
x_slow_period 3, fast = SMA2 and slow = SMA3 are worked out in the comments. Short cases mirror
the closes around 100, which mirrors both averages, so a cross down becomes a cross up.
"""

from __future__ import annotations

from typing import Any

import pytest

from strategy.mixins.base import Bars
from strategy.mixins.exit.ma_crossover import MACrossoverExitMixin
from tests.strategy.conftest import make_config, random_walk_frame
from tests.strategy.exit_harness import ENTRY, check_trade, from_closes, run_exits, sided, tail
from trading.exceptions import ConfigError

SMA = {"x_fast_period": 2, "x_slow_period": 3, "x_ma_type": "sma"}
EMA = {**SMA, "x_ma_type": "ema"}

CASES: list[tuple[str, list[float], dict[str, Any], int]] = [
    # bar 5: f 100.5 > s 100.33; bar 6: 101.5 > 101; bar 7: f = s = 101 (touching is no cross);
    # bar 8: f 99 < s 100 with f >= s before: the cross, out at the open of bar 9.
    ("cross_after_entry", [100, 100, 100, 100, 100, 101, 102, 100, 98], SMA, 9),
    # bar 4 (signal): f 99 < s 99.33, already crossed; bar 5: 97.5 < 98.33, still below: kept.
    # bar 6: 98.5 > 98.33 (crossed back up: not an exit for a long); bar 7: 100.5 > 99.33;
    # bar 8: 99.5 < 99.67: a fresh cross, out at bar 9.
    ("already_crossed_at_entry_waits_for_a_fresh_cross", [100, 100, 100, 100, 98, 97, 100, 101, 98], SMA, 9),
    # bar 5 (entry bar): f 99.5 < s 99.67 and f = s = 100 at bar 4: out at bar 6.
    ("cross_on_the_entry_bar_counts", [100, 100, 100, 100, 100, 99], SMA, 6),
    # Same closes as the first case with EMAs (seeded at 100): fast alpha 2/3, slow alpha 1/2.
    # fast: 302/3, 914/9, 2714/27 = 100.52; slow: 100.5, 101.25, 100.625. At bar 7 fast < slow
    # after 101.56 >= 101.25: the cross comes one bar before the SMAs', out at bar 8.
    ("ema_crosses_earlier_than_sma", [100, 100, 100, 100, 100, 101, 102, 100, 98], EMA, 8),
]


@pytest.mark.parametrize("side", ["long", "short"])
@pytest.mark.parametrize(("closes", "params", "exit_bar"), [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_ma_crossover_table(closes: list[float], params: dict[str, Any], exit_bar: int, side: str) -> None:
    long_candles = from_closes(closes)
    candles = sided(long_candles + tail(long_candles, 3), side)

    result, frame = run_exits(candles, [("MACrossoverExitMixin", params)], side=side)

    (t,) = result.trades
    check_trade(t, frame, side=side, entry_bar=ENTRY, exit_bar=exit_bar, reason="ma_crossover",
                price=candles[exit_bar][0])


@pytest.mark.parametrize("side", ["long", "short"])
def test_cross_in_favour_of_the_position_does_not_exit(side: str) -> None:
    # bar 5: f 100.5 > s 100.33 after f = s: a cross up (down for the mirrored short), in
    # favour of the position; the MAs never cross back, so the trade runs to the end of data.
    candles = sided(from_closes([100, 100, 100, 100, 100, 101, 102, 103, 104]), side)

    result, frame = run_exits(candles, [("MACrossoverExitMixin", SMA)], side=side)

    (t,) = result.trades
    check_trade(t, frame, side=side, entry_bar=ENTRY, exit_bar=len(candles) - 1, reason="end_of_data",
                price=candles[-1][3])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"x_fast_period": 30, "x_slow_period": 30}, r"x_fast_period \(30\) must be below x_slow_period \(30\)"),
        ({"x_fast_period": 50}, r"x_fast_period \(50\) must be below x_slow_period \(30\)"),
        ({"x_ma_type": "wma"}, "'wma' is not allowed"),
    ],
)
def test_invalid_parameters_are_config_errors(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config({"strategy": {"exit_mixins": [{"name": "MACrossoverExitMixin", "parameters": params}]}})


def test_defaults_and_warmup() -> None:
    m = MACrossoverExitMixin()
    assert (m.p.x_fast_period, m.p.x_slow_period, m.p.x_ma_type) == (10, 30, "ema")
    assert m.warmup() == 30  # both MAs known at bar i and i - 1 from bar slow_period on


@pytest.mark.parametrize("ma_type", ["sma", "ema"])
def test_decision_at_bar_i_ignores_later_bars(ma_type: str) -> None:
    frame = random_walk_frame(300, seed=7)
    cols = [frame[c].to_numpy() for c in ("open", "high", "low", "close", "volume")]
    full = MACrossoverExitMixin({"x_fast_period": 5, "x_slow_period": 20, "x_ma_type": ma_type})
    full.prepare(Bars(frame.index.to_numpy(), *cols))
    assert any(full.cross_down) and any(full.cross_up)  # the walk really crosses
    for n in (25, 120, 299):
        cut = MACrossoverExitMixin(full.p)
        cut.prepare(Bars(frame.index.to_numpy()[:n], *(c[:n] for c in cols)))
        assert cut.cross_down == full.cross_down[:n] and cut.cross_up == full.cross_up[:n]
