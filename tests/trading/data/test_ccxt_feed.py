"""The live ccxt feed against the fake Binance: closed candles only, warm-up first, aligned symbols,
outages survived, and the backtrader feed's history flag."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import backtrader as bt
import pytest

from tests.fakes.fake_exchange import FakeExchange
from tests.fakes.fake_exchange_engine import FakeMarket
from trading.brokers.ccxt_config import settings_from_broker
from trading.brokers.ccxt_venue import build_exchange
from trading.data.ccxt_feed import CcxtLiveFeed, CcxtOHLCVProducer, LiveGate, start_in_thread

MIN = 60_000
START = 1_704_067_230_000  # 2024-01-01 00:00:30 UTC: half way through a 1m candle


@pytest.fixture
def fake() -> Iterator[FakeExchange]:
    markets = [FakeMarket(), FakeMarket(symbol="ETHUSDT", base="ETH")]
    with FakeExchange(start_ms=START, markets=markets, check_timestamp=False) as fx:
        yield fx


def _producer(fake: FakeExchange, gate: LiveGate, symbols: dict[str, str], warmup: int) -> CcxtOHLCVProducer:
    settings = settings_from_broker("binance", {"ccxt": {"urls": fake.api_urls(), "rate_limit_ms": 1}})
    exchange = build_exchange(settings, asynchronous=True)
    return CcxtOHLCVProducer(exchange, symbols, "1m", gate, warmup=warmup, settle=0, max_wait=0.01,
                             retry_delay=0.01)


def _take(gate: LiveGate, symbol: str = "BTCUSDT", timeout: float = 3.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = gate.take(symbol, 0.05)
        if item is not None:
            return item
    return None


def test_only_closed_candles_after_the_warm_up_history(fake: FakeExchange) -> None:
    gate = LiveGate()
    producer = _producer(fake, gate, {"BTCUSDT": "BTC/USDT"}, warmup=5)
    thread = start_in_thread(producer)
    try:
        warm = [_take(gate) for _ in range(5)]
        assert [b[0] for b in warm] == [START - 30_000 - k * MIN for k in (5, 4, 3, 2, 1)]
        assert all(b[6] for b in warm)  # history: never traded
        assert gate.take("BTCUSDT", 0.3) is None  # the 00:00 candle is still forming

        fake.clock.advance(30_000)  # 00:01:00: the 00:00 candle has closed
        live = _take(gate)
        assert live[0] == START - 30_000 and live[6] is False
        path = fake.engine.paths["BTCUSDT"]
        o, h, low, c, v = path.candle(live[0], MIN, fake.now_ms())
        assert live[1:6] == (float(o), float(h), float(low), float(c), float(v))

        fake.clock.advance(2 * MIN)  # 00:03:00 after an outage of the loop: two closed at once
        late, newest = _take(gate), _take(gate)
        assert (late[0], late[6]) == (START + 30_000, True)  # a newer candle closed since: history
        assert (newest[0], newest[6]) == (START + 90_000, False)
    finally:
        producer.stop()
        thread.join(5)
    assert not thread.is_alive()


def test_symbols_are_delivered_together_one_time_step_at_a_time(fake: FakeExchange) -> None:
    gate = LiveGate()
    producer = _producer(fake, gate, {"BTCUSDT": "BTC/USDT", "ETHUSDT": "ETH/USDT"}, warmup=3)
    thread = start_in_thread(producer)
    try:
        for _ in range(3):
            btc, eth = _take(gate, "BTCUSDT"), gate.take("ETHUSDT", 0)  # same step: already there
            assert btc[0] == eth[0]
        fake.clock.advance(30_000)
        btc, eth = _take(gate, "BTCUSDT"), gate.take("ETHUSDT", 0)
        assert btc[0] == eth[0] == START - 30_000
    finally:
        producer.stop()
        thread.join(5)


def test_exchange_outage_is_retried_and_the_candle_arrives_late(fake: FakeExchange) -> None:
    gate = LiveGate()
    producer = _producer(fake, gate, {"BTCUSDT": "BTC/USDT"}, warmup=1)
    thread = start_in_thread(producer)
    try:
        assert _take(gate) is not None
        fake.fault("GET", "/api/v3/klines", "unavailable", times=3)
        fake.clock.advance(30_000)
        bar = _take(gate)
        assert bar[0] == START - 30_000 and bar[6] is False
        assert len(fake.calls("GET", "/api/v3/klines")) >= 5  # warm-up, three failures, the answer
    finally:
        producer.stop()
        thread.join(5)


class _Recorder(bt.Strategy):
    def __init__(self) -> None:
        self.rows: list[tuple[str, float, bool]] = []
        self.statuses: list[str] = []

    def notify_data(self, data: bt.DataBase, status: int, *args: object) -> None:
        self.statuses.append(data._getstatusname(status))

    def next(self) -> None:
        for d in self.datas:
            self.rows.append((d._name, d.close[0], d.backfilling))


def test_backtrader_feed_marks_history_and_goes_live(fake: FakeExchange) -> None:
    gate = LiveGate()
    producer = _producer(fake, gate, {"BTCUSDT": "BTC/USDT", "ETHUSDT": "ETH/USDT"}, warmup=3)
    cerebro = bt.Cerebro(stdstats=False)
    for sym in ("BTCUSDT", "ETHUSDT"):
        cerebro.adddata(CcxtLiveFeed(gate=gate, timeframe_str="1m", qcheck=0.02), name=sym)
    cerebro.addstrategy(_Recorder)
    thread = start_in_thread(producer)

    def drive() -> None:
        while producer.delivered < 3:
            time.sleep(0.01)
        for _ in range(2):
            fake.clock.advance(MIN)
            target = producer.delivered + 1
            while producer.delivered < target:
                time.sleep(0.01)
        time.sleep(0.2)
        producer.stop()

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    [strat] = cerebro.run()
    driver.join(5)
    thread.join(5)

    flags = [f for name, _, f in strat.rows if name == "BTCUSDT"]
    assert flags == [True, True, True, False, False]
    assert len([r for r in strat.rows if r[0] == "ETHUSDT"]) == 5  # aligned: one bar of each per next
    assert "LIVE" in strat.statuses and strat.statuses[0] == "DELAYED"
    closes = [c for name, c, _ in strat.rows if name == "BTCUSDT"]
    last_open = START - 30_000 + MIN
    assert closes[-1] == float(fake.engine.paths["BTCUSDT"].candle(last_open, MIN, fake.now_ms())[3])
    assert Decimal(str(closes[0])) > 0
