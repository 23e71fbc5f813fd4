"""The backtest report's HTML tables: key metrics, breakdowns by exit reason / entry tag, trades."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from trading.analytics.report_format import (
    finite,
    fmt_int,
    fmt_num,
    fmt_pct,
    fmt_price,
    fmt_qty,
    fmt_time,
    metrics_with_fallbacks,
)
from trading.results import BacktestResult, TradeRecord

MAX_TRADE_ROWS = 500

_MONEY = "money"
_PCT = "pct"
_INT = "int"
_NUM = "num"
_DAYS = "days"
_TIME = "time"

# (key, label, kind) grouped for the metrics tables
_METRIC_GROUPS: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    (
        "Performance",
        (
            ("initial_cash", "Initial cash", _MONEY),
            ("final_value", "Final value", _MONEY),
            ("total_return_pct", "Total return", _PCT),
            ("cagr_pct", "CAGR", _PCT),
            ("total_pnl", "Net PnL", _MONEY),
            ("total_fees", "Fees", _MONEY),
            ("exposure_pct", "Exposure", _PCT),
        ),
    ),
    (
        "Trades",
        (
            ("total_trades", "Trades", _INT),
            ("winning_trades", "Winners", _INT),
            ("losing_trades", "Losers", _INT),
            ("win_rate", "Win rate", _PCT),
            ("avg_pnl", "Avg PnL", _MONEY),
            ("avg_win", "Avg win", _MONEY),
            ("avg_loss", "Avg loss", _MONEY),
            ("largest_win", "Largest win", _MONEY),
            ("largest_loss", "Largest loss", _MONEY),
            ("profit_factor", "Profit factor", _NUM),
            ("expectancy", "Expectancy", _NUM),
            ("avg_bars_held", "Avg bars held", _NUM),
        ),
    ),
    (
        "Risk",
        (
            ("max_drawdown", "Max drawdown", _MONEY),
            ("max_drawdown_pct", "Max drawdown %", _PCT),
            ("max_drawdown_duration_days", "Max DD duration", _DAYS),
            ("sharpe_ratio", "Sharpe", _NUM),
            ("sortino_ratio", "Sortino", _NUM),
            ("calmar_ratio", "Calmar", _NUM),
            ("sqn", "SQN", _NUM),
        ),
    ),
)
_HEADER_KEYS = frozenset({"start", "end", "bars"})
# metrics whose sign is good/bad news and gets coloured green/red
_SIGNED_KEYS = frozenset(
    {"total_return_pct", "cagr_pct", "total_pnl", "avg_pnl", "avg_win", "avg_loss",
     "largest_win", "largest_loss", "expectancy"}
)  # fmt: skip


def _fmt_metric(value: Any, kind: str) -> str:
    """Format one metric value for humans according to its kind."""
    if kind == _PCT:
        return fmt_pct(value)
    if kind == _INT:
        return fmt_int(value)
    if kind == _DAYS:
        return fmt_num(value, 2, " d")
    if kind == _TIME:
        return fmt_time(value)
    return fmt_num(value, 2)


def _guess_kind(key: str, value: Any) -> str:
    """Pick a display kind for a metric this module does not know by name."""
    if key.endswith("_pct") or key == "win_rate":
        return _PCT
    if key.endswith("_days"):
        return _DAYS
    if isinstance(value, (int, np.integer)) or key.endswith(("_bars", "_trades")):
        return _INT
    return _NUM


def _group_stats(trades: Iterable[TradeRecord], key: str) -> dict[str, dict[str, Any]]:
    """Aggregate trades by attribute `key` (used when metrics lack the breakdown)."""
    groups: dict[str, list[TradeRecord]] = {}
    for t in trades:
        groups.setdefault(str(getattr(t, key)), []).append(t)
    out: dict[str, dict[str, Any]] = {}
    for name, ts in groups.items():
        pnls = [t.pnl for t in ts]
        wins = sum(p for p in pnls if p > 0)
        losses = -sum(p for p in pnls if p < 0)
        out[name] = {
            "trades": len(ts),
            "win_rate": sum(p > 0 for p in pnls) / len(ts) * 100.0,
            "total_pnl": sum(pnls),
            "avg_pnl": sum(pnls) / len(ts),
            "avg_pnl_pct": sum(t.pnl_pct for t in ts) / len(ts),
            "profit_factor": wins / losses if losses > 0 else None,
            "avg_bars_held": sum(t.bars_held for t in ts) / len(ts),
        }
    return out


def breakdown(result: BacktestResult, metric_key: str, attr: str) -> dict[str, dict[str, Any]]:
    """Return the per-key breakdown from metrics, or compute it from the trades."""
    given = result.metrics.get(metric_key)
    if isinstance(given, Mapping) and given:
        return {str(k): dict(v) for k, v in given.items() if isinstance(v, Mapping)}
    return _group_stats(result.trades, attr)


def _td(text: str, *, numeric: bool = False, sign: float | None = None) -> str:
    cls = []
    if numeric:
        cls.append("n")
    if sign is not None and sign > 0:
        cls.append("pos")
    elif sign is not None and sign < 0:
        cls.append("neg")
    attr = f' class="{" ".join(cls)}"' if cls else ""
    return f"<td{attr}>{text}</td>"


def _table(headers: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def metrics_html(result: BacktestResult) -> str:
    m = metrics_with_fallbacks(result)
    known = {k for _, items in _METRIC_GROUPS for k, _, _ in items}
    groups: list[tuple[str, list[tuple[str, str, str]]]] = [
        (title, list(items)) for title, items in _METRIC_GROUPS
    ]
    extra = [
        (k, k.replace("_", " ").capitalize(), _guess_kind(k, v))
        for k, v in m.items()
        if k not in known
        and k not in _HEADER_KEYS
        and not isinstance(v, (Mapping, list, tuple, set, str, datetime, pd.Timestamp))
    ]
    if extra:
        groups.append(("Other", extra))
    parts = []
    for title, items in groups:
        rows = []
        for key, label, kind in items:
            value = m.get(key)
            sign = finite(value) if key in _SIGNED_KEYS else None
            cell = _td(_fmt_metric(value, kind), numeric=True, sign=sign)
            rows.append(f"<tr><td>{html.escape(label)}</td>{cell}</tr>")
        parts.append(f"<div><h3>{html.escape(title)}</h3>{_table(['Metric', 'Value'], rows)}</div>")
    return f'<div class="groups">{"".join(parts)}</div>'


def breakdown_html(stats: dict[str, dict[str, Any]], label: str) -> str:
    if not stats:
        return "<p>No trades.</p>"
    rows = []
    ordered = sorted(stats.items(), key=lambda kv: -(finite(kv[1].get("trades")) or 0))
    for key, s in ordered:
        rows.append(
            "<tr>"
            + _td(html.escape(key))
            + _td(fmt_int(s.get("trades")), numeric=True)
            + _td(fmt_pct(s.get("win_rate")), numeric=True)
            + _td(fmt_num(s.get("total_pnl")), numeric=True, sign=finite(s.get("total_pnl")))
            + _td(fmt_num(s.get("avg_pnl")), numeric=True, sign=finite(s.get("avg_pnl")))
            + _td(fmt_pct(s.get("avg_pnl_pct")), numeric=True, sign=finite(s.get("avg_pnl_pct")))
            + _td(fmt_num(s.get("profit_factor")), numeric=True)
            + _td(fmt_num(s.get("avg_bars_held")), numeric=True)
            + "</tr>"
        )
    headers = [label, "Trades", "Win rate", "Total PnL", "Avg PnL", "Avg PnL %", "PF", "Avg bars"]
    return _table(headers, rows)


def trades_html(trades: list[TradeRecord], limit: int) -> str:
    if not trades:
        return "<p>No trades.</p>"
    rows = []
    for t in trades[:limit]:
        rows.append(
            "<tr>"
            + _td(str(t.trade_id), numeric=True)
            + _td(html.escape(t.symbol))
            + _td(html.escape(t.side))
            + _td(fmt_time(t.entry_time))
            + _td(fmt_time(t.exit_time))
            + _td(fmt_price(t.entry_price), numeric=True)
            + _td(fmt_price(t.exit_price), numeric=True)
            + _td(fmt_qty(t.quantity), numeric=True)
            + _td(fmt_num(t.pnl), numeric=True, sign=t.pnl)
            + _td(fmt_pct(t.pnl_pct), numeric=True, sign=t.pnl_pct)
            + _td(fmt_num(t.fees), numeric=True)
            + _td(html.escape(t.exit_reason))
            + _td(html.escape(t.entry_tag))
            + _td(fmt_int(t.bars_held), numeric=True)
            + _td(fmt_pct(t.mae_pct), numeric=True)
            + _td(fmt_pct(t.mfe_pct), numeric=True)
            + "</tr>"
        )
    headers = [
        "#", "Symbol", "Side", "Entry (UTC)", "Exit (UTC)", "Entry price", "Exit price",
        "Qty", "PnL", "PnL %", "Fees", "Exit reason", "Entry tag", "Bars", "MAE %", "MFE %",
    ]  # fmt: skip
    table = f'<div class="scroll">{_table(headers, rows)}</div>'
    if len(trades) > limit:
        note = (
            f'<p class="note">Showing the first {limit:,} of {len(trades):,} trades; '
            "the full list is in trades.csv and result.json.</p>"
        )
        return note + table
    return table
