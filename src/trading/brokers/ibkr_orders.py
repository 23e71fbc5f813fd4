"""Orders for Interactive Brokers: what to place (`OrderTicket`), how (`to_ib_order`), what came back.

A ticket is one order as IB will hold it; its `orderRef` is our ClientOrderId, so a process
that restarts finds its orders at IB again. A bracket is the entry with `transmit=False`,
then its stop and target with `parentId` set to the entry and one ``ocaGroup`` (the first to
fill cancels the other, ``ocaType`` 1); only the last child is transmitted, which sends the
family as one unit.

IB's answers come back as venue facts (`Accepted`, `Filled`, `Cancelled`, `Rejected`,
`Modified`); `apply_fact` reports one into an OrderManager.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from trading.brokers.ibkr_config import require_ib_async
from trading.order_manager import OrderManager
from trading.orders import ClientOrderId, Order, OrderSide, OrderStatus, OrderType

log = logging.getLogger(__name__)

OCA_CANCEL_OTHERS = 1  # IB ocaType: cancel the other orders of the group (with overfill block)
_IB_TYPES = {
    OrderType.MARKET: "MKT",
    OrderType.LIMIT: "LMT",
    OrderType.STOP: "STP",
    OrderType.STOP_LIMIT: "STP LMT",
    OrderType.TRAILING_STOP: "TRAIL",
}


@dataclass(frozen=True)
class OrderTicket:
    """One order to place at IB."""

    cid: ClientOrderId
    symbol: str
    side: OrderSide
    order_type: OrderType
    quantity: Decimal
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_amount: Decimal | None = None
    trail_percent: Decimal | None = None  # a fraction, 0.02 = 2 %
    parent: ClientOrderId | None = None  # the bracket entry this order is a child of
    oca_group: str = ""
    transmit: bool = True
    tif: str = ""  # default: DAY for market orders, GTC otherwise

    @classmethod
    def from_order(cls, order: Order, **changes: Any) -> OrderTicket:
        ticket = cls(
            cid=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            order_type=order.order_type,
            quantity=order.quantity,
            limit_price=order.price,
            stop_price=order.stop_price,
            trail_amount=order.trail_amount,
            trail_percent=order.trail_percent,
        )
        return replace(ticket, **changes) if changes else ticket


def bracket_tickets(entry: Order, stop_loss: Order | None, take_profit: Order | None) -> list[OrderTicket]:
    """Return the tickets of a bracket: the entry, then its children, transmitted as one family."""
    children = [c for c in (stop_loss, take_profit) if c is not None]
    group = f"oca-{entry.client_order_id}" if len(children) > 1 else ""
    tickets = [OrderTicket.from_order(entry, transmit=not children)]
    for i, child in enumerate(children):
        last = i == len(children) - 1
        tickets.append(
            OrderTicket.from_order(child, parent=entry.client_order_id, oca_group=group, transmit=last)
        )
    return tickets


def oco_tickets(first: Order, second: Order) -> list[OrderTicket]:
    """Return two tickets in one OCA group: the first to fill cancels the other."""
    group = f"oca-{first.client_order_id}"
    return [OrderTicket.from_order(o, oca_group=group) for o in (first, second)]


def to_ib_order(ticket: OrderTicket, order_id: int, parent_order_id: int = 0, account: str = "") -> Any:
    """Build the ib_async Order of a ticket (orderRef = the client order id)."""
    ib = require_ib_async()
    kind = _IB_TYPES[ticket.order_type]
    order = ib.Order(
        orderId=order_id,
        action="BUY" if ticket.side is OrderSide.BUY else "SELL",
        totalQuantity=float(ticket.quantity),
        orderType=kind,
        orderRef=str(ticket.cid),
        transmit=ticket.transmit,
        parentId=parent_order_id,
        tif=ticket.tif or ("DAY" if ticket.order_type is OrderType.MARKET else "GTC"),
        account=account,
    )
    if ticket.limit_price is not None:
        order.lmtPrice = float(ticket.limit_price)
    if ticket.order_type is OrderType.TRAILING_STOP:
        if ticket.trail_amount is not None:
            order.auxPrice = float(ticket.trail_amount)
        else:
            order.trailingPercent = float(ticket.trail_percent or 0) * 100
        if ticket.stop_price is not None:
            order.trailStopPrice = float(ticket.stop_price)
    elif ticket.stop_price is not None:
        order.auxPrice = float(ticket.stop_price)
    if ticket.oca_group:
        order.ocaGroup = ticket.oca_group
        order.ocaType = OCA_CANCEL_OTHERS
    return order


# --------------------------------------------------------------------------- venue facts


@dataclass(frozen=True)
class Accepted:
    cid: ClientOrderId
    venue_order_id: str


@dataclass(frozen=True)
class Filled:
    cid: ClientOrderId
    quantity: Decimal
    price: Decimal
    fee: Decimal
    exec_id: str
    ts: datetime | None = None
    fee_currency: str | None = None  # of the commission report (None: no report)


@dataclass(frozen=True)
class Cancelled:
    cid: ClientOrderId
    reason: str


@dataclass(frozen=True)
class Rejected:
    cid: ClientOrderId
    reason: str


@dataclass(frozen=True)
class Modified:
    cid: ClientOrderId
    quantity: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None


VenueFact = Accepted | Filled | Cancelled | Rejected | Modified


def apply_fact(om: OrderManager, fact: VenueFact) -> None:
    """Report one venue fact into `om`; facts the order's status makes moot are skipped.

    An acknowledgement after a cancel was requested, or a cancel of an order already settled,
    carries no news. A rejection of an order the venue had accepted is reported as a cancel.
    """
    if fact.cid not in om:
        log.warning("IB reported %s for an order this OrderManager does not hold", type(fact).__name__)
        return
    order = om.get(fact.cid)
    if isinstance(fact, Accepted):
        if order.status is OrderStatus.NEW:
            om.on_accepted(fact.cid, fact.venue_order_id)
    elif isinstance(fact, Filled):
        om.on_fill(fact.cid, fact.quantity, fact.price, fact.fee, trade_id=fact.exec_id, ts=fact.ts,
                   fee_currency=fact.fee_currency)
    elif not order.is_open:
        return
    elif isinstance(fact, Cancelled):
        om.on_cancelled(fact.cid, fact.reason)
    elif isinstance(fact, Rejected):
        if order.status is OrderStatus.NEW:
            om.on_rejected(fact.cid, fact.reason)
        else:
            om.on_cancelled(fact.cid, fact.reason)
    elif isinstance(fact, Modified):
        om.on_modified(
            fact.cid, quantity=fact.quantity, price=fact.limit_price, stop_price=fact.stop_price
        )
