"""OrderManager: the local order book, its lifecycle, brackets, OCO and trailing stops.

Two kinds of calls: intents of the bot (`submit`, `submit_bracket`, `submit_oco`,
`request_cancel`, `request_modify`, `update_trailing_stop`) and facts from the venue
(`on_accepted`, `on_fill`, `on_cancelled`, `on_rejected`, `on_expired`, `on_modified`).
Facts move an order along `orders.TRANSITIONS` or raise `IllegalTransition` (the order is
left unchanged). Everything the manager wants the venue to do (cancel an OCO sibling, the
children of a dead parent, a requested modification) goes out as a `CancelRequest` /
`ModifyRequest` to the request callbacks; the venue's answer comes back as a fact. Every
change is published on the bus and passed to the update callbacks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from trading.bus import EventBus
from trading.events import (
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderExpired,
    OrderFill,
    OrderFilled,
    OrderModified,
    OrderPartiallyFilled,
    OrderPendingCancel,
    OrderRejected,
    OrderSubmitted,
)
from trading.order_links import (
    CancelRequest,
    ModifyRequest,
    Request,
    check_bracket,
    link_bracket,
    link_oco,
    modified_copy,
)
from trading.orders import (
    TRANSITIONS,
    ClientOrderId,
    DuplicateClientOrderId,
    IllegalTransition,
    InvalidOrder,
    Order,
    OrderStatus,
    OrderType,
    UnknownOrder,
)

__all__ = ["CancelRequest", "ModifyRequest", "OrderManager", "Request", "utc_now"]

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


class OrderManager:
    """Own every order of one bot; see the module docstring."""

    def __init__(
        self, bus: EventBus | None = None, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self._bus = bus
        self.clock = clock  # the bot sets its bar clock here
        self._orders: dict[ClientOrderId, Order] = {}
        self._fill_callbacks: list[Callable[[Order, OrderFill], None]] = []
        self._update_callbacks: list[Callable[[Order, OrderEvent], None]] = []
        self._request_callbacks: list[Callable[[Request], None]] = []
        self._callback_errors: list[Exception] = []

    # ------------------------------------------------------------------ callbacks

    def add_fill_callback(self, callback: Callable[[Order, OrderFill], None]) -> None:
        """Call `callback(order, fill_event)` after every partial or complete fill."""
        self._fill_callbacks.append(callback)

    def add_update_callback(self, callback: Callable[[Order, OrderEvent], None]) -> None:
        """Call `callback(order, event)` after every change of any order."""
        self._update_callbacks.append(callback)

    def add_request_callback(self, callback: Callable[[Request], None]) -> None:
        """Call `callback(request)` for every cancel or modification the venue must carry out."""
        self._request_callbacks.append(callback)

    # ------------------------------------------------------------------ queries

    def get(self, client_order_id: ClientOrderId) -> Order:
        try:
            return self._orders[client_order_id]
        except KeyError:
            raise UnknownOrder(str(client_order_id)) from None

    def __contains__(self, client_order_id: object) -> bool:
        return client_order_id in self._orders

    def orders(self) -> list[Order]:
        """Return every order in submission order."""
        return list(self._orders.values())

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Return the orders not yet in a terminal status, optionally of one symbol."""
        return [
            o for o in self._orders.values() if o.is_open and (symbol is None or o.symbol == symbol)
        ]

    def unacknowledged(self, older_than: timedelta) -> list[Order]:
        """Return NEW orders the venue has not acknowledged for longer than `older_than`."""
        now = self.clock()
        return [
            o
            for o in self._orders.values()
            if o.status is OrderStatus.NEW and o.age(now) > older_than
        ]

    # ------------------------------------------------------------------ intents

    def submit(self, order: Order) -> Order:
        """Register a new order (status NEW) and publish OrderSubmitted; refuse a known id."""
        self._register(order)
        self._finish()
        return order

    def submit_bracket(
        self, entry: Order, stop_loss: Order | None, take_profit: Order | None
    ) -> Order:
        """Submit an entry with a protective stop and/or target that cancel each other on a fill.

        The children must be on the other side of the entry, for the same symbol and quantity.
        When the entry dies unfilled the children are cancelled; when it dies partly filled
        they are resized to the filled quantity.
        """
        children = check_bracket(entry, stop_loss, take_profit)
        self._check_new([entry.client_order_id, *(c.client_order_id for c in children)])
        link_bracket(entry, stop_loss, take_profit)
        for order in (entry, *children):
            self._register(order)
        self._finish()
        return entry

    def submit_oco(self, first: Order, second: Order) -> tuple[Order, Order]:
        """Submit two orders of which the first to fill (even partly) cancels the other."""
        if first.symbol != second.symbol:
            raise InvalidOrder(
                f"OCO orders must be for the same symbol, got {first.symbol} and {second.symbol}"
            )
        self._check_new([first.client_order_id, second.client_order_id])
        link_oco(first, second)
        self._register(first)
        self._register(second)
        self._finish()
        return first, second

    def restore(self, order: Order) -> Order:
        """Hold an order an earlier run submitted, as it stands (a restart adopts it): no event."""
        self._check_new([order.client_order_id])
        self._orders[order.client_order_id] = order
        return order

    def request_cancel(self, client_order_id: ClientOrderId, reason: str = "") -> Order:
        """Mark an open order PENDING_CANCEL and ask the venue to cancel it (idempotent)."""
        order = self.get(client_order_id)
        self._request_cancel(order, reason)
        self._finish()
        return order

    def request_modify(
        self,
        client_order_id: ClientOrderId,
        *,
        quantity: Decimal | None = None,
        price: Decimal | None = None,
        stop_price: Decimal | None = None,
    ) -> ModifyRequest:
        """Validate a change of an open order and ask the venue for it (applied by `on_modified`)."""
        order = self.get(client_order_id)
        if order.status not in (
            OrderStatus.NEW,
            OrderStatus.ACCEPTED,
            OrderStatus.PARTIALLY_FILLED,
        ):
            raise IllegalTransition(
                f"{order.client_order_id}: cannot modify a {order.status.value} order"
            )
        modified_copy(order, quantity, price, stop_price)  # validates
        request = ModifyRequest(order.client_order_id, order.symbol, quantity, price, stop_price)
        self._send(request)
        self._finish()
        return request

    def update_trailing_stop(
        self, client_order_id: ClientOrderId, price: Decimal, ts: datetime | None = None
    ) -> Decimal | None:
        """Feed a new market price to a trailing stop; return its new trigger if it moved.

        The trigger only ever moves in the position's favour (up for a sell stop, down for a
        buy stop). The move is applied locally and published as OrderModified; an adapter that
        keeps the stop on the venue forwards it.
        """
        order = self.get(client_order_id)
        if order.order_type is not OrderType.TRAILING_STOP:
            raise InvalidOrder(f"{client_order_id} is not a trailing stop")
        if not order.is_open or order.status is OrderStatus.PENDING_CANCEL:
            return None
        better = max if order.side.sign < 0 else min
        order.best_price = price if order.best_price is None else better(order.best_price, price)
        new_stop = order.trail_stop_for(order.best_price)
        old = order.stop_price
        if old is not None and better(old, new_stop) == old:
            return None
        order.stop_price = new_stop
        self._emit(
            order,
            OrderModified(
                ts=self._ts(ts),
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                quantity=order.quantity,
                price=order.price,
                stop_price=new_stop,
            ),
        )
        self._finish()
        return new_stop

    # ------------------------------------------------------------------ venue facts

    def on_accepted(
        self,
        client_order_id: ClientOrderId,
        venue_order_id: str | None = None,
        ts: datetime | None = None,
    ) -> Order:
        order = self._move(client_order_id, OrderStatus.ACCEPTED)
        order.venue_order_id = venue_order_id or order.venue_order_id
        self._emit(
            order,
            OrderAccepted(
                ts=self._ts(ts),
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                venue_order_id=venue_order_id,
            ),
        )
        self._finish()
        return order

    def on_fill(
        self,
        client_order_id: ClientOrderId,
        quantity: Decimal,
        price: Decimal,
        fee: Decimal = Decimal(0),
        *,
        trade_id: str | None = None,
        ts: datetime | None = None,
        fee_currency: str | None = None,
        bid: Decimal | None = None,
        ask: Decimal | None = None,
    ) -> OrderFill:
        """Apply one execution; an execution larger than the remainder raises and changes nothing.

        `fee_currency`, `bid` and `ask` go on the fill event as they are (None: not known).
        """
        order = self.get(client_order_id)
        if not order.is_open:
            raise IllegalTransition(f"{client_order_id}: a {order.status.value} order cannot fill")
        if not (quantity > 0 and price > 0 and fee >= 0):
            raise InvalidOrder(
                f"{client_order_id}: fill needs quantity > 0, price > 0, fee >= 0; "
                f"got quantity {quantity}, price {price}, fee {fee}"
            )
        if quantity > order.remaining:
            raise IllegalTransition(
                f"{client_order_id}: fill of {quantity} exceeds the remaining {order.remaining}"
            )
        complete = quantity == order.remaining
        if complete:
            target = OrderStatus.FILLED
        elif order.status is OrderStatus.PENDING_CANCEL:
            target = OrderStatus.PENDING_CANCEL  # the cancel is still on its way
        else:
            target = OrderStatus.PARTIALLY_FILLED
        self._move(client_order_id, target)
        prior = order.filled_qty
        order.filled_qty = prior + quantity
        order.avg_fill_price = (
            (order.avg_fill_price or Decimal(0)) * prior + price * quantity
        ) / order.filled_qty
        order.fees += fee
        cls = OrderFilled if complete else OrderPartiallyFilled
        event = cls(
            ts=self._ts(ts),
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            last_qty=quantity,
            last_price=price,
            fee=fee,
            filled_qty=order.filled_qty,
            remaining_qty=order.remaining,
            avg_price=order.avg_fill_price,
            trade_id=trade_id,
            fee_currency=fee_currency,
            bid=bid,
            ask=ask,
        )
        self._emit(order, event)
        for callback in self._fill_callbacks:
            self._call(callback, order, event)
        if order.oco_id is not None:
            sibling = self._orders.get(order.oco_id)
            if sibling is not None and sibling.is_open:
                self._request_cancel(sibling, "OCO")
        self._finish()
        return event

    def on_cancelled(
        self, client_order_id: ClientOrderId, reason: str = "", ts: datetime | None = None
    ) -> Order:
        order = self._move(client_order_id, OrderStatus.CANCELLED)
        self._emit(
            order,
            OrderCancelled(
                ts=self._ts(ts),
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                reason=reason,
                filled_qty=order.filled_qty,
            ),
        )
        self._settle_children(order, "PARENT_CANCELLED")
        self._finish()
        return order

    def on_rejected(
        self, client_order_id: ClientOrderId, reason: str, ts: datetime | None = None
    ) -> Order:
        order = self._move(client_order_id, OrderStatus.REJECTED)
        self._emit(
            order,
            OrderRejected(
                ts=self._ts(ts),
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                reason=reason,
            ),
        )
        self._settle_children(order, "PARENT_REJECTED")
        self._finish()
        return order

    def on_expired(self, client_order_id: ClientOrderId, ts: datetime | None = None) -> Order:
        order = self._move(client_order_id, OrderStatus.EXPIRED)
        self._emit(
            order,
            OrderExpired(
                ts=self._ts(ts),
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                filled_qty=order.filled_qty,
            ),
        )
        self._settle_children(order, "PARENT_EXPIRED")
        self._finish()
        return order

    def on_modified(
        self,
        client_order_id: ClientOrderId,
        *,
        quantity: Decimal | None = None,
        price: Decimal | None = None,
        stop_price: Decimal | None = None,
        ts: datetime | None = None,
    ) -> Order:
        """Apply a change the venue confirmed; the status stays the same."""
        order = self.get(client_order_id)
        if not order.is_open:
            raise IllegalTransition(
                f"{client_order_id}: cannot modify a {order.status.value} order"
            )
        new = modified_copy(order, quantity, price, stop_price)
        order.quantity, order.price, order.stop_price = new.quantity, new.price, new.stop_price
        self._emit(
            order,
            OrderModified(
                ts=self._ts(ts),
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                quantity=order.quantity,
                price=order.price,
                stop_price=order.stop_price,
            ),
        )
        self._finish()
        return order

    # ------------------------------------------------------------------ internals

    def _ts(self, ts: datetime | None) -> datetime:
        return ts if ts is not None else self.clock()

    def _check_new(self, ids: list[ClientOrderId]) -> None:
        seen: set[ClientOrderId] = set()
        for coid in ids:
            if coid in self._orders or coid in seen:
                raise DuplicateClientOrderId(str(coid))
            seen.add(coid)

    def _register(self, order: Order) -> None:
        self._check_new([order.client_order_id])
        if order.status is not OrderStatus.NEW or order.filled_qty:
            raise InvalidOrder(
                f"{order.client_order_id}: only a NEW, unfilled order can be submitted"
            )
        now = self.clock()
        order.created_ts = order.updated_ts = now
        self._orders[order.client_order_id] = order
        self._emit(
            order,
            OrderSubmitted(
                ts=now,
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                side=order.side,
                order_type=order.order_type,
                quantity=order.quantity,
                price=order.price,
                stop_price=order.stop_price,
                parent_id=order.parent_id,
                oco_id=order.oco_id,
                tag=order.tag,
            ),
        )

    def _move(self, client_order_id: ClientOrderId, status: OrderStatus) -> Order:
        order = self.get(client_order_id)
        if status not in TRANSITIONS[order.status]:
            raise IllegalTransition(
                f"{client_order_id}: {order.status.value} -> {status.value} is not allowed"
            )
        order.status = status
        return order

    def _request_cancel(self, order: Order, reason: str) -> None:
        if order.status is OrderStatus.PENDING_CANCEL:
            return
        self._move(order.client_order_id, OrderStatus.PENDING_CANCEL)
        self._emit(
            order,
            OrderPendingCancel(
                ts=self.clock(),
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                reason=reason,
            ),
        )
        self._send(CancelRequest(order.client_order_id, order.symbol, reason))

    def _settle_children(self, parent: Order, reason: str) -> None:
        for child_id in parent.children:
            child = self._orders[child_id]
            if not child.is_open or child.status is OrderStatus.PENDING_CANCEL:
                continue
            if parent.filled_qty == 0:
                self._request_cancel(child, reason)
            elif child.quantity != parent.filled_qty and parent.filled_qty > child.filled_qty:
                # The position is smaller than planned: protect exactly what was bought.
                self._send(
                    ModifyRequest(child.client_order_id, child.symbol, quantity=parent.filled_qty)
                )

    def _emit(self, order: Order, event: OrderEvent) -> None:
        order.updated_ts = event.ts
        if self._bus is not None:
            self._bus.publish(event)
        for callback in self._update_callbacks:
            self._call(callback, order, event)

    def _send(self, request: Request) -> None:
        if not self._request_callbacks:
            log.warning("no request callback registered; %s not sent to the venue", request)
        for callback in self._request_callbacks:
            self._call(callback, request)

    def _call(self, callback: Callable[..., None], *args: object) -> None:
        # A failing callback must not stop the book from finishing its own bookkeeping.
        try:
            callback(*args)
        except Exception as exc:
            log.exception("order callback %r failed", callback)
            self._callback_errors.append(exc)

    def _finish(self) -> None:
        """Raise the first callback error of this call, now that the book is consistent."""
        if self._callback_errors:
            first, self._callback_errors = self._callback_errors[0], []
            raise first
