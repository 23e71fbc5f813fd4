"""Changing orders in the SimBroker, long and short: modify (cancel + replace) and cancel.

backtrader has no native amend, so a modify is a cancel followed by a new order; the cancel
takes effect at once (the old order cannot fill on the next bar), and backtrader reports it
to the strategy with the next bar's notifications, so its event carries bar k + 1 for a
cancel sent at the close of bar k. Cases are written for the long side and mirrored for the
short one (see order_harness.py).
"""

from __future__ import annotations

from typing import Any

import backtrader as bt
import numpy as np
import pytest

from tests.strategy.conftest import Candle
from tests.trading.brokers.order_harness import (
    CASH,
    LMT,
    QUIET,
    SIDES,
    SLIPS,
    STP,
    Q,
    Scripted,
    Side,
    fills,
    one_fill,
    run,
    slipped,
)
from trading.brokers.fill_model import PARTIAL_FRACTION_RANGE, FillModel

# --------------------------------------------------------------------------- modify: cancel + replace


@pytest.mark.parametrize("b", SLIPS)
@pytest.mark.parametrize("side", SIDES)
def test_replaced_stop_fills_at_its_new_level_and_the_old_one_never(side: Side, b: float) -> None:
    def replace(s: Scripted) -> dict[str, bt.Order]:
        s.cancel(s.orders["stop"])
        return {"new": side.order(s, False, Q, exectype=STP, price=98)}

    # Bar 2 trades down to 97.5: through the new stop 98, not the old 96.
    bar: Candle = (99.5, 100, 97.5, 98)
    plan = {
        0: lambda s: {
            "entry": side.order(s, True, Q),
            "stop": side.order(s, False, Q, exectype=STP, price=96),
        },
        1: replace,
    }
    strat = run(side.bars([QUIET, QUIET, bar, bar]), plan, slippage=b)

    assert (
        strat.statuses("stop") == ["Submitted", "Accepted", "Canceled"]
        and strat.final("stop").bar == 2
    )
    expected = slipped(side.px(98), not side.long, b, side.bar(bar))
    assert one_fill(strat, "new") == (2, side.signed(Q, False), pytest.approx(expected, rel=1e-12))
    assert strat.positions_at == [0, side.signed(Q, True), 0, 0]


@pytest.mark.parametrize("side", SIDES)
def test_replacing_one_leg_of_an_oco_pair_means_sending_the_pair_again(side: Side) -> None:
    # Cancelling the stop cancels its OCO target too (the group goes together), so the pair
    # is sent again: target 103 first, then stop 98. Bar 2 reaches both; the stop wins.
    def pair(stop: float, target: float) -> Any:
        def act(s: Scripted) -> dict[str, bt.Order]:
            tp = side.order(s, False, Q, exectype=LMT, price=target)
            return {"target": tp, "stop": side.order(s, False, Q, exectype=STP, price=stop, oco=tp)}

        return act

    def replace(s: Scripted) -> dict[str, bt.Order]:
        old = {"old_stop": s.orders["stop"], "old_target": s.orders["target"]}
        s.cancel(old["old_stop"])
        return {**old, **pair(98, 103)(s)}

    bar: Candle = (99.5, 103.5, 97.5, 100)
    plan = {0: lambda s: {"entry": side.order(s, True, Q), **pair(96, 106)(s)}, 1: replace}
    strat = run(side.bars([QUIET, QUIET, bar, bar]), plan)

    for old in ("old_stop", "old_target"):
        assert (
            strat.final(old).status == "Canceled" and strat.final(old).bar == 2
        )  # at bar 1's close
    assert one_fill(strat, "stop") == (2, side.signed(Q, False), side.px(98))
    assert strat.final("target").status == "Canceled"


@pytest.mark.parametrize("side", SIDES)
def test_replaced_limit_entry_fills_once_at_the_new_price(side: Side) -> None:
    # Entry limit 97 replaced by 99 after bar 1; bar 2 trades down to 96.5, through both.
    bar: Candle = (100, 100.5, 96.5, 97)

    def replace(s: Scripted) -> dict[str, bt.Order]:
        s.cancel(s.orders["old"])
        return {"new": side.order(s, True, Q, exectype=LMT, price=99)}

    strat = run(
        side.bars([QUIET, QUIET, bar, bar]),
        {0: lambda s: {"old": side.order(s, True, Q, exectype=LMT, price=97)}, 1: replace},
    )

    assert fills(strat, "old") == [] and strat.final("old").status == "Canceled"
    assert one_fill(strat, "new") == (2, side.signed(Q, True), side.px(99))
    assert strat.positions_at == [0, 0, side.signed(Q, True), side.signed(Q, True)]


# --------------------------------------------------------------------------- cancel


@pytest.mark.parametrize("side", SIDES)
def test_cancel_before_the_fill_leaves_the_position_untouched(side: Side) -> None:
    bar: Candle = (100, 105, 99.5, 104)  # reaches the exit limit 104 after it was cancelled
    plan = {
        0: lambda s: {
            "entry": side.order(s, True, Q),
            "exit": side.order(s, False, Q, exectype=LMT, price=104),
        },
        1: lambda s: s.cancel(s.orders["exit"]),
    }
    strat = run(side.bars([QUIET, QUIET, bar, bar]), plan)

    assert strat.statuses("exit") == ["Submitted", "Accepted", "Canceled"]
    assert strat.positions_at == [0] + [side.signed(Q, True)] * 3


@pytest.mark.parametrize("side", SIDES)
def test_cancel_of_an_order_partly_filled_by_the_volume_cap_keeps_the_filled_part(
    side: Side,
) -> None:
    # 250 at the limit 98, 100 a bar: 100 fill on bar 1; cancelled at its close, bar 2 would fill more.
    candles = [QUIET, (100, 100.5, 97.5, 98), (97.5, 98, 97, 97.5)]
    plan = {
        0: lambda s: {"entry": side.order(s, True, 250, exectype=LMT, price=98)},
        1: lambda s: s.cancel(s.orders["entry"]),
    }
    strat = run(side.bars(candles), plan, model=FillModel(max_volume_share=0.1))

    last = strat.final("entry")
    assert strat.statuses("entry") == ["Submitted", "Accepted", "Partial", "Canceled"]
    assert (last.bar, last.size, last.price) == (
        2,
        side.signed(100, True),
        side.px(98),
    )  # reported on bar 2
    assert strat.positions_at == [0, side.signed(100, True), side.signed(100, True)]
    assert strat.broker.getcash() == pytest.approx(CASH - side.signed(100, True) * side.px(98))


@pytest.mark.parametrize("side", SIDES)
def test_cancel_of_a_randomly_partly_filled_market_order_keeps_the_drawn_part(side: Side) -> None:
    # docs/fill-model.md, Determinism: per order and bar one draw decides a partial fill
    # (< p), one more its fraction in [0.1, 1). Seed 3 draws 0.086 first: a partial.
    seed, p, size = 3, 0.5, 10.0
    rng = np.random.default_rng(seed)
    assert rng.random() < p
    filled = size * rng.uniform(*PARTIAL_FRACTION_RANGE)

    plan = {
        0: lambda s: {"entry": side.order(s, True, size)},
        1: lambda s: s.cancel(s.orders["entry"]),
    }
    strat = run(
        side.bars([QUIET] * 4), plan, model=FillModel(partial_fill_probability=p, seed=seed)
    )

    assert strat.statuses("entry") == ["Submitted", "Accepted", "Partial", "Canceled"]
    assert strat.final("entry").size == pytest.approx(side.signed(filled, True), rel=1e-12)
    assert strat.positions_at[1:] == [pytest.approx(side.signed(filled, True), rel=1e-12)] * 3
