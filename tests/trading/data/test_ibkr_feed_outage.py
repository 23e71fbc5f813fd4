"""`atf paper` on Interactive Brokers bars tells the bot when IB's connection drops and comes back.

The feeds share the IB adapter's connection, whose drop and reconnection are published once per
outage on the bot's bus (`trading.brokers.ibkr`); after the reconnection the feed delivers the
bars that closed meanwhile, once (fake TWS, real ib_async).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import yaml

from tests.e2e.live_configs import CONFIG
from tests.fakes.fake_tws import FakeTWS
from tests.fakes.fake_tws_setup import fake_tws
from trading.bot import BaseTradingBot
from trading.bus import EventBus
from trading.config import parse_config
from trading.events import ConnectionLost, ConnectionRestored, Event

H = 3600
WARMUP = 50


def _config(tws: FakeTWS) -> dict[str, Any]:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["bot"]["symbols"] = ["AAPL"]
    raw["data"] = {"warmup_bars": WARMUP}
    raw["broker"].update(ibkr={
        "port": tws.port, "client_id": 7, "contracts": {"AAPL": "AAPL:STK:SMART:USD"}, "connect_timeout": 5.0,
        "request_timeout": 10.0, "reconnect": {"initial_delay": 0.05, "factor": 2.0, "max_delay": 0.2,
                                                "max_attempts": 200}})
    return raw


def test_paper_on_ib_bars_publishes_one_lost_and_one_restored_and_keeps_every_bar_once() -> None:
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append, inline=True, name="recorder")
    with fake_tws(bars=400, history=300) as tws:
        bot = BaseTradingBot(parse_config(yaml.safe_dump(_config(tws))), mode="paper", bus=bus)

        def of(cls: type[Event]) -> list[Event]:
            return [e for e in events if isinstance(e, cls)]

        async def until(condition: Callable[[], object], task: asyncio.Task[Any], step: bool = False) -> None:
            deadline = time.monotonic() + 60
            while not condition():
                if task.done():
                    task.result()
                    raise AssertionError("the bot stopped")
                assert time.monotonic() < deadline, "condition not met"
                if step:
                    await asyncio.to_thread(tws.step)
                await asyncio.sleep(0.02)

        async def main() -> None:
            task = asyncio.create_task(bot.start_trading())
            await until(lambda: tws.call(lambda: any(s.history for s in tws.sessions)), task)
            for _ in range(8):  # two live bars
                await asyncio.to_thread(tws.step)
            tws.refuse_connections(10_000)
            tws.drop_clients()
            await until(lambda: of(ConnectionLost), task)
            for _ in range(8):  # two bars close while the bot is away
                await asyncio.to_thread(tws.step)
            tws.refuse_connections(0)
            await until(lambda: of(ConnectionRestored), task)
            for _ in range(8):  # and two more live
                await asyncio.to_thread(tws.step)
            await until(lambda: _bars_seen(bot) >= WARMUP + 6, task, step=True)
            await bot.stop("operator")
            await task

        asyncio.run(main())
        end = tws.now

    lost, restored = of(ConnectionLost), of(ConnectionRestored)
    assert len(lost) == 1 and len(restored) == 1 and events.index(lost[0]) < events.index(restored[0])
    assert lost[0].venue == restored[0].venue == "ibkr"  # type: ignore[attr-defined]
    bars = bot.result.prices["AAPL"]  # type: ignore[union-attr]
    starts = bars.index.as_unit("s").asi8
    assert len(bars) >= WARMUP + 6 and (pd.Series(starts).diff().dropna() == H).all()  # no gap, no duplicate
    assert starts[-1] + H <= end


def _bars_seen(bot: BaseTradingBot) -> int:
    """Bars the AAPL feed of the bot's live session has delivered so far."""
    session = bot._producer
    feeds = getattr(session, "feeds", {}) or {}
    feed = feeds.get("AAPL")
    return int(getattr(feed, "delivered", 0)) if feed is not None else 0
