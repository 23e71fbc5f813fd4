"""Shared helpers for the strategy tests: hand-written bars, small configs, random walks.

The helpers are plain functions (import them with ``from tests.strategy.conftest import ...``)
so that table-driven tests can build their inputs at collection time.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import yaml

from trading.config import BotConfig, parse_config

SYMBOL = "SYM"
START = pd.Timestamp("2024-01-01 00:00", tz="UTC")
HOUR = pd.Timedelta(hours=1)
CASH = 10_000.0

Candle = tuple[float, float, float, float]  # (open, high, low, close)


# --------------------------------------------------------------------------- frames


def hourly_index(n: int, start: pd.Timestamp = START) -> pd.DatetimeIndex:
    """n consecutive hourly bar open times in UTC."""
    return pd.date_range(start, periods=n, freq=HOUR, name="datetime").as_unit("ns")


def make_frame(candles: Sequence[Candle], *, volume: float = 1_000.0, start: pd.Timestamp = START) -> pd.DataFrame:
    """Build a canonical OHLCV frame from (open, high, low, close) tuples on an hourly UTC index."""
    rows = [tuple(float(x) for x in c) for c in candles]
    for k, (o, h, lo, c) in enumerate(rows):
        if not (h >= max(o, c) and lo <= min(o, c) and lo > 0):
            raise ValueError(f"candle {k} is not a valid bar: {(o, h, lo, c)}")
    arr = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return pd.DataFrame(
        {
            "open": arr[:, 0],
            "high": arr[:, 1],
            "low": arr[:, 2],
            "close": arr[:, 3],
            "volume": np.full(len(rows), float(volume)),
        },
        index=hourly_index(len(rows), start),
    )


def flat_candles(n: int, price: float = 100.0, spread: float = 1.0) -> list[Candle]:
    """n identical bars: open = close = price, high/low = price -/+ spread (true range 2*spread)."""
    return [(price, price + spread, price - spread, price)] * n


def random_walk_frame(
    n: int,
    seed: int,
    *,
    start_price: float = 100.0,
    vol: float = 0.01,
    gap_probability: float = 0.02,
    gap_size: float = 0.04,
) -> pd.DataFrame:
    """A seeded geometric random walk with valid OHLC and occasional opening gaps.

    Each bar opens at the previous close (times exp(+-gap_size) on gap bars), closes after a
    normal log return, and its high/low extend beyond open/close by a half-normal amount.
    """
    rng = np.random.default_rng(seed)
    rets = rng.normal(0.0, vol, n)
    gaps = np.where(rng.random(n) < gap_probability, rng.choice([-1.0, 1.0], n) * gap_size, 0.0)
    gaps[0] = 0.0
    wick_hi = np.abs(rng.normal(0.0, vol * 0.6, n))
    wick_lo = np.abs(rng.normal(0.0, vol * 0.6, n))
    opens = np.empty(n)
    closes = np.empty(n)
    prev = start_price
    for k in range(n):
        opens[k] = prev * np.exp(gaps[k])
        closes[k] = opens[k] * np.exp(rets[k])
        prev = closes[k]
    highs = np.maximum(opens, closes) * np.exp(wick_hi)
    lows = np.minimum(opens, closes) * np.exp(-wick_lo)
    return pd.DataFrame(
        {
            "open": opens,
            "high": highs,
            "low": lows,
            "close": closes,
            "volume": rng.uniform(500.0, 1500.0, n),
        },
        index=hourly_index(n),
    )


def synthetic_frame(n: int, seed: int) -> pd.DataFrame:
    """The project's generator when available, else the local random walk."""
    try:
        from trading.data import generate_ohlcv
    except ImportError:  # pragma: no cover - depends on a colleague's work in progress
        return random_walk_frame(n, seed)
    return generate_ohlcv(n, seed=seed, timeframe="1h", symbol=SYMBOL)


# --------------------------------------------------------------------------- configs


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge mappings; lists and scalars in `override` replace those in `base`."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


DEFAULTS: dict[str, Any] = {
    "bot": {"name": "test_bot", "symbols": [SYMBOL], "timeframe": "1h"},
    "strategy": {
        "name": "TEST",
        "direction": "long",
        "entry_logic": "any",
        "entry_mixins": [{"name": "RSIOrBBEntryMixin", "parameters": {}}],
        "exit_mixins": [{"name": "AdvancedATRExitMixin", "parameters": {}}],
        "sizing": {"method": "fixed", "quantity": 1},
    },
    "broker": {
        "cash": CASH,
        "commission_rate": 0.0,
        "paper_trading_config": {"slippage_model": "percent", "base_slippage": 0.0},
    },
    "database": {"enabled": False},
}


def config_dict(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The default test bot (fixed quantity 1, no costs) with `overrides` deep-merged in.

    Giving ``strategy.position_size`` drops the default ``sizing`` (the two are exclusive).
    """
    d = deep_merge(DEFAULTS, overrides or {})
    if "position_size" in (overrides or {}).get("strategy", {}) and "sizing" not in overrides["strategy"]:
        d["strategy"].pop("sizing", None)
    return d


def make_config(overrides: Mapping[str, Any] | None = None) -> BotConfig:
    """Build a BotConfig through the real YAML path: parse_config(yaml.safe_dump(dict))."""
    return parse_config(yaml.safe_dump(config_dict(overrides), sort_keys=False), env={})


def rsi_bb_atr_config(**overrides: Any) -> BotConfig:
    """The shipped config/strategies/rsi_bb_atr.yaml bot (read from disk), optionally overridden."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "config" / "strategies" / "rsi_bb_atr.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw.setdefault("database", {})["enabled"] = False
    raw = deep_merge(raw, overrides)
    return parse_config(yaml.safe_dump(raw, sort_keys=False), env={})
