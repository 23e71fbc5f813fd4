"""The backtest report's figures: the interactive plotly chart and the equity/drawdown PNG.

Line series (price closes, equity, drawdown) are downsampled with a min/max-per-bucket scheme
so large runs stay small and spikes stay visible; trade markers are never downsampled.
"""

from __future__ import annotations

import html
import io
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from trading.analytics.regime_band import add_regime_band, regime_changes
from trading.analytics.report_format import (
    fmt_num,
    fmt_pct,
    fmt_price,
    fmt_qty,
    naive_utc,
    total_return_pct,
)
from trading.results import BacktestResult, TradeRecord

MAX_PLOT_POINTS = 5_000  # per line series in the HTML figure
CANDLESTICK_MAX_BARS = 5_000  # above this a price panel is a (downsampled) close line
MAX_PRICE_PANELS = 4
PNG_FIGSIZE = (10.0, 6.0)  # inches
PNG_DPI = 150
PNG_MAX_POINTS = 20_000

_GREEN = "#2ca02c"
_RED = "#d62728"
_BLUE = "#1f77b4"


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


def panel_symbols(result: BacktestResult) -> list[str]:
    """Return every symbol that has prices or trades, in result order."""
    out: list[str] = []
    for sym in [*result.symbols, *result.prices.keys(), *(t.symbol for t in result.trades)]:
        if sym not in out:
            out.append(sym)
    return out


def _trade_hover(t: TradeRecord, exit_: bool) -> str:
    e = html.escape
    head = f"#{t.trade_id} {e(t.symbol)} {e(t.side)} {'exit' if exit_ else 'entry'}"
    if exit_:
        return (
            f"{head}<br>reason: {e(t.exit_reason)}<br>"
            f"pnl: {fmt_num(t.pnl)} ({fmt_pct(t.pnl_pct)})<br>"
            f"entry tag: {e(t.entry_tag)}<br>price: {fmt_price(t.exit_price)}"
        )
    return (
        f"{head}<br>entry tag: {e(t.entry_tag)}<br>price: {fmt_price(t.entry_price)}"
        f"<br>qty: {fmt_qty(t.quantity)}"
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
        x=[naive_utc(t.exit_time if exit_ else t.entry_time) for t in trades],
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


def _price_trace(
    df: pd.DataFrame, sym: str, max_points: int, candlestick_max_bars: int
) -> go.Candlestick | go.Scatter | None:
    """Return candles for a short frame, else the (downsampled) close line; None without prices."""
    cols = _ohlc_columns(df)
    idx = _naive_utc_index(df.index)
    if len(df) <= candlestick_max_bars and len(cols) == 4:
        return go.Candlestick(
            x=idx,
            open=df[cols["open"]].to_numpy(dtype=float),
            high=df[cols["high"]].to_numpy(dtype=float),
            low=df[cols["low"]].to_numpy(dtype=float),
            close=df[cols["close"]].to_numpy(dtype=float),
            name=sym,
            showlegend=False,
            meta={"role": "price", "symbol": sym},
        )
    if "close" not in cols:
        return None
    close = pd.Series(df[cols["close"]].to_numpy(dtype=float), index=idx)
    close = downsample_minmax(close, max_points)
    return go.Scatter(
        x=close.index,
        y=close.to_numpy(),
        mode="lines",
        name=f"{sym} close",
        showlegend=False,
        line={"color": "#555", "width": 1},
        meta={"role": "price", "symbol": sym},
    )


def _marker_traces(trades: list[TradeRecord], sym: str, legend_seen: set[str]) -> list[go.Scatter]:
    """Return one symbol's entry and exit markers; a name enters the legend the first time only."""
    longs = [t for t in trades if t.side == "long"]
    shorts = [t for t in trades if t.side != "long"]
    winners = [t for t in trades if t.pnl >= 0]
    losers = [t for t in trades if t.pnl < 0]
    specs = (
        (longs, False, "Long entry", "triangle-up", _GREEN, "entry"),
        (shorts, False, "Short entry", "triangle-down", _GREEN, "entry"),
        (winners, True, "Exit (win)", "x", _GREEN, "exit"),
        (losers, True, "Exit (loss)", "x", _RED, "exit"),
    )
    out = []
    for group, exit_, name, marker, color, role in specs:
        if not group:
            continue
        out.append(
            _marker_trace(
                group,
                exit_=exit_,
                name=name,
                symbol=marker,
                color=color,
                role=role,
                sym=sym,
                legend=name not in legend_seen,
            )
        )
        legend_seen.add(name)
    return out


def _equity_traces(result: BacktestResult, max_points: int) -> tuple[go.Scatter, go.Scatter]:
    """Return the equity line and the filled drawdown-% line, both downsampled."""
    equity = _utc_series(result.equity)
    eq_plot = downsample_minmax(equity, max_points)
    dd_plot = downsample_minmax(_drawdown_pct(equity), max_points)
    equity_line = go.Scatter(
        x=eq_plot.index,
        y=eq_plot.to_numpy(),
        mode="lines",
        name="Equity",
        showlegend=False,
        line={"color": _BLUE, "width": 1.5},
        hovertemplate="%{x}<br>equity: %{y:,.2f}<extra></extra>",
        meta={"role": "equity"},
    )
    drawdown_line = go.Scatter(
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
    )
    return equity_line, drawdown_line


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
    symbols = panel_symbols(result)[:max_price_panels]
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
    for row, sym in enumerate(symbols, start=1):
        df = result.prices.get(sym)
        if df is not None and not df.empty:
            price = _price_trace(df, sym, max_points, candlestick_max_bars)
            if price is not None:
                fig.add_trace(price, row=row, col=1)
            add_regime_band(fig, regime_changes(result.diagnostics, sym), df.index[-1], row)
        sym_trades = [t for t in result.trades if t.symbol == sym]
        for trace in _marker_traces(sym_trades, sym, legend_seen):
            fig.add_trace(trace, row=row, col=1)
    equity, drawdown = _equity_traces(result, max_points)
    fig.add_trace(equity, row=n_price + 1, col=1)
    fig.add_trace(drawdown, row=n_price + 2, col=1)
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
    ret = fmt_pct(total_return_pct(result))
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
