"""Each order type through the SimBroker with the fill model on, long and short.

Volume cap, latency, size-dependent slippage and market impact, with the formulas of
docs/fill-model.md; cases are written for the long side and mirrored for the short one
(see order_harness.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.strategy.conftest import Candle
from tests.trading.brokers.order_harness import (
    LMT,
    QUIET,
    SIDES,
    STP,
    STPLMT,
    TRAIL,
    Q,
    Side,
    fills,
    one_fill,
    run,
    slipped,
)
from trading.brokers.fill_model import PARTIAL_FRACTION_RANGE, FillModel

# Opening orders of 250 with a volume cap of 10 % of 1 000 fill 100, 100 and 50 on bars 1-3.
# The first bar triggers the order; bars 2 and 3 open beyond its price, so the rest fills at
# their opens. (bar, price before slippage) of each part:
CAPPED = {
    "market": (
        {},
        [QUIET, (100, 101, 99, 100.5), (101, 102, 100.5, 101.5), (102, 103, 101.5, 102.5)],
        [(1, 100), (2, 101), (3, 102)],
        True,
    ),
    "limit": (
        {"exectype": LMT, "price": 101.5},
        [QUIET, (102, 102.5, 101, 101.2), (101, 101.5, 100, 100.5), (100.5, 101, 100, 100.5)],
        [(1, 101.5), (2, 101), (3, 100.5)],
        False,
    ),
    "stop": (
        {"exectype": STP, "price": 104},
        [QUIET, (100, 105, 99.5, 104.5), (105, 106, 104.5, 105.5), (106, 107, 105.5, 106.5)],
        [(1, 104), (2, 105), (3, 106)],
        True,
    ),
    "stop_limit": (
        {"exectype": STPLMT, "price": 104, "plimit": 106},
        [QUIET, (100, 105, 99.5, 104.5), (105, 106, 104.5, 105.5), (106, 107, 105.5, 106.5)],
        [(1, 104), (2, 105), (3, 106)],
        False,
    ),
    "trailing_stop": (
        {"exectype": TRAIL, "trailamount": 2},
        [QUIET, (100, 103, 99.5, 102.5), (103, 104, 102.5, 103.5), (104, 105, 103.5, 104.5)],
        [(1, 102), (2, 103), (3, 104)],
        True,
    ),
}


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(
    ("kw", "candles", "parts", "slips"), [pytest.param(*v, id=k) for k, v in CAPPED.items()]
)
def test_volume_cap_splits_every_order_type_over_bars_by_its_own_rule(
    kw: dict[str, Any],
    candles: list[Candle],
    parts: list[tuple[int, float]],
    slips: bool,
    side: Side,
) -> None:
    b = 0.001
    model = FillModel(max_volume_share=0.1, base_slippage=b)
    strat = run(
        side.bars(candles), {0: lambda s: {"open": side.order(s, True, 250, **kw)}}, model=model
    )

    sizes = [100, 100, 50]
    prices = [
        slipped(side.px(p), side.long, b if slips else 0.0, side.bar(candles[k])) for k, p in parts
    ]
    cum = [sum(sizes[: i + 1]) for i in range(3)]
    avg = [sum(q * p for q, p in zip(sizes[: i + 1], prices[: i + 1])) / cum[i] for i in range(3)]
    sign = 1 if side.long else -1
    got = [(e.bar, e.status, e.size, e.price) for e in fills(strat, "open")]
    assert got == [
        (k, st, sign * n, pytest.approx(a, rel=1e-12))
        for (k, _), st, n, a in zip(parts, ["Partial", "Partial", "Completed"], cum, avg)
    ]


HOUR_MS = 3_600_000.0
LATE_BAR: Candle = (100, 105.5, 99.5, 105)  # the order arrives half-way: 100 + (105 - 100) * 0.5
ARRIVAL = 102.5

LATENCY_CASES = {
    # id: (order, fill without latency, fill with it); buy prices of the long table
    "market": ({}, 100, ARRIVAL),
    "stop_passed_before_arrival_fills_there": ({"exectype": STP, "price": 102}, 102, ARRIVAL),
    "stop_above_arrival_fills_at_the_stop": ({"exectype": STP, "price": 104}, 104, 104),
    "limit_already_better_fills_at_arrival": ({"exectype": LMT, "price": 103}, 100, ARRIVAL),
    "stop_limit_passed_before_arrival": (
        {"exectype": STPLMT, "price": 102, "plimit": 103},
        102,
        ARRIVAL,
    ),
    "trailing_stop_passed_before_arrival": ({"exectype": TRAIL, "trailamount": 2}, 102, ARRIVAL),
}


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(
    "latency", [pytest.param(False, id="basic"), pytest.param(True, id="latency")]
)
@pytest.mark.parametrize(
    ("kw", "basic", "late"), [pytest.param(*v, id=k) for k, v in LATENCY_CASES.items()]
)
def test_latency_makes_the_arrival_price_the_open_for_every_order_type(
    kw: dict[str, Any], basic: float, late: float, latency: bool, side: Side
) -> None:
    half = 0.5 * HOUR_MS
    model = FillModel(
        latency_simulation=latency,
        min_latency_ms=half if latency else 0,
        max_latency_ms=half if latency else 0,
    )
    candles = [QUIET, LATE_BAR, LATE_BAR]
    strat = run(
        side.bars(candles), {0: lambda s: {"open": side.order(s, True, Q, **kw)}}, model=model
    )

    assert one_fill(strat, "open") == (
        1,
        side.signed(Q, True),
        pytest.approx(side.px(late if latency else basic)),
    )


SQRT_CASES = {
    # id: (opening order, reference price of the fill on bar (100, 110, 99.5, 108)), or None: no slippage
    "market": ({}, 100),
    "stop": ({"exectype": STP, "price": 104}, 104),
    "trailing_stop": ({"exectype": TRAIL, "trailamount": 2}, 102),
    "limit": ({"exectype": LMT, "price": 101}, None),
    "stop_limit": ({"exectype": STPLMT, "price": 104, "plimit": 105}, None),
}


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(("kw", "ref"), [pytest.param(*v, id=k) for k, v in SQRT_CASES.items()])
def test_sqrt_slippage_and_impact_apply_to_market_stop_and_trailing_fills_only(
    kw: dict[str, Any], ref: float | None, side: Side
) -> None:
    # 250 of volume 1 000: x = 0.25, s = P * (b * (1 + sqrt(x)) + f * x) = P * (0.0015 + 0.025)
    b, f, x = 0.001, 0.1, 0.25
    model = FillModel(
        slippage_model="sqrt", base_slippage=b, market_impact_enabled=True, market_impact_factor=f
    )
    candles = [QUIET, (100, 110, 99.5, 108), (108, 108, 108, 108)]
    strat = run(
        side.bars(candles), {0: lambda s: {"open": side.order(s, True, 250, **kw)}}, model=model
    )

    if ref is None:  # limit 101 and stop-limit (stop 104, limit 105) fill at their price, unslipped
        price = side.px(100.0 if kw["exectype"] == LMT else 104.0)
    else:
        p = side.px(ref)
        s = p * (b * (1 + x**0.5) + f * x)
        price = p + s if side.long else p - s
    assert one_fill(strat, "open") == (1, side.signed(250, True), pytest.approx(price, rel=1e-12))


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize(
    ("kw", "candles", "parts", "slips"), [pytest.param(*v, id=k) for k, v in CAPPED.items()]
)
def test_random_partial_fills_of_every_order_type_follow_the_seeded_draws(
    kw: dict[str, Any],
    candles: list[Candle],
    parts: list[tuple[int, float]],
    slips: bool,
    side: Side,
) -> None:
    # docs/fill-model.md, Determinism: per order and bar one draw (< p: a partial fill), and
    # for a partial one more for the fraction of what is left. The bars after bar 1 keep
    # opening beyond the order's price, so every bar until the last part fills at its open.
    p, seed, size, b = 0.8, 6, 250.0, 0.001
    bars = candles + [candles[-1]] * 8
    rng = np.random.default_rng(seed)
    expected, left, filled, cost = [], size, 0.0, 0.0
    for k in range(1, len(bars)):
        q = left * rng.uniform(*PARTIAL_FRACTION_RANGE) if rng.random() < p else left
        ref = parts[0][1] if k == 1 else bars[k][0]
        price = slipped(side.px(ref), side.long, b if slips else 0.0, side.bar(bars[k]))
        left, filled, cost = left - q, filled + q, cost + q * price
        expected.append((k, "Completed" if left == 0 else "Partial", filled, cost / filled))
        if left == 0:
            break
    # seed 6 draws three parts: two partials, then the rest
    assert [e[1] for e in expected] == ["Partial", "Partial", "Completed"]

    model = FillModel(partial_fill_probability=p, seed=seed, base_slippage=b)
    strat = run(
        side.bars(bars), {0: lambda s: {"open": side.order(s, True, size, **kw)}}, model=model
    )

    sign = 1 if side.long else -1
    got = [(e.bar, e.status, e.size, e.price) for e in fills(strat, "open")]
    assert got == [
        (k, st, pytest.approx(sign * n, rel=1e-12), pytest.approx(a, rel=1e-12))
        for k, st, n, a in expected
    ]


# A stop of 250 with the volume cap at 10 % of 1 000: 100 fill on the bar that triggers it.
# The next bars trade back short of the stop, yet the rest fills at their opens: once
# triggered, a stop is a market order. (bar, price before slippage) of each part, long table.
TRIGGERED_REST = {
    # An opening buy stop at 104: bar 1 triggers it, bars 2 and 3 stay below 104.
    "entry_stop": (
        True,
        [QUIET, (100, 105, 99.5, 104.5), (103, 103.5, 102, 103), (102, 102.5, 101, 101.5)],
        [1000.0] * 4,
        [(1, 104), (2, 103), (3, 102)],
    ),
    # A protective sell stop at 96 under 250 bought at bar 1's open: bar 2 triggers it, bars
    # 3 and 4 stay above 96.
    "protective_stop": (
        False,
        [QUIET, (100, 101, 99.5, 100), (97, 97.5, 95, 95.5), (97, 98, 96.5, 97.5), (98, 98.5, 97.5, 98)],
        [1000.0, 1e6, 1000.0, 1000.0, 1000.0],
        [(2, 96), (3, 97), (4, 98)],
    ),
}


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("trail", [False, True], ids=["stop", "trailing_stop"])
@pytest.mark.parametrize(
    ("opening", "candles", "volume", "parts"), [pytest.param(*v, id=k) for k, v in TRIGGERED_REST.items()]
)
def test_the_rest_of_a_partly_filled_triggered_stop_fills_as_a_market_order_at_the_next_opens(
    opening: bool,
    candles: list[Candle],
    volume: list[float],
    parts: list[tuple[int, float]],
    trail: bool,
    side: Side,
) -> None:
    b = 0.001
    model = FillModel(max_volume_share=0.1, base_slippage=b)
    level = parts[0][1]
    # The trailing stop is placed at the close of the bar before the trigger: its trail puts it
    # at the same level, and it must not move once triggered (bars 2-3 close lower).
    trail_kw = {"exectype": TRAIL, "trailamount": abs(candles[parts[0][0] - 1][3] - level)}
    kw = trail_kw if trail else {"exectype": STP, "price": level}
    if opening:
        plan = {0: lambda s: {"stop": side.order(s, True, 250, **kw)}}
    else:
        plan = {
            0: lambda s: {"entry": side.order(s, True, 250)},
            1: lambda s: {"stop": side.order(s, False, 250, **kw)},
        }
    strat = run(side.bars(candles), plan, model=model, volume=volume)

    buy = side.is_buy(opening)
    prices = [slipped(side.px(p), buy, b, side.bar(candles[k])) for k, p in parts]
    sizes = [100, 100, 50]
    cum = [sum(sizes[: i + 1]) for i in range(3)]
    avg = [sum(q * p for q, p in zip(sizes[: i + 1], prices[: i + 1])) / cum[i] for i in range(3)]
    sign = 1 if buy else -1
    got = [(e.bar, e.status, e.size, e.price) for e in fills(strat, "stop")]
    assert got == [
        (k, st, sign * n, pytest.approx(a, rel=1e-12))
        for (k, _), st, n, a in zip(parts, ["Partial", "Partial", "Completed"], cum, avg)
    ]
    if not opening:
        assert strat.positions_at[-1] == 0  # the whole position closed


@pytest.mark.parametrize("side", SIDES)
def test_a_triggered_stop_can_be_resized_but_its_trigger_can_no_longer_be_moved(side: Side) -> None:
    candles, volume, _ = TRIGGERED_REST["entry_stop"][1:]
    model = FillModel(max_volume_share=0.1)

    def amend(s):  # type: ignore[no-untyped-def]
        order = s.orders["stop"]
        s.results["price"] = s.broker.modify(order, price=side.px(110))
        s.results["size"] = s.broker.modify(order, size=200)

    strat = run(side.bars(candles), {0: lambda s: {"stop": side.order(s, True, 250, exectype=STP, price=104)},
                                     1: amend}, model=model, volume=volume)

    assert strat.results == {"price": False, "size": True}
    sign = 1 if side.long else -1
    # 100 on the trigger bar, then the rest of the 200 (100) at bar 2's open.
    assert [(e.bar, e.status, e.size) for e in fills(strat, "stop")] == [
        (1, "Partial", sign * 100), (2, "Completed", sign * 200)]
    assert fills(strat, "stop")[-1].price == pytest.approx((side.px(104) + side.px(103)) / 2)  # no slippage
