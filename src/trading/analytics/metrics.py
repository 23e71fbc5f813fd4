"""Backtest performance metrics: trade statistics, drawdowns and risk-adjusted ratios.

All definitions, units and edge cases are documented in docs/metrics.md. Keys ending in
``_pct`` and ``win_rate`` are percentages (1.5 means 1.5 %); ratios are plain numbers.
Undefined values are ``None`` (never NaN or inf) so the result is JSON-friendly as is.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

TRADING_DAYS_PER_YEAR = 252
CALENDAR_DAYS_PER_YEAR = 365
DAYS_PER_YEAR_CAGR = 365.25
_DAY = pd.Timedelta(days=1)

_NUMERIC_TRADE_COLUMNS = ("pnl", "gross_pnl", "fees", "pnl_pct", "bars_held")
_REQUIRED_TRADE_COLUMNS = (
    "trade_id",
    "entry_time",
    "exit_time",
    *_NUMERIC_TRADE_COLUMNS,
    "exit_reason",
    "entry_tag",
)


def infer_periods_per_year(index: pd.DatetimeIndex) -> int:
    """Return 365 if the index has any Saturday or Sunday bar (24/7 market), else 252."""
    idx = _utc_index(pd.DatetimeIndex(index))
    if len(idx) and bool((idx.day_of_week >= 5).any()):
        return CALENDAR_DAYS_PER_YEAR
    return TRADING_DAYS_PER_YEAR


def daily_returns(equity: pd.Series, periods_per_year: int) -> pd.Series:
    """Return simple returns of the last equity value of each UTC calendar day.

    Days without bars are dropped when ``periods_per_year`` < 365 (trading-day calendar)
    and carried forward (zero return) otherwise. The first day has no return.
    """
    eq = _clean_equity(equity)
    if eq.empty:
        return pd.Series(dtype=float, index=pd.DatetimeIndex([], tz="UTC"), name="return")
    daily = eq.resample("D").last()
    if periods_per_year < CALENDAR_DAYS_PER_YEAR:
        daily = daily.dropna()
    else:
        daily = daily.ffill()
    values = daily.to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rets = values[1:] / values[:-1] - 1.0
    return pd.Series(rets, index=daily.index[1:], name="return")


def drawdown_series(equity: pd.Series) -> pd.DataFrame:
    """Return running ``peak``, ``drawdown`` (currency, >= 0) and ``drawdown_pct`` (>= 0)."""
    eq = _clean_equity(equity)
    values = eq.to_numpy(dtype=float)
    peak = np.maximum.accumulate(values) if len(values) else values
    dd = peak - values
    with np.errstate(divide="ignore", invalid="ignore"):
        dd_pct = np.where(peak > 0, dd / peak * 100.0, np.nan)
    return pd.DataFrame({"peak": peak, "drawdown": dd, "drawdown_pct": dd_pct}, index=eq.index)


def compute_metrics(
    trades: pd.DataFrame,
    equity: pd.Series,
    initial_cash: float,
    *,
    periods_per_year: int | None = None,
    min_days_for_ratios: int = 30,
) -> dict[str, Any]:
    """Compute the flat metrics dict (plus ``by_exit_reason`` and ``by_entry_tag``)."""
    initial_cash = float(initial_cash)
    if not math.isfinite(initial_cash) or initial_cash <= 0:
        raise ValueError(f"initial_cash must be a positive finite number, got {initial_cash!r}")
    eq = _clean_equity(equity)
    ppy = infer_periods_per_year(eq.index) if periods_per_year is None else int(periods_per_year)
    if ppy <= 0:
        raise ValueError(f"periods_per_year must be positive, got {periods_per_year!r}")

    n_bars = len(eq)
    values = eq.to_numpy(dtype=float)
    final_value = float(values[-1]) if n_bars else initial_cash
    span_days = (eq.index[-1] - eq.index[0]) / _DAY if n_bars else 0.0
    long_enough = n_bars > 0 and span_days >= min_days_for_ratios

    out: dict[str, Any] = {
        "initial_cash": initial_cash,
        "final_value": final_value,
        "total_return_pct": _num((final_value / initial_cash - 1.0) * 100.0),
    }

    tr = _prepare_trades(trades)
    out.update(_trade_stats(tr))

    dd = _drawdown_stats(values, eq.index)
    out.update(dd)

    rets = daily_returns(eq, ppy).to_numpy(dtype=float) if long_enough else np.empty(0)
    out["sharpe_ratio"] = _sharpe(rets, ppy) if long_enough else None
    out["sortino_ratio"] = _sortino(rets, ppy) if long_enough else None
    cagr = _cagr(final_value / initial_cash, span_days) if long_enough else None
    out["cagr_pct"] = None if cagr is None else _num(cagr * 100.0)
    max_dd_pct = dd["max_drawdown_pct"]
    out["calmar_ratio"] = (
        _num(cagr / (max_dd_pct / 100.0))
        if cagr is not None and max_dd_pct is not None and max_dd_pct > 0
        else None
    )
    out["sqn"] = _sqn(tr["pnl"].to_numpy(dtype=float))
    out["exposure_pct"] = _exposure_pct(tr, eq.index)
    out["avg_bars_held"] = _mean(tr["bars_held"].to_numpy(dtype=float))
    out["annualization_periods"] = ppy
    out["start"] = eq.index[0].isoformat() if n_bars else None
    out["end"] = eq.index[-1].isoformat() if n_bars else None
    out["bars"] = n_bars
    out["by_exit_reason"] = _group_stats(tr, "exit_reason")
    out["by_entry_tag"] = _group_stats(tr, "entry_tag")
    return out


# --------------------------------------------------------------------------- helpers


def _utc_index(idx: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Localise a naive index to UTC or convert an aware one to UTC."""
    return idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")


def _clean_equity(equity: pd.Series) -> pd.Series:
    """Return equity as float with a sorted UTC DatetimeIndex; reject non-finite values."""
    if not isinstance(equity.index, pd.DatetimeIndex):
        raise TypeError("equity must have a DatetimeIndex")
    eq = pd.Series(equity.to_numpy(dtype=float), index=_utc_index(equity.index))
    if not eq.index.is_monotonic_increasing:
        raise ValueError("equity index must be sorted ascending")
    if len(eq) and not np.isfinite(eq.to_numpy()).all():
        raise ValueError("equity contains NaN or infinite values")
    return eq


def _num(x: float | None) -> float | None:
    """Return x as a Python float, or None if it is missing or not finite."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _mean(a: np.ndarray) -> float | None:
    """Return the (exactly summed) mean of a, or None if a is empty."""
    return _num(math.fsum(a) / len(a)) if len(a) else None


def _prepare_trades(trades: pd.DataFrame) -> pd.DataFrame:
    """Return the used trade columns, typed, sorted by exit time (then entry time, id)."""
    missing = [c for c in _REQUIRED_TRADE_COLUMNS if c not in trades.columns]
    if missing:
        raise ValueError(f"trades frame is missing columns: {missing}")
    tr = pd.DataFrame(
        {
            "trade_id": pd.to_numeric(trades["trade_id"]).to_numpy(dtype=float),
            "entry_time": pd.DatetimeIndex(pd.to_datetime(trades["entry_time"], utc=True)),
            "exit_time": pd.DatetimeIndex(pd.to_datetime(trades["exit_time"], utc=True)),
            **{c: pd.to_numeric(trades[c]).to_numpy(dtype=float) for c in _NUMERIC_TRADE_COLUMNS},
            "exit_reason": _labels(trades["exit_reason"]),
            "entry_tag": _labels(trades["entry_tag"]),
        }
    )
    if len(tr) and not np.isfinite(tr[list(_NUMERIC_TRADE_COLUMNS)].to_numpy()).all():
        raise ValueError("trades contain NaN or infinite numeric values")
    return tr.sort_values(["exit_time", "entry_time", "trade_id"], kind="stable").reset_index(
        drop=True
    )


def _labels(col: pd.Series) -> np.ndarray:
    """Return labels as str objects, with missing values mapped to ''."""
    return col.astype(object).where(col.notna(), "").astype(str).to_numpy(dtype=object)


def _pnl_stats(pnl: np.ndarray) -> dict[str, Any]:
    """Return the pnl-only statistics shared by the overall and grouped views."""
    n = len(pnl)
    wins = pnl[pnl > 0]
    losses = pnl[pnl < 0]
    gross_profit = math.fsum(wins)
    gross_loss = math.fsum(losses)
    return {
        "n": n,
        "wins": wins,
        "losses": losses,
        "win_rate": _num(len(wins) / n * 100.0) if n else None,
        "total_pnl": math.fsum(pnl),
        "profit_factor": _num(gross_profit / -gross_loss) if gross_loss < 0 else None,
    }


def _trade_stats(tr: pd.DataFrame) -> dict[str, Any]:
    """Return the overall trade statistics (trades sorted by exit time)."""
    pnl = tr["pnl"].to_numpy(dtype=float)
    s = _pnl_stats(pnl)
    n, wins, losses = s["n"], s["wins"], s["losses"]
    avg_win = _mean(wins)
    avg_loss = _mean(losses)
    expectancy = None
    if n:
        # win_rate * avg_win + loss_rate * avg_loss with rates over all n trades.
        expectancy = _num(
            (len(wins) / n) * (avg_win or 0.0) + (len(losses) / n) * (avg_loss or 0.0)
        )
    return {
        "total_trades": n,
        "winning_trades": len(wins),
        "losing_trades": len(losses),
        "win_rate": s["win_rate"],
        "total_pnl": _num(s["total_pnl"]),
        "gross_pnl": _num(math.fsum(tr["gross_pnl"].to_numpy(dtype=float))),
        "total_fees": _num(math.fsum(tr["fees"].to_numpy(dtype=float))),
        "avg_pnl": _mean(pnl),
        "avg_pnl_pct": _mean(tr["pnl_pct"].to_numpy(dtype=float)),
        "avg_win": avg_win,
        "avg_loss": avg_loss,
        "largest_win": _num(wins.max()) if len(wins) else None,
        "largest_loss": _num(losses.min()) if len(losses) else None,
        "profit_factor": s["profit_factor"],
        "expectancy": expectancy,
        "max_consecutive_wins": _longest_run(pnl > 0),
        "max_consecutive_losses": _longest_run(pnl < 0),
    }


def _longest_run(mask: np.ndarray) -> int:
    """Return the length of the longest run of True values."""
    if not mask.any():
        return 0
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return int((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).max())


def _group_stats(tr: pd.DataFrame, key: str) -> dict[str, dict[str, Any]]:
    """Return per-label trade statistics for the label column ``key``."""
    out: dict[str, dict[str, Any]] = {}
    for label, g in tr.groupby(key, sort=True):
        pnl = g["pnl"].to_numpy(dtype=float)
        s = _pnl_stats(pnl)
        out[str(label)] = {
            "trades": s["n"],
            "win_rate": s["win_rate"],
            "total_pnl": _num(s["total_pnl"]),
            "avg_pnl": _mean(pnl),
            "avg_pnl_pct": _mean(g["pnl_pct"].to_numpy(dtype=float)),
            "profit_factor": s["profit_factor"],
            "avg_bars_held": _mean(g["bars_held"].to_numpy(dtype=float)),
        }
    return out


def _drawdown_stats(values: np.ndarray, index: pd.DatetimeIndex) -> dict[str, Any]:
    """Return max drawdown (currency, %) and the longest peak-to-recovery duration."""
    n = len(values)
    if n == 0:
        return {
            "max_drawdown": 0.0,
            "max_drawdown_pct": 0.0,
            "max_drawdown_duration_bars": 0,
            "max_drawdown_duration_days": 0.0,
        }
    peak = np.maximum.accumulate(values)
    dd = peak - values
    positive_peak = peak > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        dd_pct = np.where(positive_peak, dd / peak * 100.0, np.nan)
    max_dd_pct = float(np.nanmax(dd_pct)) if positive_peak.any() else None

    at_peak = values >= peak  # bar 0 is always a peak
    last_peak = np.maximum.accumulate(np.where(at_peak, np.arange(n), 0))
    under = ~at_peak
    ends = np.flatnonzero(at_peak[1:] & under[:-1]) + 1  # first bar back at the peak
    starts = last_peak[ends - 1]
    if under[-1]:  # still under water at the end: the episode runs to the last bar
        ends = np.append(ends, n - 1)
        starts = np.append(starts, last_peak[-1])
    if len(ends):
        ns = index.as_unit("ns").asi8
        dur_bars = int((ends - starts).max())
        dur_days = float((ns[ends] - ns[starts]).max()) / 86_400e9
    else:
        dur_bars, dur_days = 0, 0.0
    return {
        "max_drawdown": float(dd.max()),
        "max_drawdown_pct": max_dd_pct,
        "max_drawdown_duration_bars": dur_bars,
        "max_drawdown_duration_days": dur_days,
    }


def _sharpe(rets: np.ndarray, ppy: int) -> float | None:
    """Return mean / std(ddof=1) * sqrt(ppy), or None if undefined."""
    if len(rets) < 2 or not np.isfinite(rets).all() or rets.max() == rets.min():
        return None
    std = float(rets.std(ddof=1))
    if std <= 0:
        return None
    return _num(float(rets.mean()) / std * math.sqrt(ppy))


def _sortino(rets: np.ndarray, ppy: int) -> float | None:
    """Return mean / sqrt(mean(min(r, 0)^2)) * sqrt(ppy), or None if undefined."""
    if len(rets) < 2 or not np.isfinite(rets).all():
        return None
    downside = math.sqrt(float(np.mean(np.minimum(rets, 0.0) ** 2)))
    if downside <= 0:
        return None
    return _num(float(rets.mean()) / downside * math.sqrt(ppy))


def _cagr(growth: float, span_days: float) -> float | None:
    """Return growth ** (365.25 / days) - 1 as a fraction, or None if undefined."""
    if span_days <= 0 or growth < 0:
        return None
    try:
        return _num(growth ** (DAYS_PER_YEAR_CAGR / span_days) - 1.0)
    except OverflowError:
        return None


def _sqn(pnl: np.ndarray) -> float | None:
    """Return sqrt(N) * mean(pnl) / std(pnl, ddof=1), or None if N < 2 or std is 0."""
    if len(pnl) < 2 or pnl.max() == pnl.min():
        return None
    std = float(pnl.std(ddof=1))
    if std <= 0:
        return None
    return _num(math.sqrt(len(pnl)) * float(pnl.mean()) / std)


def _exposure_pct(tr: pd.DataFrame, index: pd.DatetimeIndex) -> float | None:
    """Return % of bars with a trade open (entry_time <= bar time < exit_time)."""
    n_bars = len(index)
    if n_bars == 0:
        return None
    if tr.empty:
        return 0.0
    bars = index.as_unit("ns").asi8
    entry = pd.DatetimeIndex(tr["entry_time"]).as_unit("ns").asi8
    exit_ = pd.DatetimeIndex(tr["exit_time"]).as_unit("ns").asi8
    order = np.argsort(entry, kind="stable")
    s = entry[order]
    e = np.maximum(exit_[order], s)
    reach = np.maximum.accumulate(e)
    new = np.ones(len(s), dtype=bool)
    new[1:] = s[1:] > reach[:-1]  # touching intervals merge; half-open so no double count
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, len(s) - 1)
    lo = np.searchsorted(bars, s[first], side="left")
    hi = np.searchsorted(bars, reach[last], side="left")
    covered = int(np.maximum(hi - lo, 0).sum())
    return _num(covered / n_bars * 100.0)
