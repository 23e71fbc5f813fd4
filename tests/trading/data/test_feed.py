"""NumpyFeed delivers the same bars as backtrader's PandasData, in every cerebro mode."""

from __future__ import annotations

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from trading.data import generate_ohlcv
from trading.data.feed import NumpyFeed


class Recorder(bt.Strategy):
    """Record, at each bar, every feed's length, time and OHLCV plus an indicator value."""

    def __init__(self) -> None:
        self.sma = [bt.ind.SMA(d.close, period=3) for d in self.datas]
        self.seen: list[tuple[float, ...]] = []

    def next(self) -> None:
        row: list[float] = []
        for d, sma in zip(self.datas, self.sma):
            row += [len(d), d.datetime[0], d.open[0], d.high[0], d.low[0], d.close[0], d.volume[0]]
            row.append(sma[0])
            row.append(d.close[-1] if len(d) > 1 else float("nan"))
        self.seen.append(tuple(row))


def _run(feeds: list[bt.feeds.DataBase], **kwargs: bool) -> list[tuple[float, ...]]:
    cerebro = bt.Cerebro(stdstats=False, **kwargs)
    for feed in feeds:
        cerebro.adddata(feed)
    cerebro.addstrategy(Recorder)
    strat = cerebro.run()[0]
    return strat.seen


def _pandas(df: pd.DataFrame) -> bt.feeds.PandasData:
    return bt.feeds.PandasData(dataname=df.tz_localize(None))


MODES = [
    {"preload": True, "runonce": True},
    {"preload": True, "runonce": False},
    {"preload": False, "runonce": False},
]


@pytest.mark.parametrize(
    "mode", MODES, ids=lambda m: "-".join(k for k, v in m.items() if v) or "stream"
)
def test_numpy_feed_matches_pandas_data_bar_for_bar(mode: dict[str, bool]) -> None:
    df = generate_ohlcv(300, seed=3, timeframe="1h")
    got = _run([NumpyFeed(frame=df)], **mode)
    want = _run([_pandas(df)], **mode)
    assert len(got) == len(want) == 300 - 2  # the SMA(3) needs two bars of warm-up
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=0, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize(
    "mode", MODES, ids=lambda m: "-".join(k for k, v in m.items() if v) or "stream"
)
def test_numpy_feeds_of_different_lengths_stay_aligned(mode: dict[str, bool]) -> None:
    df = generate_ohlcv(200, seed=5, timeframe="1h")
    short = df.iloc[40:150]  # starts later and ends earlier than the first feed
    got = _run([NumpyFeed(frame=df), NumpyFeed(frame=short)], **mode)
    want = _run([_pandas(df), _pandas(short)], **mode)
    assert len(got) == len(want)
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=0, atol=1e-9, equal_nan=True)


def test_numpy_feed_ends_after_the_last_bar() -> None:
    df = generate_ohlcv(50, seed=1, timeframe="1h")
    seen = _run([NumpyFeed(frame=df)], preload=True, runonce=True)
    assert seen[-1][5] == pytest.approx(df["close"].iloc[-1])
    assert seen[-1][0] == 50
