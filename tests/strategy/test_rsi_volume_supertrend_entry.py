"""RSIVolumeSuperTrendEntryMixin through the real engine, an independent pandas version of the
rule, warm-up, causality, and trading on the generated data with the defaults.

Table cases use SuperTrend(2, 1.0), RSI(3), volume SMA(3) x 1.5 and a flip window of 1 bar on
the hand-computed SuperTrend bars of tests/strategy/indicators/test_supertrend.py (plus three
rising bars), volume 1000 except where a case puts a spike:

* SuperTrend turns down at bar 5 (close 99.5 < support 100) and up at bar 8 (close 102.5 >
  resistance 101), and stays up to the end;
* RSI(3) (Wilder, first at bar 3): bar 5: avg gain 0.296, avg loss 0.667, RSI 30.8 < 50;
  bar 8: avg gain 1.199, avg loss 0.346, RSI 77.6 > 50; bar 9: 66.8; bar 10: 79.6;
* a spike of 3000 after two bars of 1000: SMA(3) = 1666.7, 1.5 x SMA = 2500 < 3000: loud;
  2000 gives 1.5 x 1333.3 = 2000, not above: quiet.

Short cases mirror the bars around 100 (p -> 200 - p, high <-> low): true ranges are kept, the
trend and RSI (100 - RSI) swap, so the same bars fire for the other side. Every case exits
with TimeBasedExitMixin(x_max_bars=1): out at the open of the bar after the entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest
import talib

from strategy.mixins.base import Bars, Side
from strategy.mixins.entry.rsi_volume_supertrend import RSIVolumeSuperTrendEntryMixin
from tests.strategy.conftest import SYMBOL, make_config, make_frame
from tests.strategy.indicators.test_supertrend import HAND_BARS, ref_supertrend
from tests.strategy.test_rsi_bb_entry import ref_rsi
from trading.data.synthetic import generate_ohlcv
from trading.engine import run_backtest

NAME = "RSIVolumeSuperTrendEntryMixin"
SMALL = {
    "e_st_period": 2,
    "e_st_multiplier": 1.0,
    "e_rsi_period": 3,
    "e_vol_period": 3,
    "e_vol_multiplier": 1.5,
    "e_flip_lookback": 1,
}
BARS = [*HAND_BARS, (104, 102, 103.5), (105, 103, 104), (106, 104, 105)]  # (high, low, close)
OTHER = {"long": "short", "short": "long"}


def scenario(side: str, spikes: dict[int, float]) -> pd.DataFrame:
    hlc = BARS if side == "long" else [(200 - lo, 200 - h, 200 - c) for h, lo, c in BARS]
    frame = make_frame([(c, h, lo, c) for h, lo, c in hlc])
    frame["volume"] = [spikes.get(k, 1000.0) for k in range(len(frame))]
    return frame


def entries(frame: pd.DataFrame, direction: str, params: dict[str, Any]) -> list[tuple[str, int]]:
    """Run the engine; return (side, entry bar) of every trade in order."""
    cfg = make_config(
        {
            "strategy": {
                "direction": direction,
                "entry_mixins": [{"name": NAME, "parameters": {**SMALL, **params}}],
                "exit_mixins": [{"name": "TimeBasedExitMixin", "parameters": {"x_max_bars": 1}}],
            }
        }
    )
    result = run_backtest(cfg, {SYMBOL: frame})
    trades = sorted(result.trades, key=lambda t: t.entry_time)
    return [(t.side, int(frame.index.get_loc(pd.Timestamp(t.entry_time)))) for t in trades]


@dataclass(frozen=True)
class Case:
    id: str
    spikes: dict[int, float]
    expected: list[tuple[str, int]]  # ("same" | "other", entry bar); "same" is the case's side
    params: dict[str, Any] = field(default_factory=dict)
    both: bool = False


CASES = [
    Case("flip_with_rsi_and_volume_enters_after_flip_bar", {8: 3000}, [("same", 9)]),
    Case(
        "opposite_flip_first_then_this_one",
        {5: 3000, 8: 3000},
        [("other", 6), ("same", 9)],
        both=True,
    ),
    Case("volume_equal_to_threshold_is_not_enough", {5: 2000, 8: 2000}, [], both=True),
    Case("no_volume_spike_no_entry", {}, [], both=True),
    Case(
        "rsi_not_beyond_level_no_entry",
        {5: 3000, 8: 3000},
        [],
        {"e_rsi_long_min": 80, "e_rsi_short_max": 20},
        both=True,
    ),
    Case("volume_a_bar_late_misses_one_bar_window", {9: 3000}, []),
    Case(
        "volume_a_bar_late_within_two_bar_window", {9: 3000}, [("same", 10)], {"e_flip_lookback": 2}
    ),
    # bar 10: SMA(3) of 3000, 1000, 5000 = 3000, 1.5 x 3000 = 4500 < 5000; RSI 79.6; trend still up
    Case(
        "three_bar_window_refires_on_the_exit_bar",
        {8: 3000, 10: 5000},
        [("same", 9), ("same", 11)],
        {"e_flip_lookback": 3},
    ),
    Case(
        "cooldown_blocks_refire_on_the_exit_bar",
        {8: 3000, 10: 5000},
        [("same", 9)],
        {"e_flip_lookback": 3, "e_cooldown_bars": 1},
    ),
]


@pytest.mark.parametrize("side", ["long", "short"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_entries_through_engine(case: Case, side: str) -> None:
    direction = "both" if case.both else side
    expected = [(side if who == "same" else OTHER[side], bar) for who, bar in case.expected]
    assert entries(scenario(side, case.spikes), direction, case.params) == expected


def test_scenario_premises_hold_in_the_reference_values() -> None:
    df = scenario("long", {5: 3000, 8: 3000}).reset_index(drop=True)
    _, direction = ref_supertrend(df, 2, 1.0)
    assert direction.tolist()[2:] == [1, 1, 1, -1, -1, -1, 1, 1, 1, 1, 1]
    rsi = ref_rsi(df["close"], 3)
    assert rsi[5] == pytest.approx(30.77, abs=0.01) and rsi[8] == pytest.approx(77.62, abs=0.01)
    assert rsi[9] > 50 and rsi[10] > 50
    assert df["volume"].rolling(3).mean()[8] == pytest.approx(5000 / 3)


def test_warmup_is_first_bar_a_flip_and_every_input_can_exist() -> None:
    assert RSIVolumeSuperTrendEntryMixin().warmup() == 19  # volume SMA(20) first at bar 19
    assert RSIVolumeSuperTrendEntryMixin(SMALL).warmup() == 3  # a flip needs directions at 2 and 3
    assert RSIVolumeSuperTrendEntryMixin({"e_st_period": 30}).warmup() == 31


# --------------------------------------------------------------------------- reference rule


def bars_of(df: pd.DataFrame) -> Bars:
    return Bars(
        df.index.to_numpy(),
        df["open"].to_numpy(),
        df["high"].to_numpy(),
        df["low"].to_numpy(),
        df["close"].to_numpy(),
        df["volume"].to_numpy(),
    )


def ref_signals(
    df: pd.DataFrame, p: RSIVolumeSuperTrendEntryMixin.Params
) -> tuple[list[bool], list[bool]]:
    """The documented rule, written with pandas on the reference indicators."""
    df = df.reset_index(drop=True)
    _, d = ref_supertrend(df, p.e_st_period, p.e_st_multiplier)
    rsi = ref_rsi(df["close"], p.e_rsi_period)
    loud = df["volume"] > p.e_vol_multiplier * df["volume"].rolling(p.e_vol_period).mean()

    def recent(cond: pd.Series) -> pd.Series:
        return cond.astype(float).rolling(p.e_flip_lookback, min_periods=1).max() > 0

    long_ = recent((d == 1) & (d.shift(1) == -1)) & (d == 1) & (rsi > p.e_rsi_long_min) & loud
    short = recent((d == -1) & (d.shift(1) == 1)) & (d == -1) & (rsi < p.e_rsi_short_max) & loud
    return long_.tolist(), short.tolist()


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"e_flip_lookback": 1, "e_vol_multiplier": 1.0},
        {
            "e_st_period": 7,
            "e_st_multiplier": 2.0,
            "e_rsi_period": 9,
            "e_rsi_long_min": 55,
            "e_rsi_short_max": 45,
        },
    ],
    ids=["defaults", "flip_bar_only", "tighter_band"],
)
def test_signals_equal_independent_pandas_rule(seed: int, params: dict[str, Any]) -> None:
    df = generate_ohlcv(3000, seed=seed, timeframe="1h")
    m = RSIVolumeSuperTrendEntryMixin(params)
    m.prepare(bars_of(df))
    p = RSIVolumeSuperTrendEntryMixin.Params.model_validate(params)
    long_, short = ref_signals(df, p)
    # no volume sits within 1e-9 of its threshold, so the comparison is not decided by rounding
    vol = df["volume"].to_numpy()
    margin = np.abs(vol - p.e_vol_multiplier * talib.SMA(vol, p.e_vol_period))
    assert np.nanmin(margin) > 1e-9
    assert m.long_signal == long_ and m.short_signal == short
    assert any(long_) and any(short)
    assert [m.signal(i, Side.SHORT) for i in range(len(df))] == short


@pytest.mark.parametrize("cut", [20, 1000, 2999])
def test_decisions_up_to_t_ignore_later_bars(cut: int) -> None:
    df = generate_ohlcv(3000, seed=3, timeframe="1h")
    full, trunc = RSIVolumeSuperTrendEntryMixin(), RSIVolumeSuperTrendEntryMixin()
    full.prepare(bars_of(df))
    trunc.prepare(bars_of(df.iloc[: cut + 1]))
    assert full.long_signal[: cut + 1] == trunc.long_signal
    assert full.short_signal[: cut + 1] == trunc.short_signal


# --------------------------------------------------------------------------- generated data


@pytest.mark.parametrize("direction", ["long", "short"])
def test_trades_on_generated_data_with_defaults(direction: str) -> None:
    df = generate_ohlcv(5000, seed=42, timeframe="1h")
    cfg = make_config(
        {"strategy": {"direction": direction, "entry_mixins": [{"name": NAME, "parameters": {}}]}}
    )
    result = run_backtest(cfg, {SYMBOL: df})
    assert len(result.trades) >= 5
    assert {t.side for t in result.trades} == {direction}
    assert all(t.entry_tag == NAME for t in result.trades)
