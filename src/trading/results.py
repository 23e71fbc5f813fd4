"""Result types shared by the engine, analytics, reports and persistence.

The JSON form of `BacktestResult` is a stable contract (see docs/results.md):
keys ending in ``_pct`` and ``win_rate`` are percentages (1.5 means 1.5 %).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

import pandas as pd


@dataclass(slots=True)
class TradeRecord:
    """One closed round trip (or one leg of a partially closed position)."""

    trade_id: int
    symbol: str
    side: str  # "long" | "short"
    entry_time: datetime  # UTC, time of the entry fill bar
    exit_time: datetime  # UTC, time of the exit fill bar
    entry_price: float  # average fill price including slippage
    exit_price: float
    quantity: float  # always positive; side tells the direction
    gross_pnl: float  # price pnl before fees
    fees: float  # entry + exit commission attributed to this trade
    pnl: float  # net: gross_pnl - fees
    pnl_pct: float  # net pnl / (entry_price * quantity) * 100
    exit_reason: str
    entry_tag: str  # "+"-joined names of the entry mixins that fired
    bars_held: int  # exit bar index - entry bar index
    mae_pct: float  # maximum adverse excursion, % of entry price (<= 0)
    mfe_pct: float  # maximum favourable excursion, % of entry price (>= 0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["entry_time"] = _iso(self.entry_time)
        d["exit_time"] = _iso(self.exit_time)
        return d


TRADE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(TradeRecord))


def trades_frame(trades: list[TradeRecord]) -> pd.DataFrame:
    """Return the trades as a DataFrame with exactly TRADE_COLUMNS (empty-safe)."""
    if not trades:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in TRADE_COLUMNS})
    return pd.DataFrame([asdict(t) for t in trades], columns=list(TRADE_COLUMNS))


@dataclass(slots=True)
class BacktestResult:
    """Everything one backtest produced."""

    name: str
    symbols: list[str]
    timeframe: str
    start: datetime
    end: datetime
    initial_cash: float
    final_value: float
    trades: list[TradeRecord]
    equity: pd.Series  # portfolio value per bar, DatetimeIndex (UTC)
    metrics: dict[str, Any]
    config: dict[str, Any]  # resolved config, secrets redacted
    bars: int
    prices: dict[str, pd.DataFrame] = field(default_factory=dict)  # OHLCV per symbol, for reports
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, *, include_equity: bool = True) -> dict[str, Any]:
        """Return the stable JSON contract."""
        out: dict[str, Any] = {
            "name": self.name,
            "symbols": list(self.symbols),
            "timeframe": self.timeframe,
            "start": _iso(self.start),
            "end": _iso(self.end),
            "bars": self.bars,
            "metrics": {k: _jsonable(v) for k, v in self.metrics.items()},
            "trades": [t.to_dict() for t in self.trades],
            "config": self.config,
        }
        if include_equity:
            out["equity"] = [
                {"time": _iso(t), "value": float(v)} for t, v in self.equity.items()
            ]
        if self.diagnostics:
            out["diagnostics"] = self.diagnostics
        return out


def _iso(ts: Any) -> str:
    return pd.Timestamp(ts).isoformat()


def _jsonable(v: Any) -> Any:
    """Map NaN/inf to None and numpy scalars to Python; recurse into dicts."""
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
