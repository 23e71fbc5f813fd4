"""Streamed bars: retraining runs in the background and never holds up a bar."""

from __future__ import annotations

import threading
from typing import Any

import backtrader as bt
import numpy as np
import pytest

from strategy.base import BaseStrategy, StrategySpec
from strategy.mixins.entry.hmm_lstm import HMMLSTMEntryMixin
from strategy.ml import trainer as trainer_mod
from strategy.ml.walkforward import load_or_fit
from tests.strategy.conftest import SYMBOL, make_config, synthetic_frame
from tests.strategy.ml.helpers import SMALL, bars_of, head
from trading.brokers.sim import SimBroker, configure_broker
from trading.data.feed import NumpyFeed


class Gate:
    """A real trainer whose jobs wait for `release` (recording whether they had to time out)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: list[int] = []
        self.timed_out: list[bool] = []

    def __call__(self, *args: Any) -> Any:
        self.started.append(len(args[0]))
        self.timed_out.append(not self.release.wait(60))
        return load_or_fit(*args)


@pytest.fixture
def gate():  # type: ignore[no-untyped-def]
    g = Gate()
    trainer = trainer_mod.BackgroundTrainer(train=g)
    old = trainer_mod.set_default_trainer(trainer)
    yield g
    g.release.set()
    trainer.shutdown()
    trainer_mod.set_default_trainer(old)


def test_previous_model_serves_while_the_new_window_trains(gate: Gate) -> None:
    bars = bars_of(synthetic_frame(320, seed=3))
    m = HMMLSTMEntryMixin(SMALL)
    m.prepare(head(bars, 200))  # history at start-up: windows 0 (e=120) and 1 (e=180), fitted now
    assert sorted(m.windows) == [0, 1]
    for n in range(201, 301):  # then one bar at a time; window 2 (e=240) is due at bar 240
        m.prepare(head(bars, n))
    assert not gate.release.is_set() and list(m.pending) == [2]
    # Every bar was handled, by window 1's model, while window 2 could not finish.
    assert (m.served_by[180:300] == 1).all() and np.isfinite(m.prob[180:300]).all()
    gate.release.set()
    m.pending[2].result(timeout=120)
    m.prepare(head(bars, 301))
    assert 2 in m.windows and m.served_by[300] == 2
    assert gate.timed_out[:1] == [False]  # window 2 waited for the release, not the timeout
    # The model trained in the background is the one a backtest fits for that window.
    batch = HMMLSTMEntryMixin(SMALL)
    batch.prepare(head(bars, 301))
    assert batch.windows[2]["model"] is m.windows[2]["model"]  # same key: shared, not retrained


def test_streamed_backtrader_run_handles_every_bar_while_training_is_blocked(gate: Gate) -> None:
    frame = synthetic_frame(260, seed=4)
    cfg = make_config(
        {
            "strategy": {
                "direction": "both",
                "entry_mixins": [{"name": "HMMLSTMEntryMixin", "parameters": SMALL}],
                "exit_mixins": [{"name": "FixedRatioExitMixin", "parameters": {"x_stop_pct": 0.01}}],
            }
        }
    )
    cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False)
    broker = SimBroker()
    configure_broker(broker, cash=10_000.0, commission_rate=0.0, slippage_model="percent", base_slippage=0.0)
    cerebro.broker = broker
    cerebro.adddata(NumpyFeed(frame=frame), name=SYMBOL)
    cerebro.addstrategy(BaseStrategy, spec=StrategySpec.from_config(cfg))
    strat = cerebro.run()[0]
    mixin = strat.books[0].entries[0]
    # The run reached the last bar with window 0's training still held at the gate.
    assert not gate.release.is_set()
    assert len(mixin.prob) == 260 and len(strat.equity_values) == 260
    assert 0 in mixin.pending and not mixin.windows
    assert not any(mixin.long_signal) and not strat.trade_records  # no model yet: no entries
    gate.release.set()
    mixin.pending[0].result(timeout=120)
    assert gate.timed_out and not any(gate.timed_out)
