"""SuperTrend: a hand-computed table, an independent pandas reference, warm-up, causality,
and the backtrader wrapper against the numpy function in a real Cerebro (runonce and next)."""

from __future__ import annotations

import math

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from strategy.indicators.supertrend import SuperTrend, supertrend
from trading.data.synthetic import generate_ohlcv

NAN = math.nan


# --------------------------------------------------------------------------- independent reference


def ref_wilder_atr(df: pd.DataFrame, period: int) -> pd.Series:
    """True range from bar 1; the first ATR (bar `period`) is the mean of TR[1..period], then an
    EWM with alpha = 1/period."""
    prev = df["close"].shift(1)
    tr = pd.concat(
        [df["high"] - df["low"], (df["high"] - prev).abs(), (df["low"] - prev).abs()], axis=1
    ).max(axis=1, skipna=False)
    seeded = tr.iloc[period:].copy()
    seeded.iloc[0] = tr.iloc[1 : period + 1].mean()
    return seeded.ewm(alpha=1.0 / period, adjust=False).mean().reindex(df.index)


def ref_supertrend(
    df: pd.DataFrame, period: int = 10, multiplier: float = 3.0
) -> tuple[pd.Series, pd.Series]:
    """Row-by-row SuperTrend, written the way TradingView's ta.supertrend reads: the trend is
    told by which band the previous line sat on."""
    atr = ref_wilder_atr(df, period)
    hl2 = (df["high"] + df["low"]) / 2
    basic_up, basic_dn = hl2 + multiplier * atr, hl2 - multiplier * atr
    close = df["close"]
    upper = basic_up.copy()
    lower = basic_dn.copy()
    line = pd.Series(np.nan, index=df.index)
    direction = pd.Series(np.nan, index=df.index)
    for t in range(period, len(df)):
        if t == period:
            on_lower = close.iloc[t] >= hl2.iloc[t]  # no history: the side of the bar's midpoint
        else:
            if not (basic_dn.iloc[t] > lower.iloc[t - 1] or close.iloc[t - 1] < lower.iloc[t - 1]):
                lower.iloc[t] = lower.iloc[t - 1]
            if not (basic_up.iloc[t] < upper.iloc[t - 1] or close.iloc[t - 1] > upper.iloc[t - 1]):
                upper.iloc[t] = upper.iloc[t - 1]
            was_on_upper = line.iloc[t - 1] == upper.iloc[t - 1] and direction.iloc[t - 1] < 0
            on_lower = (
                close.iloc[t] > upper.iloc[t] if was_on_upper else not close.iloc[t] < lower.iloc[t]
            )
        line.iloc[t] = lower.iloc[t] if on_lower else upper.iloc[t]
        direction.iloc[t] = 1.0 if on_lower else -1.0
    return line, direction


def run(df: pd.DataFrame, **kw: float) -> tuple[np.ndarray, np.ndarray]:
    return supertrend(df["high"].to_numpy(), df["low"].to_numpy(), df["close"].to_numpy(), **kw)


# --------------------------------------------------------------------------- hand-computed table

# period=2, multiplier=1; (high, low, close). Every true range is 2 up to bar 6, so ATR = 2 and
# the bands are hl2 -/+ 2; bars 7 and 8 have TR 2.5 (ATR 2.25, 2.375), bar 9 TR 2 (ATR 2.1875).
HAND_BARS = [
    (101, 99, 100),
    (101, 99, 100),
    (102, 100, 101.5),  # 2: first ATR; bands 99 / 103; close above the midpoint 101: up, line 99
    (103, 101, 102),  # 3: basic lower 100 > 99 rises; upper stays 103 (basic 104)
    (102, 100, 100.5),  # 4: basic lower 99 < 100: the support holds at 100
    (101, 99, 99.5),  # 5: close 99.5 < lower 100: turns down; upper min(102, 103) = 102
    (100, 98, 98.5),  # 6: prev close 99.5 < 100 resets lower to 97; upper 101
    (101, 99, 100.5),  # 7: ATR 2.25; upper stays 101 (basic 102.25); 100.5 < 101: still down
    (103, 101, 102.5),  # 8: ATR 2.375; close 102.5 > upper 101: turns up on lower 99.625
    (
        103,
        101,
        102,
    ),  # 9: ATR 2.1875; lower 99.8125; upper resets to basic 104.1875 (close was above it)
]
HAND_LINE = [NAN, NAN, 99.0, 100.0, 100.0, 102.0, 101.0, 101.0, 99.625, 99.8125]
HAND_DIRECTION = [NAN, NAN, 1, 1, 1, -1, -1, -1, 1, 1]


def hand_frame() -> pd.DataFrame:
    return pd.DataFrame(HAND_BARS, columns=["high", "low", "close"], dtype=float)


def test_hand_computed_table() -> None:
    line, direction = run(hand_frame(), period=2, multiplier=1.0)
    np.testing.assert_allclose(line, HAND_LINE, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(direction, HAND_DIRECTION)


def test_hand_table_agrees_with_reference() -> None:
    line, direction = ref_supertrend(hand_frame(), 2, 1.0)
    np.testing.assert_allclose(line.to_numpy(), HAND_LINE, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(direction.to_numpy(), HAND_DIRECTION)


def test_uptrend_line_never_falls_and_downtrend_line_never_rises() -> None:
    df = generate_ohlcv(3000, seed=4, timeframe="1h")
    line, direction = run(df)
    same = (direction[1:] == direction[:-1]) & ~np.isnan(direction[:-1])
    step = np.diff(line)[same] * direction[1:][same]
    assert (step >= 0).all()  # the ratchet: support only rises, resistance only falls
    assert 20 < int(np.sum(direction[1:] != direction[:-1]) - 1) < 500  # it does flip


@pytest.mark.parametrize(("close", "expected"), [(100.5, 1.0), (100.0, 1.0), (99.5, -1.0)])
def test_first_bar_direction_is_the_side_of_the_bar_midpoint(close: float, expected: float) -> None:
    """Bar 1 is the first with ATR(1); its midpoint is (101 + 99) / 2 = 100 (a tie counts as up)."""
    df = pd.DataFrame(
        [(101, 99, 100), (101, 99, close)], columns=["high", "low", "close"], dtype=float
    )
    line, direction = run(df, period=1, multiplier=1.0)
    assert direction[1] == expected
    assert line[1] == (100.0 - 2.0 if expected > 0 else 100.0 + 2.0)  # midpoint -/+ ATR(1) = TR = 2


def test_mirrored_prices_give_the_opposite_trend() -> None:
    """Reflecting prices (p -> 400 - p, high <-> low) keeps true ranges: up and down swap."""
    df = generate_ohlcv(2000, seed=9, timeframe="1h")
    mirrored = pd.DataFrame(
        {"high": 400 - df["low"], "low": 400 - df["high"], "close": 400 - df["close"]}
    )
    line, direction = run(df)
    m_line, m_direction = run(mirrored)
    np.testing.assert_array_equal(m_direction[10:], -direction[10:])
    np.testing.assert_allclose(m_line[10:], 400 - line[10:], rtol=1e-9)


# --------------------------------------------------------------------------- reference, warm-up


@pytest.mark.parametrize(("period", "multiplier"), [(10, 3.0), (7, 2.0), (3, 1.0), (1, 1.5)])
@pytest.mark.parametrize("seed", [1, 2])
def test_equals_independent_pandas_implementation(
    period: int, multiplier: float, seed: int
) -> None:
    df = generate_ohlcv(1500, seed=seed, timeframe="1h")
    line, direction = run(df, period=period, multiplier=multiplier)
    ref_line, ref_dir = ref_supertrend(df, period, multiplier)
    assert np.isnan(line).tolist() == ref_line.isna().tolist()
    np.testing.assert_array_equal(direction, ref_dir.to_numpy())
    np.testing.assert_allclose(line[period:], ref_line.to_numpy()[period:], rtol=1e-10)
    assert (direction[period:] == 1).any() and (direction[period:] == -1).any()


@pytest.mark.parametrize("period", [1, 2, 10, 14])
def test_warmup_is_period_bars(period: int) -> None:
    df = generate_ohlcv(100, seed=3, timeframe="1h")
    line, direction = run(df, period=period)
    for arr in (line, direction):
        assert np.isnan(arr[:period]).all() and not np.isnan(arr[period:]).any()


@pytest.mark.parametrize("n", [0, 1, 10])
def test_too_short_input_is_all_nan(n: int) -> None:
    df = generate_ohlcv(20, seed=3, timeframe="1h").iloc[:n]
    line, direction = run(df, period=10)
    assert len(line) == len(direction) == n and np.isnan(line).all() and np.isnan(direction).all()


@pytest.mark.parametrize("bad", [{"period": 0}, {"multiplier": 0.0}, {"multiplier": -1.0}])
def test_invalid_parameters_raise(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        run(hand_frame(), **bad)


# --------------------------------------------------------------------------- causality


@pytest.mark.parametrize("cut", [5, 10, 11, 150, 298])
def test_values_up_to_t_do_not_depend_on_later_bars(cut: int) -> None:
    df = generate_ohlcv(300, seed=7, timeframe="1h")
    other = generate_ohlcv(300, seed=8, timeframe="1h", start_price=60.0)
    altered = df.copy()
    altered.iloc[cut + 1 :] = other.iloc[cut + 1 :].to_numpy()
    full, alt, trunc = run(df), run(altered), run(df.iloc[: cut + 1])
    for k in range(2):
        np.testing.assert_array_equal(full[k][: cut + 1], alt[k][: cut + 1])
        np.testing.assert_array_equal(full[k][: cut + 1], trunc[k])
    assert not np.array_equal(full[0][cut + 1 :], alt[0][cut + 1 :], equal_nan=True)


# --------------------------------------------------------------------------- backtrader wrapper


class Record(bt.Strategy):
    params = (("ind_kw", {}), ("on", 0))

    def __init__(self) -> None:
        self.st = SuperTrend(self.datas[self.p.on], **self.p.ind_kw)
        self.rows: dict[
            int, tuple[float, float]
        ] = {}  # bar index of the indicator's feed -> values
        self.first_next: int | None = None

    def prenext(self) -> None:
        self.rows[len(self.datas[self.p.on]) - 1] = (self.st.supertrend[0], self.st.direction[0])

    def next(self) -> None:
        if self.first_next is None:
            self.first_next = len(self) - 1
        self.prenext()


def feed(df: pd.DataFrame) -> bt.feeds.PandasData:
    return bt.feeds.PandasData(dataname=df.tz_localize(None))


@pytest.mark.parametrize("runonce", [True, False], ids=["runonce", "next"])
@pytest.mark.parametrize("params", [{}, {"period": 3, "multiplier": 1.0}], ids=["default", "tight"])
def test_backtrader_indicator_equals_numpy_function(
    runonce: bool, params: dict[str, float]
) -> None:
    df = generate_ohlcv(400, seed=11, timeframe="1h")
    cerebro = bt.Cerebro(runonce=runonce, stdstats=False)
    cerebro.adddata(feed(df))
    cerebro.addstrategy(Record, ind_kw=params)
    strat = cerebro.run()[0]
    rows = np.array([strat.rows[i] for i in range(400)])
    line, direction = run(df, **params)
    assert np.isnan(rows[:, 0]).tolist() == np.isnan(line).tolist()
    np.testing.assert_allclose(rows[:, 0], line, rtol=1e-10)
    np.testing.assert_array_equal(rows[:, 1], direction)
    assert strat.first_next == params.get("period", 10)  # minperiod: the first bar with a value


def test_backtrader_next_mode_is_unaffected_by_repeated_calls_for_one_bar() -> None:
    """With a second, denser feed the strategy (and its indicators) run on every hour while the
    2-hourly feed stands still on odd hours: the per-bar state must not advance twice."""
    hourly = generate_ohlcv(400, seed=12, timeframe="1h")
    two_hourly = generate_ohlcv(200, seed=13, timeframe="2h", start=str(hourly.index[0].date()))
    cerebro = bt.Cerebro(runonce=False, stdstats=False)
    cerebro.adddata(feed(hourly))
    cerebro.adddata(feed(two_hourly))
    cerebro.addstrategy(Record, ind_kw={"period": 5, "multiplier": 2.0}, on=1)
    strat = cerebro.run()[0]
    rows = np.array([strat.rows[i] for i in range(200)])
    line, direction = run(two_hourly, period=5, multiplier=2.0)
    np.testing.assert_allclose(rows[:, 0], line, rtol=1e-10)
    np.testing.assert_array_equal(rows[:, 1], direction)
