"""Moving or resizing a working order shows in the event stream as one thing, consistently.

* a stop or target that moves (trailing, breakeven) is amended in place: `OrderModified` of
  the same client order id, never a cancel and a new order;
* legs resized to the position (after a partial take-profit) are amended in place too;
* a leg that is gone (its OCO sibling, the target, partly filled) makes the strategy send a
  new set: the old legs cancelled with reason REPLACED, the new ones with the same parent
  (the trade's entry) and tags;
* a stop that partly filled has triggered: its rest is the trade's exit at the next open,
  nothing is replaced.

Candle layout: tests/trading/order_scenarios.py.
"""

from __future__ import annotations

from itertools import pairwise

import pytest

from tests.strategy.conftest import make_config, synthetic_frame
from tests.trading.order_book_checks import run_checked
from tests.trading.order_scenarios import (
    PRE,
    history,
    mirror,
    of,
    run_scenario,
    scenario_config,
    submitted,
)
from trading.bus import EventBus
from trading.events import (
    OrderCancelled,
    OrderFilled,
    OrderModified,
    OrderPartiallyFilled,
    OrderPendingCancel,
    TradeClosed,
)


@pytest.mark.parametrize("side", ["long", "short"])
def test_a_trailing_stop_moves_by_amending_the_one_stop_order(side: str) -> None:
    # Long: stop 2 % under the best high since the entry bar; it tightens at the close of
    # bars 5, 6, 7 (highs 102, 104, 105) and bar 8 trades down through the last level.
    after = [(100, 102, 99.5, 101.5), (101.5, 104, 101, 103.5), (103.5, 105, 103, 104.5), (104.5, 104.8, 102.5, 103)]
    candles = PRE + after + [(103, 103, 103, 103)] * 2
    sign = 1 if side == "long" else -1
    if side == "short":
        candles = mirror(candles)
    bests = [c[1] if sign > 0 else c[2] for c in candles[5:8]]
    levels = [b * (1 - sign * 0.02) for b in (max(bests[:k + 1]) if sign > 0 else min(bests[:k + 1]) for k in range(3))]
    cfg = scenario_config(side=side, exit_mixin="TrailingStopExitMixin", exit_params={"x_trail_pct": 0.02})

    strat, events, frame = run_scenario(cfg, candles)

    (sl,) = submitted(events, "sl")
    assert float(sl.stop_price) == pytest.approx(100 * (1 - sign * 0.02))
    mods = of(events, OrderModified, sl.client_order_id)
    assert [float(m.stop_price) for m in mods] == pytest.approx(levels)
    assert [m.ts for m in mods] == list(frame.index[5:8])  # at the close of each bar
    assert history(events, sl.client_order_id) == [
        "OrderSubmitted", "OrderAccepted", "OrderModified", "OrderModified", "OrderModified", "OrderFilled"]
    (fill,) = of(events, OrderFilled, sl.client_order_id)
    assert float(fill.last_price) == pytest.approx(levels[-1]) and fill.ts == frame.index[8]
    (trade,) = strat.trade_records
    assert trade.exit_reason == "trailing_stop" and trade.exit_price == pytest.approx(levels[-1])


def test_a_move_to_breakeven_is_an_amend_to_the_entry_price() -> None:
    # Stop 96, breakeven once the best high is 1 ATR (2) above the 100 entry: bar 5's high 102.5.
    candles = PRE + [(100, 102.5, 99.5, 102), (102, 102.2, 99.8, 100.5), (100.5, 100.6, 99.9, 100)]
    cfg = scenario_config(exit_params={"x_breakeven_enabled": True, "x_breakeven_trigger": 1.0})

    strat, events, frame = run_scenario(cfg, candles)

    (sl,) = submitted(events, "sl")
    (mod,) = of(events, OrderModified, sl.client_order_id)
    assert float(mod.stop_price) == 100.0 and mod.ts == frame.index[5]
    (fill,) = of(events, OrderFilled, sl.client_order_id)  # bar 6 trades down to 99.8
    assert float(fill.last_price) == 100.0
    assert strat.trade_records[0].exit_reason == "breakeven_stop"
    assert of(events, OrderPendingCancel, sl.client_order_id) == []


def test_after_a_partial_take_profit_the_stop_and_target_are_resized_in_place() -> None:
    # Two units: half at the partial target 102 (1 ATR) on bar 5, the rest at the target 106.
    candles = PRE + [(100, 102.5, 99.5, 102), (102, 106.5, 101.5, 106), (106, 106, 106, 106)]
    cfg = scenario_config(quantity=2, exit_params={"x_partial_tp_multiplier": 1.0, "x_partial_fraction": 0.5})

    strat, events, frame = run_scenario(cfg, candles)

    (sl,), (tp,), (ptp,) = submitted(events, "sl"), submitted(events, "tp"), submitted(events, "ptp")
    (entry,) = submitted(events, "entry")
    assert (sl.quantity, tp.quantity, ptp.quantity) == (2, 2, 1)
    assert sl.parent_id == tp.parent_id == ptp.parent_id == entry.client_order_id
    assert of(events, OrderFilled, ptp.client_order_id)[0].ts == frame.index[5]
    for leg in (sl, tp):
        (mod,) = of(events, OrderModified, leg.client_order_id)
        assert mod.quantity == 1 and mod.ts == frame.index[5]
        assert (mod.price, mod.stop_price) == (leg.price, leg.stop_price)  # only the size changed
    assert history(events, tp.client_order_id)[-1] == "OrderFilled"
    assert history(events, sl.client_order_id)[-2:] == ["OrderPendingCancel", "OrderCancelled"]
    (closed,) = of(events, TradeClosed)  # one round trip, two legs
    assert (closed.quantity, closed.exit_price, closed.realised_pnl) == (2, 104, 8)
    assert [(t.quantity, t.exit_price) for t in strat.trade_records] == [(1, 102.0), (1, 106.0)]


def test_a_target_cut_by_the_volume_cap_is_replaced_with_a_linked_new_set() -> None:
    # 150 units; bar 6 reaches the target 106 but lets only 100 (10 % of 1 000) fill: the
    # stop is cancelled by OCO, and at the close the rest gets a new stop and target.
    candles = PRE + [(100, 101, 99.5, 100.5), (100.5, 107, 100, 106.5), (106, 106.5, 105, 106), (106, 106, 106, 106)]
    cfg = scenario_config(quantity=150, broker={"cash": 1_000_000.0, "paper_trading_config": {"max_volume_share": 0.1}})

    strat, events, frame = run_scenario(cfg, candles, volumes={5: 100_000.0})

    (entry,) = submitted(events, "entry")
    old_sl, new_sl = submitted(events, "sl")
    old_tp, new_tp = submitted(events, "tp")
    assert [e.last_qty for e in of(events, OrderPartiallyFilled, old_tp.client_order_id)] == [100]
    assert [e.reason for e in of(events, OrderCancelled, old_sl.client_order_id)] == ["OCO"]
    assert [e.reason for e in of(events, OrderCancelled, old_tp.client_order_id)] == ["REPLACED"]
    assert new_sl.ts == new_tp.ts == frame.index[6]
    assert new_sl.parent_id == new_tp.parent_id == entry.client_order_id  # the link to the trade
    assert (new_sl.oco_id, new_tp.oco_id) == (new_tp.client_order_id, new_sl.client_order_id)
    assert new_sl.quantity == new_tp.quantity == 50 and new_tp.price == old_tp.price
    assert float(of(events, OrderFilled, new_tp.client_order_id)[0].last_price) == 106.0
    assert [t.quantity for t in strat.trade_records] == [100, 50]


@pytest.mark.parametrize("side", ["long", "short"])
def test_the_rest_of_a_stop_cut_by_the_volume_cap_is_the_exit_at_the_next_open(side: str) -> None:
    # 150 units; bar 6 trades through the stop 96 but lets only 100 fill. A triggered stop is
    # a market order: its rest (50) fills at bar 7's open, 97, though bar 7 stays above 96.
    # The target goes (OCO); no new stop or target is sent.
    sign = 1 if side == "long" else -1
    candles = PRE + [(100, 101, 99.5, 100.5), (97, 97.5, 95, 95.5), (97, 98, 96.5, 97.5), (98, 98, 98, 98)]
    cfg = scenario_config(side=side, quantity=150,
                          broker={"cash": 1_000_000.0, "paper_trading_config": {"max_volume_share": 0.1}})

    strat, events, frame = run_scenario(cfg, candles if sign > 0 else mirror(candles), volumes={5: 100_000.0})

    (sl,), (tp,) = submitted(events, "sl"), submitted(events, "tp")
    assert history(events, sl.client_order_id) == [
        "OrderSubmitted", "OrderAccepted", "OrderPartiallyFilled", "OrderFilled"]
    assert [e.reason for e in of(events, OrderCancelled, tp.client_order_id)] == ["OCO"]
    (rest,) = of(events, OrderFilled, sl.client_order_id)
    assert (rest.last_qty, rest.ts) == (50, frame.index[7])
    assert float(rest.last_price) == 100 - sign * 3  # bar 7's open
    assert submitted(events, "exit") == []
    assert [(t.quantity, t.exit_price, t.exit_reason) for t in strat.trade_records] == [
        (100, 100 - sign * 4, "stop_loss"), (50, 100 - sign * 3, "stop_loss")]
    (closed,) = of(events, TradeClosed)
    assert closed.ts == frame.index[7] and closed.quantity == 150


@pytest.mark.parametrize(
    ("exit_mixin", "params"),
    [
        ("AdvancedATRExitMixin", {"x_atr_period": 14, "x_trailing_enabled": True, "x_breakeven_enabled": True}),
        ("ATRExitMixin", {"x_atr_period": 14, "x_atr_multiplier": 2.0}),
        ("TrailingStopExitMixin", {"x_trail_pct": 0.01}),
    ],
)
def test_every_stop_move_of_a_trailing_exit_is_an_amend_that_only_tightens(exit_mixin: str, params: dict) -> None:
    cfg = make_config({
        "strategy": {"direction": "both", "entry_mixins": [{"name": "RSIOrBBEntryMixin", "parameters": {
            "e_rsi_oversold": 40, "e_rsi_overbought": 60}}], "exit_mixins": [{"name": exit_mixin, "parameters": params}]},
    })
    bus, events = EventBus(), []
    bus.subscribe(events.append, inline=True, name="all")

    strat = run_checked(cfg, {"SYM": synthetic_frame(1500, seed=5)}, bus=bus)

    stops = submitted(events, "sl")
    mods = of(events, OrderModified)
    assert len(strat.trade_records) >= 10 and len(mods) > len(stops)
    assert all(e.reason != "REPLACED" for e in of(events, OrderPendingCancel))  # never cancel-and-replace
    for sl in stops:
        levels = [sl.stop_price] + [m.stop_price for m in of(events, OrderModified, sl.client_order_id)]
        sign = 1 if sl.side.value == "sell" else -1  # a sell stop protects a long: it may only rise
        assert all(sign * (b - a) > 0 for a, b in pairwise(levels))
