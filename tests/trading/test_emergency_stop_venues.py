"""`BaseTradingBot.emergency_stop()` at real venues: the fake Binance (spot, USDⓈ-M futures) through the
ccxt broker and the fake TWS through the IB broker. With a position open and its stop and target
working at the venue, the emergency stop leaves the venue without a working order of the bot and
without a position (read from the fake, not from the bot); the closing fill is the bot's record
too; and asking again does nothing more."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.live_configs import CONFIG, SPEED, VENUE_ENV, bot_config, fast_exchange
from tests.fakes.fake_exchange import FakeExchange
from tests.fakes.fake_tws import FakeTWS
from tests.fakes.fake_tws_setup import AAPL, fake_tws
from trading.bot import BaseTradingBot
from trading.config import parse_config
from trading.orders import ClientOrderId, OrderSide, OrderStatus
from trading.persistence import list_fills, make_engine, upgrade_database

DEADLINE = 150.0


async def _until(condition: Callable[[], object], task: asyncio.Task[Any], what: str,
                 timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if task.done():
            task.result()  # the bot failed: raise its error
            raise AssertionError(f"the bot stopped before: {what}")
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        await asyncio.sleep(0.05)


async def _hold_when(protected: Callable[[], bool], fake: FakeExchange, price: Callable[[], Decimal],
                     task: asyncio.Task[Any]) -> None:
    """Wait until `protected()`, then hold the price where it is: neither leg can fill before the stop acts."""
    while True:
        await _until(protected, task, "a position with its stop and target working")
        fake.clock.set_speed(0)
        fake.script("BTCUSDT", [float(price())] * 2)  # the venue catches up to now first, then stays
        if protected():
            fake.clock.set_speed(SPEED)
            return
        fake.clock.set_speed(SPEED)  # a leg filled meanwhile: wait for the next trade


def _spot_protected(fake: FakeExchange) -> bool:
    with fake.engine.lock:
        coins = fake.engine.locked.get("BTC", Decimal(0))
        sells = [o for o in fake.engine.orders.values() if o.is_open and o.side == "SELL"]
    return coins > 0 and len(sells) == 2


def _spot_flat(fake: FakeExchange) -> tuple[Decimal, list[Any]]:
    with fake.engine.lock:
        coins = fake.engine.free.get("BTC", Decimal(0)) + fake.engine.locked.get("BTC", Decimal(0))
        working = [o for o in fake.engine.orders.values() if o.is_open]
    return coins, working


def test_emergency_stop_at_binance_spot_cancels_the_legs_and_sells_the_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in VENUE_ENV.items():
        monkeypatch.setenv(key, value)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade_database(url)
    with fast_exchange() as fake:
        cfg = parse_config(yaml.safe_dump(bot_config(fake, persistence={"url": url, "heartbeat_interval": 0.5})))
        bot = BaseTradingBot(cfg, mode="live", confirm_live=True, state_dir=tmp_path / "out")

        async def main() -> None:
            task = asyncio.create_task(bot.start_trading())
            await _hold_when(lambda: _spot_protected(fake), fake, lambda: fake.engine.price("BTCUSDT"), task)
            await asyncio.wait_for(asyncio.gather(bot.emergency_stop(), bot.emergency_stop()), DEADLINE)
            await asyncio.wait_for(task, 30)

        asyncio.run(main())
        posts = len(fake.calls("POST", "/api/v3/order")) + len(fake.calls("POST", "/api/v3/orderList/oco"))
        coins, working = _spot_flat(fake)
        assert coins == 0 and working == []
        trades = list(fake.engine.trades)
        last = sorted(fake.engine.orders.values(), key=lambda o: o.order_id)[-3:]  # the last trade's legs, its exit
        asyncio.run(bot.emergency_stop())  # again, once stopped: nothing more goes to the venue
        assert len(fake.calls("POST", "/api/v3/order")) + len(fake.calls("POST", "/api/v3/orderList/oco")) == posts
        assert list(fake.engine.trades) == trades and _spot_flat(fake) == (coins, working)

    assert bot.stop_reason == "emergency_stop" and bot.result is not None
    assert [(o.side, o.status) for o in last] == [("SELL", "CANCELED"), ("SELL", "CANCELED"), ("SELL", "FILLED")]
    assert "-exit-" in last[-1].client_id and last[-1].type == "MARKET"
    # The closing sell is the bot's record: in its OrderManager and in the audit trail, as the venue filled it.
    closing = bot.order_manager.get(ClientOrderId(last[-1].client_id))
    assert closing.side is OrderSide.SELL and closing.status is OrderStatus.FILLED
    assert closing.filled_qty == last[-1].executed and bot.position_manager.open_positions() == []
    engine = make_engine(url)
    try:
        fills = list_fills(engine)
        assert sorted((f.price, f.quantity) for f in fills) == sorted((Decimal(t["price"]), Decimal(t["qty"]))
                                                                      for t in trades)
        assert sum(f.quantity for f in fills if f.client_order_id == last[-1].client_id) == last[-1].executed
    finally:
        engine.dispose()
    assert bot.state is not None and bot.state["open_orders"] == [] and bot.state["positions"] == []


def _futures_protected(fake: FakeExchange) -> bool:
    with fake.futures.lock:
        held = fake.futures.positions["BTCUSDT"].qty
        legs = [a for a in fake.futures.algos.values() if a.is_open]
        legs += [o for o in fake.futures.orders.values() if o.is_open and (o.reduce_only or o.close_position)]
    return held != 0 and len(legs) == 2


def _futures_flat(fake: FakeExchange) -> tuple[Decimal, list[Any]]:
    with fake.futures.lock:
        held = fake.futures.positions["BTCUSDT"].qty
        working: list[Any] = [o for o in fake.futures.orders.values() if o.is_open]
        working += [a for a in fake.futures.algos.values() if a.is_open]
    return held, working


def test_emergency_stop_at_binance_usdm_futures_closes_the_position_reduce_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in VENUE_ENV.items():
        monkeypatch.setenv(key, value)
    with fast_exchange() as fake:
        raw = bot_config(fake)
        raw["broker"]["ccxt"].update(market="future", leverage=2, margin_mode="isolated")
        bot = BaseTradingBot(parse_config(yaml.safe_dump(raw)), mode="live", confirm_live=True)

        async def main() -> None:
            task = asyncio.create_task(bot.start_trading())
            await _hold_when(lambda: _futures_protected(fake), fake, lambda: fake.futures.price("BTCUSDT"), task)
            await asyncio.wait_for(asyncio.gather(bot.emergency_stop(), bot.emergency_stop()), DEADLINE)
            await asyncio.wait_for(task, 30)

        asyncio.run(main())
        held, working = _futures_flat(fake)
        assert held == 0 and working == []
        posts = len(fake.calls("POST", "/fapi/v1/order")) + len(fake.calls("POST", "/fapi/v1/algoOrder"))
        asyncio.run(bot.emergency_stop())
        assert len(fake.calls("POST", "/fapi/v1/order")) + len(fake.calls("POST", "/fapi/v1/algoOrder")) == posts
        assert _futures_flat(fake) == (held, working)
        exit_order = max(fake.futures.orders.values(), key=lambda o: o.order_id)  # the last order sent
        legs = sorted(fake.futures.algos.values(), key=lambda a: a.create_time)[-2:]  # the last trade's
    assert "-exit-" in exit_order.client_id and exit_order.type == "MARKET" and exit_order.status == "FILLED"
    assert exit_order.reduce_only  # it can only close, never open the other way
    assert [a.status for a in legs] == ["CANCELED", "CANCELED"]
    assert bot.stop_reason == "emergency_stop" and bot.position_manager.open_positions() == []
    [closing] = [o for o in bot.order_manager.orders() if str(o.client_order_id) == exit_order.client_id]
    assert closing.status is OrderStatus.FILLED and closing.filled_qty == exit_order.executed


# --------------------------------------------------------------------------- Interactive Brokers


def _ib_config(tws: FakeTWS) -> dict[str, Any]:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["bot"]["symbols"] = ["AAPL"]
    raw["data"] = {"warmup_bars": 200}
    raw["broker"] = {
        "type": "ibkr", "trading_mode": "live", "cash": 100_000.0, "commission_rate": 0.0,
        "ibkr": {"port": tws.port, "client_id": 7, "contracts": {"AAPL": "AAPL:STK:SMART:USD"},
                 "connect_timeout": 5.0, "request_timeout": 10.0, "commission_wait": 0.5,
                 "reconnect": {"initial_delay": 0.05, "factor": 2.0, "max_delay": 0.2, "max_attempts": 50}},
    }
    return raw


def _ib_working(tws: FakeTWS) -> list[Any]:
    return [o for o in tws.orders() if o.open and o.order_ref.startswith("atf-")]


def test_emergency_stop_at_interactive_brokers_cancels_the_bracket_children_and_sells_the_position() -> None:
    with fake_tws(bars=700, history=300) as tws:
        bot = BaseTradingBot(parse_config(yaml.safe_dump(_ib_config(tws))), mode="live", confirm_live=True)

        async def step_until(condition: Callable[[], object], task: asyncio.Task[Any], what: str) -> None:
            deadline = time.monotonic() + DEADLINE
            while not condition():
                if task.done() and not condition():
                    task.result()
                    raise AssertionError(f"the bot stopped before: {what}")
                assert time.monotonic() < deadline and tws.next_tick_time() is not None, what
                await asyncio.to_thread(tws.step)
                await asyncio.sleep(0.02)  # pacing only: the bot reads each tick's bar update

        def protected() -> bool:
            return tws.position(AAPL.con_id) > 0 and len([o for o in _ib_working(tws) if o.action == "SELL"]) == 2

        async def main() -> None:
            task = asyncio.create_task(bot.start_trading())
            await _until(lambda: tws.call(lambda: any(s.history for s in tws.sessions)), task, "live bars")
            await step_until(protected, task, "a position with its stop and target working at IB")
            stopping = asyncio.gather(bot.emergency_stop(), bot.emergency_stop())
            # The bot acts at once (test_emergency_stop_between_bars.py holds the clock); stepping on is harmless.
            await step_until(lambda: stopping.done(), task, "the emergency stop done")
            await stopping
            await asyncio.wait_for(task, 30)

        asyncio.run(main())
        assert tws.position(AAPL.con_id) == 0 and _ib_working(tws) == []
        placed = len(tws.orders())
        asyncio.run(bot.emergency_stop())
        assert len(tws.orders()) == placed and tws.position(AAPL.con_id) == 0
        at_ib = tws.orders()
        executions = tws.call(lambda: list(tws.book.executions))

    assert bot.stop_reason == "emergency_stop" and bot.position_manager.open_positions() == []
    # What IB filled is what the bot recorded, order by order (the closing sell included).
    filled_at_ib = {o.order_ref: o.filled for o in at_ib if o.filled}
    recorded = {str(o.client_order_id): float(o.filled_qty) for o in bot.order_manager.orders() if o.filled_qty}
    assert recorded == filled_at_ib
    last = max(executions, key=lambda e: (e.time, e.exec_id))
    assert last.order.action == "SELL" and sum(e.shares for e in executions if e.order.action == "SELL") == sum(
        e.shares for e in executions if e.order.action == "BUY")
