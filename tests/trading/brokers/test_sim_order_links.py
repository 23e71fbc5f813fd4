"""Linked orders through the SimBroker, long and short: brackets and OCO.

Cases are written for the long side and mirrored for the short one (see order_harness.py).
The same-bar rules are those of docs/fill-model.md, "Order types": within one bar, what the
open reaches fills first (at the open); then stops; then limits; queue order within each.
A cancel sent at the close of bar k takes effect at once; backtrader reports it to the
strategy with bar k + 1's notifications, so its event carries bar k + 1.
"""

from __future__ import annotations

from typing import Any

import backtrader as bt
import pytest

from tests.strategy.conftest import Candle
from tests.trading.brokers.order_harness import (
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
from trading.brokers.fill_model import FillModel


def bracket(side: Side, size: float = Q, **kw: Any) -> Any:
    """Place buy_bracket (long) or sell_bracket (short): entry limit 99, stop 96, target 104 unless `kw` says."""
    args = {"exectype": LMT, "price": 99.0, "stopprice": 96.0, "limitprice": 104.0, **kw}
    return lambda s: dict(zip(("entry", "stop", "target"), side.bracket(s, size, **args)))


ENTRY_BAR: Candle = (100, 100.5, 98.5, 99.5)  # reaches the entry limit 99, not the stop 96

BRACKET_CASES = {
    # id: (bar 2, winning child, its price before slippage; bar 1 is ENTRY_BAR)
    "stop_child_fills_target_cancelled": ((99.5, 100, 95.5, 96), "stop", 96),
    "target_child_fills_stop_cancelled": ((99.5, 104.5, 99, 104), "target", 104),
    "both_inside_one_bar_the_stop_wins": ((100, 105, 95, 100), "stop", 96),
    "bar_opens_beyond_the_stop_stop_at_the_open": ((95, 105, 94, 100), "stop", 95),
    "bar_opens_beyond_the_target_target_at_the_open": ((105, 106, 95, 96), "target", 105),
}


@pytest.mark.parametrize("b", SLIPS)
@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(
    ("bar", "winner", "price"), [pytest.param(*v, id=k) for k, v in BRACKET_CASES.items()]
)
def test_bracket_child_that_fills_cancels_the_other(
    bar: Candle, winner: str, price: float, side: Side, b: float
) -> None:
    candles = [QUIET, ENTRY_BAR, bar, bar]
    strat = run(side.bars(candles), {0: bracket(side)}, slippage=b)

    assert one_fill(strat, "entry") == (
        1,
        side.signed(Q, True),
        pytest.approx(side.px(99.0)),
    )  # a limit: no slip
    loser = "target" if winner == "stop" else "stop"
    slip = b if winner == "stop" else 0.0  # the target is a limit
    expected = slipped(side.px(price), not side.long, slip, side.bar(bar))
    assert one_fill(strat, winner) == (2, side.signed(Q, False), pytest.approx(expected, rel=1e-12))
    assert strat.final(loser).status == "Canceled" and strat.final(loser).bar == 2
    assert fills(strat, loser) == []
    assert strat.positions_at == [0, side.signed(Q, True), 0, 0]


@pytest.mark.parametrize("side", SIDES)
def test_bracket_market_entry_on_a_bar_that_opens_beyond_the_target_is_closed_there(
    side: Side,
) -> None:
    # Signal close 100: the market entry fills at the open 108, already past the target 104,
    # so the target (a limit the open reaches) fills at 108 too, before the stop is tried.
    candles = [QUIET, (108, 109, 95, 96), QUIET]
    strat = run(side.bars(candles), {0: bracket(side, exectype=bt.Order.Market, price=None)})

    assert one_fill(strat, "entry")[::2] == (1, side.px(108))
    assert one_fill(strat, "target")[::2] == (1, side.px(108))
    assert strat.final("stop").status == "Canceled"


@pytest.mark.parametrize("side", SIDES)
def test_bracket_entry_never_filled_leaves_its_children_inactive_then_cancelled_with_it(
    side: Side,
) -> None:
    # The entry limit 99 is never reached; bar 1 trades through the target 104 and bar 2
    # would gap over it. The children must not fill; cancelling the entry cancels them.
    candles = [QUIET, (100, 105, 99.5, 104), (106, 107, 105, 106), (106, 107, 105, 106)]
    strat = run(side.bars(candles), {0: bracket(side), 2: lambda s: s.cancel(s.orders["entry"])})

    for name in ("entry", "stop", "target"):
        assert strat.statuses(name) == ["Submitted", "Accepted", "Canceled"]
        assert strat.final(name).bar == 3  # cancelled at bar 2's close
    assert strat.positions_at == [0, 0, 0, 0]


@pytest.mark.parametrize("side", SIDES)
def test_bracket_children_go_live_only_when_the_entry_has_filled_completely(side: Side) -> None:
    # Volume cap 10 % of 1 000: the entry of 250 at the limit 99 fills 100, 100, 50 on bars
    # 1-3. Bar 2 trades through the stop 96 while the entry is still partly filled: the stop
    # is not live yet. Bar 4 reaches the stop, which then closes all 250.
    candles = [QUIET, ENTRY_BAR, (98, 99, 95, 97), (97, 98, 96.5, 97.5), (97.5, 98, 95.5, 96)]
    model = FillModel(max_volume_share=0.1)
    strat = run(
        side.bars(candles), {0: bracket(side, size=250)}, model=model, volume=[1000] * 4 + [1e6]
    )

    assert [e.bar for e in fills(strat, "entry")] == [1, 2, 3]
    assert one_fill(strat, "stop") == (4, side.signed(250, False), pytest.approx(side.px(96)))
    assert strat.final("target").status == "Canceled"


# --------------------------------------------------------------------------- OCO


def oco_pair(side: Side, first: dict[str, Any], second: dict[str, Any], *, size: float = Q) -> Any:
    """Place `first` on the opening side and `second` on the other side, linked by oco."""

    def act(s: Scripted) -> dict[str, bt.Order]:
        one = side.order(s, True, size, **first)
        two = side.order(s, False, size, oco=one, **second)
        return {"first": one, "second": two}

    return act


BUY_STOP, SELL_STOP = {"exectype": STP, "price": 104}, {"exectype": STP, "price": 96}
BUY_LIMIT, SELL_LIMIT = {"exectype": LMT, "price": 98}, {"exectype": LMT, "price": 102}

OCO_CASES = {
    # id: (first, second, bar 1, the order that fills, its price before slippage, slipped?)
    "breakout_up_fills_the_buy_stop": (
        BUY_STOP,
        SELL_STOP,
        (100, 105, 99.5, 104.5),
        "first",
        104,
        True,
    ),
    "breakout_down_fills_the_sell_stop": (
        BUY_STOP,
        SELL_STOP,
        (100, 100.5, 95, 95.5),
        "second",
        96,
        True,
    ),
    "both_stops_inside_one_bar_the_first_placed_wins": (
        BUY_STOP,
        SELL_STOP,
        (100, 105, 95, 100),
        "first",
        104,
        True,
    ),
    "second_stop_gapped_at_the_open_wins": (
        BUY_STOP,
        SELL_STOP,
        (95, 105, 94, 100),
        "second",
        95,
        True,
    ),
    "both_limits_inside_one_bar_the_first_placed_wins": (
        BUY_LIMIT,
        SELL_LIMIT,
        (100, 103, 97, 100),
        "first",
        98,
        False,
    ),
    "limit_the_open_reaches_wins_over_one_touched_later": (
        BUY_LIMIT,
        SELL_LIMIT,
        (103, 103.5, 97, 98),
        "second",
        103,
        False,
    ),
}


@pytest.mark.parametrize("b", SLIPS)
@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(
    ("first", "second", "bar", "winner", "price", "slips"),
    [pytest.param(*v, id=k) for k, v in OCO_CASES.items()],
)
def test_oco_one_fills_the_other_is_cancelled_on_the_same_bar(
    first: dict[str, Any],
    second: dict[str, Any],
    bar: Candle,
    winner: str,
    price: float,
    slips: bool,
    side: Side,
    b: float,
) -> None:
    strat = run(side.bars([QUIET, bar, bar]), {0: oco_pair(side, first, second)}, slippage=b)

    opening = winner == "first"
    expected = slipped(side.px(price), side.is_buy(opening), b if slips else 0.0, side.bar(bar))
    assert one_fill(strat, winner) == (
        1,
        side.signed(Q, opening),
        pytest.approx(expected, rel=1e-12),
    )
    loser = "second" if opening else "first"
    assert (
        strat.statuses(loser) == ["Submitted", "Accepted", "Canceled"]
        and strat.final(loser).bar == 1
    )


@pytest.mark.parametrize("b", SLIPS)
@pytest.mark.parametrize("side", SIDES)
def test_oco_exits_sent_target_first_still_stop_first_when_both_are_inside_one_bar(
    side: Side, b: float
) -> None:
    def exits(s: Scripted) -> dict[str, bt.Order]:
        target = side.order(s, False, Q, exectype=LMT, price=104)
        return {
            "target": target,
            "stop": side.order(s, False, Q, exectype=STP, price=96, oco=target),
        }

    bar: Candle = (100, 105, 95, 100)
    strat = run(
        side.bars([QUIET, QUIET, bar, bar]),
        {0: lambda s: {"entry": side.order(s, True, Q)}, 1: exits},
        slippage=b,
    )

    expected = slipped(side.px(96), not side.long, b, side.bar(bar))
    assert one_fill(strat, "stop") == (2, side.signed(Q, False), pytest.approx(expected, rel=1e-12))
    assert strat.final("target").status == "Canceled"
    assert strat.positions_at == [0, side.signed(Q, True), 0, 0]


@pytest.mark.parametrize("side", SIDES)
def test_oco_member_partly_filled_cancels_its_sibling_and_keeps_filling(side: Side) -> None:
    # Volume cap 100 a bar: the buy limit 98 takes 100 on bar 1, which cancels the sell
    # limit 102 at once (bar 2 would reach it); the rest fills at bar 2's and bar 3's opens.
    candles = [QUIET, (100, 100.5, 97.5, 98), (97.5, 103, 97, 102.5), (97, 98, 96.5, 97.5)]
    model = FillModel(max_volume_share=0.1)
    strat = run(
        side.bars(candles), {0: oco_pair(side, BUY_LIMIT, SELL_LIMIT, size=250)}, model=model
    )

    got = [(e.bar, e.status, e.size) for e in fills(strat, "first")]
    sign = 1 if side.long else -1
    assert got == [
        (1, "Partial", sign * 100),
        (2, "Partial", sign * 200),
        (3, "Completed", sign * 250),
    ]
    assert strat.final("first").price == pytest.approx(
        side.px((100 * 98 + 100 * 97.5 + 50 * 97) / 250)
    )
    assert (
        strat.statuses("second") == ["Submitted", "Accepted", "Canceled"]
        and strat.final("second").bar == 1
    )
