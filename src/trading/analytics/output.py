"""Write every artefact of one backtest into a folder, atomically.

Files: ``result.json`` (the `BacktestResult.to_dict()` contract), ``trades.csv``,
``equity.csv``, ``report.html`` and ``equity.png``. See docs/reports.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trading.analytics.report import atomic_write_bytes, render_equity_png, render_html_report
from trading.results import TRADE_COLUMNS, BacktestResult, trades_frame

__all__ = [
    "OUTPUT_FILES",
    "result_json",
    "trades_csv",
    "equity_csv",
    "write_outputs",
]

OUTPUT_FILES: dict[str, str] = {
    "json": "result.json",
    "trades": "trades.csv",
    "equity": "equity.csv",
    "html": "report.html",
    "png": "equity.png",
}


def _json_safe(v: Any) -> Any:
    """Return `v` with numpy/pandas scalars made native and NaN/inf mapped to None."""
    if isinstance(v, Mapping):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_json_safe(x) for x in v]
    if isinstance(v, np.ndarray):
        return [_json_safe(x) for x in v.tolist()]
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (pd.Timestamp, datetime, date, np.datetime64)):
        return None if pd.isna(v) else pd.Timestamp(v).isoformat()
    if isinstance(v, Enum):
        return _json_safe(v.value)
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, np.generic):
        v = v.item()
        if isinstance(v, (bool, str)):
            return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v) if math.isfinite(v) else None
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v)


def result_json(result: BacktestResult) -> str:
    """Return the JSON text of `result.to_dict()` (strict: no NaN, indent 2)."""
    return json.dumps(_json_safe(result.to_dict()), indent=2, allow_nan=False, ensure_ascii=False)


def _iso_utc(values: pd.Series) -> pd.Series:
    """Return timestamps as ISO 8601 strings in UTC (naive input is taken as UTC)."""
    ts = pd.to_datetime(values, utc=True)
    return pd.Series([t.isoformat() for t in ts], index=values.index, dtype=object)


def trades_csv(result: BacktestResult) -> str:
    """Return the trades as CSV text with exactly the TradeRecord columns."""
    df = trades_frame(result.trades)
    if not df.empty:
        df["entry_time"] = _iso_utc(df["entry_time"])
        df["exit_time"] = _iso_utc(df["exit_time"])
    return df.to_csv(index=False, columns=list(TRADE_COLUMNS), lineterminator="\n")


def equity_csv(result: BacktestResult) -> str:
    """Return the equity curve as CSV text with columns ``time,value``."""
    eq = result.equity
    if eq.empty:
        times: list[str] = []
    else:
        times = [t.isoformat() for t in pd.to_datetime(eq.index, utc=True)]
    df = pd.DataFrame({"time": times, "value": eq.to_numpy(dtype=float)})
    return df.to_csv(index=False, lineterminator="\n")


def write_outputs(
    result: BacktestResult, outdir: Path, *, json_path: Path | None = None
) -> dict[str, Path]:
    """Write result.json, trades.csv, equity.csv, report.html, equity.png into `outdir`.

    Each file is written atomically (temp file in the same folder, then
    `os.replace`). The JSON goes first so it survives a failure in the report
    rendering. If `json_path` is given the JSON is also written there.
    Return the written paths keyed by ``json, trades, equity, html, png``.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {key: outdir / name for key, name in OUTPUT_FILES.items()}

    payload = result_json(result).encode("utf-8")
    atomic_write_bytes(paths["json"], payload)
    if json_path is not None:
        atomic_write_bytes(Path(json_path), payload)
    atomic_write_bytes(paths["trades"], trades_csv(result).encode("utf-8"))
    atomic_write_bytes(paths["equity"], equity_csv(result).encode("utf-8"))
    atomic_write_bytes(paths["html"], render_html_report(result).encode("utf-8"))
    atomic_write_bytes(paths["png"], render_equity_png(result))
    return paths
