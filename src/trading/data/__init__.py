"""Market data: load CSV files, validate bars, resample, and generate synthetic data."""

from __future__ import annotations

from trading.data.csv_loader import load_csv
from trading.data.resample import resample_ohlcv
from trading.data.synthetic import generate_ohlcv
from trading.data.validation import (
    OHLCV_COLUMNS,
    DataReport,
    Gap,
    format_timeframe,
    infer_timeframe,
    validate_ohlcv,
)

__all__ = [
    "OHLCV_COLUMNS",
    "DataReport",
    "Gap",
    "format_timeframe",
    "generate_ohlcv",
    "infer_timeframe",
    "load_csv",
    "resample_ohlcv",
    "validate_ohlcv",
]
