"""Tests for trading.data.load_csv: formats, time zones, adjustment and error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trading.data import DataReport, load_csv
from trading.exceptions import DataValidationError

# Three hourly bars used by most format tests, as (UTC open time, o, h, l, c, v).
BARS = [
    ("2024-01-01 00:00:00", 100.0, 101.0, 99.0, 100.5, 10.0),
    ("2024-01-01 01:00:00", 100.5, 102.0, 100.0, 101.5, 11.0),
    ("2024-01-01 02:00:00", 101.5, 101.75, 100.25, 100.75, 12.5),
]
EXPECTED_INDEX = pd.DatetimeIndex([b[0] for b in BARS], tz="UTC", name="datetime")
EPOCH_S = [int(ts.timestamp()) for ts in EXPECTED_INDEX]


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def rows(time_values: list[str], *, volume: bool = True) -> str:
    """Format BARS as CSV data lines with the given time cells."""
    out = []
    for t, (_, o, h, lo, c, v) in zip(time_values, BARS, strict=True):
        out.append(f"{t},{o},{h},{lo},{c}" + (f",{v}" if volume else ""))
    return "\n".join(out) + "\n"


def binance_rows(open_times: list[int]) -> str:
    """Format BARS as headerless Binance kline lines (12 columns)."""
    out = []
    for t, (_, o, h, lo, c, v) in zip(open_times, BARS, strict=True):
        close_time = t + (3_600_000 if t < 1e14 else 3_600_000_000) - 1
        out.append(f"{t},{o},{h},{lo},{c},{v},{close_time},{v * c},42,{v / 2},{v * c / 2},0")
    return "\n".join(out) + "\n"


def assert_canonical(df: pd.DataFrame) -> None:
    assert list(df.columns) == ["open", "high", "low", "close", "volume"]
    assert all(dt == np.float64 for dt in df.dtypes)
    assert isinstance(df.index, pd.DatetimeIndex)
    assert str(df.index.tz) == "UTC"
    assert df.index.name == "datetime"
    assert df.index.is_monotonic_increasing


def assert_bars(df: pd.DataFrame, *, volume: bool = True) -> None:
    """Check df holds exactly BARS."""
    assert_canonical(df)
    pd.testing.assert_index_equal(df.index, EXPECTED_INDEX.as_unit("ns"))
    expected = np.array([b[1:] for b in BARS])
    if not volume:
        expected[:, 4] = 0.0
    np.testing.assert_array_equal(df.to_numpy(), expected)


ISO = [b[0] for b in BARS]

FORMAT_CASES = {
    "generic lower-case": "datetime,open,high,low,close,volume\n" + rows(ISO),
    "generic capitalised timestamp": "Timestamp,Open,High,Low,Close,Volume\n" + rows(ISO),
    "generic date column, ISO T and Z": "date,open,high,low,close,volume\n"
    + rows([t.replace(" ", "T") + "Z" for t in ISO]),
    "generic offsets": "time,open,high,low,close,volume\n"
    + rows(["2024-01-01 01:00:00+01:00", "2024-01-01 03:00:00+02:00", "2023-12-31 21:00:00-05:00"]),
    "generic columns reordered": "close,open,datetime,low,high,volume\n"
    + "".join(f"{c},{o},{t},{lo},{h},{v}\n" for t, o, h, lo, c, v in BARS),
    "generic epoch seconds": "timestamp,open,high,low,close,volume\n"
    + rows([str(s) for s in EPOCH_S]),
    "generic epoch milliseconds": "open_time,open,high,low,close,volume\n"
    + rows([str(s * 1000) for s in EPOCH_S]),
    "generic epoch float seconds": "timestamp,open,high,low,close,volume\n"
    + rows([f"{s}.0" for s in EPOCH_S]),
    "split date and time": "Date,Time,Open,High,Low,Close,Volume\n"
    + rows([t.replace(" ", ",") for t in ISO]),
    "BOM and spaces in header": "\ufeff Datetime , Open , High , Low , Close , Volume \n"
    + rows(ISO),
    "binance headerless ms": binance_rows([s * 1000 for s in EPOCH_S]),
    "binance headerless us": binance_rows([s * 1_000_000 for s in EPOCH_S]),
    "binance headerless mixed ms and us": binance_rows(
        [EPOCH_S[0] * 1000, EPOCH_S[1] * 1_000_000, EPOCH_S[2] * 1_000_000]
    ),
    "binance with header": "open_time,open,high,low,close,volume,close_time,quote_volume,"
    "count,taker_buy_volume,taker_buy_quote_volume,ignore\n"
    + binance_rows([s * 1000 for s in EPOCH_S]),
}


@pytest.mark.parametrize("text", FORMAT_CASES.values(), ids=FORMAT_CASES.keys())
def test_each_format_loads_the_same_bars(tmp_path: Path, text: str) -> None:
    df = load_csv(write(tmp_path, text))
    assert_bars(df)


def test_format_is_recorded(tmp_path: Path) -> None:
    generic = load_csv(write(tmp_path, FORMAT_CASES["generic lower-case"], "a.csv"))
    binance = load_csv(write(tmp_path, FORMAT_CASES["binance headerless us"], "b.csv"))
    assert (generic.attrs["format"], binance.attrs["format"]) == ("generic", "binance")


def test_volume_column_is_optional(tmp_path: Path) -> None:
    df = load_csv(write(tmp_path, "datetime,open,high,low,close\n" + rows(ISO, volume=False)))
    assert_bars(df, volume=False)


def test_first_line_is_2_with_header_and_1_without(tmp_path: Path) -> None:
    headed = load_csv(write(tmp_path, FORMAT_CASES["generic lower-case"], "a.csv"))
    headerless = load_csv(write(tmp_path, FORMAT_CASES["binance headerless ms"], "b.csv"))
    assert headed.attrs["first_line"] == 2
    assert headerless.attrs["first_line"] == 1


# --- Yahoo ----------------------------------------------------------------------------

YAHOO = (
    "Date,Open,High,Low,Close,Adj Close,Volume\n"
    "2024-01-02,96.0,104.0,92.0,100.0,25.0,1000\n"  # 4:1 split-adjusted
    "2024-01-03,50.0,52.0,49.0,51.0,51.0,2000\n"  # no adjustment
)


def test_yahoo_adjusts_like_backtrader(tmp_path: Path) -> None:
    df = load_csv(write(tmp_path, YAHOO))
    assert df.attrs["format"] == "yahoo"
    # Row 1: f = Close / AdjClose = 100 / 25 = 4; prices / 4, close = AdjClose, volume * 4.
    # Row 2: f = 51 / 51 = 1, so nothing changes.
    expected = np.array(
        [
            [96.0 / 4, 104.0 / 4, 92.0 / 4, 25.0, 1000 * 4],
            [50.0, 52.0, 49.0, 51.0, 2000.0],
        ]
    )
    np.testing.assert_array_equal(df.to_numpy(), expected)
    assert list(df.index) == list(pd.DatetimeIndex(["2024-01-02", "2024-01-03"], tz="UTC"))


def test_yahoo_without_adjustment_keeps_raw_columns(tmp_path: Path) -> None:
    df = load_csv(write(tmp_path, YAHOO), adjust=False)
    expected = np.array([[96.0, 104.0, 92.0, 100.0, 1000.0], [50.0, 52.0, 49.0, 51.0, 2000.0]])
    np.testing.assert_array_equal(df.to_numpy(), expected)


def test_yahoo_adjustment_keeps_high_equal_to_close(tmp_path: Path) -> None:
    # Real ORCL row: High == Close == 34.00, Adj Close 3.56. In floating point
    # 34.00 / (34.00 / 3.56) is 3.5599999999999996, one ulp below AdjClose; the loader
    # must keep high >= close instead of failing validation on rounding noise.
    text = (
        "Date,Open,High,Low,Close,Volume,Adj Close\n"
        "1996-06-05,33.13,34.00,32.75,34.00,33570400,3.56\n"
    )
    df = load_csv(write(tmp_path, text))
    assert df["close"].iloc[0] == 3.56
    assert df["high"].iloc[0] == df["close"].iloc[0]
    factor = 34.00 / 3.56
    assert df["open"].iloc[0] == pytest.approx(33.13 / factor, rel=1e-15)
    assert df["low"].iloc[0] == pytest.approx(32.75 / factor, rel=1e-15)
    assert df["volume"].iloc[0] == pytest.approx(33570400 * factor, rel=1e-15)


def test_yahoo_empty_adj_close_is_named(tmp_path: Path) -> None:
    text = "Date,Open,High,Low,Close,Adj Close,Volume\n2024-01-02,1,2,0.5,1.5,,10\n"
    with pytest.raises(DataValidationError, match=r"line 2: Adj Close is missing"):
        load_csv(write(tmp_path, text))
    # Without adjustment the column is irrelevant, so the same file loads.
    assert load_csv(write(tmp_path, text), adjust=False)["close"].iloc[0] == 1.5


# --- time zones -----------------------------------------------------------------------


def test_naive_local_times_are_converted_to_utc(tmp_path: Path) -> None:
    text = (
        "datetime,open,high,low,close,volume\n"
        "2024-01-15 10:00:00,1,2,0.5,1.5,1\n"  # CET, UTC+1
        "2024-07-15 10:00:00,1,2,0.5,1.5,1\n"  # CEST, UTC+2
    )
    df = load_csv(write(tmp_path, text), tz="Europe/Berlin")
    expected = pd.DatetimeIndex(["2024-01-15 09:00", "2024-07-15 08:00"], tz="UTC")
    assert list(df.index) == list(expected)


def test_repeated_fall_back_hour_is_resolved_from_row_order(tmp_path: Path) -> None:
    # On 2020-10-25 Berlin clocks go 02:59 CEST -> 02:00 CET, so 02:00 occurs twice.
    local = ["2020-10-25 01:00", "2020-10-25 02:00", "2020-10-25 02:00", "2020-10-25 03:00"]
    text = "datetime,open,high,low,close,volume\n" + "".join(f"{t},1,2,0.5,1.5,1\n" for t in local)
    df = load_csv(write(tmp_path, text), tz="Europe/Berlin")
    expected = pd.date_range("2020-10-24 23:00", periods=4, freq="h", tz="UTC")
    assert list(df.index) == list(expected)
    assert df.attrs["data_report"].gaps == []


def test_nonexistent_local_time_is_an_error_naming_the_line(tmp_path: Path) -> None:
    # 2024-03-31 02:30 never happened in Berlin (clocks jumped from 02:00 to 03:00).
    text = (
        "datetime,open,high,low,close,volume\n"
        "2024-03-31 01:30:00,1,2,0.5,1.5,1\n"
        "2024-03-31 02:30:00,1,2,0.5,1.5,1\n"
    )
    with pytest.raises(DataValidationError) as info:
        load_csv(write(tmp_path, text), tz="Europe/Berlin")
    assert info.value.problems == [
        "line 3: datetime '2024-03-31 02:30:00' does not exist in Europe/Berlin "
        "(clocks jump forward there); is the file really in Europe/Berlin local time?"
    ]


def test_tz_does_not_apply_to_epoch_or_offset_times(tmp_path: Path) -> None:
    epoch = load_csv(
        write(tmp_path, FORMAT_CASES["generic epoch seconds"], "a.csv"), tz="Asia/Tokyo"
    )
    offset = load_csv(write(tmp_path, FORMAT_CASES["generic offsets"], "b.csv"), tz="Asia/Tokyo")
    assert_bars(epoch)
    assert_bars(offset)


def test_mixed_naive_and_offset_times(tmp_path: Path) -> None:
    # Naive cells are Berlin time (UTC+1 in January), offset cells are absolute.
    text = "datetime,open,high,low,close,volume\n" + rows(
        ["2024-01-01 01:00:00", "2024-01-01T01:00:00Z", "2024-01-01 03:00:00"]
    )
    assert_bars(load_csv(write(tmp_path, text), tz="Europe/Berlin"))


def test_unknown_time_zone_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, FORMAT_CASES["generic lower-case"])
    with pytest.raises(ValueError, match="unknown time zone 'Europe/Berln'"):
        load_csv(path, tz="Europe/Berln")


# --- errors ---------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match=r"nope\.csv") as info:
        load_csv(path)
    assert info.value.filename == str(path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("datetime,open,high,close,volume\n2024-01-01,1,2,1,1\n", "missing low"),
        ("when,open,high,low,close\n2024-01-01,1,2,1,1\n", "missing a time column"),
        ("datetime;open;high;low;close\n", "only comma-separated files are supported"),
        ("2024-01-01 00:00:00,1,2,0.5,1.5,10\n", "looks like a data row"),
        ("1704067200000,1,2,0.5,1.5,10\n", "no header and 6 columns (Binance klines have 12)"),
        ("datetime,open,high,low,close,Close\n", "column 'Close' appears twice"),
    ],
    ids=[
        "missing column",
        "no time column",
        "semicolons",
        "headerless generic",
        "short binance",
        "duplicate",
    ],
)
def test_unrecognised_header_names_file_header_and_formats(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(DataValidationError) as info:
        load_csv(path)
    message = str(info.value)
    assert str(path) in message
    assert "unrecognised header [" in message
    assert text.splitlines()[0].split(",")[0].strip() in message
    assert fragment in message
    assert "Accepted formats" in message and "Yahoo" in message and "Binance" in message


def test_unparseable_timestamp_names_line_column_and_value(tmp_path: Path) -> None:
    text = "Datetime,Open,High,Low,Close\n" + rows(
        [ISO[0], "2024-13-45 00:00:00", ISO[2]], volume=False
    )
    path = write(tmp_path, text)
    with pytest.raises(DataValidationError) as info:
        load_csv(path)
    assert info.value.source == str(path)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(
        "line 3: Datetime '2024-13-45 00:00:00' is not a valid timestamp"
    )


def test_unparseable_number_names_line_column_and_value(tmp_path: Path) -> None:
    text = "datetime,open,high,low,close,volume\n" + rows(ISO).replace("101.75", "1O1.75")
    with pytest.raises(DataValidationError) as info:
        load_csv(write(tmp_path, text))
    assert info.value.problems == ["line 4: high '1O1.75' is not a number"]


def test_every_parse_error_is_counted(tmp_path: Path) -> None:
    # 25 bad timestamps and one bad close: 26 problems, the first 20 listed in line order.
    lines = [f"bad{i},1,2,0.5,1.5,1" for i in range(25)] + ["2024-01-01,1,2,0.5,x,1"]
    with pytest.raises(DataValidationError) as info:
        load_csv(write(tmp_path, "datetime,open,high,low,close,volume\n" + "\n".join(lines)))
    assert len(info.value.problems) == 20
    assert info.value.problems[0].startswith("line 2: datetime 'bad0'")
    assert info.value.problems[19].startswith("line 21: datetime 'bad19'")
    assert "26 data problems" in str(info.value)
    assert "... and 6 more" in str(info.value)


def test_empty_binance_epoch_cell_is_reported(tmp_path: Path) -> None:
    text = binance_rows([s * 1000 for s in EPOCH_S])
    broken = text.splitlines()
    broken[1] = "," + broken[1].split(",", 1)[1]
    with pytest.raises(DataValidationError) as info:
        load_csv(write(tmp_path, "\n".join(broken) + "\n"))
    assert info.value.problems == ["line 2: open_time is empty"]


def test_line_numbers_survive_blank_lines(tmp_path: Path) -> None:
    text = (
        "datetime,open,high,low,close,volume\n"
        "2024-01-01 00:00:00,1,2,0.5,1.5,1\n"
        "\n"
        "2024-01-01 01:00:00,1,2,0.5,1.5,1\n"
        "2024-01-01 02:00:00,1,0.4,0.5,1.5,1\n"  # line 5: high < low
        "\n"
    )
    with pytest.raises(DataValidationError) as info:
        load_csv(write(tmp_path, text))
    assert info.value.problems[0] == "line 5 (2024-01-01 02:00:00+00:00): high 0.4 < low 0.5"


def test_validation_errors_name_the_csv_line(tmp_path: Path) -> None:
    text = "datetime,open,high,low,close,volume\n" + rows(ISO).replace(",12.5", ",-12.5")
    with pytest.raises(DataValidationError) as info:
        load_csv(write(tmp_path, text))
    assert info.value.problems == ["line 4 (2024-01-01 02:00:00+00:00): volume -12.5 < 0"]


@pytest.mark.parametrize(
    "text",
    ["", "datetime,open,high,low,close,volume\n", "datetime,open,high,low,close,volume\n\n\n"],
    ids=["empty file", "header only", "header and blank lines"],
)
def test_file_without_data_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(DataValidationError, match=r"empty|no data rows"):
        load_csv(write(tmp_path, text))


# --- validation hook ------------------------------------------------------------------


def test_report_is_attached(tmp_path: Path) -> None:
    text = "datetime,open,high,low,close,volume\n" + rows([ISO[0], ISO[1], "2024-01-01 05:00:00"])
    df = load_csv(write(tmp_path, text))
    report = df.attrs["data_report"]
    assert isinstance(report, DataReport)
    assert report.bars == 3
    assert report.timeframe == "1h"
    # 01:00 -> 05:00 misses 02:00, 03:00 and 04:00.
    assert [(g.start.hour, g.end.hour, g.missing_bars) for g in report.gaps] == [(1, 5, 3)]


def test_given_timeframe_is_used_for_gaps(tmp_path: Path) -> None:
    df = load_csv(write(tmp_path, FORMAT_CASES["generic lower-case"]), timeframe="30m")
    report = df.attrs["data_report"]
    assert report.timeframe == "30m"
    assert [g.missing_bars for g in report.gaps] == [1, 1]
    assert report.warnings == ["timeframe 30m was given but the most common bar spacing is 1h"]


def test_unsorted_file_fails_validation_but_loads_sorted_without_it(tmp_path: Path) -> None:
    lines = rows(ISO).splitlines()
    text = "datetime,open,high,low,close,volume\n" + "\n".join([lines[1], lines[0], lines[2]])
    path = write(tmp_path, text)
    with pytest.raises(
        DataValidationError, match=r"line 3 \(2024-01-01 00:00:00\+00:00\): timestamp earlier"
    ):
        load_csv(path)
    df = load_csv(path, validate=False)
    assert_bars(df)
    assert "data_report" not in df.attrs
    # Rows moved, so positions no longer map to lines.
    assert "first_line" not in df.attrs


def test_row_with_more_fields_than_the_header_is_an_error(tmp_path: Path) -> None:
    text = "datetime,open,high,low,close\n2024-01-01,1,2,0.5,1.5\n2024-01-02,1,2,0.5,1.5,7,8\n"
    with pytest.raises(DataValidationError, match="Expected 5 fields in line 3, saw 7"):
        load_csv(write(tmp_path, text))
