"""The backtrader broker for IB: what a strategy's orders become at IB and what comes back."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import backtrader as bt
import pytest

from tests.fakes.fake_tws import FakeTWS
from tests.fakes.fake_tws_setup import AAPL, settings
from trading.brokers.ibkr import IBKRAdapter
from trading.brokers.ibkr_broker import IBKRBroker
from trading.bt_orders import FILL_DETAILS, FillDetails
from trading.data.ibkr_feed import IBKRLiveFeed

H = 3600
WARMUP = 20


class Scripted(bt.Strategy):
    """Run `script[i](self)` on bar i; record every order notification."""

    params = (("script", None),)

    def __init__(self) -> None:
        self.notes: list[tuple[int, str, float, float]] = []  # (ref, status, executed size, price)
        self.details: dict[int, list[FillDetails]] = {}  # ref -> what the broker put on its fills
        self.orders: dict[str, bt.Order] = {}

    def next(self) -> None:
        script = self.p.script or {}
        action = script.get(len(self) - 1) or script.get(self.data.datetime[0])  # by bar index or bar time
        if action is not None:
            action(self)

    def notify_order(self, order: bt.Order) -> None:
        self.notes.append((order.ref, order.getstatusname(), order.executed.size, order.executed.price))
        if hasattr(order, FILL_DETAILS):
            self.details.setdefault(order.ref, []).append(getattr(order, FILL_DETAILS))

    def statuses(self, name: str) -> list[str]:
        ref = self.orders[name].ref
        return [s for r, s, _, _ in self.notes if r == ref]


@pytest.fixture
def adapter(tws: FakeTWS) -> Iterator[IBKRAdapter]:
    a = IBKRAdapter(settings(tws, warmup_bars=WARMUP))
    yield a
    a.close()


def run(adapter: IBKRAdapter, tws: FakeTWS, script: dict[Any, Callable[[Any], None]], live: int) -> tuple[Scripted, IBKRBroker, IBKRLiveFeed]:
    """Run Cerebro on the IB broker and feed until `live` live bars were processed."""
    feed = IBKRLiveFeed(adapter=adapter, symbol="AAPL", interval="1h")
    broker = IBKRBroker(adapter, bot_name="scripted")
    cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False)
    cerebro.broker = broker
    cerebro.adddata(feed, name="AAPL")
    cerebro.addstrategy(Scripted, script=script)
    out: list[Scripted] = []
    runner = threading.Thread(target=lambda: out.extend(cerebro.run()))
    runner.start()
    expected = WARMUP
    feed.wait_idle(expected)
    while expected < WARMUP + live:
        t = tws.step()
        if t % H == 0:  # this tick closed a bar
            expected += 1
            feed.wait_idle(expected)
            adapter.sync()  # what the strategy sent has reached IB before the next tick
    feed.finish()
    runner.join(10)
    return out[0], broker, feed


def _buy(name: str, **kw: Any) -> Callable[[Scripted], None]:
    def act(s: Scripted) -> None:
        s.orders[name] = s.buy(size=10, **kw)
    return act


def test_orders_made_on_warm_up_bars_never_reach_ib(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    strat, _, _ = run(adapter, tws, {WARMUP - 1: _buy("stale")}, live=1)
    assert strat.statuses("stale") == ["Submitted", "Rejected"]
    assert strat.orders["stale"].info.get("reject_reason") == "WARMUP_BAR"
    assert tws.orders() == []


def _bracket(s: Scripted) -> None:
    close = s.data.close[0]
    s.orders["entry"] = s.buy(size=10)
    s.orders["sl"] = s.sell(size=10, exectype=bt.Order.Stop, price=round(close * 0.9, 2), reduce_only=True)
    s.orders["tp"] = s.sell(size=10, exectype=bt.Order.Limit, price=round(close * 1.1, 2), reduce_only=True,
                            oco=s.orders["sl"])


def test_an_entry_with_its_reduce_only_stop_and_target_goes_out_as_a_bracket(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    strat, broker, feed = run(adapter, tws, {WARMUP: _bracket}, live=2)
    entry, sl, tp = (tws.orders(str(broker.venue_order_id(strat.orders[n])))[0] for n in ("entry", "sl", "tp"))
    assert (entry.order_type, sl.order_type, tp.order_type) == ("MKT", "STP", "LMT")
    assert sl.parent_id == tp.parent_id == entry.order_id and entry.parent_id == 0
    assert sl.oca_group == tp.oca_group != "" and (entry.transmit, sl.transmit, tp.transmit) == (False, False, True)
    assert strat.statuses("entry") == ["Submitted", "Accepted", "Completed"]
    assert strat.statuses("sl") == strat.statuses("tp") == ["Submitted", "Accepted"]
    # Filled at the price IB traded when the order arrived: the open of the bar after the signal.
    signal = round((strat.data.datetime.array[WARMUP] - 719163.0) * 86400)
    next_open = tws.bars(AAPL.con_id, H, signal + H, signal + 2 * H)[0][1]
    [(_, _, size, price)] = [n for n in strat.notes if n[0] == strat.orders["entry"].ref and n[1] == "Completed"]
    assert size == 10 and price == pytest.approx(next_open, rel=1e-12)
    # The strategy's fill names IB's execution and the commission's currency (no quote at IB).
    [execution] = [e for e in tws.book.executions if e.order is entry]
    assert strat.details[strat.orders["entry"].ref] == [FillDetails("USD", None, None, execution.exec_id)]
    assert broker.getposition(feed).size == 10 == tws.position(AAPL.con_id)
    assert broker.getvalue() == pytest.approx(tws.values()["NetLiquidation"], abs=0.01)


def test_backtraders_own_bracket_orders_become_an_ib_bracket(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    def bracket(s: Scripted) -> None:
        close = s.data.close[0]
        main, stop, limit = s.buy_bracket(size=4, exectype=bt.Order.Market, stopprice=round(close * 0.9, 2),
                                          limitprice=round(close * 1.1, 2))
        s.orders.update(main=main, stop=stop, limit=limit)

    strat, broker, _ = run(adapter, tws, {WARMUP: bracket}, live=2)
    main, stop, limit = (tws.orders(str(broker.venue_order_id(strat.orders[n])))[0] for n in ("main", "stop", "limit"))
    assert stop.parent_id == limit.parent_id == main.order_id
    assert stop.oca_group == limit.oca_group != "" and main.status == "Filled"
    assert (main.transmit, stop.transmit, limit.transmit) == (False, False, True)


def test_amends_and_cancels_of_working_orders_reach_ib(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    def amend(s: Scripted) -> None:
        s.broker.modify(s.orders["sl"], price=round(s.data.close[0] * 0.8, 2))

    def cancel_target(s: Scripted) -> None:
        s.cancel(s.orders["tp"])

    strat, broker, _ = run(adapter, tws, {WARMUP: _bracket, WARMUP + 1: amend, WARMUP + 2: cancel_target}, live=4)
    sl = tws.orders(str(broker.venue_order_id(strat.orders["sl"])))[0]
    tp = tws.orders(str(broker.venue_order_id(strat.orders["tp"])))[0]
    assert sl.aux == strat.orders["sl"].created.price and sl.status == "Submitted"
    assert tp.status == "Cancelled" and strat.statuses("tp")[-1] == "Canceled"
    assert len(tws.orders()) == 3


def test_an_order_cancelled_before_it_was_sent_never_reaches_ib(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    def buy_then_cancel(s: Scripted) -> None:
        s.orders["x"] = s.buy(size=1, exectype=bt.Order.Limit, price=1.0)
        s.cancel(s.orders["x"])

    strat, _, _ = run(adapter, tws, {WARMUP: buy_then_cancel}, live=2)
    assert strat.statuses("x") == ["Submitted", "Canceled"]
    assert tws.orders() == []


def test_ib_rejections_and_unsupported_types_come_back_as_rejected(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    def reject(s: Scripted) -> None:
        tws.reject_next("no shares to short")
        s.orders["short"] = s.sell(size=5)
        s.orders["close"] = s.buy(size=5, exectype=bt.Order.Close)

    strat, _, _ = run(adapter, tws, {WARMUP: reject}, live=2)
    assert strat.statuses("short")[-1] == "Rejected" and strat.statuses("close")[-1] == "Rejected"
    assert len(tws.orders()) == 1


def test_a_restarted_bot_replaying_its_warm_up_adopts_the_order_ib_holds(tws: FakeTWS) -> None:
    def rest(s: Scripted) -> None:
        s.orders["rest"] = s.buy(size=3, exectype=bt.Order.Limit, price=round(s.data.close[0] * 0.5, 2))

    first = IBKRAdapter(settings(tws, warmup_bars=WARMUP))
    try:
        strat, broker, _ = run(first, tws, {WARMUP: rest}, live=3)
        signal_bar = strat.data.datetime.array[WARMUP]
        ref = str(broker.venue_order_id(strat.orders["rest"]))
    finally:
        first.close()
    assert [o.status for o in tws.orders(ref)] == ["Submitted"]

    # The next process sees that bar again among its warm-up bars and makes the same order.
    second = IBKRAdapter(settings(tws, warmup_bars=WARMUP))
    try:
        strat2, broker2, _ = run(second, tws, {signal_bar: rest}, live=2)
        assert str(broker2.venue_order_id(strat2.orders["rest"])) == ref
        assert strat2.statuses("rest") == ["Submitted", "Accepted"]  # adopted, not refused as stale
        assert len(tws.orders()) == 1
        strat2.cancel(strat2.orders["rest"])
        broker2.flush()
        second.sync()
        assert tws.orders(ref)[0].status == "Cancelled"
    finally:
        second.close()
