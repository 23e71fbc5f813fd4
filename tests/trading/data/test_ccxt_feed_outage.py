"""The live ccxt feed tells the bot when the venue's data stops and comes back (fake Binance, injected faults)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
import yaml

from tests.e2e.live_configs import bot_config, fast_exchange
from tests.fakes.fake_exchange import FakeExchange
from trading.bot import BaseTradingBot
from trading.brokers.ccxt_config import settings_from_broker
from trading.brokers.ccxt_venue import build_exchange
from trading.bus import EventBus
from trading.config import parse_config
from trading.data.ccxt_feed import CcxtOHLCVProducer, LiveGate, start_in_thread
from trading.events import ConnectionLost, ConnectionRestored, Event

MIN = 60_000
START = 1_704_067_230_000  # 2024-01-01 00:00:30 UTC: half way through a 1m candle
FIRST_WARM = START - 30_000 - 2 * MIN  # the older of the two warm-up candles


@pytest.fixture
def fake() -> Iterator[FakeExchange]:
    with FakeExchange(start_ms=START, check_timestamp=False) as fx:
        yield fx


class Feed:
    """A producer on its own thread with the bot's bus; the candles it delivered and the events it published."""

    def __init__(self, fake: FakeExchange, failures: int = 3) -> None:
        settings = settings_from_broker("binance", {"ccxt": {"urls": fake.api_urls(), "rate_limit_ms": 1}})
        self.events: list[Event] = []
        bus = EventBus()
        bus.subscribe(self.events.append, inline=True, name="recorder")
        self.gate = LiveGate()
        self.producer = CcxtOHLCVProducer(build_exchange(settings, asynchronous=True), {"BTCUSDT": "BTC/USDT"},
                                          "1m", self.gate, warmup=2, settle=0, max_wait=0.01, retry_delay=0.01,
                                          bus=bus, failures=failures)
        self.opens: list[int] = []
        self.thread = start_in_thread(self.producer)

    def candles(self, n: int, timeout: float = 10.0) -> list[int]:
        """Wait until `n` candles in all were delivered; return their open times."""
        deadline = time.monotonic() + timeout
        while len(self.opens) < n:
            assert time.monotonic() < deadline, f"{len(self.opens)} of {n} candles delivered"
            item = self.gate.take("BTCUSDT", 0.05)
            if isinstance(item, tuple):
                self.opens.append(item[0])
        return self.opens

    def of(self, cls: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, cls)]

    def close(self) -> None:
        self.producer.stop()
        self.thread.join(5)


def _wait(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.01)


def test_an_outage_is_one_connection_lost_and_one_restored_and_no_candle_is_lost_or_repeated(
    fake: FakeExchange,
) -> None:
    feed = Feed(fake, failures=3)
    try:
        assert feed.candles(2) == [FIRST_WARM, FIRST_WARM + MIN]
        fake.fault("GET", "/api/v3/klines", "unavailable", times=8)
        fake.clock.advance(30_000 + 3 * MIN)  # three candles close while the venue fails
        _wait(lambda: feed.of(ConnectionRestored))
        opens = feed.candles(5)
        assert opens == [FIRST_WARM + k * MIN for k in range(5)]  # the missed three, in order, once each
        lost, restored = feed.of(ConnectionLost), feed.of(ConnectionRestored)
        assert len(lost) == 1 and len(restored) == 1  # eight failures, one outage
        assert feed.events.index(lost[0]) < feed.events.index(restored[0])
        assert lost[0].venue == restored[0].venue == "binance"  # type: ignore[attr-defined]
        assert "3 consecutive venue failures" in lost[0].detail  # type: ignore[attr-defined]
        assert restored[0].downtime_s > 0  # type: ignore[attr-defined]

        fake.clock.advance(MIN)  # live again: the next candle, nothing more published
        assert feed.candles(6)[-1] == FIRST_WARM + 5 * MIN
        assert len(feed.of(ConnectionLost)) == len(feed.of(ConnectionRestored)) == 1
    finally:
        feed.close()
    assert len(feed.opens) == len(set(feed.opens))


def test_failures_below_the_threshold_publish_nothing(fake: FakeExchange) -> None:
    feed = Feed(fake, failures=3)
    try:
        feed.candles(2)
        fake.fault("GET", "/api/v3/klines", "unavailable", times=2)
        fake.clock.advance(30_000)
        assert feed.candles(3)[-1] == FIRST_WARM + 2 * MIN
        assert len(fake.calls("GET", "/api/v3/klines")) >= 4  # warm-up, two failures, the answer
    finally:
        feed.close()
    assert feed.of(ConnectionLost) == feed.of(ConnectionRestored) == []


def test_an_outage_between_candles_is_restored_when_the_venue_answers_again(fake: FakeExchange) -> None:
    feed = Feed(fake, failures=3)
    try:
        feed.candles(2)
        fake.fault("GET", "/api/v3/time", "unavailable", times=5)  # the feed asks the time while it waits
        _wait(lambda: feed.of(ConnectionRestored))
        assert len(feed.of(ConnectionLost)) == 1
        assert feed.gate.take("BTCUSDT", 0) is None  # the forming candle still is not delivered
        fake.clock.advance(30_000)
        assert feed.candles(3)[-1] == FIRST_WARM + 2 * MIN
    finally:
        feed.close()
    assert len(feed.of(ConnectionLost)) == len(feed.of(ConnectionRestored)) == 1


def test_atf_paper_on_live_candles_publishes_the_feeds_outage_on_the_bots_bus() -> None:
    with fast_exchange() as fake:
        events: list[Event] = []
        bus = EventBus()
        bus.subscribe(events.append, inline=True, name="recorder")
        raw = bot_config(fake, mode="paper")
        raw["broker"]["ccxt"]["circuit_breaker"] = {"failures": 2}
        cfg = parse_config(yaml.safe_dump(raw))
        bot = BaseTradingBot(cfg, mode="paper", bus=bus)

        async def main() -> None:
            task = asyncio.create_task(bot.start_trading())
            deadline = time.monotonic() + 60
            while len(fake.calls("GET", "/api/v3/klines")) < 3:  # warmed up, following live candles
                assert not task.done() and time.monotonic() < deadline
                await asyncio.sleep(0.02)
            fake.fault("GET", "/api/v3/time", "unavailable", times=2)  # the feed's 1 s, 2 s backoff: not longer
            while not any(isinstance(e, ConnectionRestored) for e in events):
                assert not task.done() and time.monotonic() < deadline, events
                await asyncio.sleep(0.02)
            await bot.stop("operator")
            await task

        asyncio.run(main())
    lost = [e for e in events if isinstance(e, ConnectionLost)]
    assert len(lost) == 1 and lost[0].venue == "binance" and "live feed" in lost[0].detail
    assert len([e for e in events if isinstance(e, ConnectionRestored)]) == 1
    bars = bot.result.prices["BTCUSDT"]  # type: ignore[union-attr]
    assert bars.index.is_unique and (bars.index.to_series().diff().dropna() == bars.index[1] - bars.index[0]).all()
