"""Each order type through the SimBroker, long (buy to open, sell to close) and short.

Cases are written for the long side and mirrored for the short one (see order_harness.py).
Expected fills follow docs/fill-model.md, "Order types": market and stop orders slip against
the order (clipped to the bar); limits and stop-limits never slip; a stop the bar opens
beyond fills at the open; a trailing stop's level follows the closes.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    STPLMT,
    TRAIL,
    Q,
    Scripted,
    Side,
    one_fill,
    run,
    slipped,
)


@dataclass(frozen=True)
class Leg:
    """One order of a round trip: placed at the close of bar `at`, in long-table prices."""

    at: int
    order: dict[str, Any]
    fill: tuple[int, float] | None  # (bar, price before slippage), None: never fills
    slips: bool = True  # market, stop and trailing fills slip; limit and stop-limit fills do not


@dataclass(frozen=True)
class Trip:
    """Candles (long table) and the orders that open and close one position on them."""

    candles: list[Candle]
    open: Leg
    close: Leg | None = None


TRIPS = {
    "market": Trip(
        [QUIET, (102, 104, 101, 103), (105, 106, 104, 105)],
        Leg(0, {}, (1, 102)),
        Leg(1, {}, (2, 105)),
    ),
    "limit_touched_fills_at_the_limit": Trip(
        [QUIET, (100, 101, 97, 99), (99, 105, 98.5, 104)],
        Leg(0, {"exectype": LMT, "price": 98}, (1, 98), slips=False),
        Leg(1, {"exectype": LMT, "price": 104}, (2, 104), slips=False),
    ),
    "limit_gapped_through_fills_at_the_better_open": Trip(
        [QUIET, (96, 97, 95, 96.5), (106, 107, 105, 106)],
        Leg(0, {"exectype": LMT, "price": 98}, (1, 96), slips=False),
        Leg(1, {"exectype": LMT, "price": 104}, (2, 106), slips=False),
    ),
    "limit_not_reached": Trip(
        [QUIET, (100, 101, 98.01, 100), (100, 101, 98.5, 100)],
        Leg(0, {"exectype": LMT, "price": 98}, None),
    ),
    "stop_traded_through_fills_at_the_stop": Trip(
        [QUIET, (100, 105, 99.5, 104.5), (104, 104.5, 100, 100.5)],
        Leg(0, {"exectype": STP, "price": 104}, (1, 104)),
        Leg(1, {"exectype": STP, "price": 101}, (2, 101)),
    ),
    "stop_gapped_through_fills_at_the_worse_open": Trip(
        [QUIET, (106, 107, 105, 106.5), (101, 102, 100, 101)],
        Leg(0, {"exectype": STP, "price": 104}, (1, 106)),
        Leg(1, {"exectype": STP, "price": 103}, (2, 101)),
    ),
    "stop_not_reached": Trip(
        [QUIET, (100, 103.99, 99, 103), (103, 103.5, 102, 103)],
        Leg(0, {"exectype": STP, "price": 104}, None),
    ),
    # stop-limit: buy stop 104 limit 105 to open, sell stop 101 limit 100 to close
    "stop_limit_triggered_fills_at_the_stop_unslipped": Trip(
        [QUIET, (100, 106, 99.5, 105), (105, 105.5, 99, 99.5)],
        Leg(0, {"exectype": STPLMT, "price": 104, "plimit": 105}, (1, 104), slips=False),
        Leg(1, {"exectype": STPLMT, "price": 101, "plimit": 100}, (2, 101), slips=False),
    ),
    "stop_limit_limit_a_hair_beyond_the_stop_is_never_passed": Trip(
        [QUIET, (100, 106, 99.5, 105), (105, 105.5, 99, 99.5)],
        Leg(0, {"exectype": STPLMT, "price": 104, "plimit": 104.05}, (1, 104), slips=False),
        Leg(1, {"exectype": STPLMT, "price": 101, "plimit": 100.95}, (2, 101), slips=False),
    ),
    "stop_limit_gapped_within_the_limit_fills_at_the_open": Trip(
        [QUIET, (104.5, 106, 104, 105), (100.5, 101, 99, 100)],
        Leg(0, {"exectype": STPLMT, "price": 104, "plimit": 105}, (1, 104.5), slips=False),
        Leg(1, {"exectype": STPLMT, "price": 101, "plimit": 100}, (2, 100.5), slips=False),
    ),
    "stop_limit_gapped_past_the_limit_waits_until_it_comes_back": Trip(
        # bar 1 opens above the limit and stays above; bar 2 comes back to it. The exit is
        # triggered by bar 3's gap below 100 and fills when bar 4 comes back up to 100.
        [
            QUIET,
            (106, 107, 105.5, 106.5),
            (106, 106.5, 104.5, 105),
            (99, 99.5, 98, 99),
            (99, 100.5, 98.5, 100),
        ],
        Leg(0, {"exectype": STPLMT, "price": 104, "plimit": 105}, (2, 105), slips=False),
        Leg(2, {"exectype": STPLMT, "price": 101, "plimit": 100}, (4, 100), slips=False),
    ),
    "stop_limit_price_runs_away_never_fills": Trip(
        [QUIET, (106, 107, 105.5, 107), (107, 108, 106, 107.5)],
        Leg(0, {"exectype": STPLMT, "price": 104, "plimit": 105}, None),
    ),
    "stop_limit_short_of_its_stop_fills_on_a_bar_that_turns_back": Trip(
        # buy: triggered at 104 on the way up, the bar closes down at 102.5 (<= 103.5);
        # sell: triggered at 101 on the way down, the bar closes up at 102 (>= 101.5)
        [QUIET, (103.5, 105, 102, 102.5), (101.2, 103, 100, 102)],
        Leg(0, {"exectype": STPLMT, "price": 104, "plimit": 103.5}, (1, 103.5), slips=False),
        Leg(1, {"exectype": STPLMT, "price": 101, "plimit": 101.5}, (2, 101.5), slips=False),
    ),
    "stop_limit_short_of_its_stop_waits_on_a_bar_that_does_not_turn": Trip(
        [QUIET, (101, 105, 100.5, 104.5), (104.5, 105, 103, 104), (103, 104, 102, 103)],
        Leg(0, {"exectype": STPLMT, "price": 104, "plimit": 103.5}, (2, 103.5), slips=False),
        Leg(2, {}, (3, 103)),
    ),
    # trailing: the level is the best close so far -/+ the trail, tested before it moves
    "trailing_stop_in_and_out": Trip(
        # buy trail from close 100 -> 102; bar 1 closes 99 -> 101; bar 2's high reaches it.
        # sell trail from bar 2's close 98.5 -> 96.5; closes 99.5, 101.5 -> 99.5; bar 5 reaches it.
        [
            QUIET,
            (100, 101, 98.5, 99),
            (99, 101.5, 98, 98.5),
            (98.5, 100, 97.5, 99.5),
            (99.5, 102, 99, 101.5),
            (101, 101.5, 99, 99.5),
        ],
        Leg(0, {"exectype": TRAIL, "trailamount": 2}, (2, 99 + 2)),
        Leg(2, {"exectype": TRAIL, "trailamount": 2}, (5, 101.5 - 2)),
    ),
    "trailing_stop_gapped_through_fills_at_the_open": Trip(
        [
            QUIET,
            (100, 101, 98.5, 99),
            (99, 101.5, 98, 98.5),
            (98.5, 100, 97.5, 99.5),
            (99.5, 102, 99, 101.5),
            (99, 99.5, 98, 98.5),
        ],
        Leg(0, {"exectype": TRAIL, "trailamount": 2}, (2, 99 + 2)),
        Leg(2, {"exectype": TRAIL, "trailamount": 2}, (5, 99)),
    ),
}


def _place(side: Side, opening: bool, leg: Leg, name: str) -> Any:
    return lambda s: {name: side.order(s, opening, Q, **leg.order)}


def _expected(
    side: Side, trip: Trip, leg: Leg, opening: bool, b: float
) -> tuple[int, float, float]:
    bar, price = leg.fill  # type: ignore[misc]
    candle = side.bar(trip.candles[bar])
    return (
        bar,
        side.signed(Q, opening),
        slipped(side.px(price), side.is_buy(opening), b if leg.slips else 0.0, candle),
    )


@pytest.mark.parametrize("b", SLIPS)
@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("trip", [pytest.param(t, id=k) for k, t in TRIPS.items()])
def test_round_trip_fills_at_the_bar_and_price_of_the_order_type(
    trip: Trip, side: Side, b: float
) -> None:
    plan = {trip.open.at: _place(side, True, trip.open, "open")}
    if trip.close is not None:
        plan[trip.close.at] = _place(side, False, trip.close, "close")

    strat = run(side.bars(trip.candles), plan, slippage=b)

    held = [0.0] * len(trip.candles)
    for name, leg, opening in (("open", trip.open, True), ("close", trip.close, False)):
        if leg is None:
            continue
        if leg.fill is None:
            assert strat.statuses(name) == ["Submitted", "Accepted"]
            continue
        bar, size, price = _expected(side, trip, leg, opening, b)
        assert one_fill(strat, name) == (bar, size, pytest.approx(price, rel=1e-12))
        for k in range(bar, len(held)):
            held[k] += size
    assert strat.positions_at == held


# --------------------------------------------------------------------------- trailing stops


def trail_level(
    side: Side, best_close: float, *, amount: float = 0.0, percent: float = 0.0
) -> float:
    """The level of the closing trailing stop for the best long-table close so far.

    Long (a sell trail): best close minus the trail. Short (a buy trail): the lowest close of
    the mirrored bars (PIVOT - best_close) plus the trail; a percent is of that close.
    """
    c = side.px(best_close)
    trail = amount or c * percent
    return c - trail if side.long else c + trail


TRAIL_BARS: list[Candle] = [
    QUIET,
    (100, 102, 99.5, 101.5),  # entry fills at the open 100; trail placed at the close 101.5
    (101.5, 104, 100, 103.5),  # low 100 stays above the first level; new best close 103.5
    (103.5, 104, 102, 102.5),  # a lower close: the level does not move back
    (102.5, 106, 102, 105.5),  # new best close 105.5
    (105, 105.5, 103, 103.2),  # reaches the level set by 105.5
]


@pytest.mark.parametrize("b", SLIPS)
@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(
    "trail",
    [
        pytest.param({"trailamount": 2.0}, id="amount"),
        pytest.param({"trailpercent": 0.02}, id="percent"),
    ],
)
def test_trailing_stop_follows_the_best_close_and_fires_at_its_level(
    trail: dict[str, float], side: Side, b: float
) -> None:
    def record(s: Scripted) -> None:
        s.results.setdefault("levels", []).append(s.orders["trail"].created.price)

    def place(s: Scripted) -> None:
        s.orders["trail"] = side.order(s, False, Q, exectype=TRAIL, **trail)
        record(s)

    plan = {
        0: lambda s: {"open": side.order(s, True, Q)},
        1: place,
        2: record,
        3: record,
        4: record,
    }
    strat = run(side.bars(TRAIL_BARS), plan, slippage=b)

    kw = {"amount": trail.get("trailamount", 0.0), "percent": trail.get("trailpercent", 0.0)}
    best_close = (101.5, 103.5, 103.5, 105.5)  # after bars 1 (placed at its close), 2, 3, 4
    levels = [trail_level(side, c, **kw) for c in best_close]
    assert strat.results["levels"] == [pytest.approx(x, rel=1e-12) for x in levels]
    fire = slipped(levels[-1], not side.long, b, side.bar(TRAIL_BARS[5]))
    assert one_fill(strat, "trail") == (5, side.signed(Q, False), pytest.approx(fire, rel=1e-12))


TRAIL_LIMIT_ENDS = {
    # id: (bars after TRAIL_BARS[:5], fill bar, price in the long table); stop 103.5, limit 103
    "reached_inside_the_bar_fills_at_the_stop": ([(105, 105.5, 103, 103.2)], 5, 103.5),
    "gapped_below_the_limit_waits_for_it": (
        [(102.5, 102.8, 102, 102.5), (102.5, 103.2, 102, 103)],
        6,
        103.0,
    ),
}


@pytest.mark.parametrize("b", SLIPS)
@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(
    ("ends", "bar", "price"), [pytest.param(*v, id=k) for k, v in TRAIL_LIMIT_ENDS.items()]
)
def test_trailing_stop_limit_moves_stop_and_limit_together_and_fills_as_a_stop_limit(
    ends: list[Candle], bar: int, price: float, side: Side, b: float
) -> None:
    # Sent at bar 1's close 101.5 with a limit 0.5 past the stop and a trail of 2: stop 99.5,
    # limit 99; the closes 103.5, 102.5, 105.5 move both to 101.5/101 and then 103.5/103.
    def record(s: Scripted) -> None:
        o = s.orders["exit"].created
        s.results.setdefault("levels", []).append((o.price, o.pricelimit))

    def place(s: Scripted) -> None:
        s.orders["exit"] = side.order(
            s, False, Q, exectype=bt.Order.StopTrailLimit, price=101.5, plimit=101.0, trailamount=2
        )
        record(s)

    candles = TRAIL_BARS[:5] + ends
    plan = {
        0: lambda s: {"open": side.order(s, True, Q)},
        1: place,
        2: record,
        3: record,
        4: record,
    }
    strat = run(side.bars(candles), plan, slippage=b)

    pairs = [(99.5, 99.0), (101.5, 101.0), (101.5, 101.0), (103.5, 103.0)]
    assert strat.results["levels"] == [(side.px(st), side.px(lm)) for st, lm in pairs]
    assert one_fill(strat, "exit") == (bar, side.signed(Q, False), side.px(price))  # never slipped
