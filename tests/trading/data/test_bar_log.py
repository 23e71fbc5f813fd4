"""The bar log of a paper bot on live candles, and the live feed's re-run of it at a restart
(trading.data.bar_log, trading.data.ccxt_feed): the same candles with the same history flags, then the
candles that closed while the bot was down as history (all but the newest), then live ones."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.fake_exchange import FakeExchange
from trading.brokers.ccxt_config import settings_from_broker
from trading.brokers.ccxt_venue import build_exchange
from trading.data.bar_log import BarLog, bar_log_path
from trading.data.ccxt_feed import CcxtOHLCVProducer, LiveGate, start_in_thread

MIN = 60_000
START = 1_704_067_230_000  # 2024-01-01 00:00:30 UTC: half way through a 1m candle
OPEN = START - 30_000  # the open of the forming candle


def test_bar_log_path_sits_beside_the_saved_broker_state(tmp_path: Path) -> None:
    assert bar_log_path(tmp_path / "audit-bot-3.broker.json") == tmp_path / "audit-bot-3.bars.json"


def test_bar_log_records_history_ranges_and_gaps_and_reads_them_back(tmp_path: Path) -> None:
    path = tmp_path / "audit-bot-1.bars.json"
    log = BarLog(path, MIN)
    assert not log.anchored
    log.anchor(0, 4 * MIN)
    log.record([(3 * MIN, True), (5 * MIN, False), (6 * MIN, True), (7 * MIN, True), (10 * MIN, False)])
    back = BarLog(path, MIN)
    assert back.anchored and (back.first_open, back.warmup_end, back.last_open) == (0, 4 * MIN, 10 * MIN)
    assert back.stale == [[6 * MIN, 7 * MIN]] and back.skipped == [[8 * MIN, 9 * MIN]]
    flags = [back.flag(k * MIN) for k in range(11)]
    assert flags == [True] * 5 + [False, True, True, None, None, False]
    assert not BarLog(path, MIN, fresh=True).anchored  # a new bot instance starts over
    assert not BarLog(path, 5 * MIN).anchored  # another timeframe is not re-run
    assert json.loads(path.read_text())["last_open"] == 10 * MIN


@pytest.fixture
def fake() -> Iterator[FakeExchange]:
    with FakeExchange(start_ms=START, check_timestamp=False) as fx:
        yield fx


def _producer(fake: FakeExchange, gate: LiveGate, log: BarLog, warmup: int) -> CcxtOHLCVProducer:
    settings = settings_from_broker("binance", {"ccxt": {"urls": fake.api_urls(), "rate_limit_ms": 1}})
    return CcxtOHLCVProducer(build_exchange(settings, asynchronous=True), {"BTCUSDT": "BTC/USDT"}, "1m", gate,
                             warmup=warmup, settle=0, max_wait=0.01, retry_delay=0.01, bar_log=log)


def _drain(gate: LiveGate, n: int, timeout: float = 5.0) -> list[tuple[int, bool]]:
    out: list[tuple[int, bool]] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        item = gate.take("BTCUSDT", 0.05)
        if isinstance(item, tuple):
            out.append((item[0], item[6]))
    return out


def test_a_restarted_producer_re_runs_the_logged_candles_with_their_flags_then_the_downtime_as_history(
    tmp_path: Path, fake: FakeExchange
) -> None:
    path = tmp_path / "audit-bot-1.bars.json"
    gate = LiveGate()
    first = _producer(fake, gate, BarLog(path, MIN, fresh=True), warmup=3)
    thread = start_in_thread(first)
    try:
        seen = _drain(gate, 3)
        fake.clock.advance(30_000)  # the forming candle closes: live
        seen += _drain(gate, 1)
        fake.clock.advance(2 * MIN)  # two close at once: the older one is history
        seen += _drain(gate, 2)
    finally:
        first.stop()
        thread.join(5)
    assert seen == [(OPEN - 3 * MIN, True), (OPEN - 2 * MIN, True), (OPEN - MIN, True), (OPEN, False),
                    (OPEN + MIN, True), (OPEN + 2 * MIN, False)]
    log = json.loads(path.read_text())
    assert (log["first_open"], log["warmup_end"], log["last_open"]) == (OPEN - 3 * MIN, OPEN - MIN, OPEN + 2 * MIN)

    fake.clock.advance(3 * MIN)  # down for three candles
    gate = LiveGate()
    again = _producer(fake, gate, BarLog(path, MIN), warmup=3)
    thread = start_in_thread(again)
    try:
        rerun = _drain(gate, 9)
        fake.clock.advance(MIN)
        rerun += _drain(gate, 1)
    finally:
        again.stop()
        thread.join(5)
    # The earlier run's candles as it had them, then the downtime: history but the newest, then live.
    assert rerun == [*seen, (OPEN + 3 * MIN, True), (OPEN + 4 * MIN, True), (OPEN + 5 * MIN, False),
                     (OPEN + 6 * MIN, False)]
    log = json.loads(path.read_text())
    assert log["stale"] == [[OPEN + MIN, OPEN + MIN], [OPEN + 3 * MIN, OPEN + 4 * MIN]]
    assert log["last_open"] == OPEN + 6 * MIN
