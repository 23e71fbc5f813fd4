"""A real paper replay's events, applied in batches and replayed: the database says what the bot did."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from trading.bot import BaseTradingBot
from trading.bus import EventBus
from trading.config import parse_config
from trading.data import generate_ohlcv
from trading.events import Event, OrderFill, OrderSubmitted, TradeClosed
from trading.persistence import (
    apply_events,
    list_fills,
    list_order_events,
    list_orders,
    list_trades,
    load_positions,
    register_bot_instance,
)

from .builders import counts

Q = Decimal("1e-10")  # the scale of a money column

CONFIG = """
bot: {name: audit_replay, symbols: [AAA], timeframe: 1h}
data: {source: synthetic, bars: 300, seed: 7}
strategy:
  name: t
  entry_mixins:
    - name: RSIOrBBEntryMixin
      parameters: {e_rsi_period: 14, e_rsi_oversold: 35, e_bb_period: 20, e_bb_dev: 1.8, e_cooldown_bars: 2}
  exit_mixins:
    - name: AdvancedATRExitMixin
      parameters: {x_atr_period: 14, x_sl_multiplier: 1.5, x_tp_multiplier: 2.0, x_trailing_enabled: true}
  position_size: 0.2
broker:
  trading_mode: paper
  cash: 10000.0
  commission_rate: 0.001
risk_management: {stop_loss_required: true}
"""


@pytest.fixture(scope="module")
def replay_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Event], object]:
    folder = tmp_path_factory.mktemp("bars")
    csv = folder / "aaa.csv"
    generate_ohlcv(300, seed=11, timeframe="1h", start="2021-03-01").rename_axis("datetime").to_csv(
        csv
    )
    bus, seen = EventBus(), []
    bus.subscribe(seen.append, inline=True, name="audit-test")
    bot = BaseTradingBot(parse_config(CONFIG), mode="paper", replay=Path(csv), speed="max", bus=bus)
    result = asyncio.run(bot.start_trading())
    return seen, result


def test_replayed_events_give_the_orders_fills_and_trades_of_the_run(
    engine: Engine, replay_run: tuple[list[Event], object]
) -> None:
    events, result = replay_run
    bot = register_bot_instance(engine, "audit_replay", "paper", strategy="t").id
    for i in range(0, len(events), 25):  # as a writer would, in batches
        apply_events(engine, events[i : i + 25], bot)
    after_first = counts(engine)
    apply_events(engine, events, bot)  # a crash replays the whole spool
    assert counts(engine) == after_first

    submitted = {str(e.client_order_id) for e in events if isinstance(e, OrderSubmitted)}
    fills = [e for e in events if isinstance(e, OrderFill)]
    closes = [e for e in events if isinstance(e, TradeClosed)]
    assert len(closes) >= 3
    assert {o.client_order_id for o in list_orders(engine)} == submitted
    assert len(list_fills(engine)) == len(fills)
    assert sum(f.quantity for f in list_fills(engine)) == sum(f.last_qty.quantize(Q) for f in fills)
    assert len(list_order_events(engine)) == len(
        [
            e
            for e in events
            if hasattr(e, "client_order_id") and type(e).__name__.startswith("Order")
        ]
    )

    trades = list_trades(engine, status="closed")
    assert len(trades) == len(closes)
    assert [t.exit_price for t in trades] == [e.exit_price.quantize(Q) for e in closes]
    total = sum(t.pnl for t in trades)  # type: ignore[misc]
    assert abs(total - sum(e.realised_pnl - e.fees for e in closes)) <= Q * len(closes)
    recorded = sorted(result.trades, key=lambda t: (t.exit_time, t.entry_time))  # type: ignore[attr-defined]
    closed_by_fill = [t for t in recorded if t.exit_reason != "end_of_data"]
    assert [float(t.entry_price) for t in trades][: len(closed_by_fill)] == pytest.approx(
        [t.entry_price for t in closed_by_fill]
    )
    # TradeClosed carries the strategy's exit reason (trailing_stop, breakeven_stop, ...): stored as is.
    assert all(e.exit_reason for e in closes)
    assert [t.exit_reason for t in trades] == [e.exit_reason for e in closes]
    assert all(e.entry_tag for e in closes)
    assert [t.entry_tag for t in trades] == [e.entry_tag for e in closes]
    open_now = load_positions(engine, bot)
    assert all(p.quantity > 0 for p in open_now)  # long-only strategy: at most a long left open
