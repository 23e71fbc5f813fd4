"""Human-facing backtest reports: one self-contained HTML file and an equity PNG.

The HTML report embeds plotly.js inline, so it opens offline from disk. Line series
(price closes, equity, drawdown) are downsampled with a min/max-per-bucket scheme so
large runs stay small and spikes stay visible; trade markers are never downsampled.
"""

from __future__ import annotations

import html
import io
import math
import os
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from trading.analytics.regime_band import add_regime_band, regime_changes
from trading.results import BacktestResult, TradeRecord

__all__ = [
    "CANDLESTICK_MAX_BARS",
    "MAX_PLOT_POINTS",
    "MAX_PRICE_PANELS",
    "MAX_TRADE_ROWS",
    "PNG_DPI",
    "PNG_FIGSIZE",
    "atomic_write_bytes",
    "build_figure",
    "downsample_minmax",
    "render_equity_png",
    "render_html_report",
    "write_equity_png",
    "write_html_report",
]

MAX_PLOT_POINTS = 5_000  # per line series in the HTML figure
CANDLESTICK_MAX_BARS = 5_000  # above this a price panel is a (downsampled) close line
MAX_PRICE_PANELS = 4
MAX_TRADE_ROWS = 500
PNG_FIGSIZE = (10.0, 6.0)  # inches
PNG_DPI = 150
PNG_MAX_POINTS = 20_000

_GREEN = "#2ca02c"
_RED = "#d62728"
_BLUE = "#1f77b4"
_DASH = "—"


# --------------------------------------------------------------------------- helpers


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` via a temp file in the same folder and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def downsample_minmax(series: pd.Series, max_points: int = MAX_PLOT_POINTS) -> pd.Series:
    """Return at most `max_points` points of `series`, keeping each bucket's min and max.

    The first and last points are always kept, so the line spans the full range, and
    the global minimum and maximum survive. NaN values are ignored when picking the
    extremes (an all-NaN bucket contributes its first point, i.e. a gap).
    """
    if max_points < 4:
        raise ValueError("max_points must be >= 4")
    n = len(series)
    if n <= max_points:
        return series
    values = series.to_numpy(dtype=float, na_value=np.nan)
    n_buckets = (max_points - 2) // 2
    size = math.ceil(n / n_buckets)
    padded = np.full(n_buckets * size, np.nan)
    padded[:n] = values
    grid = padded.reshape(n_buckets, size)
    nan = np.isnan(grid)
    lo = np.where(nan, np.inf, grid).argmin(axis=1)
    hi = np.where(nan, -np.inf, grid).argmax(axis=1)
    base = np.arange(n_buckets) * size
    keep = np.concatenate(([0, n - 1], base + lo, base + hi))
    keep = np.unique(keep[keep < n])
    return series.iloc[keep]


def _drawdown_pct(equity: pd.Series) -> pd.Series:
    """Return the drawdown from the running peak in percent (<= 0)."""
    if equity.empty:
        return equity.astype(float)
    values = equity.astype(float)
    peak = values.cummax()
    dd = (values / peak.where(peak > 0) - 1.0) * 100.0
    return dd.fillna(0.0)


def _naive_utc_index(index: pd.Index) -> pd.DatetimeIndex:
    """Return `index` as a tz-naive DatetimeIndex in UTC (plotly ignores offsets)."""
    idx = pd.DatetimeIndex(index)
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    return idx


def _naive_utc(ts: Any) -> pd.Timestamp:
    """Return `ts` as a tz-naive UTC Timestamp."""
    t = pd.Timestamp(ts)
    if t.tzinfo is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    return t


def _utc_series(series: pd.Series) -> pd.Series:
    """Return a float copy of `series` with a naive-UTC DatetimeIndex."""
    if series.empty:
        return pd.Series(dtype=float, index=pd.DatetimeIndex([]))
    out = series.astype(float).copy()
    out.index = _naive_utc_index(series.index)
    return out


def _ohlc_columns(df: pd.DataFrame) -> dict[str, str]:
    """Map open/high/low/close to the frame's actual column names (case-insensitive)."""
    lower = {str(c).lower(): c for c in df.columns}
    return {k: lower[k] for k in ("open", "high", "low", "close") if k in lower}


def _panel_symbols(result: BacktestResult) -> list[str]:
    """Return every symbol that has prices or trades, in result order."""
    out: list[str] = []
    for sym in [*result.symbols, *result.prices.keys(), *(t.symbol for t in result.trades)]:
        if sym not in out:
            out.append(sym)
    return out


# ------------------------------------------------------------------------ formatting


def _finite(v: Any) -> float | None:
    """Return `v` as a float, or None for None/NaN/non-numbers (inf passes)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _fmt_num(v: Any, decimals: int = 2, suffix: str = "") -> str:
    """Format a number with thousands separators; None/NaN become a dash."""
    f = _finite(v)
    if f is None:
        return _DASH
    if math.isinf(f):
        return "∞" if f > 0 else "-∞"
    return f"{f:,.{decimals}f}{suffix}"


def _fmt_pct(v: Any) -> str:
    return _fmt_num(v, 2, "%")


def _fmt_int(v: Any) -> str:
    f = _finite(v)
    if f is None or math.isinf(f):
        return _DASH
    return f"{int(round(f)):,}"


def _fmt_price(v: Any) -> str:
    """Format a price with enough precision for both BTC and sub-cent coins."""
    f = _finite(v)
    if f is None or math.isinf(f):
        return _DASH
    a = abs(f)
    if a >= 1000:
        return f"{f:,.2f}"
    if a >= 1:
        return f"{f:,.4f}"
    return f"{f:.8g}"


def _fmt_qty(v: Any) -> str:
    f = _finite(v)
    return _DASH if f is None else f"{f:.8g}"


def _fmt_time(ts: Any) -> str:
    """Format a timestamp as 'YYYY-MM-DD HH:MM' UTC; missing becomes a dash."""
    if ts is None:
        return _DASH
    try:
        t = _naive_utc(ts)
    except (TypeError, ValueError):
        return html.escape(str(ts))
    if pd.isna(t):
        return _DASH
    return t.strftime("%Y-%m-%d %H:%M")


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
        return _fmt_pct(value)
    if kind == _INT:
        return _fmt_int(value)
    if kind == _DAYS:
        return _fmt_num(value, 2, " d")
    if kind == _TIME:
        return _fmt_time(value)
    return _fmt_num(value, 2)


def _guess_kind(key: str, value: Any) -> str:
    """Pick a display kind for a metric this module does not know by name."""
    if key.endswith("_pct") or key == "win_rate":
        return _PCT
    if key.endswith("_days"):
        return _DAYS
    if isinstance(value, (int, np.integer)) or key.endswith(("_bars", "_trades")):
        return _INT
    return _NUM


def _metrics_with_fallbacks(result: BacktestResult) -> dict[str, Any]:
    """Return the metrics, filling the headline figures from the result if missing."""
    m = dict(result.metrics)
    m.setdefault("initial_cash", result.initial_cash)
    m.setdefault("final_value", result.final_value)
    m.setdefault("total_trades", len(result.trades))
    if m.get("total_return_pct") is None and result.initial_cash:
        m["total_return_pct"] = (result.final_value / result.initial_cash - 1.0) * 100.0
    return m


def _total_return_pct(result: BacktestResult) -> float | None:
    return _finite(_metrics_with_fallbacks(result).get("total_return_pct"))


# ---------------------------------------------------------------------- group stats


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


def _breakdown(result: BacktestResult, metric_key: str, attr: str) -> dict[str, dict[str, Any]]:
    """Return the per-key breakdown from metrics, or compute it from the trades."""
    given = result.metrics.get(metric_key)
    if isinstance(given, Mapping) and given:
        return {str(k): dict(v) for k, v in given.items() if isinstance(v, Mapping)}
    return _group_stats(result.trades, attr)


# --------------------------------------------------------------------------- figure


def _trade_hover(t: TradeRecord, exit_: bool) -> str:
    e = html.escape
    head = f"#{t.trade_id} {e(t.symbol)} {e(t.side)} {'exit' if exit_ else 'entry'}"
    if exit_:
        return (
            f"{head}<br>reason: {e(t.exit_reason)}<br>"
            f"pnl: {_fmt_num(t.pnl)} ({_fmt_pct(t.pnl_pct)})<br>"
            f"entry tag: {e(t.entry_tag)}<br>price: {_fmt_price(t.exit_price)}"
        )
    return (
        f"{head}<br>entry tag: {e(t.entry_tag)}<br>price: {_fmt_price(t.entry_price)}"
        f"<br>qty: {_fmt_qty(t.quantity)}"
    )


def _marker_trace(
    trades: list[TradeRecord],
    *,
    exit_: bool,
    name: str,
    symbol: str,
    color: str,
    role: str,
    sym: str,
    legend: bool,
) -> go.Scatter:
    return go.Scatter(
        x=[_naive_utc(t.exit_time if exit_ else t.entry_time) for t in trades],
        y=[t.exit_price if exit_ else t.entry_price for t in trades],
        mode="markers",
        name=name,
        legendgroup=name,
        showlegend=legend,
        marker={
            "symbol": symbol,
            "color": color,
            "size": 10 if exit_ else 11,
            "line": {"width": 1, "color": "#333"} if not exit_ else {"width": 2, "color": color},
        },
        hovertext=[_trade_hover(t, exit_) for t in trades],
        hovertemplate="%{hovertext}<extra></extra>",
        meta={"role": role, "symbol": sym},
    )


def build_figure(
    result: BacktestResult,
    *,
    max_points: int = MAX_PLOT_POINTS,
    max_price_panels: int = MAX_PRICE_PANELS,
    candlestick_max_bars: int = CANDLESTICK_MAX_BARS,
) -> go.Figure:
    """Build the report figure: price panels with trade markers, equity, drawdown %.

    Marker traces carry ``meta={"role": "entry"|"exit", "symbol": ...}``; line traces
    carry ``meta={"role": "price"|"equity"|"drawdown", ...}``.
    """
    symbols = _panel_symbols(result)[:max_price_panels]
    n_price = len(symbols)
    rows = n_price + 2
    heights = [3.0] * n_price + [2.0, 1.2]
    titles = [f"{s} price" for s in symbols] + ["Equity", "Drawdown %"]
    fig = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.04 if rows <= 4 else 0.025,
        row_heights=heights,
        subplot_titles=titles,
    )
    legend_seen: set[str] = set()

    def once(name: str) -> bool:
        first = name not in legend_seen
        legend_seen.add(name)
        return first

    for row, sym in enumerate(symbols, start=1):
        df = result.prices.get(sym)
        if df is not None and not df.empty:
            cols = _ohlc_columns(df)
            idx = _naive_utc_index(df.index)
            if len(df) <= candlestick_max_bars and len(cols) == 4:
                fig.add_trace(
                    go.Candlestick(
                        x=idx,
                        open=df[cols["open"]].to_numpy(dtype=float),
                        high=df[cols["high"]].to_numpy(dtype=float),
                        low=df[cols["low"]].to_numpy(dtype=float),
                        close=df[cols["close"]].to_numpy(dtype=float),
                        name=sym,
                        showlegend=False,
                        meta={"role": "price", "symbol": sym},
                    ),
                    row=row,
                    col=1,
                )
            elif "close" in cols:
                close = pd.Series(df[cols["close"]].to_numpy(dtype=float), index=idx)
                close = downsample_minmax(close, max_points)
                fig.add_trace(
                    go.Scatter(
                        x=close.index,
                        y=close.to_numpy(),
                        mode="lines",
                        name=f"{sym} close",
                        showlegend=False,
                        line={"color": "#555", "width": 1},
                        meta={"role": "price", "symbol": sym},
                    ),
                    row=row,
                    col=1,
                )
        if df is not None and not df.empty:
            add_regime_band(fig, regime_changes(result.diagnostics, sym), df.index[-1], row)
        sym_trades = [t for t in result.trades if t.symbol == sym]
        longs = [t for t in sym_trades if t.side == "long"]
        shorts = [t for t in sym_trades if t.side != "long"]
        winners = [t for t in sym_trades if t.pnl >= 0]
        losers = [t for t in sym_trades if t.pnl < 0]
        specs = (
            (longs, False, "Long entry", "triangle-up", _GREEN, "entry"),
            (shorts, False, "Short entry", "triangle-down", _GREEN, "entry"),
            (winners, True, "Exit (win)", "x", _GREEN, "exit"),
            (losers, True, "Exit (loss)", "x", _RED, "exit"),
        )
        for trades, exit_, name, marker, color, role in specs:
            if not trades:
                continue
            fig.add_trace(
                _marker_trace(
                    trades,
                    exit_=exit_,
                    name=name,
                    symbol=marker,
                    color=color,
                    role=role,
                    sym=sym,
                    legend=once(name),
                ),
                row=row,
                col=1,
            )

    equity = _utc_series(result.equity)
    drawdown = _drawdown_pct(equity)
    eq_plot = downsample_minmax(equity, max_points)
    dd_plot = downsample_minmax(drawdown, max_points)
    fig.add_trace(
        go.Scatter(
            x=eq_plot.index,
            y=eq_plot.to_numpy(),
            mode="lines",
            name="Equity",
            showlegend=False,
            line={"color": _BLUE, "width": 1.5},
            hovertemplate="%{x}<br>equity: %{y:,.2f}<extra></extra>",
            meta={"role": "equity"},
        ),
        row=n_price + 1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=dd_plot.index,
            y=dd_plot.to_numpy(),
            mode="lines",
            name="Drawdown %",
            showlegend=False,
            fill="tozeroy",
            line={"color": _RED, "width": 1},
            fillcolor="rgba(214,39,40,0.3)",
            hovertemplate="%{x}<br>drawdown: %{y:.2f}%<extra></extra>",
            meta={"role": "drawdown"},
        ),
        row=n_price + 2,
        col=1,
    )
    fig.update_xaxes(rangeslider_visible=False, showspikes=True, spikemode="across")
    fig.update_xaxes(title_text="time (UTC)", row=rows, col=1)
    fig.update_yaxes(ticksuffix="%", row=rows, col=1)
    fig.update_layout(
        template="plotly_white",
        height=int(sum(heights) * 110 + 120),
        margin={"l": 60, "r": 20, "t": 60, "b": 40},
        hovermode="closest",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
    )
    return fig


# ----------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:24px;color:#222}
h1{margin:0 0 4px 0;font-size:1.6em}h2{margin-top:32px;font-size:1.2em}
.sub{color:#666;margin-bottom:16px}.note{color:#8a6d3b;background:#fcf8e3;padding:6px 10px;
border-radius:4px;margin:8px 0;display:inline-block}
.groups{display:flex;flex-wrap:wrap;gap:24px}
table{border-collapse:collapse;font-size:13px}th,td{padding:4px 10px;border-bottom:1px solid #eee}
th{background:#f6f6f6;text-align:left;position:sticky;top:0}td.n{text-align:right;
font-variant-numeric:tabular-nums}.pos{color:#2ca02c}.neg{color:#d62728}
.scroll{max-height:600px;overflow:auto;border:1px solid #eee}
"""


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


def _metrics_html(result: BacktestResult) -> str:
    m = _metrics_with_fallbacks(result)
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
            sign = _finite(value) if key in _SIGNED_KEYS else None
            cell = _td(_fmt_metric(value, kind), numeric=True, sign=sign)
            rows.append(f"<tr><td>{html.escape(label)}</td>{cell}</tr>")
        parts.append(f"<div><h3>{html.escape(title)}</h3>{_table(['Metric', 'Value'], rows)}</div>")
    return f'<div class="groups">{"".join(parts)}</div>'


def _breakdown_html(stats: dict[str, dict[str, Any]], label: str) -> str:
    if not stats:
        return "<p>No trades.</p>"
    rows = []
    ordered = sorted(stats.items(), key=lambda kv: -(_finite(kv[1].get("trades")) or 0))
    for key, s in ordered:
        rows.append(
            "<tr>"
            + _td(html.escape(key))
            + _td(_fmt_int(s.get("trades")), numeric=True)
            + _td(_fmt_pct(s.get("win_rate")), numeric=True)
            + _td(_fmt_num(s.get("total_pnl")), numeric=True, sign=_finite(s.get("total_pnl")))
            + _td(_fmt_num(s.get("avg_pnl")), numeric=True, sign=_finite(s.get("avg_pnl")))
            + _td(_fmt_pct(s.get("avg_pnl_pct")), numeric=True, sign=_finite(s.get("avg_pnl_pct")))
            + _td(_fmt_num(s.get("profit_factor")), numeric=True)
            + _td(_fmt_num(s.get("avg_bars_held")), numeric=True)
            + "</tr>"
        )
    headers = [label, "Trades", "Win rate", "Total PnL", "Avg PnL", "Avg PnL %", "PF", "Avg bars"]
    return _table(headers, rows)


def _trades_html(trades: list[TradeRecord], limit: int) -> str:
    if not trades:
        return "<p>No trades.</p>"
    rows = []
    for t in trades[:limit]:
        rows.append(
            "<tr>"
            + _td(str(t.trade_id), numeric=True)
            + _td(html.escape(t.symbol))
            + _td(html.escape(t.side))
            + _td(_fmt_time(t.entry_time))
            + _td(_fmt_time(t.exit_time))
            + _td(_fmt_price(t.entry_price), numeric=True)
            + _td(_fmt_price(t.exit_price), numeric=True)
            + _td(_fmt_qty(t.quantity), numeric=True)
            + _td(_fmt_num(t.pnl), numeric=True, sign=t.pnl)
            + _td(_fmt_pct(t.pnl_pct), numeric=True, sign=t.pnl_pct)
            + _td(_fmt_num(t.fees), numeric=True)
            + _td(html.escape(t.exit_reason))
            + _td(html.escape(t.entry_tag))
            + _td(_fmt_int(t.bars_held), numeric=True)
            + _td(_fmt_pct(t.mae_pct), numeric=True)
            + _td(_fmt_pct(t.mfe_pct), numeric=True)
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


def render_html_report(result: BacktestResult) -> str:
    """Return the self-contained HTML report as a string."""
    e = html.escape
    all_symbols = _panel_symbols(result)
    notes: list[str] = []
    if len(all_symbols) > MAX_PRICE_PANELS:
        rest = ", ".join(all_symbols[MAX_PRICE_PANELS:])
        notes.append(
            f"Price panels are shown for the first {MAX_PRICE_PANELS} symbols only; "
            f"not charted: {e(rest)}."
        )
    longest = max([len(result.equity), *(len(df) for df in result.prices.values())], default=0)
    if longest > MAX_PLOT_POINTS:
        notes.append(
            f"Line series are downsampled to at most {MAX_PLOT_POINTS:,} points "
            "(min and max per bucket, so spikes remain visible); trade markers are exact."
        )
    fig = build_figure(result)
    fig_html = fig.to_html(
        full_html=False,
        include_plotlyjs=True,
        config={"responsive": True, "displaylogo": False},
    )
    symbols = ", ".join(result.symbols) or _DASH
    ret = _fmt_pct(_total_return_pct(result))
    sub = (
        f"{e(symbols)} · {e(result.timeframe)} · {_fmt_time(result.start)} → "
        f"{_fmt_time(result.end)} UTC · {result.bars:,} bars · total return {ret}"
    )
    notes_html = "".join(f'<div class="note">{n}</div><br>' for n in notes)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{e(result.name)} – backtest report</title>\n<style>{_CSS}</style>\n"
        "</head>\n<body>\n"
        f"<header><h1>{e(result.name)}</h1><div class=\"sub\">{sub}</div></header>\n"
        f"{notes_html}"
        f"<section><h2>Key metrics</h2>{_metrics_html(result)}</section>\n"
        f"<section><h2>Chart</h2>{fig_html}</section>\n"
        "<section><h2>By exit reason</h2>"
        f"{_breakdown_html(_breakdown(result, 'by_exit_reason', 'exit_reason'), 'Exit reason')}"
        "</section>\n"
        "<section><h2>By entry tag</h2>"
        f"{_breakdown_html(_breakdown(result, 'by_entry_tag', 'entry_tag'), 'Entry tag')}"
        "</section>\n"
        f"<section><h2>Trades ({len(result.trades):,})</h2>"
        f"{_trades_html(result.trades, MAX_TRADE_ROWS)}</section>\n"
        "</body>\n</html>\n"
    )


def write_html_report(result: BacktestResult, path: Path) -> Path:
    """Write the self-contained HTML report to `path` atomically and return it."""
    return atomic_write_bytes(Path(path), render_html_report(result).encode("utf-8"))


# ------------------------------------------------------------------------------ PNG


def render_equity_png(result: BacktestResult) -> bytes:
    """Return a PNG of equity (top) and drawdown % (bottom) at 150 dpi."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    equity = _utc_series(result.equity)
    drawdown = _drawdown_pct(equity)
    eq = downsample_minmax(equity, PNG_MAX_POINTS)
    dd = downsample_minmax(drawdown, PNG_MAX_POINTS)

    fig = Figure(figsize=PNG_FIGSIZE, dpi=PNG_DPI)
    FigureCanvasAgg(fig)
    ax_eq, ax_dd = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ret = _fmt_pct(_total_return_pct(result))
    fig.suptitle(f"{result.name} — total return {ret}")
    if eq.empty:
        ax_eq.text(0.5, 0.5, "no equity data", ha="center", va="center", transform=ax_eq.transAxes)
    else:
        ax_eq.plot(eq.index, eq.to_numpy(), color=_BLUE, linewidth=1.0)
        ax_dd.fill_between(dd.index, dd.to_numpy(), 0.0, color=_RED, alpha=0.35, linewidth=0)
        ax_dd.plot(dd.index, dd.to_numpy(), color=_RED, linewidth=0.6)
    ax_eq.set_ylabel("equity")
    ax_eq.grid(alpha=0.3)
    ax_dd.set_ylabel("drawdown %")
    ax_dd.set_xlabel("time (UTC)")
    ax_dd.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PNG_DPI)
    return buf.getvalue()


def write_equity_png(result: BacktestResult, path: Path) -> Path:
    """Write the equity/drawdown PNG to `path` atomically and return it."""
    return atomic_write_bytes(Path(path), render_equity_png(result))
