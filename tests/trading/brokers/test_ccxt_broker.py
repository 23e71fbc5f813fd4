"""The live backtrader broker and feed with the unchanged BaseStrategy (the rsi_bb_atr bot) in a
Cerebro against the fake Binance: warm-up bars never trade, entries fill, OCO exits are placed,
replaced (cancelled) and filled, and the venue, the strategy's OrderManager and its trades agree."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd
import pytest

from strategy.base import BaseStrategy
from tests.fakes.fake_exchange import FakeExchange
from tests.trading.brokers.ccxt_harness import ENV, section
from trading.brokers.ccxt_broker import CcxtBroker, build_ccxt_broker
from trading.brokers.ccxt_config import settings_from_broker
from trading.brokers.ccxt_venue import build_exchange
from trading.config import load_config
from trading.data.ccxt_feed import CcxtLiveFeed, CcxtOHLCVProducer, LiveGate, start_in_thread
from trading.data.feed import NumpyFeed
from trading.engine import build_cerebro
from trading.order_manager import OrderManager
from trading.orders import OrderSide, OrderStatus

ROOT = Path(__file__).resolve().parents[3]
D = Decimal
WARMUP, LIVE_BARS, MIN = 60, 100, 60_000


@dataclass
class Run:
    strategy: Any
    broker: CcxtBroker
    orders: OrderManager
    feed: CcxtLiveFeed


def _run_live(fake: FakeExchange, monkeypatch: pytest.MonkeyPatch, *, futures: bool = False) -> Run:
    """Run the rsi_bb_atr bot on 1m bars: WARMUP history bars, then LIVE_BARS stepped one at a time.

    `futures`: on the USDⓈ-M perpetual, trading both directions.
    """
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    cfg = load_config(ROOT / "config/strategies/rsi_bb_atr.yaml")
    cfg = cfg.model_copy(update={"bot": cfg.bot.model_copy(update={"timeframe": "1m"})})
    if futures:
        cfg = cfg.model_copy(update={"strategy": cfg.strategy.model_copy(update={"direction": "both"})})
    broker_section = section(fake, market="future", leverage=2) if futures else section(fake)
    broker = build_ccxt_broker("binance", broker_section)
    gate = LiveGate()
    exchange = build_exchange(settings_from_broker("binance", broker_section), asynchronous=True)
    unified = "BTC/USDT:USDT" if futures else "BTC/USDT"
    producer = CcxtOHLCVProducer(exchange, {"BTCUSDT": unified}, "1m", gate, warmup=WARMUP, settle=0,
                                 max_wait=0.01)
    feed = CcxtLiveFeed(gate=gate, timeframe_str="1m", qcheck=0.01)
    seen: list[int] = []

    class Counted(BaseStrategy):
        params = (("orders", OrderManager()), ("bot_name", "rsi_bb_atr"))  # type: ignore[assignment]

        def next(self) -> None:
            super().next()
            seen.append(len(self))

    cerebro, _ = build_cerebro(cfg, {"BTCUSDT": None}, feeds={"BTCUSDT": feed}, strategy_cls=Counted)  # type: ignore[dict-item]
    cerebro.broker = broker  # the live broker instead of the SimBroker: the only change

    def drive() -> None:  # one bar at a time, once the strategy and the broker are done with the last
        while len(seen) < WARMUP:
            time.sleep(0.005)
        for _ in range(LIVE_BARS):
            target = len(seen) + 1
            fake.clock.advance(MIN)
            while len(seen) < target:
                time.sleep(0.002)
            time.sleep(0.01)
        producer.stop()

    thread = start_in_thread(producer)
    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    [strategy] = cerebro.run()
    driver.join(10)
    thread.join(10)
    return Run(strategy, broker, strategy.order_manager, feed)


@pytest.fixture
def live_run(monkeypatch: pytest.MonkeyPatch) -> Run:
    with FakeExchange(check_timestamp=False, seed=1) as fx:
        run = _run_live(fx, monkeypatch)
        run.fake = fx  # type: ignore[attr-defined]
        yield run  # type: ignore[misc]


def test_rsi_bb_atr_bot_trades_live_on_the_fake_exchange(live_run: Run) -> None:
    fake: FakeExchange = live_run.fake  # type: ignore[attr-defined]
    strat, om = live_run.strategy, live_run.orders
    assert live_run.feed.delivered == WARMUP + LIVE_BARS

    # Signals on history bars were refused by the broker, and nothing reached the venue for them.
    warm = [d for d in strat.decisions if d[2] == "entry" and d[1] < WARMUP]
    assert warm and strat.refusals.get("ENTRY_REJECTED") == len(warm)
    live_entries = [d for d in strat.decisions if d[2] == "entry" and d[1] >= WARMUP]
    assert live_entries

    by_status = Counter((o.tag, o.status) for o in om.orders())
    assert by_status[("entry", OrderStatus.FILLED)] == len(live_entries)
    assert by_status[("sl", OrderStatus.CANCELLED)] >= 1  # trailing stops moved: cancel and replace
    exits_filled = by_status[("sl", OrderStatus.FILLED)] + by_status[("tp", OrderStatus.FILLED)]
    assert exits_filled == len(strat.trade_records) >= 1  # each trade closed by a fill on the venue
    assert {t.exit_reason for t in strat.trade_records} <= {"take_profit", "stop_loss", "breakeven_stop",
                                                              "trailing_stop"}

    # The venue holds exactly the strategy's orders, under the strategy's client order ids.
    venue_ids = [o.client_id for o in fake.engine.orders.values()]
    assert len(venue_ids) == len(set(venue_ids))
    assert set(venue_ids) <= {str(o.client_order_id) for o in om.orders()}
    assert len(fake.calls("POST", "/api/v3/orderList/oco")) >= 1

    # Flat at the end: no coins left, nothing locked; fees as the venue charged them.
    assert fake.engine.free["BTC"] == 0 and fake.engine.locked["BTC"] == 0
    venue_fees = sum(float(t["commission"]) for t in fake.engine.trades)
    assert sum(t.fees for t in strat.trade_records) == pytest.approx(venue_fees, rel=1e-9)
    assert live_run.broker.getvalue() == pytest.approx(float(fake.engine.free["USDT"]))


def test_broker_value_is_the_venues_quote_plus_coins_at_the_last_close(
    fake: FakeExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    broker = build_ccxt_broker("binance", section(fake))
    cerebro = bt.Cerebro()
    frame = pd.DataFrame({"open": [99.0], "high": [101.0], "low": [98.0], "close": [100.5], "volume": [1.0]},
                         index=pd.DatetimeIndex([pd.Timestamp("2024-01-01", tz="UTC")], name="datetime"))
    data = cerebro.adddata(NumpyFeed(frame=frame), name="BTCUSDT")
    data._start()
    data.next()
    cerebro.broker = broker
    broker.start()
    assert broker.getcash() == broker.getvalue() == 10_000.0

    fake.engine.free["BTC"] += 2  # coins arrive on the account (a fill, a deposit)
    fake.engine.free["ETH"] = Decimal(5)  # an asset the bot does not trade
    broker.execution.refresh_balances()
    assert broker.getcash() == 10_000.0
    assert broker.getvalue() == 10_000.0 + 2 * 100.5  # the traded coins at the last close only


def test_futures_broker_sets_up_its_symbols_takes_the_held_position_and_values_the_margin_balance(
    fake: FakeExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    fake.futures.new_order({"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "2"})  # held before
    fake.script("BTCUSDT", [98.0])
    broker = build_ccxt_broker("binance", section(fake, market="future", leverage=4))
    cerebro = bt.Cerebro()
    frame = pd.DataFrame({"open": [99.0], "high": [99.0], "low": [98.0], "close": [98.0], "volume": [1.0]},
                         index=pd.DatetimeIndex([pd.Timestamp("2024-01-01", tz="UTC")], name="datetime"))
    data = cerebro.adddata(NumpyFeed(frame=frame), name="BTCUSDT")
    data._start()
    data.next()
    cerebro.broker = broker
    broker.start()

    [leverage] = fake.calls("POST", "/fapi/v1/leverage")
    assert (leverage.params["symbol"], leverage.params["leverage"]) == ("BTCUSDT", "4")  # the cerebro's symbols
    position = broker.getposition(data)
    assert (position.size, position.price) == (-2.0, 100.0)  # the short the account holds is the strategy's
    wallet, upnl = float(fake.futures.wallet), 2 * (100.0 - 98.0)
    assert broker.getvalue() == pytest.approx(wallet + upnl)  # margin balance, no coins added
    assert broker.getcash() == pytest.approx(float(fake.futures.available()))  # read after the leverage change


def test_rsi_bb_atr_bot_trades_both_ways_on_the_futures_fake(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeExchange(check_timestamp=False, seed=1) as fake:
        run = _run_live(fake, monkeypatch, futures=True)
    strat, om = run.strategy, run.orders
    assert fake.futures.leverage["BTCUSDT"] == 2

    # Warm-up signals were refused; live ones filled, long and short (futures may sell first).
    warm = [d for d in strat.decisions if d[2] == "entry" and d[1] < WARMUP]
    assert strat.refusals.get("ENTRY_REJECTED") == len(warm)
    filled = Counter(o.side for o in om.orders() if o.tag == "entry" and o.status is OrderStatus.FILLED)
    assert filled[OrderSide.BUY] >= 1 and filled[OrderSide.SELL] >= 1

    # Every trade was closed on the venue by a stop-market or take-profit-market leg; the other leg cancelled.
    exits = [o for o in om.orders() if o.tag in ("sl", "tp") and o.status is OrderStatus.FILLED]
    assert len(exits) == len(strat.trade_records) >= 2 and {o.side for o in exits} == {OrderSide.BUY, OrderSide.SELL}
    assert {a.type for a in fake.futures.algos.values()} == {"STOP_MARKET", "TAKE_PROFIT_MARKET"}
    assert all(a.reduce_only for a in fake.futures.algos.values())
    assert not [a for a in fake.futures.algos.values() if a.is_open and not any(
        str(o.client_order_id) == a.client_id and o.is_open for o in om.orders())]  # no stray leg left working

    # The venue holds the strategy's orders under its ids; position and fees agree.
    ids = {str(o.client_order_id) for o in om.orders()}
    algo_ids = [a.client_id for a in fake.futures.algos.values()]
    assert len(algo_ids) == len(set(algo_ids)) and set(algo_ids) <= ids
    assert {o.client_id for o in fake.futures.orders.values()} <= ids
    assert run.broker.getposition(strat.datas[0]).size == float(fake.futures.positions["BTCUSDT"].qty)
    assert sum(o.fees for o in om.orders()) == sum(D(t["commission"]) for t in fake.futures.trades)
    assert fake.engine.orders == {}  # nothing went to the spot account
