"""Paper replay over a long series, where each mixin's rolling window slides, trades as the backtest.

The short parity tests in test_bot.py stream fewer bars than a window holds (RSI(14) keeps
841), so every streamed bar there is still a full recomputation. Here the series is several
times the window: most bars are prepared over the window alone, and the trades, the final
value and the equity curve must still be exactly the backtest's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from strategy.book import Book
from strategy.mixins.entry.rsi_bb import RSIOrBBEntryMixin
from trading.bot import BaseTradingBot
from trading.config import load_config
from trading.data import generate_ohlcv
from trading.engine import run_backtest

CONFIGS = Path(__file__).resolve().parents[2] / "config" / "strategies"
BARS = 3000


def paper(cfg, frames):  # type: ignore[no-untyped-def]
    return asyncio.run(BaseTradingBot(cfg, mode="paper", frames=frames, speed="max").start_trading())


@pytest.mark.parametrize(("config", "seed"), [("rsi_bb_atr.yaml", 21), ("three_by_three.yaml", 22)])
def test_long_paper_replay_on_the_rolling_window_gives_the_backtest_trades(
    config: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(CONFIGS / config)
    frames = {"BTCUSDT": generate_ohlcv(BARS, seed=seed, timeframe="1h")}
    backtest = run_backtest(cfg, frames)

    windows: list[int] = []
    compute = RSIOrBBEntryMixin.compute

    def spy(self, bars):  # type: ignore[no-untyped-def]
        windows.append(len(bars))
        return compute(self, bars)

    monkeypatch.setattr(RSIOrBBEntryMixin, "compute", spy)
    assert Book.rolling
    replay = paper(cfg, frames)

    memory = RSIOrBBEntryMixin().memory()
    assert BARS - memory > 2000
    assert windows.count(memory) >= BARS - memory  # the window slid: one bar each after the first fill
    assert max(windows) == memory  # never the whole history once it is longer than the window
    assert len(backtest.trades) >= 30
    assert [t.to_dict() for t in replay.trades] == [t.to_dict() for t in backtest.trades]
    assert replay.final_value == backtest.final_value
    assert replay.equity.equals(backtest.equity)


def test_full_recomputation_and_rolling_window_stream_the_same_trades(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(CONFIGS / "rsi_bb_atr.yaml")
    # Long enough for the window to slide, short enough for the O(n^2) reference.
    frames = {"BTCUSDT": generate_ohlcv(1500, seed=23, timeframe="1h")}
    rolling = paper(cfg, frames)
    monkeypatch.setattr(Book, "rolling", False)
    full = paper(cfg, frames)
    assert len(full.trades) >= 15
    assert [t.to_dict() for t in rolling.trades] == [t.to_dict() for t in full.trades]
    assert rolling.final_value == full.final_value
