"""Timeframe strings such as ``1m``, ``15m``, ``1h``, ``4h``, ``1d``, ``1w``."""

from __future__ import annotations

import re

import pandas as pd

_UNITS = {"s": "s", "m": "min", "h": "h", "d": "D", "w": "W"}
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PATTERN = re.compile(r"^(\d+)([smhdw])$")


def parse_timeframe(tf: str) -> tuple[int, str]:
    """Split ``"4h"`` into ``(4, "h")``; raise ValueError naming the value if malformed."""
    m = _PATTERN.match(tf.strip().lower()) if isinstance(tf, str) else None
    if not m or int(m.group(1)) <= 0:
        raise ValueError(
            f"invalid timeframe {tf!r}: use a positive number and one of s, m, h, d, w (e.g. 1h, 15m, 1d)"
        )
    return int(m.group(1)), m.group(2)


def timeframe_seconds(tf: str) -> int:
    """Return the length of one bar in seconds."""
    n, unit = parse_timeframe(tf)
    return n * _SECONDS[unit]


def timeframe_to_offset(tf: str) -> str:
    """Return the pandas offset alias (``"4h"`` -> ``"4h"``, ``"1d"`` -> ``"1D"``)."""
    n, unit = parse_timeframe(tf)
    return f"{n}{_UNITS[unit]}"


def timeframe_to_timedelta(tf: str) -> pd.Timedelta:
    return pd.Timedelta(seconds=timeframe_seconds(tf))
