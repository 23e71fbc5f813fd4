"""Shared helpers of the ML tests: small fast parameters, bars from frames, regime-switching series."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from strategy.mixins.base import Bars

# Small and fast: a window fits in well under a second.
SMALL: dict[str, Any] = {
    "e_train_bars": 120,
    "e_retrain_every": 60,
    "e_horizon": 3,
    "e_threshold": 0.5,
    "e_feature_window": 10,
    "e_seq_len": 8,
    "e_hidden": 4,
    "e_epochs": 3,
    "e_hmm_states": 2,
    "e_hmm_iter": 10,
    "e_seed": 3,
}


def bars_of(df: pd.DataFrame) -> Bars:
    """Return the Bars of an OHLCV frame (copies)."""
    time = df.index.tz_convert(None).to_numpy().astype("datetime64[ns]") if df.index.tz else df.index.to_numpy()
    return Bars(time, *(df[c].to_numpy(dtype=np.float64).copy() for c in ("open", "high", "low", "close", "volume")))


def head(bars: Bars, n: int) -> Bars:
    """Return the first n bars (copies)."""
    return Bars(*(np.array(getattr(bars, f)[:n]) for f in ("time", "open", "high", "low", "close", "volume")))


def markov_regimes(n: int, k: int, stay: float, rng: np.random.Generator) -> np.ndarray:
    """Return a sticky Markov chain of n states in 0..k-1 (P(stay) = `stay`)."""
    states = np.empty(n, dtype=np.int64)
    states[0] = 0
    jumps = rng.random(n) > stay
    for t in range(1, n):
        states[t] = (states[t - 1] + rng.integers(1, k)) % k if jumps[t] else states[t - 1]
    return states


def frame_from_returns(log_returns: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Return hourly OHLCV bars whose closes follow the given log returns."""
    n = len(log_returns)
    close = 100.0 * np.exp(np.cumsum(log_returns))
    open_ = np.concatenate([[100.0], close[:-1]])
    wick = np.abs(rng.normal(0.0, 0.002, (2, n)))
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * np.exp(wick[0]),
            "low": np.minimum(open_, close) * np.exp(-wick[1]),
            "close": close,
            "volume": rng.uniform(500.0, 1500.0, n),
        },
        index=pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC", name="datetime"),
    )
