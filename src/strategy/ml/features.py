"""Causal per-bar features, their in-window scaling, and forward-return labels.

Features are computed on a segment of bars that starts at a training window's first bar:
row ``j`` depends on bars ``j - lookback .. j`` of the segment only, so the rows of a window
``[s, e)`` are a function of that window's bars and nothing else (a model is then keyed by
those bars alone), and a row after the window reads no bar after itself. The label of row
``j`` (did the close rise over the next ``horizon`` bars?) exists only when
``j + horizon <= e - 1``: the last ``horizon`` rows of a window have none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURE_NAMES = ("ret_1", "ret_mean", "log_vol", "range", "zscore", "log_volume")
# Columns the HMM sees: the drift and the volatility of the recent past.
HMM_COLUMNS = (1, 2)
_EPS = 1e-12


def lookback(window: int) -> int:
    """Return how many bars before row j the features of row j read."""
    return window


def _rolling_mean(x: np.ndarray, w: int) -> np.ndarray:
    """Trailing mean over w values (NaN for the first w - 1), via a cumulative sum."""
    out = np.full(len(x), np.nan)
    if len(x) >= w:
        c = np.cumsum(np.concatenate([[0.0], x]))
        out[w - 1 :] = (c[w:] - c[:-w]) / w
    return out


def compute_features(
    close: np.ndarray, high: np.ndarray, low: np.ndarray, volume: np.ndarray, window: int
) -> np.ndarray:
    """Return an (n, 6) float64 matrix of causal features; rows before `lookback` are NaN.

    Columns: 1-bar log return; mean log return and log volatility over `window` returns;
    log high/low range; z-score of the close against its `window`-bar mean; log volume
    against its `window`-bar mean.
    """
    n = len(close)
    logc = np.log(np.maximum(close, _EPS))
    if n:
        logc = logc - logc[0]  # centred: the rolling variance below then loses no precision
    ret = np.full(n, np.nan)
    ret[1:] = np.diff(logc)
    r = np.nan_to_num(ret)
    mean = _rolling_mean(r, window)
    var = np.maximum(_rolling_mean(r * r, window) - mean * mean, 0.0)
    log_vol = 0.5 * np.log(var + _EPS)
    rng = np.log(np.maximum(high, _EPS) / np.maximum(low, _EPS))
    c_mean = _rolling_mean(logc, window)
    c_var = np.maximum(_rolling_mean(logc * logc, window) - c_mean * c_mean, 0.0)
    z = (logc - c_mean) / np.sqrt(c_var + _EPS)
    logv = np.log(np.maximum(volume, 0.0) + 1.0)
    v_rel = logv - _rolling_mean(logv, window)
    out = np.column_stack([ret, mean, log_vol, rng, z, v_rel])
    # Rows whose rolling windows reach before bar 0 (or include the undefined return of bar 0).
    out[: min(n, lookback(window))] = np.nan
    return out


@dataclass(frozen=True, slots=True)
class Scaler:
    """Per-column mean and standard deviation fitted on one training window."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Scaler:
        std = x.std(axis=0)
        return cls(x.mean(axis=0), np.where(std > 1e-9, std, 1.0))

    def transform(self, x: np.ndarray) -> np.ndarray:
        # Clip: a crash outside the training range should not blow up the LSTM's inputs.
        return np.clip((x - self.mean) / self.std, -10.0, 10.0)


def forward_up(close: np.ndarray, horizon: int) -> np.ndarray:
    """Return 1.0 where close[j + horizon] > close[j], 0.0 where not, NaN where unknown."""
    out = np.full(len(close), np.nan)
    if len(close) > horizon:
        out[:-horizon] = (close[horizon:] > close[:-horizon]).astype(np.float64)
    return out


