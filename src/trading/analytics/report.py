"""Human-facing backtest reports: one self-contained HTML file and an equity PNG.

The HTML report embeds plotly.js inline, so it opens offline from disk. The tables are built
in `report_tables`, the chart and the PNG in `report_figures`; this module puts the page
together and writes the files.
"""

from __future__ import annotations

import html
import os  # noqa: F401  (kept as report.os: tests patch os.replace through it)
from pathlib import Path

from trading.analytics.report_figures import (
    CANDLESTICK_MAX_BARS,
    MAX_PLOT_POINTS,
    MAX_PRICE_PANELS,
    PNG_DPI,
    PNG_FIGSIZE,
    build_figure,
    downsample_minmax,
    panel_symbols,
    render_equity_png,
)
from trading.analytics.report_format import DASH, fmt_pct, fmt_time, total_return_pct
from trading.analytics.report_tables import (
    MAX_TRADE_ROWS,
    breakdown,
    breakdown_html,
    metrics_html,
    trades_html,
)
from trading.atomic_io import atomic_write_bytes
from trading.results import BacktestResult

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


def render_html_report(result: BacktestResult) -> str:
    """Return the self-contained HTML report as a string."""
    e = html.escape
    all_symbols = panel_symbols(result)
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
    symbols = ", ".join(result.symbols) or DASH
    ret = fmt_pct(total_return_pct(result))
    sub = (
        f"{e(symbols)} · {e(result.timeframe)} · {fmt_time(result.start)} → "
        f"{fmt_time(result.end)} UTC · {result.bars:,} bars · total return {ret}"
    )
    notes_html = "".join(f'<div class="note">{n}</div><br>' for n in notes)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{e(result.name)} – backtest report</title>\n<style>{_CSS}</style>\n"
        "</head>\n<body>\n"
        f'<header><h1>{e(result.name)}</h1><div class="sub">{sub}</div></header>\n'
        f"{notes_html}"
        f"<section><h2>Key metrics</h2>{metrics_html(result)}</section>\n"
        f"<section><h2>Chart</h2>{fig_html}</section>\n"
        "<section><h2>By exit reason</h2>"
        f"{breakdown_html(breakdown(result, 'by_exit_reason', 'exit_reason'), 'Exit reason')}"
        "</section>\n"
        "<section><h2>By entry tag</h2>"
        f"{breakdown_html(breakdown(result, 'by_entry_tag', 'entry_tag'), 'Entry tag')}"
        "</section>\n"
        f"<section><h2>Trades ({len(result.trades):,})</h2>"
        f"{trades_html(result.trades, MAX_TRADE_ROWS)}</section>\n"
        "</body>\n</html>\n"
    )


def write_html_report(result: BacktestResult, path: Path) -> Path:
    """Write the self-contained HTML report to `path` atomically and return it."""
    return atomic_write_bytes(Path(path), render_html_report(result).encode("utf-8"))


def write_equity_png(result: BacktestResult, path: Path) -> Path:
    """Write the equity/drawdown PNG to `path` atomically and return it."""
    return atomic_write_bytes(Path(path), render_equity_png(result))
