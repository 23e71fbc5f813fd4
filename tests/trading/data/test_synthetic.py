"""Tests for trading.data.generate_ohlcv, the deterministic default data."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.data import generate_ohlcv, validate_ohlcv
from trading.data.synthetic import DOWN, MEAN_REVERTING, UP, _generate

SRC = Path(__file__).resolve().parents[3] / "src"
STAT_SEEDS = [42, 7, 2024]


def digest(df: pd.DataFrame) -> str:
    """Hash the exact bits of the values and the index."""
    h = hashlib.sha256(df.to_numpy().tobytes())
    h.update(df.index.as_unit("ns").asi8.tobytes())
    return h.hexdigest()


def episodes(mask: np.ndarray) -> int:
    """Count runs of True (entries into the condition)."""
    mask = np.asarray(mask, dtype=bool)
    return int(mask[0]) + int(np.sum(mask[1:] & ~mask[:-1]))


# --- determinism ----------------------------------------------------------------------


def test_same_arguments_give_bit_identical_frames() -> None:
    a = generate_ohlcv(3_000, seed=5, symbol="BTC/USDT")
    b = generate_ohlcv(3_000, seed=5, symbol="BTC/USDT")
    assert digest(a) == digest(b)
    pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.mark.parametrize(
    "other",
    [
        {"seed": 43},
        {"symbol": "ETH/USDT"},
        {"symbol": "BTC/USDT", "seed": 43},
    ],
    ids=["seed", "symbol", "symbol and seed"],
)
def test_different_seed_or_symbol_gives_different_data(other: dict[str, object]) -> None:
    base = generate_ohlcv(500, seed=42, symbol="BTC/USDT")
    changed = generate_ohlcv(500, **{"seed": 42, "symbol": "BTC/USDT", **other})  # type: ignore[arg-type]
    assert not np.allclose(base.to_numpy(), changed.to_numpy())
    assert not np.allclose(generate_ohlcv(500).to_numpy(), base.to_numpy())


def test_symbol_seed_is_stable_across_processes() -> None:
    # hash() of a str changes with PYTHONHASHSEED; the derived seed must not.
    code = (
        "from trading.data import generate_ohlcv;"
        "import hashlib;"
        "df = generate_ohlcv(300, symbol='AAPL');"
        "print(hashlib.sha256(df.to_numpy().tobytes()).hexdigest())"
    )
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(SRC)}
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(result.stdout.strip())
    expected = hashlib.sha256(generate_ohlcv(300, symbol="AAPL").to_numpy().tobytes()).hexdigest()
    assert outputs == {expected}


# --- shape and validity ---------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    bars=st.integers(min_value=1, max_value=3_000),
    timeframe=st.sampled_from(["1m", "5m", "1h", "4h", "1d"]),
    start_price=st.floats(min_value=0.001, max_value=1e6),
)
def test_bars_are_valid_ohlc(seed: int, bars: int, timeframe: str, start_price: float) -> None:
    df = generate_ohlcv(bars, seed=seed, timeframe=timeframe, start_price=start_price)
    o, h, lo, c, v = (df[k].to_numpy() for k in ["open", "high", "low", "close", "volume"])
    assert len(df) == bars
    assert np.all(np.isfinite(df.to_numpy()))
    assert np.all(h >= np.maximum(o, c))
    assert np.all(lo <= np.minimum(o, c))
    assert np.all(lo > 0)
    assert np.all(v > 0)
    # The first bar opens at start_price plus tiny open noise (a gap is possible but rare).
    assert o[0] == pytest.approx(start_price, rel=0.5)


def test_canonical_index_and_columns() -> None:
    df = generate_ohlcv(48, timeframe="30m", start="2021-03-04 05:00")
    assert list(df.columns) == ["open", "high", "low", "close", "volume"]
    assert all(dt == np.float64 for dt in df.dtypes)
    expected = pd.date_range(
        "2021-03-04 05:00", periods=48, freq="30min", tz="UTC", name="datetime"
    )
    pd.testing.assert_index_equal(df.index, expected.as_unit("ns"))


def test_tz_aware_start_is_converted_to_utc() -> None:
    df = generate_ohlcv(3, start="2021-03-04 09:00+02:00")
    assert df.index[0] == pd.Timestamp("2021-03-04 07:00", tz="UTC")


def test_passes_validation_without_gaps() -> None:
    report = validate_ohlcv(generate_ohlcv(5_000, timeframe="15m"), "synthetic")
    assert report.timeframe == "15m"
    assert report.gaps == []
    assert report.zero_volume_bars == 0


def test_zero_bars_gives_an_empty_canonical_frame() -> None:
    df = generate_ohlcv(0)
    assert df.empty
    assert list(df.columns) == ["open", "high", "low", "close", "volume"]
    assert str(df.index.tz) == "UTC"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bars": -1}, "bars must be a non-negative integer"),
        ({"bars": 10, "start_price": 0.0}, "start_price must be a positive number"),
        ({"bars": 10, "timeframe": "1x"}, "invalid timeframe '1x'"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_ohlcv(**kwargs)  # type: ignore[arg-type]


# --- statistical character --------------------------------------------------------------


@pytest.fixture(scope="module", params=STAT_SEEDS)
def series(request: pytest.FixtureRequest) -> pd.DataFrame:
    return generate_ohlcv(5_000, seed=request.param)


def test_rsi_reaches_both_extremes_regularly(series: pd.DataFrame) -> None:
    rsi = talib.RSI(series["close"].to_numpy(), timeperiod=14)[14:]
    assert episodes(rsi < 30) >= 20
    assert episodes(rsi > 70) >= 20


def test_closes_leave_the_bollinger_bands_regularly(series: pd.DataFrame) -> None:
    close = series["close"].to_numpy()
    upper, _, lower = talib.BBANDS(close, timeperiod=20, nbdevup=2, nbdevdn=2)
    above, below = close[19:] > upper[19:], close[19:] < lower[19:]
    # Under a normal distribution about 4.6 % of closes fall outside 2-sigma bands.
    assert episodes(above) >= 20 and episodes(below) >= 20
    assert (above | below).mean() > 0.05


def segments(regime: np.ndarray) -> list[tuple[int, int]]:
    """Return (start, end) of each run of one regime."""
    starts = np.flatnonzero(np.concatenate([[True], regime[1:] != regime[:-1]]))
    ends = np.concatenate([starts[1:], [len(regime)]])
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def variance_ratio(log_close: np.ndarray, runs: list[tuple[int, int]], lag: int = 20) -> float:
    """Pooled Var(lag-bar return) / (lag * Var(1-bar return)): 1 for a random walk,
    below 1 for mean reversion, above 1 for trends."""
    one = np.concatenate([np.diff(log_close[a:b]) for a, b in runs])
    many = np.concatenate([log_close[a + lag : b] - log_close[a : b - lag] for a, b in runs])
    return float(np.mean(many**2) / (lag * np.mean(one**2)))


@pytest.mark.parametrize("seed", [42, 7])
def test_regimes_behave_as_labelled(seed: int) -> None:
    df, regime = _generate(
        20_000, seed=seed, timeframe="1h", start="2020-01-01", start_price=100.0, symbol=None
    )
    log_close = np.log(df["close"].to_numpy())
    runs = segments(regime)[:-1]  # the last run is cut short by the series end
    lengths = np.array([b - a for a, b in runs])
    assert lengths.min() >= 20 and 50 <= np.median(lengths) <= 300
    by_kind = {
        k: [(a, b) for a, b in runs if regime[a] == k and b - a >= 60]
        for k in (UP, DOWN, MEAN_REVERTING)
    }
    for kind, share in zip(
        (UP, DOWN, MEAN_REVERTING),
        np.bincount(regime, minlength=3) / len(regime),
        strict=True,
    ):
        assert share > 0.2, f"regime {kind} covers only {share:.0%} of bars"
    assert variance_ratio(log_close, by_kind[MEAN_REVERTING]) < 0.9
    assert variance_ratio(log_close, by_kind[UP]) > 1.1
    assert variance_ratio(log_close, by_kind[DOWN]) > 1.1
    up_moves = np.array([log_close[b - 1] - log_close[a] for a, b in by_kind[UP]])
    down_moves = np.array([log_close[b - 1] - log_close[a] for a, b in by_kind[DOWN]])
    assert (up_moves > 0).mean() > 0.7
    assert (down_moves < 0).mean() > 0.7


def test_trending_regimes_in_both_directions(series: pd.DataFrame) -> None:
    change = series["close"].pct_change(200).dropna()
    assert change.max() > 0.15
    assert change.min() < -0.15


def test_hourly_volatility_is_half_to_one_percent(series: pd.DataFrame) -> None:
    returns = np.diff(np.log(series["close"].to_numpy()))
    gap = np.abs(np.log(series["open"].to_numpy()[1:] / series["close"].to_numpy()[:-1]))
    # Leave out the deliberate gap bars: they are a separate feature.
    ordinary = gap < 5 * np.median(gap)
    assert 0.005 <= returns[ordinary].std() <= 0.01


def test_volatility_clusters(series: pd.DataFrame) -> None:
    size = np.abs(np.diff(np.log(series["close"].to_numpy())))
    lag1 = np.corrcoef(size[1:], size[:-1])[0, 1]
    # Independent returns would give ~0 (standard error ~1/sqrt(5000) = 0.014).
    assert lag1 > 0.03


def test_some_bars_gap_by_several_atrs_and_others_open_at_the_close(series: pd.DataFrame) -> None:
    o, h, lo, c = (series[k].to_numpy() for k in ["open", "high", "low", "close"])
    atr = talib.ATR(h, lo, c, timeperiod=14)
    jump = np.abs(o[1:] - c[:-1])
    big = np.nansum(jump > 3 * atr[:-1])
    assert 10 <= big <= 0.03 * len(o)
    # Ordinary bars open within a small fraction of a typical bar's range of the last close.
    assert np.median(jump / c[:-1]) < 0.1 * np.median(np.abs(np.diff(c)) / c[:-1])


def test_volume_tracks_moves_and_spikes(series: pd.DataFrame) -> None:
    volume = series["volume"]
    size = series["close"].pct_change().abs()
    assert volume.corr(size, method="spearman") > 0.3
    ratio = volume / volume.rolling(20).mean()
    assert (ratio > 2).mean() > 0.01


@settings(max_examples=60, deadline=None)
@given(
    a=st.lists(st.floats(min_value=0.05, max_value=1.0), min_size=1, max_size=400),
    data=st.data(),
)
def test_linear_recurrence_matches_the_loop(a: list[float], data: st.DataObject) -> None:
    from trading.data.synthetic import _linear_recurrence

    b = data.draw(st.lists(st.floats(-10, 10), min_size=len(a), max_size=len(a)))
    x0 = data.draw(st.floats(-10, 10))
    expected, x = [], x0
    for ai, bi in zip(a, b, strict=True):
        x = ai * x + bi
        expected.append(x)
    got = _linear_recurrence(np.array(a), np.array(b), x0)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
