"""How the backtest report shows numbers, prices and times, shared by its tables and figures."""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd

from trading.results import BacktestResult

DASH = "—"


def naive_utc(ts: Any) -> pd.Timestamp:
    """Return `ts` as a tz-naive UTC Timestamp."""
    t = pd.Timestamp(ts)
    if t.tzinfo is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return t


def finite(v: Any) -> float | None:
    """Return `v` as a float, or None for None/NaN/non-numbers (inf passes)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def fmt_num(v: Any, decimals: int = 2, suffix: str = "") -> str:
    """Format a number with thousands separators; None/NaN become a dash."""
    f = finite(v)
    if f is None:
        return DASH
    if math.isinf(f):
        return "∞" if f > 0 else "-∞"
    return f"{f:,.{decimals}f}{suffix}"


def fmt_pct(v: Any) -> str:
    return fmt_num(v, 2, "%")


def fmt_int(v: Any) -> str:
    f = finite(v)
    if f is None or math.isinf(f):
        return DASH
    return f"{round(f):,}"


def fmt_price(v: Any) -> str:
    """Format a price with enough precision for both BTC and sub-cent coins."""
    f = finite(v)
    if f is None or math.isinf(f):
        return DASH
    a = abs(f)
    if a >= 1000:
        return f"{f:,.2f}"
    if a >= 1:
        return f"{f:,.4f}"
    return f"{f:.8g}"


def fmt_qty(v: Any) -> str:
    f = finite(v)
    return DASH if f is None else f"{f:.8g}"


def fmt_time(ts: Any) -> str:
    """Format a timestamp as 'YYYY-MM-DD HH:MM' UTC; missing becomes a dash."""
    if ts is None:
        return DASH
    try:
        t = naive_utc(ts)
    except (TypeError, ValueError):
        return html.escape(str(ts))
    if pd.isna(t):
        return DASH
    return t.strftime("%Y-%m-%d %H:%M")


def metrics_with_fallbacks(result: BacktestResult) -> dict[str, Any]:
    """Return the metrics, filling the headline figures from the result if missing."""
    m = dict(result.metrics)
    m.setdefault("initial_cash", result.initial_cash)
    m.setdefault("final_value", result.final_value)
    m.setdefault("total_trades", len(result.trades))
    if m.get("total_return_pct") is None and result.initial_cash:
        m["total_return_pct"] = (result.final_value / result.initial_cash - 1.0) * 100.0
    return m


def total_return_pct(result: BacktestResult) -> float | None:
    return finite(metrics_with_fallbacks(result).get("total_return_pct"))
