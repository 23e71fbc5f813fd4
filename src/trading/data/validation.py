"""Check OHLCV frames for bad values and summarise their coverage (bars, timeframe, gaps)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from trading.data.timeframes import timeframe_seconds
from trading.exceptions import DataValidationError

OHLCV_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")

_NS_PER_SECOND = 1_000_000_000
_NS_PER_DAY = 86_400 * _NS_PER_SECOND
_UNIT_SECONDS: tuple[tuple[str, int], ...] = (
    ("w", 604_800),
    ("d", 86_400),
    ("h", 3_600),
    ("m", 60),
    ("s", 1),
)


class Gap(NamedTuple):
    """A stretch of missing bars: `start` is the last bar before it, `end` the first bar after."""

    start: pd.Timestamp
    end: pd.Timestamp
    missing_bars: int


@dataclass
class DataReport:
    """What a validated OHLCV frame contains; gaps and zero-volume bars are facts, not errors."""

    source: str
    bars: int
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    timeframe: str | None
    gaps: list[Gap] = field(default_factory=list)
    zero_volume_bars: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def missing_bars(self) -> int:
        """Return the number of bars missing across all gaps."""
        return sum(g.missing_bars for g in self.gaps)

    def summary(self, max_gaps: int = 5) -> str:
        """Return a short human-readable description, listing at most `max_gaps` gaps."""
        if self.bars == 0:
            return f"{self.source}: no bars"
        tf = self.timeframe or "unknown timeframe"
        lines = [f"{self.source}: {self.bars:,} bars of {tf}, {self.start} .. {self.end}"]
        if self.gaps:
            lines.append(
                f"{len(self.gaps):,} gap{'s' if len(self.gaps) != 1 else ''}, "
                f"{self.missing_bars:,} missing bar{'s' if self.missing_bars != 1 else ''}:"
            )
            # List the largest gaps: they are the ones a trader needs to look at first.
            biggest = sorted(self.gaps, key=lambda g: (-g.missing_bars, g.start))[:max_gaps]
            for g in sorted(biggest, key=lambda g: g.start):
                lines.append(f"  {g.start} -> {g.end} ({g.missing_bars:,} missing)")
            if len(self.gaps) > max_gaps:
                lines.append(f"  ... and {len(self.gaps) - max_gaps:,} smaller gaps")
        else:
            lines.append("no gaps")
        lines.append(f"{self.zero_volume_bars:,} zero-volume bars")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def format_timeframe(seconds: int) -> str:
    """Format a bar length in seconds as a timeframe string (3600 -> ``"1h"``, 300 -> ``"5m"``)."""
    if seconds <= 0:
        raise ValueError(f"bar length must be positive, got {seconds} s")
    for unit, size in _UNIT_SECONDS:
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise AssertionError("unreachable: every integer is a multiple of 1 s")


def _index_ns(index: pd.DatetimeIndex) -> np.ndarray:
    """Return the index as int64 nanoseconds since the epoch (NaT as int64 min)."""
    return index.as_unit("ns").asi8


def _mode_spacing_ns(ns: np.ndarray) -> int | None:
    """Return the most common positive spacing between consecutive timestamps."""
    if len(ns) < 2:
        return None
    diffs = np.diff(ns)
    diffs = diffs[diffs > 0]
    if len(diffs) == 0:
        return None
    values, counts = np.unique(diffs, return_counts=True)
    # np.unique sorts ascending, so argmax picks the shortest spacing on a tie.
    return int(values[np.argmax(counts)])


def infer_timeframe(index: pd.DatetimeIndex) -> str | None:
    """Return the most common bar spacing as a timeframe string, or None if it cannot be told."""
    ns = _index_ns(pd.DatetimeIndex(index))
    ns = ns[ns != np.iinfo(np.int64).min]
    mode = _mode_spacing_ns(ns)
    if mode is None or mode % _NS_PER_SECOND:
        return None
    return format_timeframe(mode // _NS_PER_SECOND)


def _nearest_dates(ns: np.ndarray) -> np.ndarray:
    """Round UTC timestamps to the nearest midnight and return them as datetime64[D].

    Daily bars stamped at local midnight sit up to 12 h either side of UTC midnight
    (Berlin's Monday is Sunday 23:00 UTC); rounding recovers the calendar day they mean.
    """
    return ((ns + _NS_PER_DAY // 2) // _NS_PER_DAY).astype("datetime64[D]")


def _has_weekend_bars(ns: np.ndarray) -> bool:
    """Tell whether any bar falls on a Saturday or Sunday (by its nearest calendar day)."""
    if len(ns) == 0:
        return False
    return bool((~np.is_busday(_nearest_dates(ns))).any())


def _find_gaps(index: pd.DatetimeIndex, ns: np.ndarray, tf_ns: int) -> list[Gap]:
    """Return gaps where consecutive bars are more than one bar apart."""
    if len(ns) < 2:
        return []
    if tf_ns == _NS_PER_DAY and not _has_weekend_bars(ns):
        # A Mon-Fri calendar: only missing weekdays (holidays, outages) are gaps.
        days = _nearest_dates(ns)
        missing = np.busday_count(days[:-1] + np.timedelta64(1, "D"), days[1:])
    else:
        # Round to whole bars so a DST shift of an hour in local-midnight daily data
        # (23 h or 25 h spacing) does not count as a gap.
        missing = np.rint(np.diff(ns) / tf_ns).astype(np.int64) - 1
    positions = np.flatnonzero(missing >= 1)
    # Index whole arrays at once: per-gap index lookups cost ~10 us each.
    starts, ends = index[positions], index[positions + 1]
    return [Gap(a, b, m) for a, b, m in zip(starts, ends, missing[positions].tolist(), strict=True)]


def _fmt(value: object) -> str:
    """Format a cell value so the user can find it in the file."""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


class _Problems:
    """Collect problems as (position, order, message-builder) and keep the total count."""

    def __init__(self, max_listed: int) -> None:
        self.max_listed = max_listed
        self.total = 0
        self._items: list[tuple[int, int, str]] = []
        self._order = 0

    def add_mask(self, mask: np.ndarray, describe: Callable[[int], str]) -> None:
        """Record every row where `mask` is true; build messages only for the first few."""
        positions = np.flatnonzero(mask)
        self.total += len(positions)
        self._order += 1
        # Only the first max_listed of each check can end up in the first max_listed overall.
        for p in positions[: self.max_listed]:
            self._items.append((int(p), self._order, describe(int(p))))

    def add(self, message: str) -> None:
        """Record a problem that concerns the whole frame rather than one row."""
        self.total += 1
        self._order += 1
        self._items.append((-1, self._order, message))

    def listed(self) -> list[str]:
        """Return the first `max_listed` problems in file order."""
        return [msg for _, _, msg in sorted(self._items)[: self.max_listed]]


def _line_numbers(df: pd.DataFrame) -> np.ndarray | None:
    """Return the CSV line number of each row, if the frame carries that information."""
    if "line" in df.columns:
        return np.asarray(df["line"])
    first = df.attrs.get("first_line")
    if first is None:
        return None
    anchor = df.attrs.get("line_anchor")
    # The loader records (rows, first, last); a sliced or re-sorted frame no longer
    # matches, and naming wrong lines would send the user to the wrong place.
    if anchor is not None and len(df) and anchor != (len(df), df.index[0], df.index[-1]):
        return None
    return np.arange(len(df), dtype=np.int64) + int(first)


def validate_ohlcv(
    df: pd.DataFrame,
    source: str,
    *,
    timeframe: str | None = None,
    max_listed: int = 20,
) -> DataReport:
    """Check `df` for bad rows and return its DataReport; raise DataValidationError listing them.

    Rows are named by CSV line when a ``line`` column or ``df.attrs["first_line"]`` tells it.
    Gaps never raise: they are listed in the report.
    """
    return _validate(df, source, timeframe=timeframe, max_listed=max_listed, lines=None)


def _validate(
    df: pd.DataFrame,
    source: str,
    *,
    timeframe: str | None,
    max_listed: int,
    lines: np.ndarray | None,
) -> DataReport:
    """Validate with an explicit line-number array (the loader knows it after dropping blanks)."""
    if not isinstance(df.index, pd.DatetimeIndex):
        raise TypeError(
            f"{source}: expected a DatetimeIndex, got {type(df.index).__name__}; "
            "load data with trading.data.load_csv"
        )
    missing_cols = [c for c in OHLCV_COLUMNS if c not in df.columns]
    if missing_cols:
        raise DataValidationError(source, [f"missing column(s): {', '.join(missing_cols)}"])
    if timeframe is not None:
        timeframe_seconds(timeframe)  # reject a malformed timeframe before any work
    if lines is None:
        lines = _line_numbers(df)

    index = df.index
    ns = _index_ns(index)
    values = {c: np.asarray(df[c], dtype=np.float64) for c in OHLCV_COLUMNS}
    o, h, lo, c, v = (values[k] for k in OHLCV_COLUMNS)

    def where(p: int) -> str:
        ts = index[p]
        if lines is not None:
            return f"line {int(lines[p])} ({ts})"
        return f"row {p} ({ts})"

    problems = _Problems(max_listed)
    nat = ns == np.iinfo(np.int64).min
    problems.add_mask(nat, lambda p: f"{where(p)}: timestamp is missing")
    for col in OHLCV_COLUMNS:
        problems.add_mask(np.isnan(values[col]), lambda p, col=col: f"{where(p)}: {col} is NaN")
    for col in PRICE_COLUMNS:
        x = values[col]
        problems.add_mask(x <= 0, lambda p, col=col, x=x: f"{where(p)}: {col} {_fmt(x[p])} <= 0")
    problems.add_mask(v < 0, lambda p: f"{where(p)}: volume {_fmt(v[p])} < 0")
    problems.add_mask(h < lo, lambda p: f"{where(p)}: high {_fmt(h[p])} < low {_fmt(lo[p])}")
    problems.add_mask(h < o, lambda p: f"{where(p)}: high {_fmt(h[p])} < open {_fmt(o[p])}")
    problems.add_mask(h < c, lambda p: f"{where(p)}: high {_fmt(h[p])} < close {_fmt(c[p])}")
    problems.add_mask(lo > o, lambda p: f"{where(p)}: low {_fmt(lo[p])} > open {_fmt(o[p])}")
    problems.add_mask(lo > c, lambda p: f"{where(p)}: low {_fmt(lo[p])} > close {_fmt(c[p])}")

    valid_ns = ~nat
    dup = np.asarray(index.duplicated(keep="first")) & valid_ns

    def describe_dup(p: int) -> str:
        first = int(np.flatnonzero(ns == ns[p])[0])
        other = f"line {int(lines[first])}" if lines is not None else f"row {first}"
        return f"{where(p)}: duplicate timestamp (first seen at {other})"

    problems.add_mask(dup, describe_dup)

    backwards = np.zeros(len(ns), dtype=bool)
    if len(ns) > 1:
        backwards[1:] = (ns[1:] < ns[:-1]) & valid_ns[1:] & valid_ns[:-1]
    problems.add_mask(
        backwards, lambda p: f"{where(p)}: timestamp earlier than the previous row ({index[p - 1]})"
    )

    if problems.total:
        raise DataValidationError(source, problems.listed(), problems.total)

    warnings: list[str] = []
    inferred = infer_timeframe(index)
    if (
        timeframe is not None
        and inferred is not None
        and timeframe_seconds(inferred) != timeframe_seconds(timeframe)
    ):
        warnings.append(
            f"timeframe {timeframe} was given but the most common bar spacing is {inferred}"
        )
    used_tf = timeframe if timeframe is not None else inferred
    gaps: list[Gap] = []
    if used_tf is not None:
        gaps = _find_gaps(index, ns, timeframe_seconds(used_tf) * _NS_PER_SECOND)
    return DataReport(
        source=source,
        bars=len(df),
        start=index[0] if len(df) else None,
        end=index[-1] if len(df) else None,
        timeframe=used_tf,
        gaps=gaps,
        zero_volume_bars=int(np.count_nonzero(v == 0)),
        warnings=warnings,
    )
