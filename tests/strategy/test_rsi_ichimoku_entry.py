"""RSIIchimokuEntryMixin through the real engine, an independent pandas version of the rule,
warm-up, causality, and trading on the generated data with the defaults.

Table cases use small periods so the numbers can be worked out by hand: RSI(3), Tenkan 2,
Kijun 3, Senkou B 4, displacement 2 (warm-up: bar 5). Every bar is (c, c + 0.5, c - 0.5, c).

Long scenario (closes): 100, 101, ..., 109 (bars 0..9), then 105, 108, 111, 112, ..., 116.

* bars 3..9: only gains, RSI = 100;
* bar 10 (-4): avg gain 1 x 2/3 = 0.667, avg loss 4/3 = 1.333, RSI = 33.3 < 40: the dip;
  the close 105 is below the cloud (senkou_a = (tenkan[8] + kijun[8]) / 2 = (107.5 + 107)/2
  = 107.25, senkou_b = midpoint of bars 5..8 = (108.5 + 104.5)/2 = 106.5): no long;
* bar 11 (+3): RSI 61.9; the close 108 is still below senkou_a = (108.5 + 108)/2 = 108.25;
* bar 12 (+3): cloud = spans of bar 10: senkou_a = (107 + 107)/2 = 107, senkou_b = midpoint
  of bars 7..10 = (109.5 + 104.5)/2 = 107; close 111 is above it; tenkan = (111.5 + 107.5)/2
  = 109.5 >= kijun = (111.5 + 104.5)/2 = 108; the dip (bar 10) is within 3 bars: SIGNAL,
  the entry fills at the open of bar 13;
* bars 13, 14 keep the cloud and Tenkan conditions; the dip is 3 and 4 bars back, inside a
  5-bar window but not a 3-bar one.

Bar 10 is also a short setup (with direction ``both``): RSI was 100 (> 60) two bars before,
the close 105 is below the cloud (min 106.5) and tenkan = (109.5 + 104.5)/2 = 107 <= kijun =
(109.5 + 104.5)/2 = 107. Short cases run the scenario mirrored (p -> 200 - p), which mirrors
RSI (100 - RSI), the cloud and the Tenkan/Kijun order, so the same bars fire for the other side.
Every case exits with TimeBasedExitMixin(x_max_bars=1): out at the open of the bar after the
entry, so the signal can fire again while the window lasts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pytest

from strategy.mixins.base import Bars, Side
from strategy.mixins.entry.rsi_ichimoku import RSIIchimokuEntryMixin
from tests.strategy.conftest import SYMBOL, make_config, make_frame
from tests.strategy.indicators.test_ichimoku import ref_ichimoku
from tests.strategy.test_rsi_bb_entry import ref_rsi
from trading.data.synthetic import generate_ohlcv
from trading.engine import run_backtest

NAME = "RSIIchimokuEntryMixin"
SMALL = {
    "e_rsi_period": 3,
    "e_tenkan": 2,
    "e_kijun": 3,
    "e_senkou_b": 4,
    "e_displacement": 2,
    "e_lookback": 3,
}
CLOSES = [100.0 + k for k in range(10)] + [105.0, 108.0, 111.0, 112.0, 113.0, 114.0, 115.0, 116.0]
OTHER = {"long": "short", "short": "long"}


def scenario(side: str) -> pd.DataFrame:
    closes = CLOSES if side == "long" else [200.0 - c for c in CLOSES]
    return make_frame([(c, c + 0.5, c - 0.5, c) for c in closes])


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
    expected: list[tuple[str, int]]  # ("same" | "other", entry bar); "same" is the case's side
    params: dict[str, Any] = field(default_factory=dict)
    both: bool = False  # direction both instead of the case's side


CASES = [
    Case("dip_then_close_back_above_cloud_enters_after_signal_bar", [("same", 13)]),
    Case(
        "collapse_through_cloud_is_first_an_opposite_setup",
        [("other", 11), ("same", 13)],
        both=True,
    ),
    Case("window_of_two_bars_misses_the_dip", [], {"e_lookback": 2}),
    Case(
        "oversold_below_the_dip_rsi_never_fires",
        [],
        {"e_rsi_oversold": 33.0, "e_rsi_overbought": 67.0},
    ),
    Case(
        "five_bar_window_refires_on_the_exit_bar", [("same", 13), ("same", 15)], {"e_lookback": 5}
    ),
    Case(
        "cooldown_blocks_refire_on_the_exit_bar",
        [("same", 13)],
        {"e_lookback": 5, "e_cooldown_bars": 1},
    ),
    # tenkan 106.5 < kijun 107 at bar 11, 109.5 >= 108 at bar 12: a cross up on the signal bar
    Case("required_tk_cross_on_the_signal_bar", [("same", 13)], {"e_require_tk_cross": True}),
    # chikou: close[12] = 111 > close[10] = 105
    Case("required_chikou_confirms", [("same", 13)], {"e_require_chikou": True}),
]


@pytest.mark.parametrize("side", ["long", "short"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_entries_through_engine(case: Case, side: str) -> None:
    direction = "both" if case.both else side
    expected = [(side if who == "same" else OTHER[side], bar) for who, bar in case.expected]
    assert entries(scenario(side), direction, case.params) == expected


def test_scenario_premises_hold_in_the_reference_values() -> None:
    """The hand-derived numbers of the module docstring, recomputed with the pandas reference."""
    df = scenario("long")
    rsi = ref_rsi(df["close"].reset_index(drop=True), 3).to_numpy()
    ich = {k: v.to_numpy() for k, v in ref_ichimoku(df.reset_index(drop=True), 2, 3, 4, 2).items()}
    assert (rsi[3:10] == 100).all() and rsi[10] == pytest.approx(100 / 3) and rsi[11] > 60
    assert (ich["senkou_a"][10], ich["senkou_b"][10]) == (107.25, 106.5)
    assert ich["senkou_a"][11] == 108.25 and df["close"].iloc[11] < 108.25
    assert (ich["senkou_a"][12], ich["senkou_b"][12], ich["tenkan"][12], ich["kijun"][12]) == (
        107,
        107,
        109.5,
        108,
    )
    assert (ich["tenkan"][11], ich["kijun"][11]) == (106.5, 107)
    assert ich["tenkan"][10] == ich["kijun"][10] == 107


def test_no_signal_before_the_cloud_exists() -> None:
    """No signal before the warm-up (bar 5 here, 77 with the defaults), even with RSI extremes."""
    m = RSIIchimokuEntryMixin({**SMALL, "e_rsi_oversold": 99.0, "e_rsi_overbought": 1.0})
    m.prepare(bars_of(scenario("long")))
    assert m.warmup() == 5 and RSIIchimokuEntryMixin().warmup() == 77
    assert not any(m.long_signal[:5]) and not any(m.short_signal[:5])


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


def ref_signals(df: pd.DataFrame, p: RSIIchimokuEntryMixin.Params) -> tuple[list[bool], list[bool]]:
    """The documented rule, written with pandas on the reference indicators."""
    df = df.reset_index(drop=True)
    close = df["close"]
    rsi = ref_rsi(close, p.e_rsi_period)
    ich = ref_ichimoku(df, p.e_tenkan, p.e_kijun, p.e_senkou_b, p.e_displacement)
    tk, kj = ich["tenkan"], ich["kijun"]
    cloud_top = pd.concat([ich["senkou_a"], ich["senkou_b"]], axis=1).max(axis=1, skipna=False)
    cloud_bottom = pd.concat([ich["senkou_a"], ich["senkou_b"]], axis=1).min(axis=1, skipna=False)

    def recent(cond: pd.Series) -> pd.Series:
        return cond.astype(float).rolling(p.e_lookback, min_periods=1).max() > 0

    long_ = recent(rsi < p.e_rsi_oversold) & (close > cloud_top) & (tk >= kj)
    short = recent(rsi > p.e_rsi_overbought) & (close < cloud_bottom) & (tk <= kj)
    if p.e_require_tk_cross:
        long_ &= recent((tk.shift(1) < kj.shift(1)) & (tk >= kj))
        short &= recent((tk.shift(1) > kj.shift(1)) & (tk <= kj))
    if p.e_require_chikou:
        long_ &= close > close.shift(p.e_displacement)
        short &= close < close.shift(p.e_displacement)
    return long_.tolist(), short.tolist()


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"e_require_tk_cross": True, "e_require_chikou": True, "e_lookback": 8},
        {
            "e_tenkan": 7,
            "e_kijun": 22,
            "e_senkou_b": 44,
            "e_displacement": 22,
            "e_rsi_period": 9,
            "e_rsi_oversold": 35,
        },
        {"e_displacement": 0, "e_lookback": 3, "e_rsi_oversold": 50, "e_rsi_overbought": 50},
        {"e_displacement": 10, "e_lookback": 1, "e_rsi_oversold": 50, "e_rsi_overbought": 50},
    ],
    ids=["defaults", "cross_and_chikou", "crypto_periods", "no_displacement", "one_bar_window"],
)
def test_signals_equal_independent_pandas_rule(seed: int, params: dict[str, Any]) -> None:
    df = generate_ohlcv(3000, seed=seed, timeframe="1h")
    m = RSIIchimokuEntryMixin(params)
    m.prepare(bars_of(df))
    long_, short = ref_signals(df, RSIIchimokuEntryMixin.Params.model_validate(params))
    assert m.long_signal == long_ and m.short_signal == short
    assert any(long_) and any(short)
    assert (
        m.signal_array(Side.LONG) is m.long_signal and m.signal_array(Side.SHORT) is m.short_signal
    )
    assert [m.signal(i, Side.LONG) for i in range(len(df))] == long_


def test_required_options_remove_some_signals() -> None:
    """The cross and Chikou options are real filters: each drops signals on the generated data."""
    df = generate_ohlcv(5000, seed=42, timeframe="1h")
    counts = {}
    for key in ("base", "e_require_tk_cross", "e_require_chikou"):
        m = RSIIchimokuEntryMixin({} if key == "base" else {key: True})
        m.prepare(bars_of(df))
        counts[key] = sum(m.long_signal) + sum(m.short_signal)
    assert counts["base"] > counts["e_require_tk_cross"] > 0
    assert counts["base"] > counts["e_require_chikou"] > 0


@pytest.mark.parametrize("cut", [80, 1000, 2999])
def test_decisions_up_to_t_ignore_later_bars(cut: int) -> None:
    df = generate_ohlcv(3000, seed=3, timeframe="1h")
    full, trunc = RSIIchimokuEntryMixin(), RSIIchimokuEntryMixin()
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
    first_entry = min(int(df.index.get_loc(pd.Timestamp(t.entry_time))) for t in result.trades)
    assert first_entry > RSIIchimokuEntryMixin().warmup()  # the fill follows a post-warm-up signal
