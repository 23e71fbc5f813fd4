"""TimeBasedExitMixin through the real engine: bar count, duration and session close.

Bars are hourly from 2024-01-01 00:00 UTC (bar i opens at hour i and closes at hour i + 1);
the signal is at bar 4 and the entry fills at the open of bar 5 (05:00). Closes rise by 0.1
per bar after the entry and each bar opens at the previous close, so every open is distinct
and the exit price identifies the exit bar. A time exit is asked at a close and fills at the
next bar's open, so the expected exit bar is the one after the deciding bar.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from strategy.mixins.exit.time_based import TimeBasedExitMixin
from tests.strategy.conftest import START, make_config
from tests.strategy.exit_harness import ENTRY, check_trade, from_closes, run_exits, sided
from trading.exceptions import ConfigError

N = 34
CLOSES = [100.0] * ENTRY + [round(100 + 0.1 * (k + 1), 10) for k in range(N - ENTRY)]
CANDLES = from_closes(CLOSES)

# (id, parameters, deciding bar -> exit bar, reason); hours are open times on 2024-01-01.
CASES: list[tuple[str, dict[str, Any], int, str]] = [
    # max_bars N: decided at bar 5 + N - 1, out at the open of bar 5 + N (bars_held = N)
    ("one_bar", {"x_max_bars": 1}, 6, "time_exit"),
    ("three_bars", {"x_max_bars": 3}, 8, "time_exit"),
    # bar 7 closes at 08:00, 3 h after the 05:00 entry
    ("duration_3h", {"x_max_duration": "3h"}, 8, "time_exit"),
    # 150 m: bar 6 closes 2 h after entry (short of it), bar 7 3 h: rounded up to whole bars
    ("duration_150m", {"x_max_duration": "150m"}, 8, "time_exit"),
    # 1 d: bar 28 closes at 05:00 on Jan 2
    ("duration_1d", {"x_max_duration": "1d"}, 29, "time_exit"),
    # bar 7 (07:00-08:00) closes at the session close
    ("session_close_at_a_bar_close", {"x_session_close": "08:00"}, 8, "session_close"),
    # 07:30 falls inside bar 7: exit at the open after it, 08:00
    ("session_close_inside_a_bar", {"x_session_close": "07:30"}, 8, "session_close"),
    # 03:00 is already past at the 05:00 entry: the next one is 03:00 on Jan 2 (bar 26's close)
    ("session_close_earlier_in_the_day_is_tomorrows", {"x_session_close": "03:00"}, 27, "session_close"),
    # a session close equal to the entry time is not "after" it: the next is 05:00 on Jan 2
    ("session_close_at_entry_time_is_tomorrows", {"x_session_close": "05:00"}, 29, "session_close"),
    # bar 7 decides both: time_exit wins over session_close
    ("max_bars_and_session_on_one_bar_is_time_exit", {"x_max_bars": 3, "x_session_close": "08:00"}, 8, "time_exit"),
    # the session close comes first (bar 6), before the 5 bars are up (bar 9)
    ("earlier_rule_fires_first", {"x_max_bars": 5, "x_session_close": "07:00"}, 7, "session_close"),
]


@pytest.mark.parametrize("side", ["long", "short"])
@pytest.mark.parametrize(("params", "exit_bar", "reason"), [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_time_based_table(params: dict[str, Any], exit_bar: int, reason: str, side: str) -> None:
    candles = sided(CANDLES, side)

    result, frame = run_exits(candles, [("TimeBasedExitMixin", params)], side=side)

    (t,) = result.trades
    check_trade(t, frame, side=side, entry_bar=ENTRY, exit_bar=exit_bar, reason=reason,
                price=candles[exit_bar][0])


# Hours 07:00 and 08:00 are missing: bar 7 opens at 09:00 (and closes at 10:00).
GAP_INDEX = pd.DatetimeIndex(
    [START + pd.Timedelta(hours=h) for h in [*range(7), *range(9, 9 + N - 7)]], name="datetime"
).as_unit("ns")


@pytest.mark.parametrize("side", ["long", "short"])
@pytest.mark.parametrize(
    ("params", "reason"),
    [
        pytest.param({"x_session_close": "08:00"}, "session_close", id="session_close_inside_the_gap"),
        pytest.param({"x_max_duration": "3h"}, "time_exit", id="duration_ending_inside_the_gap"),
    ],
)
def test_deadline_inside_a_data_gap_exits_after_the_first_bar_past_it(
    params: dict[str, Any], reason: str, side: str
) -> None:
    # Bar 6 closes at 07:00, before the deadline; bar 7 closes at 10:00, past it: out at bar 8.
    candles = sided(CANDLES, side)

    result, frame = run_exits(candles, [("TimeBasedExitMixin", params)], side=side, index=GAP_INDEX)

    (t,) = result.trades
    check_trade(t, frame, side=side, entry_bar=ENTRY, exit_bar=8, reason=reason, price=candles[8][0])


@pytest.mark.parametrize(
    ("params", "exit_bar"),
    [
        # bar length 2 h: the entry bar 5 opens at 10:00; bar 6 (12:00-14:00) reaches 13:00
        pytest.param({"x_session_close": "13:00"}, 7, id="session_close"),
        # bar 6 closes at 14:00, 4 h after the entry
        pytest.param({"x_max_duration": "4h"}, 7, id="duration"),
        pytest.param({"x_max_bars": 3}, 8, id="max_bars_counts_bars_not_hours"),
    ],
)
def test_two_hour_bars(params: dict[str, Any], exit_bar: int) -> None:
    index = pd.date_range(START, periods=N, freq="2h", name="datetime").as_unit("ns")

    result, frame = run_exits(
        CANDLES, [("TimeBasedExitMixin", params)], index=index, overrides={"bot": {"timeframe": "2h"}}
    )

    (t,) = result.trades
    reason = "session_close" if "x_session_close" in params else "time_exit"
    check_trade(t, frame, side="long", entry_bar=ENTRY, exit_bar=exit_bar, reason=reason, price=CANDLES[exit_bar][0])


def test_bar_count_restarts_for_each_trade() -> None:
    # one instance serves both trades: entry 5 -> out at 7; signal 9, entry 10 -> out at 12
    result, frame = run_exits(CANDLES, [("TimeBasedExitMixin", {"x_max_bars": 2})], fire_at=(4, 9))

    t1, t2 = result.trades
    check_trade(t1, frame, side="long", entry_bar=5, exit_bar=7, reason="time_exit", price=CANDLES[7][0])
    check_trade(t2, frame, side="long", entry_bar=10, exit_bar=12, reason="time_exit", price=CANDLES[12][0])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "set at least one of x_max_bars, x_max_duration, x_session_close"),
        ({"x_max_duration": "36 hours"}, "invalid timeframe '36 hours'"),
        ({"x_session_close": "9:30"}, "invalid session close '9:30'"),
        ({"x_session_close": "24:00"}, "invalid session close '24:00'"),
        ({"x_max_bars": 0}, "x_max_bars"),
    ],
)
def test_invalid_parameters_are_config_errors(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config({"strategy": {"exit_mixins": [{"name": "TimeBasedExitMixin", "parameters": params}]}})


def test_defaults() -> None:
    p = TimeBasedExitMixin({"x_max_duration": "36h"}).p
    assert (p.x_max_bars, p.x_max_duration, p.x_session_close) == (None, "36h", None)
    assert TimeBasedExitMixin({"x_max_bars": 3}).warmup() == 0
