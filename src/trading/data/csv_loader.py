"""Load OHLCV bars from generic, Yahoo and Binance CSV files into the canonical frame.

The canonical frame has a tz-aware UTC ``DatetimeIndex`` named ``datetime`` (each bar
labelled by its open time) and float64 columns ``open, high, low, close, volume``.
"""

from __future__ import annotations

import csv
import errno
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from trading.data.validation import OHLCV_COLUMNS, _Problems, _validate
from trading.exceptions import DataValidationError

# Priority order: a file with both `datetime` and `date` columns is timed by `datetime`.
_TIME_NAMES: tuple[str, ...] = ("datetime", "timestamp", "open_time", "date", "time")
_ADJ_CLOSE_NAMES: tuple[str, ...] = ("adj_close", "adjclose", "adjusted_close")
BINANCE_COLUMNS: tuple[str, ...] = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base",
    "taker_buy_quote",
    "ignore",
)
ACCEPTED_FORMATS = (
    "generic: a header with a time column (datetime, date, time, timestamp or open_time; "
    "or separate Date and Time columns) plus open, high, low, close and optional volume; "
    "Yahoo: Date,Open,High,Low,Close,Adj Close,Volume; "
    "Binance klines: 12 numeric columns without a header "
    "(open_time,open,high,low,close,volume,close_time,...) or with that header"
)
_TIME_HINT = "expected ISO 8601 such as 2020-01-01 13:00:00, or epoch seconds/ms/us"
_LISTED = 20

# Epoch magnitude bands: below 1e11 is seconds (until year 5138), below 1e14 milliseconds,
# below 1e17 microseconds, else nanoseconds. Milliseconds before March 1973 would be read
# as seconds, which no market data needs.
_EPOCH_BANDS: tuple[tuple[float, int], ...] = ((1e11, 10**9), (1e14, 10**6), (1e17, 10**3))
_INT64_NS_LIMIT = 9.2e18
_NAT = np.iinfo(np.int64).min
# An explicit offset ends the string: Z, +01, +0100 or +01:00 after a time of day.
_OFFSET_RE = r"\d:\d\d(?::\d\d(?:\.\d+)?)?\s*(?:Z|z|[+-]\d\d(?::?\d\d)?)$"


@dataclass
class _Layout:
    """Where the data of one CSV file lives (columns are positions in the file)."""

    fmt: str
    has_header: bool
    time_cols: list[int]
    cols: dict[str, int]
    names: dict[int, str] = field(default_factory=dict)


def _norm(name: str) -> str:
    """Normalise a header name: ``" Adj Close"`` -> ``"adj_close"``."""
    return re.sub(r"[\s\-]+", "_", name.strip().strip('"').strip().lower())


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _unrecognised(source: str, fields: list[str], why: str) -> DataValidationError:
    hint = ""
    if len(fields) == 1 and any(sep in fields[0] for sep in (";", "\t", "|")):
        hint = " (only comma-separated files are supported)"
    elif fields and sum(_is_number(f) for f in fields[1:]) >= 4:
        hint = (
            " (this looks like a data row: add a header line such as "
            "datetime,open,high,low,close,volume)"
        )
    return DataValidationError(
        source,
        [f"unrecognised header {fields!r}: {why}{hint}. Accepted formats: {ACCEPTED_FORMATS}"],
    )


def _detect_layout(source: str, first_line: str) -> _Layout:
    """Work out the file format from its first line."""
    fields = next(csv.reader([first_line]), [])
    if not fields:
        raise DataValidationError(source, ["the first line is empty; expected a header row"])
    if _is_number(fields[0]):
        if len(fields) == len(BINANCE_COLUMNS) and all(_is_number(f) for f in fields):
            cols = {name: BINANCE_COLUMNS.index(name) for name in OHLCV_COLUMNS}
            names = {i: BINANCE_COLUMNS[i] for i in range(6)}
            return _Layout("binance", False, [0], cols, names)
        raise _unrecognised(
            source, fields, f"no header and {len(fields)} columns (Binance klines have 12)"
        )

    norm = [_norm(f) for f in fields]
    positions: dict[str, int] = {}
    for i, n in enumerate(norm):
        if n in positions:
            raise _unrecognised(source, fields, f"column {fields[i]!r} appears twice")
        positions[n] = i
    names = {i: f.strip() for i, f in enumerate(fields)}

    missing = [c for c in ("open", "high", "low", "close") if c not in positions]
    if "date" in positions and "time" in positions and "datetime" not in positions:
        time_cols = [positions["date"], positions["time"]]
    else:
        found = next((n for n in _TIME_NAMES if n in positions), None)
        if found is None:
            missing.insert(0, "a time column")
        time_cols = [positions[found]] if found is not None else []
    if missing:
        raise _unrecognised(source, fields, f"missing {', '.join(missing)}")

    cols = {c: positions[c] for c in OHLCV_COLUMNS if c in positions}
    adj = next((n for n in _ADJ_CLOSE_NAMES if n in positions), None)
    if adj is not None:
        cols["adj_close"] = positions[adj]
        fmt = "yahoo"
    elif "open_time" in positions and "close_time" in positions:
        fmt = "binance"
    else:
        fmt = "generic"
    return _Layout(fmt, True, time_cols, cols, names)


def _epoch_to_ns(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert epoch numbers of any unit (by magnitude, per value) to int64 ns; return (ns, bad)."""
    f = values.astype(np.float64, copy=False)
    bad = ~np.isfinite(f)
    mag = np.abs(np.where(bad, 0.0, f))
    mult = np.ones(len(f), dtype=np.int64)
    for limit, m in reversed(_EPOCH_BANDS):
        mult[mag < limit] = m
    bad |= mag * mult >= _INT64_NS_LIMIT
    if np.issubdtype(values.dtype, np.integer):
        ns = np.where(bad, 0, values.astype(np.int64)) * mult
    else:
        # Split off the whole part so millisecond stamps stay exact: 1.6e12 ms * 1e6 as a
        # float would be off by up to 128 ns and miss the bar grid.
        safe = np.where(bad, 0.0, f)
        whole = np.floor(safe)
        ns = whole.astype(np.int64) * mult + np.rint((safe - whole) * mult).astype(np.int64)
    return ns, bad


def _localize(naive: pd.DatetimeIndex, tz: str) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """Read naive wall-clock times in `tz`; return UTC times and masks (nonexistent, ambiguous)."""
    none = np.zeros(len(naive), dtype=bool)
    if tz.upper() == "UTC":
        return naive.tz_localize("UTC"), none, none
    try:
        # "infer" resolves the repeated hour of a fall-back night from the row order.
        local = naive.tz_localize(tz, ambiguous="infer", nonexistent="raise")
        return local.tz_convert("UTC"), none, none.copy()
    except ValueError:
        pass
    # Some wall-clock times fall in a DST change; find exactly which ones to report.
    given = ~np.asarray(naive.isna())
    nonexistent = given & np.asarray(
        naive.tz_localize(tz, ambiguous=np.zeros(len(naive), dtype=bool), nonexistent="NaT").isna()
    )
    local = naive.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    ambiguous = given & np.asarray(local.isna()) & ~nonexistent
    return local.tz_convert("UTC"), nonexistent, ambiguous


@dataclass
class _Times:
    """Parsed timestamps (int64 ns UTC) and masks of the cells that could not be used."""

    ns: np.ndarray
    unparseable: np.ndarray
    nonexistent: np.ndarray
    ambiguous: np.ndarray


def _iso_to_ns(text: pd.Series, tz: str) -> _Times:
    """Parse ISO 8601 strings; naive ones are wall-clock times in `tz`."""
    none = np.zeros(len(text), dtype=bool)
    try:
        idx = pd.DatetimeIndex(pd.to_datetime(text, format="ISO8601", errors="coerce"))
    except ValueError:
        # Mixed offsets (e.g. +01:00 and +02:00 across DST) or a mix of naive and offset
        # strings: parse the two kinds separately.
        has_offset = np.asarray(text.str.contains(_OFFSET_RE, regex=True, na=False), dtype=bool)
        aware = pd.DatetimeIndex(
            pd.to_datetime(text[has_offset], format="ISO8601", errors="coerce", utc=True)
        )
        naive = pd.DatetimeIndex(
            pd.to_datetime(text[~has_offset], format="ISO8601", errors="coerce")
        )
        wall, nonexistent_naive, ambiguous_naive = _localize(naive, tz)
        ns = np.empty(len(text), dtype=np.int64)
        ns[has_offset] = aware.as_unit("ns").asi8
        ns[~has_offset] = wall.as_unit("ns").asi8
        nonexistent, ambiguous = none.copy(), none.copy()
        nonexistent[~has_offset] = nonexistent_naive
        ambiguous[~has_offset] = ambiguous_naive
    else:
        if idx.tz is None:
            idx, nonexistent, ambiguous = _localize(idx, tz)
        else:
            idx, nonexistent, ambiguous = idx.tz_convert("UTC"), none, none
        ns = idx.as_unit("ns").asi8.copy()
    unparseable = (ns == _NAT) & ~nonexistent & ~ambiguous
    return _Times(ns, unparseable, nonexistent, ambiguous)


def _parse_time(raw: pd.Series, tz: str) -> _Times:
    """Parse a time column of ISO strings or epoch numbers (s, ms, us or ns by magnitude)."""
    none = np.zeros(len(raw), dtype=bool)
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        ns, bad = _epoch_to_ns(raw.to_numpy())
        return _Times(ns, bad, none, none)
    # Decide epoch vs ISO on a sample: running to_numeric over a million ISO strings
    # would cost more than parsing them. A majority of numbers decides, so an epoch
    # file with a stray bad cell (read as text) still takes the epoch path.
    sample = raw.iloc[:1000].dropna()
    if pd.to_numeric(sample, errors="coerce").notna().sum() * 2 > len(sample):
        numeric = pd.to_numeric(raw, errors="coerce")
        ns, bad = _epoch_to_ns(numeric.to_numpy(dtype=np.float64, na_value=np.nan))
        return _Times(ns, bad, none, none)
    return _iso_to_ns(raw, tz)


def _parse_number(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Return the column as float64 (empty cells NaN) and a mask of cells that are not numbers."""
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        return raw.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(len(raw), dtype=bool)
    numeric = pd.to_numeric(raw, errors="coerce")
    bad = np.asarray(numeric.isna() & raw.notna() & (raw.astype("str").str.strip() != ""))
    return numeric.to_numpy(dtype=np.float64, na_value=np.nan), bad


def _yahoo_adjust(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Apply the split/dividend adjustment of backtrader's YahooFinanceCSVData, unrounded.

    ``f = Close / AdjClose``; open, high, low are divided by f, close becomes AdjClose and
    volume is multiplied by f.
    """
    close, adj = values["close"], values["adj_close"]
    factor = close / adj
    high = values["high"] / factor
    low = values["low"] / factor
    # AdjClose is not exactly Close / f in floating point, so a raw bar with High == Close
    # can come out with high one ulp below close. Keep the raw file's ordering instead of
    # inventing a validation error (backtrader hides this by rounding to 2 decimals).
    high = np.where(values["high"] >= close, np.maximum(high, adj), high)
    low = np.where(values["low"] <= close, np.minimum(low, adj), low)
    return {
        "open": values["open"] / factor,
        "high": high,
        "low": low,
        "close": adj.copy(),
        "volume": values["volume"] * factor,
    }


def _check_tz(tz: str) -> None:
    try:
        pd.Timestamp("2000-01-01").tz_localize(tz)
    except Exception as exc:  # zoneinfo raises KeyError subclasses, pandas ValueError
        raise ValueError(
            f"unknown time zone {tz!r}: use an IANA name such as 'UTC' or 'Europe/Berlin'"
        ) from exc


def _read_first_line(path: Path, source: str) -> str:
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as fh:
            line = fh.readline()
    except UnicodeDecodeError as exc:
        raise DataValidationError(source, [f"not a UTF-8 text file ({exc.reason})"]) from exc
    if not line.strip():
        raise DataValidationError(
            source, ["the file is empty or starts with a blank line; expected a header row"]
        )
    return line.rstrip("\r\n")


def load_csv(
    path: str | os.PathLike[str],
    *,
    tz: str = "UTC",
    adjust: bool = True,
    validate: bool = True,
    timeframe: str | None = None,
) -> pd.DataFrame:
    """Load a generic, Yahoo or Binance OHLCV CSV file into the canonical UTC frame.

    Naive timestamps are read as wall-clock times in `tz`; epoch numbers and strings with
    an offset are absolute. With `adjust`, Yahoo prices are split/dividend adjusted like
    backtrader's YahooFinanceCSVData (without rounding). With `validate`, the frame is
    checked by `validate_ohlcv` and its DataReport stored in ``df.attrs["data_report"]``.
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        reason = "is a directory, not a CSV file" if path.is_dir() else "CSV file not found"
        raise FileNotFoundError(errno.ENOENT, reason, source)
    _check_tz(tz)
    layout = _detect_layout(source, _read_first_line(path, source))
    if not adjust:
        # Raw prices: Adj Close is neither read nor checked.
        layout.cols.pop("adj_close", None)
    first_line = 2 if layout.has_header else 1

    if layout.has_header:
        # Read every column under its header position so a row with more fields than the
        # header (a shifted row) is a parse error rather than silently misread.
        shape: dict[str, object] = {"names": list(range(len(layout.names))), "index_col": False}
    else:
        # Headerless Binance files: only the first six of twelve columns matter, and
        # skipping the rest halves the parse time.
        shape = {"usecols": sorted(set(layout.time_cols) | set(layout.cols.values()))}
    # Date and Time of the split form are joined as text: read them as text so a time
    # like 0930 keeps its leading zero.
    dtype = {c: "str" for c in layout.time_cols} if len(layout.time_cols) == 2 else None
    try:
        raw = pd.read_csv(
            path,
            header=None,
            skiprows=1 if layout.has_header else 0,
            dtype=dtype,
            **shape,  # type: ignore[arg-type]
            # Keep blank lines as empty rows so row i is always line i + first_line.
            skip_blank_lines=False,
            encoding="utf-8-sig",
            engine="c",
        )
    except pd.errors.EmptyDataError as exc:
        raise DataValidationError(source, ["the file has no data rows"]) from exc
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataValidationError(source, [f"cannot parse the CSV: {exc}"]) from exc

    lines = np.arange(len(raw), dtype=np.int64) + first_line
    blank = np.asarray(raw.isna().all(axis=1))
    if blank.any():
        raw = raw.loc[~blank].reset_index(drop=True)
        lines = lines[~blank]
    if len(raw) == 0:
        raise DataValidationError(source, ["the file has no data rows"])

    problems = _Problems(_LISTED)

    def where(p: int) -> str:
        return f"line {int(lines[p])}"

    if len(layout.time_cols) == 2:
        d, t = (raw[c] for c in layout.time_cols)
        time_raw = d.str.strip() + " " + t.str.strip()
        time_name = f"{layout.names[layout.time_cols[0]]}+{layout.names[layout.time_cols[1]]}"
    else:
        time_raw = raw[layout.time_cols[0]]
        time_name = layout.names[layout.time_cols[0]]
    times = _parse_time(time_raw, tz)
    ns = times.ns
    empty = np.asarray(time_raw.isna())

    def cell(p: int) -> str:
        return f"{where(p)}: {time_name} {str(time_raw.iloc[p])!r}"

    problems.add_mask(times.unparseable & empty, lambda p: f"{where(p)}: {time_name} is empty")
    problems.add_mask(
        times.unparseable & ~empty,
        lambda p: f"{cell(p)} is not a valid timestamp ({_TIME_HINT})",
    )
    problems.add_mask(
        times.nonexistent,
        lambda p: (
            f"{cell(p)} does not exist in {tz} (clocks jump forward there); "
            f"is the file really in {tz} local time?"
        ),
    )
    problems.add_mask(
        times.ambiguous,
        lambda p: (
            f"{cell(p)} occurs twice in {tz} (clocks fall back) and the row order "
            "does not tell which is meant; store such data in UTC or with an offset"
        ),
    )

    values: dict[str, np.ndarray] = {}
    unparseable: dict[str, np.ndarray] = {}
    for name, col in layout.cols.items():
        values[name], bad = _parse_number(raw[col])
        unparseable[name] = bad
        problems.add_mask(
            bad,
            lambda p, col=col: (
                f"{where(p)}: {layout.names[col]} {str(raw[col].iloc[p])!r} is not a number"
            ),
        )
    if "volume" not in values:
        values["volume"] = np.zeros(len(raw), dtype=np.float64)

    use_adj = layout.fmt == "yahoo" and adjust
    if use_adj:
        adj = values["adj_close"]
        adj_name = layout.names[layout.cols["adj_close"]]
        # A missing or non-positive Adj Close would turn every adjusted price into NaN or
        # 0; name the real culprit instead of five derived columns.
        problems.add_mask(
            np.isnan(adj) & ~unparseable["adj_close"],
            lambda p: f"{where(p)}: {adj_name} is missing",
        )
        problems.add_mask(adj <= 0, lambda p: f"{where(p)}: {adj_name} {float(adj[p])!r} <= 0")

    if problems.total:
        raise DataValidationError(source, problems.listed(), problems.total)

    if use_adj:
        values = _yahoo_adjust(values)

    index = pd.DatetimeIndex(ns.view("datetime64[ns]"), name="datetime").tz_localize("UTC")
    df = pd.DataFrame({c: values[c] for c in OHLCV_COLUMNS}, index=index)
    df.attrs["source"] = source
    df.attrs["format"] = layout.fmt

    if validate:
        report = _validate(df, source, timeframe=timeframe, max_listed=_LISTED, lines=lines)
        df.attrs["data_report"] = report
    elif not df.index.is_monotonic_increasing:
        # The canonical frame is sorted; a stable sort keeps duplicates in file order.
        order = np.argsort(ns, kind="stable")
        df = df.iloc[order]
        lines = lines[order]

    contiguous = bool(np.all(np.diff(lines) == 1))
    if contiguous:
        df.attrs["first_line"] = int(lines[0])
        # validate_ohlcv trusts first_line only while the frame still matches the file.
        df.attrs["line_anchor"] = (len(df), df.index[0], df.index[-1])
    return df
