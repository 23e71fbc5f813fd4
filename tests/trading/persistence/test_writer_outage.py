"""PostgreSQL stops in the middle of a paper replay and starts again: not one record is lost."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trading.audit_session import attach_audit_to_bot
from trading.bot import BaseTradingBot
from trading.bus import EventBus
from trading.config import parse_config
from trading.data import generate_ohlcv
from trading.events import (
    BotStopped,
    Event,
    OrderEvent,
    OrderFill,
    OrderSubmitted,
    TradeClosed,
    TradeOpened,
)
from trading.persistence import (
    list_fills,
    list_order_events,
    list_orders,
    list_trades,
    upgrade_database,
)

from .test_paper_replay import CONFIG

if TYPE_CHECKING:
    from .pg_server import PostgresServer


def test_stopping_postgresql_mid_replay_loses_no_order_event_fill_or_trade(
    postgres_server: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    upgrade_database(postgres_url)
    csv = tmp_path / "bars.csv"
    generate_ohlcv(600, seed=11, timeframe="1h", start="2021-03-01").rename_axis("datetime").to_csv(
        csv
    )
    bus, published = EventBus(), list[Event]()
    bus.subscribe(published.append, inline=True, name="published")
    cfg = parse_config(CONFIG)
    bot = BaseTradingBot(cfg, mode="paper", replay=csv, speed=3600 * 80, bus=bus)  # 80 bars/s
    session = attach_audit_to_bot(
        bot, {"url": postgres_url, "spool_dir": str(tmp_path / "spool"), "retry_max": 0.5}
    )
    seen: dict[str, Any] = {}

    def submitted() -> int:
        return sum(isinstance(e, OrderSubmitted) for e in list(published))

    def outage() -> None:
        while submitted() < 10:
            time.sleep(0.005)
        postgres_server.stop()
        seen["at_stop"] = len(published)
        deadline = time.monotonic() + 10
        while session.writer.health().spool_pending == 0 or submitted() < 25:
            assert time.monotonic() < deadline, (
                "the replay did not go on while the database was down"
            )
            time.sleep(0.01)
        seen["during"] = session.writer.health()
        seen["at_start"] = len(published)
        postgres_server.start()

    stopper = threading.Thread(target=outage)
    stopper.start()
    try:
        result = asyncio.run(bot.start_trading())
    finally:
        stopper.join(60)
        if not postgres_server.is_running():
            postgres_server.start()
    assert session.close(reason="end_of_data")  # everything reached the database
    health = session.writer.health()

    during = seen["during"]
    assert during.state == "spooling" and during.failures >= 1
    assert seen["at_start"] > seen["at_stop"]  # trading went on while the database was down
    assert not any(isinstance(e, BotStopped) for e in published[: seen["at_start"]])
    assert health.spooled > 0 and health.replayed == health.spooled and health.spool_pending == 0

    what: Counter[str] = Counter()
    for e in published:
        what["order_events"] += isinstance(e, OrderEvent)
        what["fills"] += isinstance(e, OrderFill)
        what["trades"] += isinstance(e, TradeOpened)
        what["closed"] += isinstance(e, TradeClosed)
    orders = {str(e.client_order_id) for e in published if isinstance(e, OrderSubmitted)}
    engine = session.engine
    assert {o.client_order_id for o in list_orders(engine)} == orders
    assert len(list_order_events(engine)) == what["order_events"]
    assert len(list_fills(engine)) == what["fills"]
    trades = list_trades(engine)
    assert (
        len(trades) == what["trades"]
        and sum(t.status == "closed" for t in trades) == what["closed"]
    )
    assert len(result.trades) == what["trades"]  # the broker's round trips, the last one open
    assert what["closed"] >= 10
