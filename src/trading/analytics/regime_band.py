"""The market-regime band under a price panel, from mixins' ``regime_changes`` diagnostics.

A mixin (the HMM/LSTM entry) reports its regime run-length encoded as ``[[time, regime],
...]``; each run becomes a coloured strip along the bottom of the symbol's price panel.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

BAND_HEIGHT = 0.06  # share of the price panel's height
_COLOURS = {
    "bull": "rgba(44,160,44,0.55)",
    "range": "rgba(127,127,127,0.45)",
    "bear": "rgba(214,39,40,0.55)",
    "low_vol": "rgba(31,119,180,0.45)",
    "mid_vol": "rgba(188,189,34,0.5)",
    "high_vol": "rgba(255,127,14,0.6)",
}


def regime_changes(diagnostics: dict[str, Any], symbol: str) -> list[list[str]]:
    """Return the first mixin's regime changes for `symbol`, or []."""
    for d in (diagnostics.get("mixins") or {}).get(symbol, {}).values():
        if isinstance(d, dict) and d.get("regime_changes"):
            return list(d["regime_changes"])
    return []


def add_regime_band(fig: go.Figure, changes: list[list[str]], end: Any, row: int) -> None:
    """Draw one strip per regime run at the bottom of subplot `row`, with a legend entry per regime."""
    if not changes:
        return
    sub = fig.get_subplot(row, 1)
    xref = sub.xaxis.plotly_name.replace("axis", "")
    yref = sub.yaxis.plotly_name.replace("axis", "") + " domain"
    times = [pd.Timestamp(t).tz_localize(None) if pd.Timestamp(t).tzinfo else pd.Timestamp(t) for t, _ in changes]
    stop = pd.Timestamp(end)
    times.append(stop.tz_convert(None) if stop.tzinfo else stop)
    shapes = [
        {
            "type": "rect", "xref": xref, "yref": yref, "x0": times[k], "x1": times[k + 1],
            "y0": 0.0, "y1": BAND_HEIGHT, "fillcolor": _COLOURS.get(regime, "rgba(148,103,189,0.5)"),
            "line": {"width": 0}, "layer": "above",
        }
        for k, (_, regime) in enumerate(changes)
    ]
    fig.layout.shapes = tuple(fig.layout.shapes) + tuple(shapes)
    for regime in dict.fromkeys(r for _, r in changes):
        fig.add_trace(
            go.Scatter(
                x=[None], y=[None], mode="markers", name=f"regime: {regime}",
                marker={"symbol": "square", "size": 10, "color": _COLOURS.get(regime, "rgba(148,103,189,0.5)")},
                meta={"role": "regime", "regime": regime},
            ),
            row=row,
            col=1,
        )
