"""The emergency stop and the forced exit act between bars in a live run at a venue.

The fake venue's clock is frozen once the bot holds a position with its stop and target
working (the fake Binance: no candle closes any more; the fake TWS: it is not stepped), so no
new bar reaches the bot: the venue must end flat with nothing working of the bot anyway,
within a generous deadline, from the bot's own loop. A forced exit of one symbol of two
leaves the other's position and orders alone. The bar-time behaviour of backtests and
replays is covered by tests/trading/test_bot.py (unchanged).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.e2e.live_configs import MINUTE_MS, SPEED, VENUE_ENV, bot_config, fast_exchange
from tests.fakes.fake_exchange import FakeExchange
from tests.fakes.fake_exchange_engine import FakeMarket
from tests.fakes.fake_tws_setup import AAPL, fake_tws
from tests.trading.test_emergency_stop_venues import (
    DEADLINE,
    _futures_flat,
    _ib_config,
    _ib_working,
    _spot_flat,
    _until,
)
from trading.bot import BaseTradingBot
from trading.config import parse_config
from trading.orders import OrderStatus
from trading.persistence import list_trades, make_engine, upgrade_database

WAIT = 30.0  # generous: the bot's loop passes a few times a second
SYMBOLS = ("BTCUSDT", "ETHUSDT")


# --------------------------------------------------------------------------- the fake Binance


def _spot_legs(fake: FakeExchange, symbol: str) -> tuple[Decimal, list[Any]]:
    """The coins of `symbol` held (free and locked) and its open orders at the venue."""
    base = symbol.removesuffix("USDT")
    with fake.engine.lock:
        coins = fake.engine.free.get(base, Decimal(0)) + fake.engine.locked.get(base, Decimal(0))
        working = [o for o in fake.engine.orders.values() if o.is_open and o.symbol == symbol]
    return coins, working


def _futures_legs(fake: FakeExchange, symbol: str) -> tuple[Decimal, list[Any]]:
    with fake.futures.lock:
        held = fake.futures.positions[symbol].qty
        working: list[Any] = [o for o in fake.futures.orders.values() if o.is_open and o.symbol == symbol]
        working += [a for a in fake.futures.algos.values() if a.is_open and a.symbol == symbol]
    return held, working


def _protected(fake: FakeExchange, futures: bool, symbols: tuple[str, ...]) -> bool:
    """Every symbol held with its stop and target working at the venue."""
    legs = _futures_legs if futures else _spot_legs
    return all(held != 0 and len(working) == 2 for held, working in (legs(fake, s) for s in symbols))


async def _freeze_when(protected: Any, fake: FakeExchange, task: asyncio.Task[Any]) -> None:
    """Wait until `protected()`, then freeze the venue's clock: no candle closes, no price moves."""
    while True:
        await _until(protected, task, "positions with their stop and target working")
        fake.clock.set_speed(0)
        fake.match()  # the venue catches up to now: a leg may fill on the way
        if protected():
            return
        fake.clock.set_speed(SPEED)


def _exits(fake: FakeExchange, futures: bool, before: Collection[str] = ()) -> list[Any]:
    """The market exits the bot sent to the venue (those not in `before`)."""
    orders = (fake.futures.orders if futures else fake.engine.orders).values()
    return [o for o in orders if "-exit-" in o.client_id and o.client_id not in before]


def _feed(bot: BaseTradingBot, symbol: str) -> Any:
    return bot._producer.feeds[symbol]  # type: ignore[union-attr]


def _caught_up(bot: BaseTradingBot, fake: FakeExchange, symbols: tuple[str, ...]) -> bool:
    """The feeds took every candle the frozen clock lets the producer deliver: no more bars come."""
    producer = bot._producer._producer  # type: ignore[union-attr]
    last = (fake.now_ms() - producer.settle_ms) // MINUTE_MS * MINUTE_MS - MINUTE_MS
    return producer.last_open == last and not any(producer.gate.has(s) for s in symbols)


def _count_bars(bot: BaseTradingBot, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the number of bars the bot's strategy has finished (appended at the end of each)."""
    done: list[int] = []
    bound = bot._strategy_cls

    def counting() -> type[Any]:
        class Counting(bound()):  # type: ignore[misc]
            def next(self) -> None:
                super().next()
                done.append(len(self))

        return Counting

    monkeypatch.setattr(bot, "_strategy_cls", counting)
    return done


def _in_step(bot: BaseTradingBot, fake: FakeExchange, futures: bool, symbols: tuple[str, ...]) -> bool:
    """The bot has nothing in flight: its working orders are the venue's, all accepted there."""
    legs = _futures_legs if futures else _spot_legs
    try:
        ours = [o for o in bot.order_manager.open_orders() if o.symbol in symbols]
    except RuntimeError:  # changed while read (the bot's thread): not settled
        return False
    venue = sorted(o.client_id for s in symbols for o in legs(fake, s)[1])
    return all(o.status is OrderStatus.ACCEPTED for o in ours) and sorted(str(o.client_order_id) for o in ours) == venue


def _venue_config(fake: FakeExchange, futures: bool, symbols: tuple[str, ...], **sections: Any) -> Any:
    raw = bot_config(fake, **sections)
    raw["bot"]["symbols"] = list(symbols)
    if futures:
        raw["broker"]["ccxt"].update(market="future", leverage=2, margin_mode="isolated")
    return parse_config(yaml.safe_dump(raw))


def _twin_exchange() -> FakeExchange:
    """BTCUSDT and ETHUSDT on the same price path: the bot enters, and holds, both at once."""
    rng = np.random.default_rng(1)
    path = np.round(100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.0003, 200_000))), 2).tolist()
    return fast_exchange(markets=[FakeMarket(), FakeMarket(symbol="ETHUSDT", base="ETH")],
                         prices={s: path for s in SYMBOLS}, balances={"USDT": "10000", "BTC": "0", "ETH": "0"})


@pytest.mark.parametrize("futures", [False, True], ids=["spot", "usdm_futures"])
def test_emergency_stop_flattens_the_venue_without_a_new_bar(
    futures: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in VENUE_ENV.items():
        monkeypatch.setenv(key, value)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade_database(url)
    symbols = ("BTCUSDT",)
    legs = _futures_legs if futures else _spot_legs
    with fast_exchange() as fake:
        cfg = _venue_config(fake, futures, symbols, persistence={"url": url, "heartbeat_interval": 0.5})
        bot = BaseTradingBot(cfg, mode="live", confirm_live=True, state_dir=tmp_path / "out")
        done, seen = _count_bars(bot, monkeypatch), []
        earlier: set[str] = set()

        async def main() -> None:
            task = asyncio.create_task(bot.start_trading())
            await _freeze_when(lambda: _protected(fake, futures, symbols), fake, task)
            await _until(lambda: _caught_up(bot, fake, symbols), task, "every closed candle taken")
            await _until(lambda: done[-1:] == [_feed(bot, "BTCUSDT").delivered], task, "the last bar processed")
            await _until(lambda: _in_step(bot, fake, futures, symbols), task, "the last bar's orders at the venue")
            seen.append(_feed(bot, "BTCUSDT").delivered)
            earlier.update(o.client_id for o in _exits(fake, futures))  # exits of earlier trades
            stopping = asyncio.gather(bot.emergency_stop(), bot.emergency_stop())
            await _until(lambda: legs(fake, "BTCUSDT") == (0, []), task, "flat at the venue, no new bar", WAIT)
            await asyncio.wait_for(stopping, WAIT)  # the run ends once the closing fill is booked
            await asyncio.wait_for(task, WAIT)

        asyncio.run(main())
        assert (_futures_flat if futures else _spot_flat)(fake) == (0, [])
        assert _feed(bot, "BTCUSDT").delivered == seen[0]  # no bar reached the bot after the request
        exits = _exits(fake, futures, earlier)

    assert bot.stop_reason == "emergency_stop" and bot.position_manager.open_positions() == []
    [exit_order] = exits
    assert exit_order.type == "MARKET" and exit_order.status == "FILLED"
    closing = [o for o in bot.order_manager.orders() if str(o.client_order_id) == exit_order.client_id]
    assert [(o.status, o.filled_qty) for o in closing] == [(OrderStatus.FILLED, exit_order.executed)]
    assert bot.order_manager.open_orders() == []
    assert bot.result is not None and bot.result.trades[-1].exit_reason == "emergency_stop"
    engine = make_engine(url)
    try:
        assert [t.exit_reason for t in list_trades(engine)][-1:] == ["emergency_stop"]
    finally:
        engine.dispose()
    state = (tmp_path / "out" / "state.json").read_text()
    assert '"stop_reason": "emergency_stop"' in state and '"positions": []' in state and '"open_orders": []' in state


@pytest.mark.parametrize("futures", [False, True], ids=["spot", "usdm_futures"])
def test_force_exit_closes_one_symbol_of_two_without_a_new_bar(
    futures: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in VENUE_ENV.items():
        monkeypatch.setenv(key, value)
    legs = _futures_legs if futures else _spot_legs
    with _twin_exchange() as fake:
        bot = BaseTradingBot(_venue_config(fake, futures, SYMBOLS), mode="live", confirm_live=True)
        done, seen = _count_bars(bot, monkeypatch), []
        earlier: set[str] = set()
        kept: list[tuple[Decimal, list[str]]] = []

        def eth() -> tuple[Decimal, list[str]]:
            held, working = legs(fake, "ETHUSDT")
            return held, sorted(o.client_id for o in working)

        async def main() -> None:
            task = asyncio.create_task(bot.start_trading())
            await _freeze_when(lambda: _protected(fake, futures, SYMBOLS), fake, task)
            await _until(lambda: _caught_up(bot, fake, SYMBOLS), task, "every closed candle taken")
            await _until(lambda: done[-1:] == [_feed(bot, "BTCUSDT").delivered], task, "the last bar processed")
            await _until(lambda: _in_step(bot, fake, futures, SYMBOLS), task, "the last bar's orders at the venue")
            seen.append(_feed(bot, "BTCUSDT").delivered)
            earlier.update(o.client_id for o in _exits(fake, futures))  # exits of earlier trades
            kept.append(eth())
            bot.request_force_exit("BTCUSDT")
            await _until(lambda: legs(fake, "BTCUSDT") == (0, []), task, "BTCUSDT flat, no new bar", WAIT)
            await _until(lambda: bot.position_manager.position("BTCUSDT").quantity == 0, task,
                         "the closing fill booked", WAIT)
            kept.append(eth())
            await asyncio.wait_for(bot.stop(), WAIT)
            await asyncio.wait_for(task, WAIT)

        asyncio.run(main())
        assert _feed(bot, "BTCUSDT").delivered == seen[0]
        exits = _exits(fake, futures, earlier)

    assert kept[0][0] != 0 and len(kept[0][1]) == 2 and kept[1] == kept[0]  # ETHUSDT's position and legs stay
    assert [(o.symbol, o.type, o.status) for o in exits] == [("BTCUSDT", "MARKET", "FILLED")]
    assert bot.stop_reason == "stop" and not bot._control.halted
    assert [p.symbol for p in bot.position_manager.open_positions()] == ["ETHUSDT"]
    assert bot.result is not None
    forced = [t for t in bot.result.trades if t.exit_reason == "force_exit"]
    assert [t.symbol for t in forced] == ["BTCUSDT"]
    assert bot.state is not None and [p["symbol"] for p in bot.state["positions"]] == ["ETHUSDT"]
    assert sorted(o["client_order_id"] for o in bot.state["open_orders"]) == kept[0][1]


# --------------------------------------------------------------------------- Interactive Brokers


def test_emergency_stop_at_interactive_brokers_without_a_new_bar() -> None:
    with fake_tws(bars=700, history=300) as tws:
        bot = BaseTradingBot(parse_config(yaml.safe_dump(_ib_config(tws))), mode="live", confirm_live=True)
        frozen: list[int] = []
        earlier: set[str] = set()

        def protected() -> bool:
            return tws.position(AAPL.con_id) > 0 and len([o for o in _ib_working(tws) if o.action == "SELL"]) == 2

        async def main() -> None:
            task = asyncio.create_task(bot.start_trading())
            await _until(lambda: tws.call(lambda: any(s.history for s in tws.sessions)), task, "live bars")
            while not protected():
                assert not task.done() and tws.next_tick_time() is not None, "no position at IB"
                await asyncio.to_thread(tws.step)
                await asyncio.sleep(0.02)  # pacing only: the bot reads each tick's bar update
            feed = _feed(bot, "AAPL")
            await asyncio.to_thread(feed.wait_idle, feed.delivered, DEADLINE)  # the last bar is processed
            frozen.append(tws.now)
            earlier.update(o.order_ref for o in tws.orders() if "-exit-" in o.order_ref)
            # IB's clock stays where it is from here on: no bar, no tick.
            stopping = asyncio.gather(bot.emergency_stop(), bot.emergency_stop())
            await _until(lambda: tws.position(AAPL.con_id) == 0 and _ib_working(tws) == [], task,
                         "flat at IB, no new bar", WAIT)
            await asyncio.wait_for(stopping, WAIT)
            await asyncio.wait_for(task, WAIT)

        asyncio.run(main())
        assert tws.now == frozen[0] and tws.position(AAPL.con_id) == 0 and _ib_working(tws) == []
        at_ib = tws.orders()

    assert bot.stop_reason == "emergency_stop" and bot.position_manager.open_positions() == []
    filled_at_ib = {o.order_ref: o.filled for o in at_ib if o.filled}
    recorded = {str(o.client_order_id): float(o.filled_qty) for o in bot.order_manager.orders() if o.filled_qty}
    assert recorded == filled_at_ib and bot.order_manager.open_orders() == []
    [exit_ref] = [ref for ref in filled_at_ib if "-exit-" in ref and ref not in earlier]
    assert next(o for o in at_ib if o.order_ref == exit_ref).action == "SELL"
    assert bot.result is not None and bot.result.trades[-1].exit_reason == "emergency_stop"


def test_force_exit_at_interactive_brokers_closes_one_symbol_of_two_without_a_new_bar() -> None:
    from tests.fakes.fake_tws import FakeTWS
    from tests.fakes.fake_tws_market import FakeInstrument, PricePath
    from tests.fakes.fake_tws_setup import frame, start_time

    msft = FakeInstrument(272093, "MSFT", "STK", "NASDAQ", local_symbol="MSFT", trading_class="NMS",
                          primary_exchange="NASDAQ")
    bars = frame(700, seed=7, start_price=180.0)  # the same path: the bot enters, and holds, both at once
    paths = {AAPL.con_id: PricePath(bars, 3600), msft.con_id: PricePath(bars, 3600)}
    with FakeTWS([AAPL, msft], paths, start=start_time(300)) as tws:
        raw = _ib_config(tws)
        raw["bot"]["symbols"] = ["AAPL", "MSFT"]
        raw["broker"]["ibkr"]["contracts"]["MSFT"] = "MSFT:STK:SMART:USD"
        bot = BaseTradingBot(parse_config(yaml.safe_dump(raw)), mode="live", confirm_live=True)
        frozen: list[int] = []
        earlier: set[str] = set()
        kept: list[tuple[float, list[str]]] = []

        def legs(con_id: int) -> tuple[float, list[str]]:
            working = [o for o in _ib_working(tws) if o.con_id == con_id]
            return tws.position(con_id), sorted(o.order_ref for o in working)

        def protected() -> bool:
            return all(held > 0 and len(refs) == 2 for held, refs in (legs(AAPL.con_id), legs(msft.con_id)))

        async def main() -> None:
            task = asyncio.create_task(bot.start_trading())
            await _until(lambda: tws.call(lambda: any(s.history for s in tws.sessions)), task, "live bars")
            while not protected():
                assert not task.done() and tws.next_tick_time() is not None, "no positions at IB"
                await asyncio.to_thread(tws.step)
                await asyncio.sleep(0.02)  # pacing only: the bot reads each tick's bar update
            first, second = _feed(bot, "AAPL"), _feed(bot, "MSFT")  # Cerebro waits on the first feed
            await _until(lambda: second.delivered == first.delivered, task, "both bars of the last step")
            await asyncio.to_thread(first.wait_idle, first.delivered, DEADLINE)  # the last step is processed
            frozen.append(tws.now)
            earlier.update(o.order_ref for o in tws.orders() if "-exit-" in o.order_ref)
            kept.append(legs(msft.con_id))
            bot.request_force_exit("AAPL")
            await _until(lambda: legs(AAPL.con_id) == (0, []), task, "AAPL flat at IB, no new bar", WAIT)
            kept.append(legs(msft.con_id))
            await asyncio.wait_for(bot.stop(), WAIT)
            await asyncio.wait_for(task, WAIT)

        asyncio.run(main())
        assert tws.now == frozen[0]
        at_ib = tws.orders()

    assert kept[1] == kept[0] and kept[0][0] > 0 and len(kept[0][1]) == 2  # MSFT's position and legs stay
    [exit_order] = [o for o in at_ib if "-exit-" in o.order_ref and o.order_ref not in earlier]
    assert exit_order.con_id == AAPL.con_id and exit_order.action == "SELL" and exit_order.filled
    assert bot.result is not None
    assert [t.symbol for t in bot.result.trades if t.exit_reason == "force_exit"] == ["AAPL"]
    assert [p.symbol for p in bot.position_manager.open_positions()] == ["MSFT"]
