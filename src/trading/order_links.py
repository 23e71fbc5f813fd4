"""Links between orders and what the OrderManager asks of the venue.

A bracket is an entry (the parent) with a protective stop and/or target (its children) that
cancel each other (OCO); an OCO pair is two orders of which the first to fill cancels the
other. `link_bracket` / `link_oco` check and set those links on orders not yet submitted.
`CancelRequest` / `ModifyRequest` are the OrderManager's requests to the venue; the venue's
answer comes back as a fact (`on_cancelled`, `on_modified`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from trading.orders import ClientOrderId, InvalidOrder, Order, OrderType

_STOP_TYPES = (OrderType.STOP, OrderType.STOP_LIMIT, OrderType.TRAILING_STOP)


@dataclass(frozen=True)
class CancelRequest:
    """Ask the venue to cancel an order."""

    client_order_id: ClientOrderId
    symbol: str
    reason: str


@dataclass(frozen=True)
class ModifyRequest:
    """Ask the venue to change an order; None leaves a field as it is."""

    client_order_id: ClientOrderId
    symbol: str
    quantity: Decimal | None = None
    price: Decimal | None = None
    stop_price: Decimal | None = None


Request = CancelRequest | ModifyRequest


def check_bracket(entry: Order, stop_loss: Order | None, take_profit: Order | None) -> list[Order]:
    """Return the children of a bracket, or raise InvalidOrder if they cannot protect `entry`.

    The children must close the entry: same symbol and quantity, other side; the stop a stop,
    stop-limit or trailing stop order, the target a limit order.
    """
    children = [c for c in (stop_loss, take_profit) if c is not None]
    if not children:
        raise InvalidOrder("a bracket needs a stop_loss or a take_profit")
    for child in children:
        if (
            child.symbol != entry.symbol
            or child.side is entry.side
            or child.quantity != entry.quantity
        ):
            raise InvalidOrder(
                f"bracket child {child.client_order_id} must close the entry: same symbol and quantity, other side"
            )
    if stop_loss is not None and stop_loss.order_type not in _STOP_TYPES:
        raise InvalidOrder(
            f"a bracket stop_loss must be a stop, stop_limit or trailing_stop order, not {stop_loss.order_type.value}"
        )
    if take_profit is not None and take_profit.order_type is not OrderType.LIMIT:
        raise InvalidOrder(
            f"a bracket take_profit must be a limit order, not {take_profit.order_type.value}"
        )
    return children


def link_bracket(entry: Order, stop_loss: Order | None, take_profit: Order | None) -> list[Order]:
    """Make `stop_loss` and `take_profit` children of `entry` and each other's OCO; return the children."""
    children = check_bracket(entry, stop_loss, take_profit)
    for child in children:
        child.parent_id = entry.client_order_id
        entry.children.append(child.client_order_id)
    if stop_loss is not None and take_profit is not None:
        link_oco(stop_loss, take_profit)
    return children


def link_oco(first: Order, second: Order) -> None:
    """Make two orders of one symbol cancel each other: the first to fill (even partly) wins."""
    if first.symbol != second.symbol:
        raise InvalidOrder(
            f"OCO orders must be for the same symbol, got {first.symbol} and {second.symbol}"
        )
    first.oco_id, second.oco_id = second.client_order_id, first.client_order_id


def modified_copy(
    order: Order, quantity: Decimal | None, price: Decimal | None, stop_price: Decimal | None
) -> Order:
    """Return `order` with the modification applied, or raise InvalidOrder; `order` is not changed.

    None keeps a field; the new quantity must exceed what has filled already.
    """
    new_qty = order.quantity if quantity is None else quantity
    if new_qty <= order.filled_qty:
        raise InvalidOrder(
            f"{order.client_order_id}: quantity {new_qty} must exceed the filled {order.filled_qty}"
        )
    # Rebuilding the record runs every field check of Order on the new values.
    return Order(
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=order.side,
        order_type=order.order_type,
        quantity=new_qty,
        price=order.price if price is None else price,
        stop_price=order.stop_price if stop_price is None else stop_price,
        trail_amount=order.trail_amount,
        trail_percent=order.trail_percent,
    )
