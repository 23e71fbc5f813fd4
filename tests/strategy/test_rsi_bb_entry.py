"""RSIOrBBEntryMixin: long when RSI < oversold OR close <= lower band (mirrored for shorts).

Hand-written closes where RSI and the bands can be worked out on paper, the warm-up, the
cooldown, and an equivalence check of the mixin's signal arrays against an independent
pandas computation of Wilder's RSI and population-std Bollinger bands.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import talib

from strategy.mixins.base import Bars, Side
from strategy.mixins.entry.rsi_bb import RSIOrBBEntryMixin


def bars_from_closes(closes: list[float] | np.ndarray) -> Bars:
    c = np.asarray(closes, dtype=np.float64)
    times = (np.datetime64("2024-01-01T00:00", "ns") + np.arange(len(c)) * np.timedelta64(1, "h")).astype(
        "datetime64[ns]"
    )
    return Bars(times, c.copy(), c.copy(), c.copy(), c.copy(), np.ones_like(c))


def prepared(closes: list[float] | np.ndarray, **params: Any) -> RSIOrBBEntryMixin:
    m = RSIOrBBEntryMixin(params)
    m.prepare(bars_from_closes(closes))
    return m


# --------------------------------------------------------------------------- independent reference


def ref_rsi(close: pd.Series, period: int) -> pd.Series:
    """Wilder RSI: averages seeded with the simple mean of the first `period` changes, then
    avg_t = (avg_{t-1} * (period - 1) + x_t) / period, i.e. an EWM with alpha = 1/period."""
    delta = close.diff()
    gain, loss = delta.clip(lower=0.0), (-delta).clip(lower=0.0)

    def wilder(x: pd.Series) -> pd.Series:
        seeded = x.iloc[period:].copy()
        seeded.iloc[0] = x.iloc[1 : period + 1].mean()
        return seeded.ewm(alpha=1.0 / period, adjust=False).mean().reindex(x.index)

    avg_gain, avg_loss = wilder(gain), wilder(loss)
    return 100.0 * avg_gain / (avg_gain + avg_loss)


def ref_bbands(close: pd.Series, period: int, k: float) -> tuple[pd.Series, pd.Series]:
    """Rolling mean +- k x population (ddof=0) standard deviation."""
    mean = close.rolling(period).mean()
    std = close.rolling(period).std(ddof=0)
    return mean + k * std, mean - k * std


# --------------------------------------------------------------------------- hand-written series

STEADY_DECLINE = [100.0 - k for k in range(25)]  # every change is -1
STEADY_RISE = [100.0 + k for k in range(25)]
ALTERNATING = [100.0, 101.0] * 15  # bars 0..29, ends at 101
DROP = ALTERNATING + [98.0]  # bar 30: a sharp drop
SPIKE = [200.0 - c for c in ALTERNATING] + [102.0]  # mirror: 100/99 alternating, then a jump to 102


def test_steady_decline_fires_long_by_rsi_from_first_rsi_bar() -> None:
    """14 losses and no gain: average gain 0, so RS = 0 and RSI = 100 - 100/(1+0) = 0 < 30.

    The bands do not fire: a straight line of 20 points sits (20-1)/2 = 9.5 steps below its
    mean at the last point, while the lower band is 2 x sqrt((20^2-1)/12) = 11.53 steps below.
    """
    m = prepared(STEADY_DECLINE)
    assert m.long_signal == [i >= 14 for i in range(25)]  # RSI(14) exists from bar 14
    assert not any(m.short_signal)
    upper, lower = ref_bbands(pd.Series(STEADY_DECLINE), 20, 2.0)
    assert (pd.Series(STEADY_DECLINE)[19:] > lower[19:]).all()  # RSI alone did it


def test_steady_rise_fires_short_by_rsi_from_first_rsi_bar() -> None:
    m = prepared(STEADY_RISE)
    assert m.short_signal == [i >= 14 for i in range(25)]
    assert not any(m.long_signal)


def test_alternating_series_never_fires() -> None:
    """100/101 alternating: bands 100.5 -/+ 2 x 0.5 = 99.5..101.5 contain every close; RSI near 50."""
    m = prepared(ALTERNATING)
    assert not any(m.long_signal) and not any(m.short_signal)


def test_sharp_drop_below_lower_band_fires_long_while_rsi_stays_above_oversold() -> None:
    """Bar 30 drops 101 -> 98.

    Bands over bars 11..30: ten 101s, nine 100s and 98: mean = (1010 + 900 + 98)/20 = 100.4,
    variance = (10 x 0.6^2 + 9 x 0.4^2 + 2.4^2)/20 = 10.8/20 = 0.54, std = 0.7348, so the lower
    band is 100.4 - 2 x 0.7348 = 98.93 and the close 98 is below it.
    RSI: the alternating +-1 changes keep both averages near 0.5; the drop of 3 makes them
    about 0.46 (gain) and 0.68 (loss): RSI ~ 100 x 0.46/1.14 ~ 40 > 30.
    """
    m = prepared(DROP)
    assert [i for i, v in enumerate(m.long_signal) if v] == [30]
    assert not any(m.short_signal)
    close = pd.Series(DROP)
    _, lower = ref_bbands(close, 20, 2.0)
    assert lower[30] == pytest.approx(100.4 - 2 * math.sqrt(0.54))
    assert 30 < ref_rsi(close, 14)[30] < 45


def test_sharp_spike_above_upper_band_fires_short_while_rsi_stays_below_overbought() -> None:
    m = prepared(SPIKE)
    assert [i for i, v in enumerate(m.short_signal) if v] == [30]
    assert not any(m.long_signal)
    assert 55 < ref_rsi(pd.Series(SPIKE), 14)[30] < 70


def test_wider_band_misses_the_drop() -> None:
    """With 4 deviations the lower band is 100.4 - 4 x 0.7348 = 97.46 < 98 and RSI ~ 40: no signal."""
    m = prepared(DROP, e_bb_dev=4.0)
    assert not any(m.long_signal)


def test_higher_oversold_threshold_fires_on_rsi_before_the_band() -> None:
    """RSI of the alternating series hovers near 50 (just above after a rise, just below after a
    fall); oversold 50 makes the 'below' bars fire by RSI alone."""
    close = pd.Series(ALTERNATING)
    rsi = ref_rsi(close, 14)
    m = prepared(ALTERNATING, e_rsi_oversold=50.0)
    expected = [bool(v < 50.0) for v in rsi.fillna(np.inf)]
    assert any(expected) and not all(expected[14:])
    assert m.long_signal == expected


# --------------------------------------------------------------------------- warm-up


@pytest.mark.parametrize(
    ("rsi_period", "bb_period", "warmup"),
    [(14, 20, 19), (5, 10, 9), (21, 10, 21), (10, 11, 10)],
)
def test_warmup_is_first_bar_with_every_indicator(rsi_period: int, bb_period: int, warmup: int) -> None:
    # RSI(p) first exists at bar p (p changes need p+1 closes); BB(p) at bar p-1.
    assert warmup == max(rsi_period, bb_period - 1)
    m = prepared(STEADY_DECLINE + [75.0 - k for k in range(20)], e_rsi_period=rsi_period, e_bb_period=bb_period)
    assert m.warmup() == warmup


def test_no_signal_before_rsi_exists_even_on_a_collapse() -> None:
    """Bars 0..13 of a -1/bar decline: RSI is NaN and the band too; NaN compares False."""
    m = prepared(STEADY_DECLINE)
    assert m.long_signal[:14] == [False] * 14
    assert all(not m.should_enter(i, Side.LONG, 10**9) for i in range(14))


# --------------------------------------------------------------------------- cooldown


@pytest.mark.parametrize(
    ("cooldown", "bar", "bars_since_exit", "expected"),
    [
        pytest.param(5, 20, 4, False, id="one_bar_short_of_cooldown"),
        pytest.param(5, 20, 5, True, id="exactly_cooldown"),
        pytest.param(5, 20, 6, True, id="past_cooldown"),
        pytest.param(5, 20, 0, False, id="on_exit_bar"),
        pytest.param(5, 20, 10**9, True, id="never_exited"),
        pytest.param(0, 20, 0, True, id="no_cooldown_on_exit_bar"),
        pytest.param(5, 10, 5, False, id="cooldown_over_but_no_signal"),
    ],
)
def test_cooldown(cooldown: int, bar: int, bars_since_exit: int, expected: bool) -> None:
    m = prepared(STEADY_DECLINE, e_cooldown_bars=cooldown)
    assert m.long_signal[20] and not m.long_signal[10]
    assert m.should_enter(bar, Side.LONG, bars_since_exit) is expected
    assert m.should_enter(bar, Side.SHORT, bars_since_exit) is False  # the short rule is off here


# --------------------------------------------------------------------------- equivalence


def random_closes(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # regime drifts so that RSI visits both extremes
    drift = np.repeat(rng.normal(0.0, 0.004, n // 50 + 1), 50)[:n]
    return 100.0 * np.exp(np.cumsum(drift + rng.normal(0.0, 0.01, n)))


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"e_rsi_period": 5, "e_bb_period": 10, "e_bb_dev": 1.5, "e_rsi_oversold": 25, "e_rsi_overbought": 75},
        {"e_rsi_period": 21, "e_bb_period": 15, "e_bb_dev": 2.5},
    ],
    ids=["defaults", "short_periods", "long_rsi"],
)
def test_signals_equal_independent_pandas_computation(seed: int, params: dict[str, Any]) -> None:
    closes = random_closes(1500, seed)
    m = prepared(closes, **params)
    p = RSIOrBBEntryMixin.Params.model_validate(params)
    close = pd.Series(closes)

    rsi = ref_rsi(close, p.e_rsi_period)
    upper, lower = ref_bbands(close, p.e_bb_period, p.e_bb_dev)

    # 1. the indicators the mixin is built on (TA-Lib) agree with the reference, NaNs included
    t_upper, _, t_lower = talib.BBANDS(closes, p.e_bb_period, p.e_bb_dev, p.e_bb_dev)
    t_rsi = talib.RSI(closes, p.e_rsi_period)
    for ours, theirs, first in ((rsi, t_rsi, p.e_rsi_period), (upper, t_upper, p.e_bb_period - 1), (lower, t_lower, p.e_bb_period - 1)):
        assert np.isnan(ours.to_numpy()).tolist() == np.isnan(theirs).tolist()
        assert int(np.argmax(~np.isnan(theirs))) == first  # warm-up length
        np.testing.assert_allclose(theirs[first:], ours.to_numpy()[first:], rtol=1e-9, atol=1e-9)

    # 2. the rule, applied to the reference values (NaN compares False)
    with np.errstate(invalid="ignore"):
        long_ = (rsi.to_numpy() < p.e_rsi_oversold) | (closes <= lower.to_numpy())
        short = (rsi.to_numpy() > p.e_rsi_overbought) | (closes >= upper.to_numpy())
    # no value sits within 1e-9 of a threshold, so the comparison is not decided by rounding
    margins = np.concatenate(
        [np.abs(rsi - p.e_rsi_oversold), np.abs(rsi - p.e_rsi_overbought), np.abs(close - lower), np.abs(close - upper)]
    )
    assert np.nanmin(margins) > 1e-9
    assert m.long_signal == long_.tolist()
    assert m.short_signal == short.tolist()
    assert not any(m.long_signal[: m.warmup()]) or p.e_rsi_period < p.e_bb_period - 1
    assert 0 < sum(m.long_signal) < len(closes) and 0 < sum(m.short_signal) < len(closes)
    # both rules contribute somewhere (the test would not notice a dropped OR branch otherwise)
    with np.errstate(invalid="ignore"):
        assert ((rsi.to_numpy() < p.e_rsi_oversold) & ~(closes <= lower.to_numpy())).any()
        assert (~(rsi.to_numpy() < p.e_rsi_oversold) & (closes <= lower.to_numpy())).any()
