"""Positions: side, average entry, realised / unrealised pnl, fees, flips and duplicate-entry refusal."""

from __future__ import annotations

import decimal
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.bus import EventBus
from trading.events import Event, TradeClosed, TradeOpened
from trading.order_manager import OrderManager
from trading.orders import ClientOrderId, Order, OrderSide, OrderType
from trading.positions import PositionManager, PositionSide

T0 = datetime(2024, 6, 3, tzinfo=UTC)
BUY, SELL = OrderSide.BUY, OrderSide.SELL


def manager() -> tuple[PositionManager, list[Event]]:
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append, inline=True)
    return PositionManager(bus), events


def test_scaling_in_averages_the_entry_and_a_partial_exit_realises_against_it() -> None:
    pm, events = manager()
    pm.apply_fill("BTC", BUY, D(1), D(100), D("0.1"), ts=T0, order_id="e1")
    pos = pm.apply_fill("BTC", BUY, D(3), D(120), D("0.3"), ts=T0, order_id="e2")
    # (1*100 + 3*120) / 4 = 115
    assert pos.side is PositionSide.LONG and pos.quantity == D(4) and pos.avg_entry_price == D(115)
    assert pos.unrealised_pnl(D(130)) == D(60)  # 4 * (130 - 115)
    pos = pm.apply_fill("BTC", SELL, D(1), D(125), D("0.125"), ts=T0)
    assert pos.realised_pnl == D(10) and pos.quantity == D(3) and pos.avg_entry_price == D(115)
    assert pos.fees == D("0.525")
    pos = pm.apply_fill("BTC", SELL, D(3), D(110), D("0.33"), ts=T0 + timedelta(hours=1))
    # 10 + 3 * (110 - 115) = -5
    assert (
        pos.side is PositionSide.FLAT and pos.realised_pnl == D(-5) and pos.avg_entry_price is None
    )
    opened, closed = events
    assert opened == TradeOpened(
        ts=T0,
        trade_id="e1",
        symbol="BTC",
        side=PositionSide.LONG,
        quantity=D(1),
        entry_price=D(100),
    )
    # exit price (1*125 + 3*110) / 4 = 113.75; fees 0.1 + 0.3 + 0.125 + 0.33
    assert closed == TradeClosed(
        ts=T0 + timedelta(hours=1),
        trade_id="e1",
        symbol="BTC",
        side=PositionSide.LONG,
        quantity=D(4),
        entry_price=D(115),
        exit_price=D("113.75"),
        realised_pnl=D(-5),
        fees=D("0.855"),
    )


def test_a_short_gains_when_the_price_falls() -> None:
    pm, _ = manager()
    pm.apply_fill("ETH", SELL, D(2), D(100), ts=T0)
    assert pm.position("ETH").side is PositionSide.SHORT
    assert pm.position("ETH").unrealised_pnl(D(95)) == D(10)
    pos = pm.apply_fill("ETH", BUY, D(2), D(90), ts=T0)
    assert pos.realised_pnl == D(20) and pos.side is PositionSide.FLAT


def test_a_flip_closes_the_old_trade_and_opens_the_new_one_at_the_fill_price() -> None:
    pm, events = manager()
    pm.apply_fill("BTC", BUY, D(1), D(100), D(1), ts=T0, order_id="long")
    pos = pm.apply_fill("BTC", SELL, D(3), D(110), D(3), ts=T0, order_id="flip")
    # 1 unit closed at +10; 2 units short from 110. The fee of 3 splits 1 (close) : 2 (open).
    assert pos.quantity == D(-2) and pos.avg_entry_price == D(110) and pos.realised_pnl == D(10)
    assert pos.fees == D(4) and pos.trade_id == "flip"
    _, closed, opened = events
    assert isinstance(closed, TradeClosed) and closed.realised_pnl == D(10) and closed.fees == D(2)
    assert (
        isinstance(opened, TradeOpened)
        and opened.side is PositionSide.SHORT
        and opened.quantity == D(2)
    )
    pos = pm.apply_fill("BTC", BUY, D(2), D(100), D(0), ts=T0)
    last = events[-1]
    assert pos.realised_pnl == D(30) and isinstance(last, TradeClosed)
    assert last.trade_id == "flip" and last.fees == D(2) and last.realised_pnl == D(20)


@pytest.mark.parametrize(
    "held, side, scale_in, expected",
    [
        (None, BUY, False, (True, None)),
        (BUY, BUY, False, (False, "DUPLICATE_ENTRY")),
        (BUY, BUY, True, (True, None)),
        (SELL, SELL, False, (False, "DUPLICATE_ENTRY")),
        (SELL, BUY, False, (False, "OPPOSITE_POSITION")),
        (BUY, SELL, True, (False, "OPPOSITE_POSITION")),
    ],
)
def test_a_second_entry_is_refused_unless_the_strategy_scales_in(
    held: OrderSide | None, side: OrderSide, scale_in: bool, expected: tuple[bool, str | None]
) -> None:
    pm, _ = manager()
    if held is not None:
        pm.apply_fill("BTC", held, D(1), D(100), ts=T0)
    decision = pm.can_enter("BTC", side, scale_in=scale_in)
    assert (decision.allowed, decision.reason) == expected and bool(decision) is expected[0]
    assert pm.can_enter("ETH", side)  # other symbols are independent


def test_fills_from_the_order_manager_move_the_position() -> None:
    pm, events = manager()
    om = OrderManager()
    om.add_fill_callback(pm.on_fill)
    order = om.submit(Order(ClientOrderId("e-1"), "BTC", BUY, OrderType.MARKET, D(2)))
    om.on_fill(order.client_order_id, D(1), D(100), D("0.1"), ts=T0)
    om.on_fill(order.client_order_id, D(1), D(102), D("0.1"), ts=T0)
    pos = pm.position("BTC")
    assert pos.quantity == D(2) and pos.avg_entry_price == D(101) and pos.fees == D("0.2")
    assert pos.trade_id == "e-1" and [type(e) for e in events] == [TradeOpened]
    assert pm.unrealised_pnl({"BTC": D(105)}) == D(8) and pm.open_positions() == [pos]


def test_a_fill_with_a_non_positive_quantity_is_refused() -> None:
    pm, _ = manager()
    with pytest.raises(ValueError):
        pm.apply_fill("BTC", BUY, D(0), D(100), ts=T0)


fills = st.lists(
    st.tuples(
        st.sampled_from([BUY, SELL]),
        st.integers(1, 50).map(lambda n: D(n) / 10),  # 0.1 .. 5.0
        st.integers(500, 1500).map(lambda n: D(n) / 10),  # 50.0 .. 150.0
        st.integers(0, 20).map(lambda n: D(n) / 100),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(fills=fills, mark=st.integers(500, 1500).map(lambda n: D(n) / 10))
def test_realised_plus_unrealised_equals_the_mark_to_market_pnl_of_the_fills(
    fills: list, mark: D
) -> None:
    pm = PositionManager()
    cash = D(0)
    qty = D(0)
    fees = D(0)
    for side, q, price, fee in fills:
        pm.apply_fill("X", side, q, price, fee, ts=T0)
        cash -= side.sign * q * price
        qty += side.sign * q
        fees += fee
    pos = pm.position("X")
    assert pos.quantity == qty and pos.fees == fees
    mtm = cash + qty * mark
    # Decimal division in the averages rounds at 28 digits; nothing else may differ.
    assert abs(pos.realised_pnl + pos.unrealised_pnl(mark) - mtm) < D("1e-18")
    assert abs(pos.net_pnl(mark) - (mtm - fees)) < D("1e-18")


def _replay(fills: list[tuple[OrderSide, D, D, D]]) -> tuple[list, list[Event], D, D]:
    pm, events = manager()
    positions = [pm.apply_fill("X", side, q, price, fee, ts=T0, order_id=f"o{k}")
                 for k, (side, q, price, fee) in enumerate(fills)]
    mark = D("100.00000000000000000000000003")
    return positions, events, pm.position("X").net_pnl(mark), pm.unrealised_pnl({"X": mark})


# Ties at the 29th digit (half-even and half-up round them apart) and divisions that do not end.
TIE = D("100.0000000000000000000000001")  # (TIE + 100) / 2 = 100.00000000000000000000000005
FEE_TIE = D("1.000000000000000000000000001")  # half of it is a tie too
CONTEXT_FILLS = [
    (BUY, D(1), D(100), D("0.1")),
    (BUY, D(1), TIE, D("0.1")),  # average entry: a tie
    (SELL, D(3), D(101), FEE_TIE),  # a flip: the fee split 2/3 : 1/3 does not end
    (BUY, D(2), D("99.7"), FEE_TIE),  # a flip: the fee split 1/2 : 1/2 is a tie
    (SELL, D(7), D("100.3"), D("0.7")),
    (BUY, D(3), D(99), D("0.3")),
]


@pytest.mark.parametrize(("rounding", "prec"), [("ROUND_HALF_UP", 28), ("ROUND_DOWN", 28), ("ROUND_CEILING", 9)])
def test_results_do_not_depend_on_the_thread_decimal_context(rounding: str, prec: int) -> None:
    # ccxt's decimal_to_precision sets the global rounding to ROUND_HALF_UP; a test (or a
    # library) run before must not change an average price, a fee split or a pnl.
    with decimal.localcontext(decimal.Context()):  # Python's default context
        expected = _replay(CONTEXT_FILLS)
    with decimal.localcontext() as ctx:
        ctx.rounding, ctx.prec = getattr(decimal, rounding), prec
        got = _replay(CONTEXT_FILLS)
        assert decimal.getcontext().rounding == getattr(decimal, rounding)  # left as it was
    assert got == expected
    positions, events, _, _ = got
    assert positions[1].avg_entry_price == D("100.0000000000000000000000000")  # the tie, half to even
    assert [type(e).__name__ for e in events] == [
        "TradeOpened", "TradeClosed", "TradeOpened", "TradeClosed", "TradeOpened", "TradeClosed", "TradeOpened"]
    assert positions[-1].quantity == -3
