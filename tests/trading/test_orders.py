"""Orders: client ids, validation, the lifecycle state machine, brackets, OCO, trailing stops."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest

from trading.bus import EventBus
from trading.events import (
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderModified,
    OrderPartiallyFilled,
    OrderPendingCancel,
    OrderSubmitted,
)
from trading.order_manager import CancelRequest, ModifyRequest, OrderManager, Request
from trading.orders import (
    ClientOrderId,
    DuplicateClientOrderId,
    IllegalTransition,
    InvalidOrder,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
)

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc)
BUY, SELL = OrderSide.BUY, OrderSide.SELL


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def oid(name: str) -> ClientOrderId:
    return ClientOrderId(name)


def market(name: str = "o1", side: OrderSide = BUY, qty: str = "10", symbol: str = "BTC") -> Order:
    return Order(oid(name), symbol, side, OrderType.MARKET, D(qty))


def book(**kw: object) -> tuple[OrderManager, list[Event], list[Request]]:
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append, inline=True)
    om = OrderManager(bus, **kw)  # type: ignore[arg-type]
    requests: list[Request] = []
    om.add_request_callback(requests.append)
    return om, events, requests


# --------------------------------------------------------------------------- client order ids


def test_client_order_id_is_the_same_for_the_same_signal_leg_and_attempt() -> None:
    a = ClientOrderId.for_signal("rsi_bot", "BTCUSDT", T0, "entry", 0)
    same_instant = T0.astimezone(timezone(timedelta(hours=2)))
    assert a == ClientOrderId.for_signal("rsi_bot", "BTCUSDT", same_instant, "entry", 0)
    # Pinned: a restart or a new release must derive the very same id for the same signal.
    # sha256("rsi_bot|BTCUSDT|2024-05-01T09:00:00.000000+00:00|entry|0")[:16], as documented.
    assert a.value == "atf-ace905ba64c2f1e2-entry-0"


def test_client_order_ids_differ_for_another_bot_symbol_bar_leg_or_attempt() -> None:
    base = ("rsi_bot", "BTCUSDT", T0, "entry", 0)
    variants = [
        ("other_bot", "BTCUSDT", T0, "entry", 0),
        ("rsi_bot", "ETHUSDT", T0, "entry", 0),
        ("rsi_bot", "BTCUSDT", T0 + timedelta(hours=1), "entry", 0),
        ("rsi_bot", "BTCUSDT", T0, "sl", 0),
        ("rsi_bot", "BTCUSDT", T0, "entry", 1),
    ]
    ids = {ClientOrderId.for_signal(*v) for v in [base, *variants]}  # type: ignore[arg-type]
    assert len(ids) == 6


@pytest.mark.parametrize(
    "kwargs",
    [
        {"signal_ts": datetime(2024, 1, 1)},
        {"leg": "Entry"},
        {"leg": "take_profit"},
        {"attempt": 100},
    ],
)
def test_client_order_id_refuses_naive_times_bad_legs_and_attempts(kwargs: dict) -> None:
    args = {"bot": "b", "symbol": "X", "signal_ts": T0, "leg": "entry", "attempt": 0, **kwargs}
    with pytest.raises(InvalidOrder):
        ClientOrderId.for_signal(**args)


def test_a_resubmitted_client_order_id_is_refused_and_the_book_keeps_one_order() -> None:
    om, events, _ = book()
    om.submit(market("dup"))
    with pytest.raises(DuplicateClientOrderId):
        om.submit(market("dup"))
    assert len(om.orders()) == 1 and sum(isinstance(e, OrderSubmitted) for e in events) == 1


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "order_type, kwargs, message",
    [
        (OrderType.LIMIT, {}, "needs price"),
        (OrderType.MARKET, {"price": D(1)}, "takes no price"),
        (OrderType.STOP, {}, "needs stop_price"),
        (OrderType.STOP_LIMIT, {"stop_price": D(2)}, "needs price"),
        (OrderType.LIMIT, {"price": D(1), "stop_price": D(2)}, "takes no stop_price"),
        (OrderType.TRAILING_STOP, {}, "exactly one"),
        (OrderType.TRAILING_STOP, {"trail_amount": D(1), "trail_percent": D("0.1")}, "exactly one"),
        (OrderType.STOP, {"stop_price": D(1), "trail_amount": D(1)}, "takes no trail"),
        (OrderType.LIMIT, {"price": D(-1)}, "positive"),
    ],
)
def test_an_inconsistent_order_is_refused(
    order_type: OrderType, kwargs: dict, message: str
) -> None:
    with pytest.raises(InvalidOrder, match=message):
        Order(oid("x"), "BTC", BUY, order_type, D(1), **kwargs)


def test_an_order_refuses_float_money_and_a_non_positive_quantity() -> None:
    with pytest.raises(InvalidOrder, match="Decimal"):
        Order(oid("x"), "BTC", BUY, OrderType.MARKET, 1.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidOrder, match="positive"):
        Order(oid("x"), "BTC", BUY, OrderType.MARKET, D(0))


# --------------------------------------------------------------------------- state machine

S = OrderStatus

# How to bring a fresh 10-unit order into each status.
REACH: dict[OrderStatus, Callable[[OrderManager, ClientOrderId], object]] = {
    S.NEW: lambda om, i: None,
    S.ACCEPTED: lambda om, i: om.on_accepted(i),
    S.PARTIALLY_FILLED: lambda om, i: (om.on_accepted(i), om.on_fill(i, D(3), D(100))),
    S.PENDING_CANCEL: lambda om, i: (om.on_accepted(i), om.request_cancel(i)),
    S.FILLED: lambda om, i: om.on_fill(i, D(10), D(100)),
    S.CANCELLED: lambda om, i: om.on_cancelled(i),
    S.REJECTED: lambda om, i: om.on_rejected(i, "NO_FUNDS"),
    S.EXPIRED: lambda om, i: om.on_expired(i),
}
# The update applied next, named by the status it aims at.
APPLY: dict[str, Callable[[OrderManager, ClientOrderId], object]] = {
    "accept": lambda om, i: om.on_accepted(i),
    "partial_fill": lambda om, i: om.on_fill(i, D(1), D(100)),
    "fill": lambda om, i: om.on_fill(i, om.get(i).remaining, D(100)),
    "cancel": lambda om, i: om.on_cancelled(i),
    "reject": lambda om, i: om.on_rejected(i, "X"),
    "expire": lambda om, i: om.on_expired(i),
    "request_cancel": lambda om, i: om.request_cancel(i),
}
# Hand-written lifecycle: status -> {update: resulting status}; anything absent must raise.
LEGAL: dict[OrderStatus, dict[str, OrderStatus]] = {
    S.NEW: {
        "accept": S.ACCEPTED,
        "partial_fill": S.PARTIALLY_FILLED,
        "fill": S.FILLED,
        "cancel": S.CANCELLED,
        "reject": S.REJECTED,
        "expire": S.EXPIRED,
        "request_cancel": S.PENDING_CANCEL,
    },
    S.ACCEPTED: {
        "partial_fill": S.PARTIALLY_FILLED,
        "fill": S.FILLED,
        "cancel": S.CANCELLED,
        "expire": S.EXPIRED,
        "request_cancel": S.PENDING_CANCEL,
    },
    S.PARTIALLY_FILLED: {
        "partial_fill": S.PARTIALLY_FILLED,
        "fill": S.FILLED,
        "cancel": S.CANCELLED,
        "expire": S.EXPIRED,
        "request_cancel": S.PENDING_CANCEL,
    },
    S.PENDING_CANCEL: {
        "partial_fill": S.PENDING_CANCEL,
        "fill": S.FILLED,
        "cancel": S.CANCELLED,
        "expire": S.EXPIRED,
        "request_cancel": S.PENDING_CANCEL,
    },
    S.FILLED: {},
    S.CANCELLED: {},
    S.REJECTED: {},
    S.EXPIRED: {},
}
CASES = [(start, update) for start in OrderStatus for update in APPLY]


@pytest.mark.parametrize("start, update", CASES, ids=[f"{s.value}-{u}" for s, u in CASES])
def test_lifecycle_allows_exactly_the_listed_transitions(start: OrderStatus, update: str) -> None:
    om, events, _ = book()
    order = om.submit(Order(oid("o"), "BTC", BUY, OrderType.LIMIT, D(10), price=D(100)))
    REACH[start](om, order.client_order_id)
    assert order.status is start
    before = (order.filled_qty, len(events))
    expected = LEGAL[start].get(update)
    if expected is None:
        with pytest.raises(IllegalTransition):
            APPLY[update](om, order.client_order_id)
        assert order.status is start and (order.filled_qty, len(events)) == before
    else:
        APPLY[update](om, order.client_order_id)
        assert order.status is expected


def test_fills_accumulate_quantity_average_price_and_fees() -> None:
    om, events, _ = book()
    i = om.submit(market("o1", qty="10")).client_order_id
    om.on_accepted(i, venue_order_id="V1")
    first = om.on_fill(i, D(4), D(100), D("0.4"))
    last = om.on_fill(i, D(6), D(110), D("0.66"), trade_id="x2")
    order = om.get(i)
    # (4*100 + 6*110) / 10 = 106
    assert order.avg_fill_price == D(106) and order.fees == D("1.06") and order.remaining == 0
    assert (
        isinstance(first, OrderPartiallyFilled)
        and first.remaining_qty == D(6)
        and first.avg_price == D(100)
    )
    assert isinstance(last, OrderFilled) and last.filled_qty == D(10) and last.trade_id == "x2"
    assert [type(e) for e in events] == [
        OrderSubmitted,
        OrderAccepted,
        OrderPartiallyFilled,
        OrderFilled,
    ]
    assert order.venue_order_id == "V1" and om.open_orders() == []


def test_a_fill_larger_than_the_remainder_raises_and_changes_nothing() -> None:
    om, events, _ = book()
    i = om.submit(market("o1", qty="2")).client_order_id
    with pytest.raises(IllegalTransition, match="exceeds"):
        om.on_fill(i, D(3), D(100))
    assert om.get(i).filled_qty == 0 and om.get(i).status is S.NEW and len(events) == 1


# --------------------------------------------------------------------------- brackets and OCO


def bracket(om: OrderManager, qty: str = "2") -> tuple[Order, Order, Order]:
    entry = market("e", BUY, qty)
    sl = Order(oid("sl"), "BTC", SELL, OrderType.STOP, D(qty), stop_price=D(95))
    tp = Order(oid("tp"), "BTC", SELL, OrderType.LIMIT, D(qty), price=D(110))
    om.submit_bracket(entry, sl, tp)
    return entry, sl, tp


def test_when_the_take_profit_fills_the_stop_loss_is_cancelled() -> None:
    om, events, requests = book()
    entry, sl, tp = bracket(om)
    assert sl.parent_id == tp.parent_id == entry.client_order_id and sl.oco_id == tp.client_order_id
    om.on_fill(entry.client_order_id, D(2), D(100))
    om.on_fill(tp.client_order_id, D(2), D(110))
    assert sl.status is S.PENDING_CANCEL
    assert requests == [CancelRequest(sl.client_order_id, "BTC", "OCO")]
    om.on_cancelled(sl.client_order_id, "OCO")
    assert om.open_orders("BTC") == [] and sl.status is S.CANCELLED
    assert isinstance(events[-2], OrderPendingCancel) and isinstance(events[-1], OrderCancelled)


def test_a_partial_fill_of_one_oco_leg_already_cancels_the_other() -> None:
    om, _, requests = book()
    a = Order(oid("a"), "BTC", BUY, OrderType.LIMIT, D(5), price=D(90))
    b = Order(oid("b"), "BTC", BUY, OrderType.STOP, D(5), stop_price=D(120))
    om.submit_oco(a, b)
    om.on_fill(a.client_order_id, D(1), D(90))
    assert b.status is S.PENDING_CANCEL and a.status is S.PARTIALLY_FILLED
    assert requests == [CancelRequest(b.client_order_id, "BTC", "OCO")]


def test_a_stop_filling_while_its_cancel_is_pending_is_still_recorded() -> None:
    om, _, _ = book()
    entry, sl, tp = bracket(om)
    om.on_fill(entry.client_order_id, D(2), D(100))
    om.on_fill(tp.client_order_id, D(2), D(110))
    om.on_fill(sl.client_order_id, D(2), D(95))  # the venue filled it before the cancel arrived
    assert sl.status is S.FILLED and sl.avg_fill_price == D(95)


@pytest.mark.parametrize(
    "kill, reason",
    [
        (lambda om, i: om.on_rejected(i, "NO_FUNDS"), "PARENT_REJECTED"),
        (lambda om, i: om.on_cancelled(i), "PARENT_CANCELLED"),
        (lambda om, i: om.on_expired(i), "PARENT_EXPIRED"),
    ],
)
def test_children_go_when_the_parent_dies_unfilled(kill: Callable, reason: str) -> None:
    om, _, requests = book()
    entry, sl, tp = bracket(om)
    kill(om, entry.client_order_id)
    assert sl.status is tp.status is S.PENDING_CANCEL
    assert requests == [
        CancelRequest(sl.client_order_id, "BTC", reason),
        CancelRequest(tp.client_order_id, "BTC", reason),
    ]


def test_children_are_resized_when_the_parent_dies_partly_filled() -> None:
    om, _, requests = book()
    entry, sl, tp = bracket(om, qty="5")
    om.on_fill(entry.client_order_id, D(2), D(100))
    om.on_cancelled(entry.client_order_id)
    assert requests == [
        ModifyRequest(sl.client_order_id, "BTC", quantity=D(2)),
        ModifyRequest(tp.client_order_id, "BTC", quantity=D(2)),
    ]
    om.on_modified(sl.client_order_id, quantity=D(2))
    assert sl.quantity == D(2) and sl.status is S.NEW


def test_a_bracket_child_on_the_same_side_as_the_entry_is_refused_and_nothing_is_booked() -> None:
    om, events, _ = book()
    bad_sl = Order(oid("sl"), "BTC", BUY, OrderType.STOP, D(2), stop_price=D(95))
    with pytest.raises(InvalidOrder, match="other side"):
        om.submit_bracket(market("e", BUY, "2"), bad_sl, None)
    assert om.orders() == [] and events == []


# --------------------------------------------------------------------------- modify, trailing, callbacks


def test_modify_is_requested_then_applied_when_the_venue_confirms() -> None:
    om, events, requests = book()
    o = om.submit(Order(oid("l"), "BTC", BUY, OrderType.LIMIT, D(3), price=D(100)))
    om.on_fill(o.client_order_id, D(1), D(100))
    with pytest.raises(InvalidOrder, match="must exceed the filled"):
        om.request_modify(o.client_order_id, quantity=D(1))
    req = om.request_modify(o.client_order_id, price=D(99))
    assert requests == [req] and o.price == D(100)  # unchanged until confirmed
    om.on_modified(o.client_order_id, price=D(99))
    assert o.price == D(99) and isinstance(events[-1], OrderModified) and events[-1].price == D(99)


def test_a_sell_trailing_stop_follows_the_high_and_never_moves_down() -> None:
    om, events, _ = book()
    o = om.submit(Order(oid("ts"), "BTC", SELL, OrderType.TRAILING_STOP, D(1), trail_amount=D(5)))
    i = o.client_order_id
    assert om.update_trailing_stop(i, D(100)) == D(95)
    assert om.update_trailing_stop(i, D(103)) == D(98)
    assert om.update_trailing_stop(i, D(101)) is None
    assert o.stop_price == D(98) and o.best_price == D(103)
    assert [e.stop_price for e in events if isinstance(e, OrderModified)] == [D(95), D(98)]


def test_a_buy_trailing_stop_by_percent_follows_the_low() -> None:
    om, _, _ = book()
    o = om.submit(
        Order(oid("ts"), "BTC", BUY, OrderType.TRAILING_STOP, D(1), trail_percent=D("0.02"))
    )
    assert om.update_trailing_stop(o.client_order_id, D(200)) == D("204.00")
    assert om.update_trailing_stop(o.client_order_id, D(190)) == D("193.80")
    assert om.update_trailing_stop(o.client_order_id, D(195)) is None


def test_fill_and_update_callbacks_see_every_change_and_their_errors_surface_after_booking() -> (
    None
):
    om, _, _ = book()
    fills: list[tuple[str, D]] = []
    updates: list[str] = []
    om.add_fill_callback(lambda order, f: fills.append((str(order.client_order_id), f.last_qty)))
    om.add_update_callback(lambda order, e: updates.append(type(e).__name__))
    i = om.submit(market("o1", qty="2")).client_order_id
    om.on_fill(i, D(1), D(10))

    def broken(order: Order, fill: object) -> None:
        raise RuntimeError("position book down")

    om.add_fill_callback(broken)
    with pytest.raises(RuntimeError, match="position book down"):
        om.on_fill(i, D(1), D(10))
    assert om.get(i).status is S.FILLED  # booked before the error surfaced
    assert fills == [("o1", D(1)), ("o1", D(1))]
    assert updates == ["OrderSubmitted", "OrderPartiallyFilled", "OrderFilled"]


def test_orders_not_acknowledged_in_time_are_listed_for_follow_up() -> None:
    clock = Clock()
    om, _, _ = book(clock=clock)
    a = om.submit(market("a"))
    b = om.submit(market("b"))
    om.on_accepted(b.client_order_id)
    clock.now = T0 + timedelta(seconds=31)
    c = om.submit(market("c"))
    assert om.unacknowledged(timedelta(seconds=30)) == [a]
    assert {o.client_order_id for o in om.open_orders()} == {
        a.client_order_id,
        b.client_order_id,
        c.client_order_id,
    }
    assert om.open_orders("ETH") == []
