"""SimBroker.modify: the in-place amend of a pending order's size, with or without its price."""

from __future__ import annotations

import backtrader as bt

from tests.trading.brokers.test_sim import QUIET, Action, Scripted, run


def _amend(name: str, **change: float) -> Action:
    def act(s: Scripted) -> None:
        s.results[f"modify_{name}"] = s.broker.modify(s.orders[name], **change)

    return act


def _long_then_add(first: float = 1.0, add: float = 1.0) -> Action:
    """Buy `first` with an OCO stop (96) and target (106) for it; `add` more on the next bar."""

    def act(s: Scripted) -> dict[str, bt.Order]:
        entry = s.buy(size=first)
        st = s.sell(size=first, exectype=bt.Order.Stop, price=96.0, reduce_only=True)
        tp = s.sell(size=first, exectype=bt.Order.Limit, price=106.0, oco=st, reduce_only=True)
        return {"entry": entry, "stop": st, "target": tp}

    return act


def test_resizing_a_pending_stop_makes_it_close_the_whole_position_in_place() -> None:
    # Bought 1 at bar 1, 2 more at bar 2; the stop is resized to 3 after bar 2 and bar 3 trades
    # through it: it closes all 3 at once, keeps its OCO link (the target is cancelled) and its ref.
    candles = [QUIET, (100, 101, 99, 100.5), (100, 101, 99, 100), (99, 99.5, 95, 95.5), (95, 95, 95, 95)]
    plan = {0: _long_then_add(), 1: lambda s: {"add": s.buy(size=2)}, 2: _amend("stop", size=3)}
    strat = run(candles, plan)

    assert strat.results["modify_stop"] is True
    stop = strat.fill("stop")
    assert (stop.bar, stop.price, stop.size) == (3, 96.0, -3.0)
    assert strat.positions_at[-1] == 0
    assert strat.final("target").status == "Canceled"
    assert {e.ref for e in strat.events} == {o.ref for o in strat.orders.values()}  # no new order


def test_price_and_size_change_together() -> None:
    candles = [QUIET, (100, 101, 99, 100.5), (100, 101, 99, 100), (99, 99.5, 97, 97.5), (97, 97, 97, 97)]
    plan = {0: _long_then_add(), 1: lambda s: {"add": s.buy(size=1)}, 2: _amend("stop", price=98.0, size=2)}
    strat = run(candles, plan)

    stop = strat.fill("stop")
    assert (stop.bar, stop.price, stop.size) == (3, 98.0, -2.0)
    assert strat.positions_at[-1] == 0


def test_a_size_not_above_what_executed_is_refused_and_changes_nothing() -> None:
    # The refused amend must not move the price either: the stop still fills at 96, for 1.
    candles = [QUIET, (100, 101, 99, 100.5), (99, 99.5, 95, 95.5), (95, 95, 95, 95)]
    strat = run(candles, {0: _long_then_add(), 1: _amend("stop", price=98.0, size=0)})

    assert strat.results["modify_stop"] is False
    stop = strat.fill("stop")
    assert (stop.bar, stop.price, stop.size) == (2, 96.0, -1.0)
    assert strat.orders["stop"].created.price == 96.0


def test_a_done_order_cannot_be_resized() -> None:
    strat = run([QUIET] * 3, {0: lambda s: {"entry": s.buy(size=1)}, 1: _amend("entry", size=5)})

    assert strat.results["modify_entry"] is False
    assert strat.fill("entry").size == 1.0
