"""Run hand-written candles through the real engine with chosen exit mixins.

Shared by the exit-mixin tests. Entries come from the `FireAtBars` double of
test_advanced_atr_exit (named in YAML as "module:Class"), so only the exit rules vary.
The standard layout is the one described there: quiet bars 0..4 (100, 101, 99, 100), the
signal at bar 4 (close C = 100, ATR(3) = 2), the entry fill at the open of bar 5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest

from tests.strategy.conftest import CASH, SYMBOL, Candle, flat_candles, make_config, make_frame
from tests.strategy.test_advanced_atr_exit import FIRE, bar_index, mirror, tail, wilder_atr
from trading.engine import run_backtest
from trading.results import BacktestResult, TradeRecord

__all__ = [
    "CASH", "ENTRY", "PRE", "SIGNAL", "bar_index", "check_trade", "from_closes", "mirror",
    "View", "run_exits", "sided", "tail", "wilder_atr",
]

SIGNAL = 4
ENTRY = SIGNAL + 1
PRE: list[Candle] = flat_candles(SIGNAL + 1)  # true range 2 each: ATR(3) = 2 at the signal

Exit = tuple[str, dict[str, Any]]


def run_exits(
    candles: Sequence[Candle],
    exits: Sequence[Exit],
    *,
    side: str = "long",
    fire_at: Sequence[int] = (SIGNAL,),
    overrides: dict[str, Any] | None = None,
    index: pd.DatetimeIndex | None = None,
) -> tuple[BacktestResult, pd.DataFrame]:
    """Backtest `candles` (fixed quantity 1, no costs) with FireAtBars and the listed exit mixins."""
    strategy: dict[str, Any] = {
        "direction": side,
        "entry_mixins": [{"name": FIRE, "parameters": {"e_fire_at": list(fire_at)}}],
        "exit_mixins": [{"name": name, "parameters": params} for name, params in exits],
    }
    ov = dict(overrides or {})
    strategy.update(ov.pop("strategy", {}))
    frame = make_frame(candles)
    if index is not None:
        frame.index = index
    return run_backtest(make_config({"strategy": strategy, **ov}), {SYMBOL: frame}), frame


def sided(long_candles: Sequence[Candle], side: str) -> list[Candle]:
    """The long candles as written, or mirrored around 100 for a short."""
    return list(long_candles) if side == "long" else mirror(long_candles)


def from_closes(closes: Sequence[float], wick: float = 0.5) -> list[Candle]:
    """Candles that open at the previous close, with `wick` above and below the body."""
    out: list[Candle] = []
    prev = closes[0]
    for c in closes:
        out.append((prev, max(prev, c) + wick, min(prev, c) - wick, c))
        prev = c
    return out


def check_trade(
    t: TradeRecord,
    frame: pd.DataFrame,
    *,
    side: str,
    entry_bar: int,
    exit_bar: int,
    reason: str,
    price: float,
    quantity: float = 1.0,
) -> None:
    """Assert one trade leg: fill bars, prices (entry at the entry bar's open), reason and pnl."""
    sign = 1 if side == "long" else -1
    entry = float(frame["open"].iloc[entry_bar])
    assert (t.side, t.entry_tag) == (side, "FireAtBars")
    assert (bar_index(frame, t.entry_time), bar_index(frame, t.exit_time)) == (entry_bar, exit_bar)
    assert t.exit_reason == reason
    assert t.entry_price == pytest.approx(entry, rel=1e-12)
    assert t.exit_price == pytest.approx(price, rel=1e-12)
    assert t.quantity == pytest.approx(quantity, rel=1e-12)
    assert t.bars_held == exit_bar - entry_bar
    assert t.pnl == pytest.approx(sign * (price - entry) * quantity, abs=1e-9)


@dataclass(frozen=True)
class View:
    """A case seen from one side; bar k is the k-th bar from the entry bar (k = 0)."""

    candles: list[Candle]
    sign: int  # +1 long, -1 short

    @property
    def C(self) -> float:  # noqa: N802 - the docs' name for the signal close
        return self.candles[SIGNAL][3]

    def bar(self, k: int) -> Candle:
        return self.candles[ENTRY + k]

    def open(self, k: int) -> float:
        return self.bar(k)[0]

    def favour(self, k: int) -> float:
        """High of bar k for a long, low for a short."""
        return self.bar(k)[1] if self.sign > 0 else self.bar(k)[2]

    def adverse(self, k: int) -> float:
        return self.bar(k)[2] if self.sign > 0 else self.bar(k)[1]

    def best(self, through: int) -> float:
        """Best price from the entry fill (the open of k = 0) through bar k = through."""
        vals = [self.open(0)] + [self.favour(k) for k in range(through + 1)]
        return max(vals) if self.sign > 0 else min(vals)

    def beyond(self, price: float, level: float) -> bool:
        """True when `price` is at or past a stop `level` (below it for a long)."""
        return self.sign * (price - level) <= 0

    def reaches(self, price: float, target: float) -> bool:
        """True when `price` is at or past a target (above it for a long)."""
        return self.sign * (price - target) >= 0
