"""Bars from IB: bar sizes, aggregation, warm-up history, live bars (closed only), reconnect catch-up, the feed."""

from __future__ import annotations

import itertools
import threading

import backtrader as bt
import pytest

from tests.fakes.fake_tws import FakeTWS
from tests.fakes.fake_tws_setup import AAPL, fake_tws, settings, wait_until
from trading.brokers.ibkr import IBKRAdapter
from trading.data.ibkr_bars import Bar, BarAggregator, BarStream, duration_for, ib_bar_size
from trading.data.ibkr_feed import IBKRLiveFeed

H = 3600


@pytest.mark.parametrize(
    ("timeframe", "size", "seconds"),
    [("1m", "1 min", 60), ("15m", "15 mins", 900), ("1h", "1 hour", H), ("90m", "30 mins", 1800),
     ("6h", "3 hours", 10800), ("1d", "1 day", 86400), ("2d", "1 day", 86400), ("45s", "15 secs", 15)],
)
def test_the_largest_ib_bar_size_dividing_the_timeframe_is_used(timeframe: str, size: str, seconds: int) -> None:
    assert ib_bar_size(timeframe) == (size, seconds)


def test_durations_cover_the_span_in_ib_units() -> None:
    assert duration_for(30) == "60 S" and duration_for(7200) == "7200 S"
    assert duration_for(86_401) == "2 D" and duration_for(400 * 86_400) == "2 Y"


def test_the_aggregator_closes_a_bar_with_its_last_base_bar_or_when_a_later_one_starts() -> None:
    agg = BarAggregator(bucket=3 * H, base=H)
    assert agg.add(0, 1, 2, 0.5, 1.5, 10) == []
    assert agg.add(H, 1.5, 3, 1, 2, 20) == []
    assert agg.add(2 * H, 2, 2.5, 0.1, 2.2, 30) == [Bar(0, 1, 3, 0.1, 2.2, 60)]  # its last base bar
    assert agg.add(3 * H, 2.2, 2.4, 2, 2.3, 5) == []
    assert agg.add(6 * H, 9, 9, 9, 9, 1) == [Bar(3 * H, 2.2, 2.4, 2, 2.3, 5)]  # a later bar started
    assert agg.add(6 * H, 9, 9, 9, 9, 1) == []  # the same base bar again: ignored


def test_the_aggregator_drops_a_first_bar_it_saw_only_part_of() -> None:
    agg = BarAggregator(bucket=3 * H, base=H)
    assert agg.add(H, 1, 1, 1, 1, 1) == []
    assert agg.add(2 * H, 1, 1, 1, 1, 1) == []  # [0, 3h) began before the data: not a whole bar
    assert agg.add(3 * H, 1, 1, 1, 1, 1) == []
    assert agg.add(5 * H, 2, 2, 2, 2, 1) == [Bar(3 * H, 1, 2, 1, 2, 2)]


def _stream(adapter: IBKRAdapter, timeframe: str, warmup: int, source: str = "keep_up_to_date"):  # type: ignore[no-untyped-def]
    got: list[tuple[Bar, bool]] = []
    stream = BarStream(adapter, "AAPL", timeframe, lambda bar, hist: got.append((bar, hist)), warmup_bars=warmup,
                       source=source)
    adapter.loop.run(stream.start)
    return stream, got


def _values(bar: Bar) -> tuple:
    return (bar.start, bar.open, bar.high, bar.low, bar.close, bar.volume)


def test_warm_up_history_then_each_live_bar_once_it_has_closed(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    _, got = _stream(adapter, "1h", warmup=50)
    assert len(got) == 50 and all(hist for _, hist in got)
    first, last = got[0][0].start, got[-1][0].start
    assert [_values(b) for b, _ in got] == tws.bars(AAPL.con_id, H, first, last + H)
    assert last + H <= tws.now  # closed: the bar in progress is not among them
    for _ in range(16):
        before = len(got)
        t = tws.step()
        adapter.sync()
        new = got[before:]
        if t % H == 0:  # the tick that opens a bar closes the one before
            assert [(b.start, hist) for b, hist in new] == [(t - H, False)]
            assert _values(new[0][0]) == tws.bars(AAPL.con_id, H, t - H, t)[0]
        else:
            assert new == []
    starts = [b.start for b, _ in got]
    assert starts == sorted(set(starts)) and all(b - a == H for a, b in itertools.pairwise(starts))


def test_a_timeframe_ib_does_not_serve_is_built_from_smaller_bars(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    step = 5400  # 90m from 30-minute bars
    _, got = _stream(adapter, "90m", warmup=20)
    assert len(got) == 20 and all(b.start % step == 0 for b, _ in got)
    assert [_values(b) for b, _ in got] == tws.bars(AAPL.con_id, step, got[0][0].start, got[-1][0].start + step)
    while len(got) < 23:
        before = len(got)
        t = tws.step()
        adapter.sync()
        for bar, hist in got[before:]:
            assert not hist and bar.start + step == t  # delivered on the tick that ends it
            assert _values(bar) == tws.bars(AAPL.con_id, step, bar.start, t)[0]


def test_real_time_five_second_bars_are_aggregated_to_the_timeframe() -> None:
    with fake_tws(timeframe="1m", bar_seconds=60) as tws:
        a = IBKRAdapter(settings(tws))
        a.connect()
        try:
            _, got = _stream(a, "1m", warmup=30, source="realtime")
            a.sync()
            assert len(got) == 30 and tws.received[50] == 1
            warm_last = got[-1][0].start
            while len(got) < 33:
                tws.step()
                a.sync()
            live = [b for b, hist in got if not hist]
            # The minute in progress when the 5-second bars began is incomplete: it is skipped.
            assert live[0].start == warm_last + 120
            for bar in live:
                assert _values(bar) == tws.bars(AAPL.con_id, 60, bar.start, bar.start + 60)[0]
        finally:
            a.close()


def test_after_a_reconnect_the_bars_missed_are_delivered_once_then_live_resumes(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    _, got = _stream(adapter, "1h", warmup=10)
    tws.step()
    adapter.sync()
    assert len(got) == 11
    tws.refuse_connections(10_000)
    tws.drop_clients()
    wait_until(lambda: not adapter.connected.is_set())
    tws.step(8)  # two bars close while the bot is away
    tws.refuse_connections(0)
    wait_until(lambda: adapter.reconnects == 1 and len(got) == 13, timeout=10)
    assert [hist for _, hist in got[11:]] == [True, True]  # caught up from history, marked as such
    before = len(got)
    while len(got) == before:
        tws.step()
        adapter.sync()
    assert got[-1][1] is False
    starts = [b.start for b, _ in got]
    assert all(b - a == H for a, b in itertools.pairwise(starts))  # no gap, no duplicate


class _Record(bt.Strategy):
    def __init__(self) -> None:
        self.seen: list[tuple[float, float, float]] = []

    def next(self) -> None:
        d = self.datas[0]
        self.seen.append((d.datetime[0], d.close[0], d.warmup_end))


def test_the_feed_gives_cerebro_warm_up_then_live_bars_and_marks_the_warm_up(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    feed = IBKRLiveFeed(adapter=adapter, symbol="AAPL", interval="1h", warmup_bars=24)
    cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False)
    cerebro.adddata(feed, name="AAPL")
    cerebro.addstrategy(_Record)
    result: list[bt.Strategy] = []
    runner = threading.Thread(target=lambda: result.extend(cerebro.run()))
    runner.start()
    feed.wait_idle(24)
    for _ in range(12):
        tws.step()
        adapter.sync()
    feed.wait_idle(27)
    feed.finish()
    runner.join(10)
    seen = result[0].seen
    assert len(seen) == 27 and feed.historical == 24
    warm_end = seen[23][0]
    assert all(w == warm_end for _, _, w in seen[23:]) and seen[24][0] > warm_end
    expected = tws.bars(AAPL.con_id, H, 0, tws.now)[-len(seen) - 1 : -1]  # the last one is still open
    assert [close for _, close, _ in seen] == [b[4] for b in expected]
