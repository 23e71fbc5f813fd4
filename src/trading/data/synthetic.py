"""Deterministic synthetic OHLCV bars with regimes, volatility clustering, gaps and volume spikes.

This is the embedded default data for the demo and the tests: the same arguments always
give a bit-identical frame (for a given numpy version).
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd

from trading.data.timeframes import timeframe_seconds, timeframe_to_timedelta
from trading.data.validation import OHLCV_COLUMNS

# Regimes of the Markov chain.
UP, DOWN, MEAN_REVERTING = 0, 1, 2
# Transition probabilities (rows: from, columns: to). No self-transitions: a regime's
# length is drawn separately. Trends usually calm down into a range before reversing.
_TRANSITIONS = np.array(
    [
        [0.00, 0.30, 0.70],
        [0.30, 0.00, 0.70],
        [0.50, 0.50, 0.00],
    ]
)
# Per-bar volatility of log prices at 1h; other timeframes scale it by sqrt(bar length).
_HOURLY_VOL = 0.006
# Volatility multiplier per regime: sell-offs are more volatile than rallies and ranges.
_REGIME_VOL = np.array([0.9, 1.3, 0.8])
# Trend drift per bar, in units of the regime's volatility (drawn per segment).
_DRIFT_RANGE = (0.08, 0.25)
# Mean-reversion coefficient of the OU deviation per bar (drawn per segment): half-lives
# of about 7 to 23 bars, the scale RSI(14) and Bollinger(20) react to.
_OU_PHI_RANGE = (0.90, 0.97)
# Regime lengths in bars: 20 + Gamma(2, 60), mean 140, mostly 30..400.
_MIN_REGIME_BARS = 20
# Stochastic log-volatility: AR(1) with this persistence and stationary std.
_VOL_PERSISTENCE = 0.98
_VOL_OF_VOL = 0.35
# Very slow pull of the price back to start_price, so long series stay in a sane range.
_ANCHOR_HALF_LIFE_BARS = 5_000
# Share of bars that open with a gap, and the gap size in units of the bar's volatility
# (an ATR is about 1.5 to 2 of those, so these are several ATRs).
_GAP_PROBABILITY = 0.01
_GAP_SIZE = (5.0, 10.0)
_OPEN_NOISE = 0.05
_BASE_VOLUME = 1_000.0
_VOLUME_SPIKE_PROBABILITY = 0.03
_VOLUME_SPIKE_SIZE = (2.0, 5.0)

# exp(-27) ~ 2e-12: chunks of the linear recursion stay well inside float64 range.
_MAX_LOG_DECAY = 27.0


def _linear_recurrence(a: np.ndarray, b: np.ndarray, x0: float = 0.0) -> np.ndarray:
    """Solve ``x[t] = a[t] * x[t-1] + b[t]`` with ``x[-1] = x0`` for 0 < a <= 1, vectorised.

    Within a chunk the solution is ``P[t] * cumsum(b / P)`` with ``P`` the running product
    of ``a``; chunks are sized so that ``P`` never underflows, and only the carry between
    chunks needs a Python loop (a few thousand steps for a million bars).
    """
    n = len(b)
    if n == 0:
        return np.empty(0)
    log_a = np.log(a)
    worst = float(-log_a.min())
    size = n if worst == 0 else max(1, min(n, int(_MAX_LOG_DECAY / worst)))
    chunks = -(-n // size)
    pad = chunks * size - n
    log_a = np.concatenate([log_a, np.zeros(pad)]).reshape(chunks, size)
    b = np.concatenate([b, np.zeros(pad)]).reshape(chunks, size)
    prod = np.exp(np.cumsum(log_a, axis=1))
    partial = prod * np.cumsum(b / prod, axis=1)
    carry = np.empty(chunks)
    x = x0
    end_prod, end_partial = prod[:, -1].tolist(), partial[:, -1].tolist()
    for i in range(chunks):
        carry[i] = x
        x = end_prod[i] * x + end_partial[i]
    return (partial + prod * carry[:, None]).ravel()[:n]


def _regimes(rng: np.random.Generator, bars: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw the regime chain; return per-bar regime, trend drift (vol units) and OU phi."""
    segments = bars // _MIN_REGIME_BARS + 1  # enough even if every regime is the shortest
    lengths = (_MIN_REGIME_BARS + rng.gamma(2.0, 60.0, size=segments)).astype(np.int64)
    uniforms = rng.random(segments)
    drift = rng.uniform(*_DRIFT_RANGE, size=segments)
    phi = rng.uniform(*_OU_PHI_RANGE, size=segments)
    state = int(rng.integers(3))
    # Only the segments that cover `bars` are walked.
    used = int(np.searchsorted(np.cumsum(lengths), bars)) + 1
    cumulative = np.cumsum(_TRANSITIONS, axis=1).tolist()
    draws = uniforms[:used].tolist()
    chain = [0] * used
    # The chain is a recursion on its own state: a loop over segments (bars / 140 steps).
    for i in range(used):
        chain[i] = state
        row, u = cumulative[state], draws[i]
        state = 0 if u < row[0] else (1 if u < row[1] else 2)
    states = np.array(chain, dtype=np.int64)
    lengths = lengths[:used]
    seg_drift = np.where(states == UP, drift[:used], np.where(states == DOWN, -drift[:used], 0.0))
    regime = np.repeat(states, lengths)[:bars]
    return regime, np.repeat(seg_drift, lengths)[:bars], np.repeat(phi[:used], lengths)[:bars]


def _rng(seed: int, symbol: str | None) -> np.random.Generator:
    if symbol is None:
        return np.random.default_rng(seed)
    # crc32 is stable across processes and Python versions, unlike hash().
    return np.random.default_rng([seed, zlib.crc32(symbol.encode("utf-8"))])


def generate_ohlcv(
    bars: int,
    *,
    seed: int = 42,
    timeframe: str = "1h",
    start: str = "2020-01-01",
    start_price: float = 100.0,
    symbol: str | None = None,
) -> pd.DataFrame:
    """Generate `bars` deterministic, valid OHLCV bars in the canonical UTC frame.

    The price switches between uptrend, downtrend and mean-reverting regimes with
    clustered volatility (about 0.6 % per bar at 1h, scaled by sqrt(bar length)), ~1 % of
    bars open with a gap of several ATRs, and volume follows |return| with spikes. The
    first bar opens near `start_price`; bars are contiguous, 24/7.
    """
    df, _ = _generate(
        bars,
        seed=seed,
        timeframe=timeframe,
        start=start,
        start_price=start_price,
        symbol=symbol,
    )
    return df


def _generate(
    bars: int,
    *,
    seed: int,
    timeframe: str,
    start: str,
    start_price: float,
    symbol: str | None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Generate the frame and the per-bar regime labels (UP, DOWN, MEAN_REVERTING)."""
    if not isinstance(bars, (int, np.integer)) or isinstance(bars, bool) or bars < 0:
        raise ValueError(f"bars must be a non-negative integer, got {bars!r}")
    if not math.isfinite(start_price) or start_price <= 0:
        raise ValueError(f"start_price must be a positive number, got {start_price!r}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    step = timeframe_to_timedelta(timeframe)
    first = pd.Timestamp(start)
    first = first.tz_localize("UTC") if first.tz is None else first.tz_convert("UTC")
    index = pd.date_range(first, periods=bars, freq=step, name="datetime").as_unit("ns")
    if bars == 0:
        empty = pd.DataFrame({c: np.empty(0) for c in OHLCV_COLUMNS}, index=index)
        return empty, np.empty(0, dtype=np.int64)

    rng = _rng(int(seed), symbol)
    n = int(bars)
    scale = _HOURLY_VOL * math.sqrt(timeframe_seconds(timeframe) / 3600.0)
    regime, drift, phi = _regimes(rng, n)
    base_vol = scale * _REGIME_VOL[regime]

    # Volatility clustering: log-vol is a persistent AR(1) (a stochastic-volatility model).
    shock_sd = _VOL_OF_VOL * math.sqrt(1.0 - _VOL_PERSISTENCE**2)
    log_vol = _linear_recurrence(np.full(n, _VOL_PERSISTENCE), rng.normal(0.0, shock_sd, size=n))
    vol = base_vol * np.exp(log_vol - _VOL_OF_VOL**2 / 2)  # mean multiplier ~1

    trending = regime != MEAN_REVERTING
    eps = rng.normal(size=n)
    eps_level = rng.normal(size=n)
    gap_mask = rng.random(n) < _GAP_PROBABILITY
    gap = np.where(
        gap_mask,
        rng.choice([-1.0, 1.0], size=n) * rng.uniform(*_GAP_SIZE, size=n) * vol,
        0.0,
    )
    open_noise = rng.normal(0.0, _OPEN_NOISE, size=n) * vol

    # log close = anchor level + OU deviation.
    # Trends move the level (drift + noise); ranges move it slowly and let the
    # deviation oscillate around it. The deviation freezes during trends so the path
    # stays continuous across regime switches.
    level_step = np.where(trending, drift * base_vol + vol * eps, 0.25 * vol * eps_level) + gap
    anchor = 1.0 - math.log(2.0) / _ANCHOR_HALF_LIFE_BARS
    level = _linear_recurrence(np.full(n, anchor), level_step)
    deviation = _linear_recurrence(np.where(trending, 1.0, phi), np.where(trending, 0.0, vol * eps))
    log_close = math.log(start_price) + level + deviation

    prev_close = np.concatenate([[math.log(start_price)], log_close[:-1]])
    log_open = prev_close + gap + open_noise
    close = np.exp(log_close)
    open_ = np.exp(log_open)
    # Wicks: half-normal excursions beyond the body, in units of the bar's volatility.
    upper = np.abs(rng.normal(0.0, 0.6, size=n)) * vol
    lower = np.abs(rng.normal(0.0, 0.6, size=n)) * vol
    # Multiplying by exp(x >= 0) never rounds below the factor's base, so
    # high >= max(open, close) and low <= min(open, close) hold exactly.
    high = np.maximum(open_, close) * np.exp(upper)
    low = np.minimum(open_, close) * np.exp(-lower)

    # Volume grows with the size of the move, with noise and occasional spikes.
    move = np.abs(log_close - prev_close) / vol
    spikes = np.where(
        rng.random(n) < _VOLUME_SPIKE_PROBABILITY, rng.uniform(*_VOLUME_SPIKE_SIZE, size=n), 1.0
    )
    volume = _BASE_VOLUME * np.exp(0.45 * np.minimum(move, 6.0) + rng.normal(0.0, 0.3, size=n))
    volume *= spikes

    df = pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )
    df.attrs["source"] = f"synthetic(seed={seed}, symbol={symbol}, timeframe={timeframe})"
    return df, regime
