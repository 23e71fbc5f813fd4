"""The equity chart of a report, as PNG bytes (matplotlib, no pyplot: safe off the main thread)."""

from __future__ import annotations

import io

import pandas as pd


def equity_png(equity: pd.Series, title: str) -> bytes:
    """Render an equity curve (DatetimeIndex) as a small PNG for a phone or an email."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if len(equity):
        ax.plot(equity.index, equity.to_numpy(dtype=float), color="#1f77b4", linewidth=1.4,
                drawstyle="steps-post")
        ax.fill_between(equity.index, equity.to_numpy(dtype=float), float(equity.min()), alpha=0.12,
                        step="post")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
