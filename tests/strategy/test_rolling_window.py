"""Streamed bars over a rolling window give exactly the values of a full recomputation.

Every registered mixin is fed generated bars one at a time through ``extend`` (what a paper
or live Book does) and, separately, prepared once on all of them (what a backtest does).
Every per-bar list the mixin keeps (signals, ATR, SuperTrend direction, bar times) must be
equal at every bar. The stated tolerance is zero: equal to the last bit, NaN matching NaN.
The series are long enough for the window to slide over most of them, and one data set has
flat stretches (close equal to its own average, zero volume) where a tie decides.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import talib

from strategy.indicators.memory import recursive_memory
from strategy.indicators.windows import bollinger, rolling_sum, sma
from strategy.mixins.base import Bars, EntryMixin, ExitMixin, Side
from strategy.registry import available
from tests.strategy.test_lookahead import build, param_sets
from trading.data import generate_ohlcv

COLUMNS = ("time", "open", "high", "low", "close", "volume")
FALLBACK = {"HMMLSTMEntryMixin"}  # no memory: prepared over every bar (see docs/performance.md)


def frame_bars(df: pd.DataFrame) -> Bars:
    cols = [np.ascontiguousarray(df[k].to_numpy(np.float64)) for k in COLUMNS[1:]]
    return Bars(df.index.tz_convert(None).to_numpy().astype("datetime64[ns]"), *cols)


def with_flat_stretches(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Freeze the price for 25 to 80 bars at a dozen places (volume 0 or constant)."""
    rng = np.random.default_rng(seed)
    df = df.copy()
    for start in rng.integers(100, len(df) - 100, 12):
        length = int(rng.integers(25, 80))
        df.iloc[start : start + length, :4] = df["close"].iloc[start]
        df.iloc[start : start + length, 4] = float(rng.choice([0.0, 1000.0]))
    return df


def data_sets(n: int) -> dict[str, Bars]:
    return {
        "seed1": frame_bars(generate_ohlcv(n, seed=1)),
        "seed2": frame_bars(generate_ohlcv(n, seed=2, start_price=25_000.0)),
        "seed3_flat": frame_bars(with_flat_stretches(generate_ohlcv(n, seed=3), 3)),
    }


SHORT = data_sets(1200)  # shrunk periods: memories of 9 to ~360 bars
LONG = data_sets(2500)  # default periods: memories of 21 to 1802 bars (EMA 30)


def head(bars: Bars, n: int) -> Bars:
    return Bars(*(getattr(bars, k)[:n] for k in COLUMNS))


def stream(mixin: Any, bars: Bars, steps: list[int] | None = None) -> list[int]:
    """Feed `bars` one at a time (or `steps` at a time); return the lengths `compute` was given."""
    seen: list[int] = []
    compute = getattr(mixin, "compute", None)
    if compute is not None:

        def spy(window: Bars) -> Any:
            seen.append(len(window))
            return compute(window)

        mixin.compute = spy
    mixin.prepare(head(bars, 1))
    seen.clear()  # the first bar is a full prepare
    start = 1
    for step in steps or [1] * (len(bars) - 1):
        if start == len(bars):
            break
        n = min(start + step, len(bars))
        mixin.extend(head(bars, n), start)
        start = n
    assert start == len(bars)
    return seen


def per_bar(mixin: Any, n: int) -> dict[str, list[Any]]:
    return {k: v for k, v in vars(mixin).items() if isinstance(v, list) and len(v) == n}


def assert_same_values(full: Any, streamed: Any, n: int) -> None:
    expected, got = per_bar(full, n), per_bar(streamed, n)
    assert expected, "the mixin keeps no per-bar values to compare"
    assert got.keys() == expected.keys()
    for key, values in expected.items():
        a, b = np.asarray(values, dtype=np.float64), np.asarray(got[key], dtype=np.float64)
        diff = np.flatnonzero(~((a == b) | (np.isnan(a) & np.isnan(b))))
        assert diff.size == 0, f"{key} differs at bars {diff[:10].tolist()}"


def own_attributes(mixin: Any) -> set[str]:
    """Return what the mixin's classes define beyond EntryMixin / ExitMixin."""
    return {
        attr
        for cls in type(mixin).__mro__
        if issubclass(cls, (EntryMixin, ExitMixin)) and cls not in (EntryMixin, ExitMixin)
        for attr in vars(cls)
    }


def default_params(kind: str, name: str, fallback: dict[str, Any]) -> dict[str, Any]:
    """Return {} when the mixin's defaults validate on their own, else `fallback`."""
    try:
        available(kind)[name].Params.model_validate({})  # type: ignore[index]
    except ValueError:
        return fallback
    return {}


def cases(data: dict[str, Bars], *, defaults: bool) -> list[Any]:
    out = []
    for kind in ("entry", "exit"):
        for name, k, params in param_sets(kind):
            if name in FALLBACK or (defaults and k > 0):
                continue
            p = default_params(kind, name, params) if defaults else params
            for label in data:
                out.append(pytest.param(kind, name, p, label, id=f"{name}-{k}-{label}"))
    return out


def check(kind: str, name: str, params: dict[str, Any], bars: Bars) -> None:
    n = len(bars)
    full = build(kind, name, params)
    full.prepare(bars)
    streamed = build(kind, name, params)
    windows = stream(streamed, bars)
    if not per_bar(full, n):  # nothing kept per bar (a percent stop, a trailing stop)
        assert not per_bar(streamed, n)
        return
    assert_same_values(full, streamed, n)
    memory = streamed.memory()
    if memory is None:  # no window: the mixin carries its state in its own extend
        assert "extend" in own_attributes(streamed)
        return
    assert n - memory >= n // 4, "the window must slide over a good part of the bars"
    if windows:  # compute-based: every bar after the first `memory` saw exactly that many
        assert windows[-(n - memory) :] == [memory] * (n - memory)


@pytest.mark.parametrize(("kind", "name", "params", "data"), cases(SHORT, defaults=False))
def test_streamed_values_equal_the_full_values_at_every_bar(
    kind: str, name: str, params: dict[str, Any], data: str
) -> None:
    check(kind, name, params, SHORT[data])


@pytest.mark.parametrize(("kind", "name", "params", "data"), cases(LONG, defaults=True))
def test_streamed_values_equal_the_full_values_with_default_periods(
    kind: str, name: str, params: dict[str, Any], data: str
) -> None:
    check(kind, name, params, LONG[data])


@pytest.mark.parametrize(("kind", "name", "params", "data"), cases({"seed2": SHORT["seed2"]}, defaults=False))
def test_bars_arriving_several_at_a_time_give_the_same_values(
    kind: str, name: str, params: dict[str, Any], data: str
) -> None:
    # A symbol that starts late, or a fill prepared before next(): several new bars at once.
    bars = SHORT[data]
    steps = np.random.default_rng(5).integers(1, 6, len(bars)).tolist()
    full, streamed = build(kind, name, params), build(kind, name, params)
    full.prepare(bars)
    stream(streamed, bars, steps)
    if per_bar(full, len(bars)):
        assert_same_values(full, streamed, len(bars))


def test_every_registered_mixin_with_indicators_declares_a_memory_or_is_a_listed_fallback() -> None:
    for kind in ("entry", "exit"):
        for name, _, params in param_sets(kind):
            mixin = build(kind, name, params)
            own = own_attributes(mixin)
            if name in FALLBACK:
                assert mixin.memory() is None and "extend" not in own, f"{name}: drop it from FALLBACK"
            elif own & {"prepare", "compute"}:
                # A window (memory) or state carried from bar to bar (its own extend).
                assert mixin.memory() is not None or "extend" in own, f"{name} has no rolling window"
            else:
                assert mixin.memory() is None  # nothing to prepare (a trailing stop)


class _NoMemoryEntry(EntryMixin):
    """A custom mixin that does not declare a memory: the cumulative maximum of the closes."""

    def compute(self, bars: Bars) -> dict[str, np.ndarray]:
        self.lengths = [*getattr(self, "lengths", []), len(bars)]
        return {"peak": np.maximum.accumulate(bars.close)}

    def signal(self, i: int, side: Side) -> bool:
        return False


def test_a_mixin_without_memory_is_prepared_over_every_bar() -> None:
    bars = SHORT["seed1"]
    full, streamed = _NoMemoryEntry(), _NoMemoryEntry()
    full.prepare(bars)
    stream(streamed, bars)
    assert streamed.lengths == list(range(1, len(bars) + 1))  # never a window
    assert streamed.peak == full.peak  # a window would have forgotten the early peaks


# --------------------------------------------------------------------------- the rules


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
@pytest.mark.parametrize("period", [2, 5, 14, 30])
def test_recursive_smoothers_over_their_memory_equal_the_full_run_to_the_last_bit(seed: int, period: int) -> None:
    b = frame_bars(generate_ohlcv(recursive_memory(period) + 400, seed=seed))
    memory = recursive_memory(period)
    full = {
        "RSI": talib.RSI(b.close, period),
        "ATR": talib.ATR(b.high, b.low, b.close, period),
        "EMA": talib.EMA(b.close, period),
    }
    for t in range(memory - 1, len(b.close), 37):
        lo = t - memory + 1
        window = {
            "RSI": talib.RSI(b.close[lo : t + 1], period),
            "ATR": talib.ATR(b.high[lo : t + 1], b.low[lo : t + 1], b.close[lo : t + 1], period),
            "EMA": talib.EMA(b.close[lo : t + 1], period),
        }
        for key, values in window.items():
            assert values[-1] == full[key][t], (key, t)


def test_a_recursive_window_much_shorter_than_the_rule_does_not_match() -> None:
    # What the rule protects against: a window of 10 periods still carries its seed.
    b = frame_bars(generate_ohlcv(800, seed=1))
    full = talib.RSI(b.close, 14)
    short = [talib.RSI(b.close[t - 140 : t + 1], 14)[-1] for t in range(400, 800, 10)]
    assert any(s != f for s, f in zip(short, full[400:800:10], strict=True))


@pytest.mark.parametrize("period", [2, 8, 20, 52])
def test_finite_windows_depend_on_their_own_bars_only(period: int) -> None:
    b = LONG["seed3_flat"]
    full_sum, full_bb = rolling_sum(b.close, period), bollinger(b.close, period, 2.0)
    for lo in (1, 7, 500, 2000):
        w_sum, w_bb = rolling_sum(b.close[lo:], period), bollinger(b.close[lo:], period, 2.0)
        assert np.array_equal(w_sum[period - 1 :], full_sum[lo + period - 1 :])
        for w, f in zip(w_bb, full_bb, strict=True):
            assert np.array_equal(w[period - 1 :], f[lo + period - 1 :])


def test_windowed_bollinger_and_sma_agree_with_talib() -> None:
    b = LONG["seed2"]
    upper, middle, lower = bollinger(b.close, 20, 2.0)
    ref = talib.BBANDS(b.close, 20, 2.0, 2.0)
    for mine, theirs in zip((upper, middle, lower), ref, strict=True):
        assert np.array_equal(np.isnan(mine), np.isnan(theirs))
        np.testing.assert_allclose(mine, theirs, rtol=1e-12)
    np.testing.assert_allclose(sma(b.volume, 7), talib.SMA(b.volume, 7), rtol=1e-12)
    assert np.isnan(sma(b.close[:3], 5)).all()


def test_rolling_sum_adds_every_window_with_the_same_tree() -> None:
    x = np.random.default_rng(9).normal(0.0, 1e6, 300) + np.where(np.arange(300) % 7 == 0, 1e16, 0.0)
    three, five = rolling_sum(x, 3), rolling_sum(x, 5)
    for t in range(4, 300):
        assert three[t] == x[t - 2] + (x[t - 1] + x[t])  # period 0b11: 1 bar, then a pair
        assert five[t] == x[t - 4] + ((x[t - 3] + x[t - 2]) + (x[t - 1] + x[t]))  # 0b101
    assert np.isnan(three[:2]).all() and np.isnan(rolling_sum(x[:4], 5)).all()


@pytest.mark.parametrize("period", [1, 2, 7, 20, 48, 64, 100])
def test_rolling_sum_is_within_a_few_ulps_of_the_exact_sum(period: int) -> None:
    import math

    x = LONG["seed2"].close[:600]
    exact = [math.fsum(x[t - period + 1 : t + 1]) for t in range(period - 1, len(x))]
    np.testing.assert_allclose(rolling_sum(x, period)[period - 1 :], exact, rtol=1e-14, atol=0)
