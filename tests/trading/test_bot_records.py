"""The bot's OrderManager and PositionManager are its record: they agree with the broker and the strategy.

Every run below checks at every bar (tests/trading/order_book_checks.py) that the
PositionManager holds the broker's position and the strategy's trade, and that the
OrderManager's working orders are the broker's open orders at the same size and price.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.strategy.conftest import make_config
from tests.trading.order_book_checks import run_checked
from trading.bot import BaseTradingBot
from trading.bus import EventBus
from trading.data import generate_ohlcv
from trading.events import Event, OrderSubmitted, TradeClosed, TradeOpened
from trading.orders import OrderStatus

ENTRY = {"name": "RSIOrBBEntryMixin", "parameters": {"e_rsi_oversold": 40, "e_rsi_overbought": 60, "e_bb_dev": 1.5}}
ADVANCED = {"mode": "advanced", "slippage_model": "sqrt", "base_slippage": 0.0005, "partial_fill_probability": 0.3,
            "reject_probability": 0.1}
CONFIGS: dict[str, dict[str, Any]] = {
    "two symbols, both sides, partial target, scale-in, advanced fills": {
        "bot": {"symbols": ["AAA", "BBB"]},
        "strategy": {"direction": "both", "exit_mixins": [{"name": "AdvancedATRExitMixin", "parameters": {
            "x_sl_multiplier": 1.5, "x_tp_multiplier": 2.5, "x_partial_tp_multiplier": 1.0}}],
            "position_size": 0.2, "scale_in": {"max_entries": 3}},
        "broker": {"commission_rate": 0.001, "paper_trading_config": ADVANCED},
    },
    "long, trailing stop, volume cap, latency": {
        "strategy": {"exit_mixins": [{"name": "TrailingStopExitMixin", "parameters": {"x_trail_pct": 0.015}}],
                     "position_size": 0.5},
        "broker": {"paper_trading_config": {"max_volume_share": 0.001, "latency_simulation": True}},
    },
    "short, ATR trail and time exit, scale-in by halves": {
        "strategy": {"direction": "short", "exit_mixins": [
            {"name": "ATRExitMixin", "parameters": {"x_atr_multiplier": 1.5}},
            {"name": "TimeBasedExitMixin", "parameters": {"x_max_bars": 12}}],
            "position_size": 0.3, "scale_in": {"max_entries": 2, "size_fraction": 0.5}},
        "broker": {"commission_rate": 0.002, "paper_trading_config": {**ADVANCED, "max_volume_share": 0.01}},
    },
}


def frames_for(cfg: Any, seed: int, bars: int = 500) -> dict[str, Any]:
    return {s: generate_ohlcv(bars, seed=seed + k, timeframe="1h", start="2022-01-01", start_price=100.0 / (k + 1))
            for k, s in enumerate(cfg.bot.symbols)}


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_position_and_order_records_match_the_broker_at_every_bar(name: str, seed: int) -> None:
    spec = CONFIGS[name]
    paper = spec.get("broker", {}).get("paper_trading_config")
    if paper is not None:
        spec = {**spec, "broker": {**spec["broker"], "paper_trading_config": {**paper, "seed": seed}}}
    cfg = make_config({**spec, "strategy": {"entry_mixins": [ENTRY], **spec["strategy"]}})

    strat = run_checked(cfg, frames_for(cfg, seed))  # asserts at every bar

    records = strat.trade_records
    assert len(records) >= 10
    # Realised pnl of the PositionManager = the trades closed by fills (end_of_data is a mark).
    realised = sum(strat.position_manager.position(s).realised_pnl for s in cfg.bot.symbols)
    closed = sum(t.gross_pnl for t in records if t.exit_reason != "end_of_data")
    assert float(realised) == pytest.approx(closed, rel=1e-9, abs=1e-6)
    # Every order the strategy sent is in the record, and none is left half-known.
    om = strat.order_manager
    assert {o.tag for o in om.orders()} >= {"entry", "sl"}
    assert all(o.status is not OrderStatus.PENDING_CANCEL for o in om.orders())
    if strat.scale_in is not None:
        assert any(o.tag == "add" and o.filled_qty > 0 for o in om.orders())
    # Orders filled in parts (volume cap, partial fills), exits among them: the hard cases ran.
    parts = [o for o in om.orders() if o.filled_qty > 0 and o.tag in ("sl", "exit", "tp", "ptp")]
    assert len(records) > len({(t.symbol, t.entry_time) for t in records}) and parts


def bot_config(**strategy: Any) -> Any:
    return make_config({
        "bot": {"symbols": ["AAA"]},
        "strategy": {"entry_mixins": [ENTRY], "exit_mixins": [{"name": "AdvancedATRExitMixin", "parameters": {
            "x_partial_tp_multiplier": 1.0, "x_trailing_enabled": False}}], "position_size": 0.2, **strategy},
        "broker": {"commission_rate": 0.001},
    })


def test_the_bot_keeps_its_managers_public_and_saves_its_state_from_them(tmp_path: Path) -> None:
    cfg = bot_config()
    bars = generate_ohlcv(400, seed=4, timeframe="1h", start="2022-01-01")
    bus = EventBus()
    bot = BaseTradingBot(cfg, frames={"AAA": bars}, bus=bus, state_dir=tmp_path)
    opened: list[TradeOpened] = []

    def stop_on_the_third(event: Event) -> None:
        opened.append(event)  # type: ignore[arg-type]
        if len(opened) == 3:
            bot.request_stop("operator")

    bus.subscribe(stop_on_the_third, TradeOpened, inline=True, name="stopper")
    asyncio.run(bot.start_trading())

    state = json.loads((tmp_path / "state.json").read_text())
    [pos] = bot.position_manager.open_positions()
    [saved] = state["positions"]
    assert saved["trade_id"] == pos.trade_id == opened[-1].trade_id
    assert (saved["quantity"], saved["entry_price"], saved["entries"]) == (
        float(pos.quantity), float(pos.avg_entry_price), 1)
    working = bot.order_manager.open_orders("AAA")
    assert [o["client_order_id"] for o in state["open_orders"]] == [str(o.client_order_id) for o in working]
    assert {o["tag"] for o in state["open_orders"]} == {"sl", "tp", "ptp"}
    assert all(o["status"] == "accepted" and o["parent_id"] == pos.trade_id for o in state["open_orders"])


def test_trade_events_come_from_the_position_manager_one_per_round_trip() -> None:
    """TradeClosed is told when a position returns to flat: one per round trip, legs summed.

    The strategy's result keeps a row per closing leg (the partial target is a leg of its
    own) and marks a position still open at the end to the last close (`end_of_data`); the
    PositionManager tells neither as a close: that position is open, and state.json says so.
    """
    cfg = bot_config()
    bars = generate_ohlcv(500, seed=8, timeframe="1h", start="2022-01-01")
    bus, events = EventBus(), []
    bus.subscribe(events.append, inline=True, name="all")
    bot = BaseTradingBot(cfg, frames={"AAA": bars}, bus=bus)
    result = asyncio.run(bot.start_trading())

    entries = {str(e.client_order_id): e for e in events if isinstance(e, OrderSubmitted) and e.tag == "entry"}
    closed = [e for e in events if isinstance(e, TradeClosed)]
    opened = [e for e in events if isinstance(e, TradeOpened)]
    trips: dict[Any, list] = {}
    for t in result.trades:
        if t.exit_reason != "end_of_data":
            trips.setdefault(t.entry_time, []).append(t)
    assert any(len(legs) > 1 for legs in trips.values())  # some round trips closed in legs
    assert len(closed) == len(trips) and len(opened) == len(closed) + len(bot.position_manager.open_positions())
    for event, legs in zip(closed, sorted(trips.values(), key=lambda legs: legs[-1].exit_time), strict=True):
        assert event.trade_id in entries  # the client order id of the opening order
        qty = sum(t.quantity for t in legs)
        assert float(event.quantity) == pytest.approx(qty)
        assert float(event.exit_price) == pytest.approx(sum(t.exit_price * t.quantity for t in legs) / qty)
        assert float(event.realised_pnl) == pytest.approx(sum(t.gross_pnl for t in legs))
        assert float(event.fees) == pytest.approx(sum(t.fees for t in legs))
        assert event.ts == legs[-1].exit_time
    assert all(isinstance(e.realised_pnl, Decimal) for e in closed)
