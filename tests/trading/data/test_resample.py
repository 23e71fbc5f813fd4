"""Tests for trading.data.resample_ohlcv."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trading.data import generate_ohlcv, resample_ohlcv

COLUMNS = ["open", "high", "low", "close", "volume"]

# Eight hand-written hourly bars from 00:00 UTC: (open, high, low, close, volume).
HOURLY = [
    (10.0, 12.0, 9.0, 11.0, 100.0),
    (11.0, 13.0, 10.5, 12.5, 150.0),
    (12.5, 12.8, 8.0, 9.0, 300.0),
    (9.0, 10.0, 8.5, 9.5, 50.0),
    (9.5, 11.0, 9.4, 10.8, 80.0),
    (10.8, 14.0, 10.7, 13.9, 400.0),
    (13.9, 14.2, 12.0, 12.1, 220.0),
    (12.1, 12.5, 11.0, 11.2, 90.0),
]


def hourly(bars: list[tuple[float, ...]] = HOURLY, start: str = "2024-01-01") -> pd.DataFrame:
    index = pd.date_range(start, periods=len(bars), freq="1h", tz="UTC", name="datetime")
    return pd.DataFrame(bars, index=index, columns=COLUMNS)


def aggregate(bars: list[tuple[float, ...]]) -> tuple[float, ...]:
    """OHLCV of a group of bars, by definition."""
    return (
        bars[0][0],
        max(b[1] for b in bars),
        min(b[2] for b in bars),
        bars[-1][3],
        sum(b[4] for b in bars),
    )


def test_1h_to_4h_on_hand_written_bars() -> None:
    out = resample_ohlcv(hourly(), "4h")
    expected_index = pd.DatetimeIndex(
        ["2024-01-01 00:00", "2024-01-01 04:00"], tz="UTC", name="datetime"
    )
    pd.testing.assert_index_equal(out.index, expected_index.as_unit("ns"))
    expected = np.array([aggregate(HOURLY[0:4]), aggregate(HOURLY[4:8])])
    np.testing.assert_array_equal(out.to_numpy(), expected)
    # Spelled out for the first bin, so the aggregation rule itself is pinned down.
    assert tuple(out.iloc[0]) == (10.0, 13.0, 8.0, 9.5, 600.0)


def test_bins_without_bars_are_dropped_not_filled() -> None:
    # 12 hourly bars, of which 04:00-07:00 are missing entirely.
    bars = HOURLY + HOURLY[:4]
    df = hourly(bars).drop(index=pd.date_range("2024-01-01 04:00", periods=4, freq="1h", tz="UTC"))
    out = resample_ohlcv(df, "4h")
    assert list(out.index.hour) == [0, 8]
    np.testing.assert_array_equal(
        out.to_numpy(), np.array([aggregate(bars[0:4]), aggregate(bars[8:12])])
    )


def test_bin_with_missing_bars_inside_keeps_what_it_has() -> None:
    df = hourly().drop(index=pd.Timestamp("2024-01-01 01:00", tz="UTC"))
    out = resample_ohlcv(df, "4h")
    np.testing.assert_array_equal(
        out.iloc[0].to_numpy(), aggregate([HOURLY[0], HOURLY[2], HOURLY[3]])
    )


def test_incomplete_final_bin_is_dropped_by_default() -> None:
    df = hourly(HOURLY[:6])  # 04:00 bin has only 04:00 and 05:00
    out = resample_ohlcv(df, "4h")
    assert list(out.index.hour) == [0]
    kept = resample_ohlcv(df, "4h", drop_incomplete=False)
    assert list(kept.index.hour) == [0, 4]
    np.testing.assert_array_equal(kept.iloc[1].to_numpy(), aggregate(HOURLY[4:6]))


def test_final_bin_is_complete_when_the_last_source_bar_closes_it() -> None:
    out = resample_ohlcv(hourly(), "4h")  # last bar 07:00 ends at 08:00 = end of bin
    assert len(out) == 2


def test_partial_first_bin_is_kept() -> None:
    # Data starting mid-bin is history, not lookahead: the bin keeps the bars it has.
    out = resample_ohlcv(hourly(start="2024-01-01 02:00"), "4h")
    assert list(out.index.hour) == [0, 4]
    np.testing.assert_array_equal(out.iloc[0].to_numpy(), aggregate(HOURLY[0:2]))


def test_same_timeframe_returns_a_copy() -> None:
    df = hourly()
    out = resample_ohlcv(df, "1h")
    pd.testing.assert_frame_equal(out, df)
    out.iloc[0, 0] = -1.0
    assert df.iloc[0, 0] == 10.0


@pytest.mark.parametrize(
    ("target", "fragment"),
    [("30m", "finer"), ("90m", "not a whole multiple"), ("1s", "finer")],
)
def test_timeframe_errors_name_both_timeframes(target: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        resample_ohlcv(hourly(), target)
    message = str(info.value)
    assert "1h" in message and target in message and fragment in message


def test_source_timeframe_from_argument_when_it_cannot_be_inferred() -> None:
    one = hourly(HOURLY[:1])
    with pytest.raises(ValueError, match="pass source_timeframe"):
        resample_ohlcv(one, "4h")
    out = resample_ohlcv(one, "4h", source_timeframe="1h", drop_incomplete=False)
    np.testing.assert_array_equal(out.to_numpy(), [HOURLY[0]])


def test_bars_crossing_a_bin_boundary_are_rejected() -> None:
    # Hourly bars opening at :30 would straddle every 4 h boundary.
    df = hourly(start="2024-01-01 00:30")
    with pytest.raises(
        ValueError, match=r"cross a 4h bin boundary, first the bar at 2024-01-01 03:30"
    ):
        resample_ohlcv(df, "4h")


def with_nan(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.iloc[2, 1] = np.nan
    return df


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (with_nan, r"1 bar\(s\) contain NaN, first at 2024-01-01 02:00"),
        (lambda df: df.iloc[[1, 0, 2, 3]], "sorted ascending"),
        (lambda df: df.iloc[[0, 1, 1, 2]], "unique"),
    ],
    ids=["nan", "unsorted", "duplicate"],
)
def test_bad_input_is_rejected(spoil: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resample_ohlcv(spoil(hourly()), "4h")  # type: ignore[operator]


def test_daily_to_weekly_starts_on_monday_and_keeps_a_week_ending_friday() -> None:
    days = pd.bdate_range(
        "2024-01-01", "2024-01-12", tz="UTC", name="datetime"
    )  # two Mon-Fri weeks
    values = np.arange(1.0, len(days) + 1)
    df = pd.DataFrame(
        {
            "open": values,
            "high": values + 1,
            "low": values - 0.5,
            "close": values + 0.5,
            "volume": values * 10,
        },
        index=days,
    )
    out = resample_ohlcv(df, "1w")
    assert list(out.index) == list(pd.DatetimeIndex(["2024-01-01", "2024-01-08"], tz="UTC"))
    # Week 1 is rows 0-4 (values 1..5), week 2 rows 5-9 (values 6..10).
    np.testing.assert_array_equal(out.iloc[0].to_numpy(), [1.0, 6.0, 0.5, 5.5, 150.0])
    np.testing.assert_array_equal(out.iloc[1].to_numpy(), [6.0, 11.0, 5.5, 10.5, 400.0])
    # A week that ends on Thursday is not complete yet.
    assert len(resample_ohlcv(df.iloc[:-1], "1w")) == 1


def test_local_midnight_daily_bars_go_to_their_own_week() -> None:
    # Berlin Monday 2024-01-08 00:00 is Sunday 23:00 UTC; it must open week 2, not close week 1.
    local = pd.bdate_range("2024-01-01", "2024-01-12").tz_localize("Europe/Berlin")
    index = local.tz_convert("UTC").rename("datetime")
    values = np.arange(1.0, len(index) + 1)
    df = pd.DataFrame(
        {
            "open": values,
            "high": values,
            "low": values,
            "close": values,
            "volume": np.ones(len(index)),
        },
        index=index,
    )
    out = resample_ohlcv(df, "1w")
    assert list(out["open"]) == [1.0, 6.0]
    assert list(out["volume"]) == [5.0, 5.0]


def test_agrees_with_pandas_resample_on_synthetic_data() -> None:
    df = generate_ohlcv(2_000, seed=3, timeframe="15m")
    ours = resample_ohlcv(df, "1h", drop_incomplete=False)
    theirs = (
        df.resample("1h", label="left", closed="left")
        .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
        .dropna()
    )
    pd.testing.assert_frame_equal(
        ours, theirs, check_freq=False, check_index_type=False, rtol=1e-12
    )
