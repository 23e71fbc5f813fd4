"""What a ccxt venue did while the bot was down, as the events the bot would have told (docs/live.md).

`catch_up` looks up every order the database still has open by its client order id and
turns what the venue says into OrderManager facts, as `CcxtExecution._apply` does while the
bot runs: accepted, each fill with the venue's trade id, price, fee and time, then filled,
cancelled or expired. An OrderManager and a PositionManager rebuilt from the database make
the events, so a fill that flattens the position closes its round trip (`TradeClosed`, with
the exit reason of the filled leg's role), and the fill of one protective leg cancels its
sibling: a sibling still working at the venue is cancelled there now (the emulated bracket
rule). The events are handed to `reconcile_with_broker` as ``unrecorded``: it writes them and
checks the corrected database against the venue.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Engine

from trading.brokers.ccxt_orders import VenueOrder
from trading.events import Event, OrderFill, TradeClosed
from trading.order_links import CancelRequest, Request
from trading.order_manager import OrderManager
from trading.orders import ClientOrderId, Order, OrderStatus
from trading.persistence.recovery import StoredOrder, load_round_trip
from trading.persistence.round_trips import EXIT_REASONS
from trading.positions import Position, PositionManager

log = logging.getLogger(__name__)
ZERO = Decimal(0)


@dataclass
class CatchUp:
    """The events that bring the database up to the venue, and the venue's word on each order."""

    events: list[Event] = field(default_factory=list)
    venue_orders: dict[str, VenueOrder | None] = field(default_factory=dict)


class _Sink:
    """Collect the managers' events; a TradeClosed gets the exit reason of the order that closed it."""

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self.reason = ""

    def publish(self, event: Event) -> None:
        if isinstance(event, TradeClosed) and self.reason and not event.exit_reason:
            event = dataclasses.replace(event, exit_reason=self.reason)
        self.events.append(event)


def catch_up(engine: Engine, bot_instance_id: int, venue: Any, db_orders: Sequence[StoredOrder],
             db_positions: Sequence[Position]) -> CatchUp:
    """Return the events of what the venue did to the database's open orders since the last run."""
    out = CatchUp()
    sink = _Sink(out.events)
    orders, positions = OrderManager(sink), PositionManager(sink)  # type: ignore[arg-type]
    for p in db_positions:
        if p.trade_id is not None:
            positions.restore(load_round_trip(engine, bot_instance_id, p.trade_id).fills)

    def on_fill(order: Order, fill: OrderFill) -> None:
        positions.on_fill(order, fill)

    orders.add_fill_callback(on_fill)
    cancels: list[CancelRequest] = []

    def on_request(request: Request) -> None:
        if isinstance(request, CancelRequest):
            cancels.append(request)

    orders.add_request_callback(on_request)
    stored = {s.client_order_id: s for s in db_orders}
    for s in db_orders:
        orders.restore(s.to_order())
        out.venue_orders[s.client_order_id] = venue.lookup(venue.symbol(s.symbol), s.client_order_id)
    # Fills first: the fill of one protective leg explains why its sibling ended.
    first = sorted(db_orders, key=lambda s: not _filled_more(out.venue_orders[s.client_order_id], s))
    for s in first:
        vo = out.venue_orders[s.client_order_id]
        if vo is not None:
            sink.reason = EXIT_REASONS.get(s.role or "", "")
            _apply(orders, venue, s, vo)
            sink.reason = ""
    for request in cancels:  # siblings of legs that filled while the bot was down
        sibling = stored.get(str(request.client_order_id))
        vo = out.venue_orders.get(str(request.client_order_id))
        if sibling is None or vo is None or vo.status != "open":
            continue
        log.info("%s: its sibling filled while the bot was down; cancelling it at the venue", request.client_order_id)
        done = venue.cancel(venue.symbol(sibling.symbol), vo.venue_id)
        if done is not None:
            out.venue_orders[sibling.client_order_id] = done
            _apply(orders, venue, sibling, done, reason=request.reason)
    return out


def _filled_more(vo: VenueOrder | None, s: StoredOrder) -> bool:
    return vo is not None and vo.filled > s.filled_qty


def _apply(orders: OrderManager, venue: Any, s: StoredOrder, vo: VenueOrder, reason: str = "") -> None:
    """Tell `orders` what the venue did to one order that the database does not know yet."""
    cid = ClientOrderId(s.client_order_id)
    order = orders.get(cid)
    if not order.is_open:
        return
    if order.status is OrderStatus.NEW and vo.status != "rejected":
        orders.on_accepted(cid, vo.venue_id)
    if vo.status == "closed" and order.filled_qty < vo.filled < order.quantity:
        orders.on_modified(cid, quantity=vo.filled)  # the venue filled what it took (rounded to its step)
    if vo.filled > order.filled_qty:
        _report_fills(orders, venue, s, vo)
    if not order.is_open or vo.status == "open":
        return
    asked = order.status is OrderStatus.PENDING_CANCEL
    if vo.status == "canceled" or (vo.status == "expired" and asked):
        orders.on_cancelled(cid, reason or ("OCO" if asked and order.oco_id else "VENUE"))
    elif vo.status == "expired":
        orders.on_expired(cid)
    elif vo.status == "rejected":
        orders.on_rejected(cid, "VENUE_REJECTED")


def _report_fills(orders: OrderManager, venue: Any, s: StoredOrder, vo: VenueOrder) -> None:
    """Report the venue's executions of `s` after the quantity the database has (venue trade ids)."""
    cid = ClientOrderId(s.client_order_id)
    order = orders.get(cid)
    trades = list(vo.trades)
    if sum((t.amount for t in trades), ZERO) < vo.filled:
        trades = venue.trades(venue.symbol(s.symbol), vo.venue_id)
    known = s.filled_qty  # the earlier run told these (without the venue's trade ids)
    for trade in sorted(trades, key=lambda t: (t.ts, t.trade_id)):
        qty = trade.amount
        if known > 0:
            skip = min(known, qty)
            known -= skip
            qty -= skip
        qty = min(qty, order.remaining)
        if qty > 0 and order.is_open:
            orders.on_fill(cid, qty, trade.price, trade.fee, trade_id=trade.trade_id, ts=trade.ts,
                           fee_currency=trade.fee_currency)  # no bid/ask: today's quote is not the fill's
    rest = min(vo.filled - order.filled_qty, order.remaining)
    if rest > 0 and vo.status != "open" and vo.average:
        log.warning("%s: the venue's trade list lags; booking %s at its average %s", cid, rest, vo.average)
        orders.on_fill(cid, rest, vo.average, ZERO, ts=orders.clock())

