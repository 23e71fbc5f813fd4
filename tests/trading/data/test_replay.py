"""ReplayProducer and ReplayFeed: bars handed from the asyncio producer to cerebro's thread without polling.

At `speed=None` the producer keeps at most `max_backlog` bars in each feed. When it is that
far ahead it waits on an event the feed sets from cerebro's thread once it has taken half of
them; it never sleeps in a loop to look again. `stop()` wakes it from any thread.
"""

from __future__ import annotations

import asyncio
import threading
import time

import backtrader as bt
import pandas as pd
import pytest

from trading.data import generate_ohlcv
from trading.data.replay import ReplayFeed, ReplayProducer


class CountingFeed(ReplayFeed):
    """Records the queue length after every put."""

    def __init__(self) -> None:
        super().__init__()
        self.lengths: list[int] = []

    def put(self, bar):  # type: ignore[no-untyped-def]
        super().put(bar)
        self.lengths.append(self.bars.qsize())


class SlowStrategy(bt.Strategy):
    """Takes 1 ms per bar (so the producer gets ahead) and records the closes it sees."""

    def __init__(self) -> None:
        self.closes: dict[str, list[float]] = {d._name: [] for d in self.datas}

    def next(self) -> None:
        time.sleep(0.001)
        for d in self.datas:
            self.closes[d._name].append(d.close[0])


def run_replay(frames: dict[str, pd.DataFrame], max_backlog: int) -> tuple[ReplayProducer, dict, list[float], dict]:
    feeds = {sym: CountingFeed() for sym in frames}
    sleeps: list[float] = []

    async def recording_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(0)  # yield, as asyncio.sleep(0) would, but never wait

    producer = ReplayProducer(frames, feeds, speed=None, sleep=recording_sleep, max_backlog=max_backlog)
    cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False)
    for sym, feed in feeds.items():
        cerebro.adddata(feed, name=sym)
    cerebro.addstrategy(SlowStrategy)

    async def main():  # type: ignore[no-untyped-def]
        task = asyncio.create_task(producer.run())
        (strat,) = await asyncio.to_thread(cerebro.run)
        await asyncio.wait_for(task, 5)
        return strat

    strat = asyncio.run(main())
    return producer, feeds, sleeps, strat.closes


def test_a_producer_ahead_of_the_strategy_waits_for_room_without_polling() -> None:
    frames = {
        "AAA": generate_ohlcv(300, seed=1, timeframe="1h", start="2022-01-01"),
        "BBB": generate_ohlcv(300, seed=2, timeframe="1h", start="2022-01-01"),
    }
    producer, feeds, sleeps, closes = run_replay(frames, max_backlog=8)

    # Every bar reached the strategy, in order, for both symbols.
    for sym, df in frames.items():
        assert closes[sym] == df["close"].tolist()
    assert producer.sent == 300
    # The producer was ahead (a full backlog) but never held more than max_backlog bars.
    for feed in feeds.values():
        assert max(feed.lengths) == 8 and feed.on_take is None
    # One yield per step and nothing else: no sleep-and-look-again loop while it waited.
    assert sleeps == [0] * 300


def test_stop_from_another_thread_wakes_a_producer_waiting_for_room() -> None:
    frames = {"AAA": generate_ohlcv(50, seed=3, timeframe="1h", start="2022-01-01")}
    feeds = {"AAA": ReplayFeed()}
    producer = ReplayProducer(frames, feeds, speed=None, max_backlog=3)

    async def main() -> None:
        task = asyncio.create_task(producer.run())
        while feeds["AAA"].bars.qsize() < 3:  # nobody takes bars: the producer fills up and waits
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)
        assert not task.done() and producer.sent == 3
        threading.Thread(target=producer.stop).start()
        await asyncio.wait_for(task, 2)

    asyncio.run(main())
    bars = [feeds["AAA"].bars.get_nowait() for _ in range(4)]
    assert bars[-1] is None and feeds["AAA"].bars.empty()  # three bars, then the end marker


def test_max_backlog_must_leave_room_for_a_bar() -> None:
    with pytest.raises(ValueError, match="max_backlog must be at least 1"):
        ReplayProducer({}, {}, speed=None, max_backlog=0)
