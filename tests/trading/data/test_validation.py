"""Tests for trading.data.validate_ohlcv and DataReport."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trading.data import DataReport, Gap, format_timeframe, infer_timeframe, validate_ohlcv
from trading.exceptions import DataValidationError

GOOD = (100.0, 101.0, 99.0, 100.5, 10.0)


def frame(
    n: int = 6,
    *,
    freq: str = "1h",
    start: str = "2024-01-01",
    index: pd.DatetimeIndex | None = None,
) -> pd.DataFrame:
    """Return n valid bars; first_line=2 as the loader would set for a headered file."""
    if index is None:
        index = pd.date_range(start, periods=n, freq=freq, tz="UTC", name="datetime")
    df = pd.DataFrame(
        [GOOD] * len(index), index=index, columns=["open", "high", "low", "close", "volume"]
    )
    df.attrs["first_line"] = 2
    return df


def problems_of(df: pd.DataFrame, **kwargs: object) -> DataValidationError:
    with pytest.raises(DataValidationError) as info:
        validate_ohlcv(df, "bars.csv", **kwargs)  # type: ignore[arg-type]
    return info.value


# Each case breaks row 3 (CSV line 5, 03:00 UTC) and names the one problem expected.
ROW_CASES = {
    "high below low": (
        {"high": 99.5, "low": 100.2, "open": 100.0, "close": 100.0},
        "high 99.5 < low 100.2",
    ),
    "high below open": ({"high": 100.4, "open": 100.5, "close": 100.0}, "high 100.4 < open 100.5"),
    "high below close": ({"high": 100.4, "close": 100.5}, "high 100.4 < close 100.5"),
    "low above open": ({"low": 100.1, "open": 100.0}, "low 100.1 > open 100.0"),
    "low above close": ({"low": 99.5, "close": 99.4}, "low 99.5 > close 99.4"),
    "zero open": ({"open": 0.0, "low": 0.0}, "open 0.0 <= 0"),
    "negative close": ({"close": -1.0, "low": -1.0}, "close -1.0 <= 0"),
    "negative volume": ({"volume": -3.0}, "volume -3.0 < 0"),
    "NaN close": ({"close": np.nan}, "close is NaN"),
    "NaN volume": ({"volume": np.nan}, "volume is NaN"),
}


@pytest.mark.parametrize(("changes", "message"), ROW_CASES.values(), ids=ROW_CASES.keys())
def test_each_bad_value_is_named_with_line_timestamp_and_value(
    changes: dict[str, float], message: str
) -> None:
    df = frame()
    for col, value in changes.items():
        df.iloc[3, df.columns.get_loc(col)] = value
    error = problems_of(df)
    assert error.source == "bars.csv"
    # low 0 / -1 also trips other checks on purpose; find ours among them.
    assert f"line 5 (2024-01-01 03:00:00+00:00): {message}" in error.problems


def test_every_broken_relation_on_a_row_is_reported() -> None:
    df = frame()
    df.iloc[3, df.columns.get_loc("high")] = 99.5
    df.iloc[3, df.columns.get_loc("low")] = 100.2
    df.iloc[3, df.columns.get_loc("open")] = 100.0
    df.iloc[3, df.columns.get_loc("close")] = 100.0
    # high < low, high < open, high < close, low > open, low > close: all five are true.
    error = problems_of(df)
    assert len(error.problems) == 5
    assert all(p.startswith("line 5 ") for p in error.problems)


def test_duplicate_timestamp_names_the_first_occurrence() -> None:
    index = pd.DatetimeIndex(
        ["2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 01:00", "2024-01-01 02:00"], tz="UTC"
    )
    error = problems_of(frame(index=index))
    assert error.problems == [
        "line 4 (2024-01-01 01:00:00+00:00): duplicate timestamp (first seen at line 3)"
    ]


def test_unsorted_timestamp_is_reported() -> None:
    index = pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 02:00", "2024-01-01 01:00"], tz="UTC")
    error = problems_of(frame(index=index))
    assert error.problems == [
        "line 4 (2024-01-01 01:00:00+00:00): timestamp earlier than the previous row "
        "(2024-01-01 02:00:00+00:00)"
    ]


def test_missing_timestamp_is_reported() -> None:
    index = pd.DatetimeIndex(["2024-01-01 00:00", None, "2024-01-01 02:00"], tz="UTC")
    error = problems_of(frame(index=index))
    assert error.problems == ["line 3 (NaT): timestamp is missing"]


def test_all_problems_are_collected_in_line_order_and_counted() -> None:
    df = frame(30)
    df["volume"] = -1.0  # 30 problems
    df.iloc[0, df.columns.get_loc("close")] = np.nan  # 1 more, on the first row
    error = problems_of(df, max_listed=5)
    assert error.problems[0] == "line 2 (2024-01-01 00:00:00+00:00): close is NaN"
    assert error.problems[1] == "line 2 (2024-01-01 00:00:00+00:00): volume -1.0 < 0"
    assert error.problems[4] == "line 5 (2024-01-01 03:00:00+00:00): volume -1.0 < 0"
    assert len(error.problems) == 5
    assert "31 data problems" in str(error)
    assert "... and 26 more" in str(error)


def test_rows_are_named_by_position_without_line_information() -> None:
    df = frame()
    del df.attrs["first_line"]
    df.iloc[2, df.columns.get_loc("volume")] = -1.0
    assert problems_of(df).problems == ["row 2 (2024-01-01 02:00:00+00:00): volume -1.0 < 0"]


def test_line_column_gives_the_line_numbers() -> None:
    df = frame(3)
    df["line"] = [10, 20, 30]
    df.iloc[1, df.columns.get_loc("volume")] = -1.0
    assert problems_of(df).problems == ["line 20 (2024-01-01 01:00:00+00:00): volume -1.0 < 0"]


def test_line_numbers_are_dropped_once_a_loaded_frame_is_sliced() -> None:
    df = frame(6)
    df.attrs["line_anchor"] = (len(df), df.index[0], df.index[-1])
    df.iloc[4, df.columns.get_loc("volume")] = -1.0
    assert problems_of(df).problems[0].startswith("line 6 ")
    # After slicing, position 0 is no longer CSV line 2: fall back to positions.
    assert problems_of(df.iloc[2:]).problems == [
        "row 2 (2024-01-01 04:00:00+00:00): volume -1.0 < 0"
    ]


def test_missing_columns_are_an_error() -> None:
    error = problems_of(frame().drop(columns=["volume", "low"]))
    assert error.problems == ["missing column(s): low, volume"]


# --- report ---------------------------------------------------------------------------


def test_clean_frame_report() -> None:
    df = frame(5)
    df.iloc[1, df.columns.get_loc("volume")] = 0.0
    report = validate_ohlcv(df, "bars.csv")
    assert report == DataReport(
        source="bars.csv",
        bars=5,
        start=pd.Timestamp("2024-01-01 00:00", tz="UTC"),
        end=pd.Timestamp("2024-01-01 04:00", tz="UTC"),
        timeframe="1h",
        gaps=[],
        zero_volume_bars=1,
    )


def test_gaps_are_reported_not_fatal() -> None:
    full = pd.date_range("2024-01-01", periods=24, freq="1h", tz="UTC")
    # Drop 03:00-05:00 (3 bars) and 10:00 (1 bar).
    kept = full.delete([3, 4, 5, 10])
    report = validate_ohlcv(frame(index=kept), "bars.csv")
    assert report.gaps == [
        Gap(full[2], full[6], 3),
        Gap(full[9], full[11], 1),
    ]
    assert report.missing_bars == 4
    assert report.bars == 20


def test_given_timeframe_overrides_inference() -> None:
    report = validate_ohlcv(frame(4, freq="1h"), "bars.csv", timeframe="30m")
    # Each 1 h step skips one 30 m bar.
    assert [g.missing_bars for g in report.gaps] == [1, 1, 1]
    assert report.timeframe == "30m"
    assert report.warnings and "most common bar spacing is 1h" in report.warnings[0]


def test_weekdays_only_daily_data_has_no_weekend_gaps() -> None:
    # Mon 2024-01-01 .. Fri 2024-01-19, three weeks of business days, minus Tue 2024-01-09.
    days = pd.bdate_range("2024-01-01", "2024-01-19", tz="UTC")
    kept = days[days != pd.Timestamp("2024-01-09", tz="UTC")]
    report = validate_ohlcv(frame(index=kept), "bars.csv")
    assert report.timeframe == "1d"
    assert report.gaps == [
        Gap(pd.Timestamp("2024-01-08", tz="UTC"), pd.Timestamp("2024-01-10", tz="UTC"), 1)
    ]


def test_daily_data_with_weekend_bars_counts_missing_weekends() -> None:
    days = pd.date_range("2024-01-01", "2024-01-14", freq="1D", tz="UTC")
    # Drop Saturday 6th and Sunday 7th; Saturday 13th keeps the series 7-days-a-week.
    kept = days.delete([5, 6])
    report = validate_ohlcv(frame(index=kept), "bars.csv")
    assert report.gaps == [Gap(days[4], days[7], 2)]


def test_local_midnight_daily_bars_across_dst_have_no_gaps() -> None:
    # Berlin trading days around the 2024-03-31 DST switch, stored in UTC: Friday is
    # 23:00 UTC the day before, the following Monday 22:00 UTC. Spacing is 71 h.
    local = pd.bdate_range("2024-03-25", "2024-04-05").tz_localize("Europe/Berlin")
    report = validate_ohlcv(frame(index=local.tz_convert("UTC")), "bars.csv")
    assert report.timeframe == "1d"
    assert report.gaps == []


def test_summary_mentions_bars_gaps_and_zero_volume() -> None:
    full = pd.date_range("2024-01-01", periods=10, freq="1h", tz="UTC")
    df = frame(index=full.delete([4, 5]))
    df.iloc[0, df.columns.get_loc("volume")] = 0.0
    text = validate_ohlcv(df, "bars.csv").summary()
    assert "bars.csv: 8 bars of 1h" in text
    assert "1 gap, 2 missing bars" in text
    assert f"{full[3]} -> {full[6]} (2 missing)" in text
    assert "1 zero-volume bars" in text


def test_empty_frame_report() -> None:
    report = validate_ohlcv(frame(0), "bars.csv")
    assert (report.bars, report.start, report.end, report.timeframe) == (0, None, None, None)
    assert report.summary() == "bars.csv: no bars"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1, "1s"),
        (90, "90s"),
        (300, "5m"),
        (3600, "1h"),
        (14_400, "4h"),
        (86_400, "1d"),
        (604_800, "1w"),
        (5_400, "90m"),
    ],
)
def test_format_timeframe(seconds: int, text: str) -> None:
    assert format_timeframe(seconds) == text


def test_infer_timeframe_uses_the_most_common_spacing() -> None:
    index = pd.date_range("2024-01-01", periods=50, freq="5min", tz="UTC")
    index = index.delete([3, 7, 8, 20])  # gaps make 10 and 15 minute spacings
    assert infer_timeframe(index) == "5m"
    assert infer_timeframe(index[:1]) is None


def test_missing_day_across_a_dst_switch_is_one_gap() -> None:
    # 7-day-a-week daily bars at Berlin midnight; Sunday 2024-03-31 (the DST switch) is
    # missing. In UTC, Saturday is 2024-03-29 23:00 and Monday 2024-03-31 22:00: 47 h,
    # which is one missing 24 h bar, not zero.
    local = pd.date_range("2024-03-27", "2024-04-03", freq="1D", tz="Europe/Berlin")
    kept = local[local.day != 31].tz_convert("UTC")
    report = validate_ohlcv(frame(index=kept), "bars.csv")
    assert report.gaps == [Gap(kept[3], kept[4], 1)]
