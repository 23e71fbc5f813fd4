"""Aggregate OHLCV bars to a coarser timeframe without lookahead."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trading.data.timeframes import timeframe_seconds
from trading.data.validation import (
    OHLCV_COLUMNS,
    _has_weekend_bars,
    _nearest_dates,
    infer_timeframe,
)

_NS = 1_000_000_000
_DAY_NS = 86_400 * _NS
_WEEK_NS = 7 * _DAY_NS
# 1970-01-01 was a Thursday; weekly bins start on Monday 1970-01-05 00:00 UTC.
_MONDAY_ORIGIN_NS = 4 * _DAY_NS


def _source_timeframe(df: pd.DataFrame, given: str | None) -> str:
    if given is not None:
        return given
    report = df.attrs.get("data_report")
    tf = getattr(report, "timeframe", None)
    if tf is None:
        tf = infer_timeframe(df.index)  # type: ignore[arg-type]
    if tf is None:
        raise ValueError(
            "cannot infer the source timeframe from fewer than two distinct timestamps; "
            "pass source_timeframe"
        )
    return tf


def _check_input(df: pd.DataFrame) -> None:
    if not isinstance(df.index, pd.DatetimeIndex):
        raise TypeError(f"expected a DatetimeIndex, got {type(df.index).__name__}")
    missing = [c for c in OHLCV_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"missing column(s): {', '.join(missing)}")
    if not df.index.is_monotonic_increasing or df.index.has_duplicates:
        raise ValueError(
            "timestamps must be unique and sorted ascending; run validate_ohlcv to find the rows"
        )
    nan_rows = np.flatnonzero(df[list(OHLCV_COLUMNS)].isna().to_numpy().any(axis=1))
    if len(nan_rows):
        raise ValueError(
            f"{len(nan_rows)} bar(s) contain NaN, first at {df.index[nan_rows[0]]}; "
            "resampling would silently skip them, run validate_ohlcv first"
        )


def resample_ohlcv(
    df: pd.DataFrame,
    timeframe: str,
    *,
    drop_incomplete: bool = True,
    source_timeframe: str | None = None,
) -> pd.DataFrame:
    """Aggregate bars into `timeframe` bins labelled by their open time (left-closed).

    open=first, high=max, low=min, close=last, volume=sum; empty bins are dropped, not
    filled. Bins are aligned to the Unix epoch in UTC (weeks start Monday 00:00 UTC). With
    `drop_incomplete`, a final bin that the source bars do not fill to its end is dropped.
    The source timeframe is taken from `source_timeframe`, the frame's DataReport, or the
    most common bar spacing, in that order.
    """
    target_s = timeframe_seconds(timeframe)
    if len(df) == 0:
        _check_input(df)
        return df[list(OHLCV_COLUMNS)].astype(np.float64).copy()
    _check_input(df)
    source_tf = _source_timeframe(df, source_timeframe)
    source_s = timeframe_seconds(source_tf)
    if target_s < source_s:
        raise ValueError(
            f"cannot resample {source_tf} bars to the finer timeframe {timeframe}: "
            "resampling only aggregates"
        )
    if target_s % source_s:
        raise ValueError(
            f"cannot resample {source_tf} bars to {timeframe}: {timeframe} is not a whole "
            f"multiple of {source_tf}"
        )
    if target_s == source_s:
        return df[list(OHLCV_COLUMNS)].copy()

    source_ns, target_ns = source_s * _NS, target_s * _NS
    ns = df.index.as_unit("ns").asi8
    daily_source = source_ns % _DAY_NS == 0
    # Daily bars stamped at local midnight (e.g. Berlin's Monday = Sunday 23:00 UTC) are
    # binned by the calendar day they mean, or a Monday would land in the previous week.
    eff = _nearest_dates(ns).astype("datetime64[ns]").astype(np.int64) if daily_source else ns
    origin = _MONDAY_ORIGIN_NS if target_ns % _WEEK_NS == 0 else 0

    keys = (eff - origin) // target_ns
    end_keys = (eff + source_ns - 1 - origin) // target_ns
    straddling = np.flatnonzero(keys != end_keys)
    if len(straddling):
        p = int(straddling[0])
        boundary = pd.Timestamp(origin + int(end_keys[p]) * target_ns, tz="UTC")
        raise ValueError(
            f"cannot resample {source_tf} bars to {timeframe}: {len(straddling)} source bar(s) "
            f"cross a {timeframe} bin boundary, first the bar at {df.index[p]} which spans "
            f"{boundary}; {timeframe} bins are aligned to UTC"
            + (" with weeks starting Monday 00:00" if origin else "")
        )

    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    ends = np.concatenate([starts[1:], [len(keys)]]) - 1
    cols = {c: df[c].to_numpy(dtype=np.float64) for c in OHLCV_COLUMNS}
    out = {
        "open": cols["open"][starts],
        "high": np.maximum.reduceat(cols["high"], starts),
        "low": np.minimum.reduceat(cols["low"], starts),
        "close": cols["close"][ends],
        "volume": np.add.reduceat(cols["volume"], starts),
    }
    labels_ns = origin + keys[starts] * target_ns

    if drop_incomplete:
        last_end = int(eff[-1]) + source_ns
        # 1970-01-01 was a Thursday (weekday 3 counting from Monday = 0).
        last_is_friday = (int(eff[-1]) // _DAY_NS + 3) % 7 == 4
        if source_ns == _DAY_NS and last_is_friday and not _has_weekend_bars(ns):
            # A Mon-Fri calendar: a Friday bar completes the week, the weekend never comes.
            last_end += 2 * _DAY_NS
        if last_end < int(labels_ns[-1]) + target_ns:
            out = {k: v[:-1] for k, v in out.items()}
            labels_ns = labels_ns[:-1]

    index = pd.DatetimeIndex(labels_ns.astype("datetime64[ns]"), name="datetime")
    index = index.tz_localize("UTC")
    if df.index.tz is None:
        index = index.tz_localize(None)
    elif str(df.index.tz) != "UTC":
        index = index.tz_convert(df.index.tz)
    result = pd.DataFrame(out, index=index)
    if "source" in df.attrs:
        result.attrs["source"] = f"{df.attrs['source']} resampled to {timeframe}"
    return result
