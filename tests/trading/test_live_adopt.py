"""Exit state of an adopted trade: recomputed from the bars, it is what the uninterrupted run had.

A backtest of rsi_bb_atr (ATR stop, trailing and breakeven) records, after the close of every
bar in a position, the trade's stop, its reason, its best price and whether the breakeven
had been armed. For each of those bars, fresh exit mixins prepared on the same bars and
replayed by `restore_exit_state` (what a restarted live run does at adoption) must give the same.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest

from strategy.base import BaseStrategy, Book
from strategy.mixins.base import Bars, OpenTrade
from trading.config import parse_config
from trading.data import generate_ohlcv
from trading.engine import build_cerebro
from trading.live_adopt import entry_bar, restore_exit_state

CONFIG = """
bot: {name: adopt, symbols: [AAA], timeframe: 1h}
data: {source: synthetic, bars: 600, seed: 3}
strategy:
  name: rsi_bb_atr
  entry_mixins:
    - name: RSIOrBBEntryMixin
      parameters: {e_rsi_period: 14, e_rsi_oversold: 35, e_bb_period: 20, e_bb_dev: 1.8, e_cooldown_bars: 2}
  exit_mixins:
    - name: AdvancedATRExitMixin
      parameters: {x_atr_period: 14, x_sl_multiplier: 2.0, x_tp_multiplier: 6.0, x_trailing_enabled: true,
                   x_breakeven_enabled: true, x_breakeven_trigger: 0.8}
  position_size: 0.2
broker: {cash: 10000.0, commission_rate: 0.001}
"""


class Recording(BaseStrategy):
    """Record the trade's exit state after each bar's step in a position."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, OpenTrade, dict[str, Any]]] = []

    def _step(self, book: Book, i: int) -> None:
        super()._step(book, i)
        trade = book.trade
        if trade is not None and trade.is_filled and trade.entry_index is not None and trade.entry_index < i:
            mixin = book.exits[0]
            state = {"stop": trade.stop, "reason": trade.stop_reason, "best": trade.best_price,
                     "breakeven": mixin._breakeven_done, "atr": mixin._atr_entry}
            copy = OpenTrade(trade.symbol, trade.side, trade.signal_index, trade.ref_price, trade.entry_tag,
                             quantity=trade.quantity, entry_index=trade.entry_index, entry_price=trade.entry_price)
            self.seen.append((i, copy, state))


@pytest.fixture(scope="module")
def run() -> tuple[Any, list[tuple[int, OpenTrade, dict[str, Any]]]]:
    cfg = parse_config(CONFIG)
    frame = generate_ohlcv(600, seed=3, timeframe="1h", start="2022-01-01")
    cerebro, _ = build_cerebro(cfg, {"AAA": frame}, strategy_cls=Recording)
    strat = cerebro.run()[0]
    return strat.books[0], strat.seen


def test_the_recomputed_exit_state_of_an_adopted_trade_is_the_uninterrupted_runs_at_every_bar(run: Any) -> None:
    book, seen = run
    assert len(seen) > 50
    assert any(s["reason"] == "trailing_stop" for _, _, s in seen) and any(s["breakeven"] for _, _, s in seen)
    for i, trade, state in seen:
        mixin = type(book.exits[0])(book.exits[0].p)
        n = i + 1
        mixin.prepare(Bars(book.times[:n], *(book._cols[k, :n] for k in range(1, 6))))
        fresh = SimpleNamespace(exits=[mixin], high=book.high, low=book.low)
        again = OpenTrade(trade.symbol, trade.side, trade.signal_index, book.close[trade.signal_index],
                          trade.entry_tag, quantity=trade.quantity, entry_index=trade.entry_index,
                          entry_price=trade.entry_price, best_price=trade.entry_price, worst_price=trade.entry_price)
        assert trade.entry_index is not None
        restore_exit_state(fresh, again, trade.signal_index, trade.entry_index, n)  # type: ignore[arg-type]
        assert again.best_price == state["best"] and math.isclose(again.stop or 0, state["stop"] or 0), (i, state)
        assert again.stop_reason == state["reason"] and mixin._breakeven_done == state["breakeven"], (i, state)


def test_the_entry_bar_is_the_bar_the_position_opened_in(run: Any) -> None:
    book, seen = run
    _, trade, _ = seen[0]
    opened = book.times[trade.entry_index].astype("datetime64[ms]").item()
    from datetime import UTC, timedelta

    opened = opened.replace(tzinfo=UTC) + timedelta(minutes=1)  # a fill a minute after the bar opened
    last = len(book.close) - 1
    assert entry_bar(book, opened, last) == trade.entry_index
    assert entry_bar(book, None, last) == last
