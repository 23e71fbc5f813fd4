"""End to end: the unchanged BaseStrategy (rsi_bb_atr) trading AAPL at the fake TWS through Cerebro."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import pytest
import yaml

from strategy.base import BaseStrategy
from tests.fakes.fake_tws_setup import AAPL, fake_tws, settings
from trading.brokers.ibkr import IBKRAdapter
from trading.brokers.ibkr_broker import IBKRBroker
from trading.config import BotConfig, parse_config
from trading.data.ibkr_feed import IBKRLiveFeed
from trading.engine import build_cerebro
from trading.orders import OrderStatus

H = 3600
WARMUP = 200
LIVE = 150
CONFIG = Path(__file__).resolve().parents[3] / "config" / "strategies" / "rsi_bb_atr.yaml"


def _config() -> BotConfig:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["bot"]["symbols"] = ["AAPL"]
    return parse_config(yaml.safe_dump(raw))


def test_base_strategy_trades_at_ib_through_the_broker_and_the_live_feed() -> None:
    cfg = _config()
    with fake_tws(bars=700, history=300) as tws:
        adapter = IBKRAdapter(settings(tws, warmup_bars=WARMUP))
        try:
            feed = IBKRLiveFeed(adapter=adapter, symbol="AAPL", interval=cfg.bot.timeframe)
            cerebro, _ = build_cerebro(cfg, {"AAPL": pd.DataFrame()}, feeds={"AAPL": feed})
            broker = IBKRBroker(adapter, bot_name=cfg.bot.name)
            cerebro.broker = broker
            result: list[BaseStrategy] = []
            runner = threading.Thread(target=lambda: result.extend(cerebro.run()))
            runner.start()
            expected = WARMUP
            feed.wait_idle(expected, timeout=30)
            while expected < WARMUP + LIVE:
                t = tws.step()
                if t % H == 0:
                    expected += 1
                    feed.wait_idle(expected, timeout=30)
                    adapter.sync()
            feed.finish()
            runner.join(30)
            assert not runner.is_alive()
            strat = result[0]
            at_ib = tws.orders()
            book = {str(o.client_order_id): o for o in strat.order_manager.orders()}

            # Orders were placed and filled, each once, under the OrderManager's client order ids;
            # nothing went out for the warm-up bars (those signals were refused here).
            warm_end = pd.Timestamp(round((feed.warmup_end - 719163.0) * 86400), unit="s", tz="UTC")
            live = {ref for ref, o in book.items() if o.created_ts > warm_end}
            assert {o.order_ref for o in at_ib} == live
            assert len(at_ib) == len(live)  # once each; stops moved by amendments, not re-sent
            warm = [o for o in book.values() if o.created_ts <= warm_end]
            assert warm and all(o.status in (OrderStatus.REJECTED, OrderStatus.CANCELLED) for o in warm)
            entries = [o for o in at_ib if o.order_ref.endswith("-entry-0")]
            assert len(entries) >= 2 and all(o.status == "Filled" for o in entries)
            for o in at_ib:
                assert float(book[o.order_ref].filled_qty) == pytest.approx(o.filled)

            # Each entry filled at the open of the bar after its signal (the bot answered in time).
            for o in entries:
                signal = int(book[o.order_ref].created_ts.timestamp())
                assert o.avg_price == pytest.approx(tws.bars(AAPL.con_id, H, signal + H, signal + 2 * H)[0][1])
            # Brackets: the protective legs were children of their entry at IB.
            children = [o for o in at_ib if o.parent_id]
            assert children and all(o.oca_group for o in children)

            # Trades closed by the exit rules, and the books agree with IB.
            closed = [t for t in strat.trade_records if t.exit_reason != "end_of_data"]
            assert closed and {t.exit_reason for t in closed} <= {"stop_loss", "take_profit", "trailing_stop",
                                                                  "breakeven_stop"}
            held = float(strat.position_manager.position("AAPL").quantity)
            assert held == pytest.approx(tws.position(AAPL.con_id)) == pytest.approx(broker.getposition(feed).size)
            fees = sum(float(o.fees) for o in book.values())
            assert fees == pytest.approx(sum(e.commission for e in tws.book.executions))
        finally:
            adapter.close()
