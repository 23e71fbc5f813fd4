"""How BaseStrategy places, amends and cancels its orders (a mixin of BaseStrategy).

Every order goes to the broker as a backtrader order and, at once, to the OrderManager
through `BacktraderOrders` (the OrderManager is the record; the broker executes):

* an entry goes out as a bracket: the market entry (leg `entry`) with its reduce-only stop
  (`sl`) and target (`tp`) as children that cancel each other, plus the partial target
  (`ptp`) linked to the entry. A scale-in add is leg `add`, linked to the trade's entry.
* moving a level, or resizing the legs to the position (after a partial fill, or to cover an
  add), amends the working orders in place: `OrderModified`, same client order id, same
  place in the queue.
* when a leg is gone (its OCO sibling partly filled) or the set of legs changes, the legs
  left are cancelled (reason `REPLACED`) and a new set is sent: new ids, the same `parent_id`
  (the trade's entry) and tags, so the stream links the replacement to what it replaces.

A cancel is a request: on a live venue the order can fill before the venue confirms it. A
cancelled leg is therefore kept in `Book.retired` (its exit reason) until the venue reports
it done, and a fill of it is booked as an exit by its leg tag (`_on_retired_fill`): the
trade is closed (or reduced) for that leg's reason, the orders that replaced it are
cancelled once the position is flat, and no further exit is sent.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import backtrader as bt

from strategy.mixins.base import ExitPlan, OpenTrade, Side
from trading.orders import Order, OrderSide

if TYPE_CHECKING:
    from strategy.book import Book
    from trading.bt_orders import BacktraderOrders, Fill
    from trading.order_manager import OrderManager
    from trading.orders import ClientOrderId

REPLACED = "REPLACED"
EXIT_LEGS = ("sl", "tp", "ptp", "exit")
# The reason a fill of an exit leg is booked with when the trade no longer says (no trade open).
LEG_REASONS = {"sl": "stop_loss", "tp": "take_profit", "ptp": "partial_take_profit", "exit": "exit"}


log = logging.getLogger(__name__)


def order_side(side: Side) -> OrderSide:
    """Return the order side that opens or adds to a position of `side`."""
    return OrderSide.BUY if side is Side.LONG else OrderSide.SELL


def _leg_reason(trade: OpenTrade | None, leg: str) -> str:
    """Return the exit reason a fill of the trade's `leg` (sl, tp, ptp) closes with."""
    if trade is None:
        return LEG_REASONS[leg]
    return {"sl": trade.stop_reason, "tp": trade.take_profit_reason, "ptp": trade.partial_reason}[leg]


class OrderFlow:
    """Order placement for BaseStrategy: brackets, legs, amends, cancels, scale-in adds."""

    # Set by BaseStrategy.__init__; declared for readers and type checkers.
    order_manager: OrderManager
    _venue: BacktraderOrders
    _trade_id: dict[str, ClientOrderId]
    _can_amend: bool
    broker: Any
    buy: Any
    sell: Any
    _refuse: Callable[[str], None]
    _on_exit_fill: Callable[..., None]
    _on_orphan_fill: Callable[[Book, bt.Order, Fill], None]

    def _send_bracket(self, book: Book, trade: OpenTrade) -> None:
        """Send the market entry and its reduce-only exits (live from the fill bar on).

        The exits queue behind the entry, so on the bar the entry fills they are tried
        against the rest of that bar. Reduce-only means none can open a position if the
        entry fails.
        """
        send = self.buy if trade.side is Side.LONG else self.sell
        book.entry_ordered, book.entry_filled = trade.quantity, 0.0
        order = send(data=book.data, size=trade.quantity)
        book.entry_ref = order.ref
        entry = self._venue.track(order, "entry")
        self._trade_id[book.symbol] = entry.client_order_id
        self._place_exits(book, trade, with_partial=True, entry=entry)

    def _send_add(self, book: Book, trade: OpenTrade, quantity: float) -> None:
        """Add `quantity` at the next open and resize the stop and target to the whole position."""
        send = self.buy if trade.side is Side.LONG else self.sell
        order = send(data=book.data, size=quantity)
        book.entry_ref, book.entry_ordered, book.entry_filled = order.ref, quantity, 0.0
        self.order_manager.submit(self._venue.track(order, "add", parent=self._trade_id.get(book.symbol)))
        self._resize_exits(book)

    def _cover(self, book: Book, trade: OpenTrade) -> float:
        """Return the quantity the stop and target must cover: what is held plus what may still fill."""
        q = trade.quantity
        if trade.is_filled and book.entry_ref is not None:
            # An entry or add is still working: reduce-only keeps each exit to what is held.
            q += book.entry_ordered - book.entry_filled
        return q

    def _place_exits(self, book: Book, trade: OpenTrade, *, with_partial: bool, entry: Order | None = None) -> None:
        d, q = book.data, self._cover(book, trade)
        close = self.sell if trade.side is Side.LONG else self.buy
        venue, parent = self._venue, self._trade_id.get(book.symbol)
        stop = partial = target = None
        if trade.stop is not None:
            stop = close(data=d, size=q, exectype=bt.Order.Stop, price=trade.stop, reduce_only=True)
        book.stop_order = stop
        if with_partial and trade.partial_target is not None and not trade.partial_done:
            part = self._partial_quantity(trade)
            if part > 0:
                partial = close(data=d, size=part, exectype=bt.Order.Limit, price=trade.partial_target, reduce_only=True)
                book.partial_order = partial
        if trade.take_profit is not None:
            target = close(data=d, size=q, exectype=bt.Order.Limit, price=trade.take_profit, oco=stop, reduce_only=True)
        book.tp_order = target
        sl = venue.track(stop, "sl", parent=parent) if stop is not None else None
        tp = venue.track(target, "tp", parent=parent) if target is not None else None
        om = self.order_manager
        if entry is not None:
            if sl is not None or tp is not None:
                om.submit_bracket(entry, sl, tp)
            else:
                om.submit(entry)
        elif sl is not None and tp is not None:
            om.submit_oco(sl, tp)
        else:
            for leg in (sl, tp):
                if leg is not None:
                    om.submit(leg)
        if partial is not None:
            om.submit(venue.track(partial, "ptp", parent=parent))

    def _partial_quantity(self, trade: OpenTrade) -> float:
        qty = trade.quantity * trade.partial_fraction
        lot = getattr(self.spec.sizing, "lot_size", None)  # type: ignore[attr-defined]
        if lot:
            qty = math.floor(qty / lot + 1e-9) * lot
        return qty if 0 < qty < trade.quantity else 0.0

    def _cancel_protection(self, book: Book, *, with_partial: bool = False, reason: str = REPLACED) -> None:
        """Cancel the resting legs; each stays in `book.retired` until the venue reports it done."""
        trade = book.trade
        legs = [(book.stop_order, "sl"), (book.tp_order, "tp")]
        if with_partial:
            legs.append((book.partial_order, "ptp"))
        # Clear the references first so the Canceled notifications are recognised as ours.
        book.stop_order = book.tp_order = None
        if with_partial:
            book.partial_order = None
        for order, leg in legs:
            if order is not None:
                self._retire(book, order, _leg_reason(trade, leg), reason)

    def _retire(self, book: Book, order: bt.Order, exit_reason: str, reason: str) -> None:
        """Ask the venue to cancel an exit order; a fill that beats the cancel books `exit_reason`."""
        if order.alive():
            book.retired[order.ref] = exit_reason
        self._venue.cancel(order, reason)

    def _cancel_exit(self, book: Book, reason: str = "POSITION_CLOSED") -> None:
        """Cancel the market exit still working (another leg closed the position first)."""
        order = self._venue.by_ref(book.exit_ref) if book.exit_ref is not None else None
        book.exit_ref = None
        if order is not None:
            self._retire(book, order, book.exit_reason or "exit", reason)

    def _on_retired_fill(self, book: Book, order: bt.Order, leg: str, done: bool, fill: Fill) -> None:
        """Book a fill of an exit leg whose cancel lost the race with it (or any exit leg no longer current).

        It closes (part of) the trade for the reason the leg had when it was cancelled. A
        fill with no trade of ours to reduce opened a position (a venue without reduce-only):
        it is closed at the next open as an orphan.
        """
        reason = book.retired.get(order.ref) or LEG_REASONS[leg]
        if done:
            book.retired.pop(order.ref, None)
        trade = book.trade
        if trade is None or not trade.is_filled or order.isbuy() != (trade.side is Side.SHORT):
            if trade is None:
                self._on_orphan_fill(book, order, fill)
            else:  # it adds to the open trade or races its entry: nothing safe to do but say so
                log.error("%s: fill of %s leg %s does not reduce the open trade", book.symbol, leg, order.ref)
                self._refuse("UNMATCHED_EXIT_FILL")
            return
        if leg == "ptp" and done and not trade.partial_done:
            trade.partial_done = True
            if book.partial_order is not None:  # the partial target that replaced it
                partial, book.partial_order = book.partial_order, None
                self._retire(book, partial, trade.partial_reason, "PARTIAL_DONE")
        self._on_exit_fill(book, reason, done, fill, ref=order.ref)

    def _replace_protection(self, book: Book, plan: ExitPlan) -> None:
        """Move the stop and/or target to the plan's levels: in place when the legs stay the same."""
        trade = book.trade
        assert trade is not None
        same_legs = (plan.stop is None) == (book.stop_order is None) and (plan.take_profit is None) == (
            book.tp_order is None
        )
        amended = same_legs and self._can_amend
        if amended:
            for order, price in ((book.stop_order, plan.stop), (book.tp_order, plan.take_profit)):
                if order is not None and order.created.price != price and not self._venue.amend(order, price=price):
                    amended = False
        if not amended:
            # The legs go with the reasons of their levels (a fill before the cancel books those).
            self._cancel_protection(book, with_partial=True)
        trade.stop, trade.stop_reason = plan.stop, plan.stop_reason
        trade.take_profit, trade.take_profit_reason = plan.take_profit, plan.take_profit_reason
        if not amended:
            # Re-send every leg so the queue keeps its order: stop, partial target, target.
            self._place_exits(book, trade, with_partial=True)

    def _resize_exits(self, book: Book) -> None:
        """Fit the legs to the position (and to an entry or add still working) at the trade's levels.

        Amend in place while every leg the trade needs is working and untouched; otherwise
        (a leg filled in part, was cancelled by its sibling, or is missing) send a new set.
        """
        trade = book.trade
        assert trade is not None
        q = self._cover(book, trade)
        legs = ((book.stop_order, trade.stop), (book.tp_order, trade.take_profit))
        part = self._partial_quantity(trade) if trade.partial_target is not None and not trade.partial_done else 0.0
        partial = book.partial_order

        def untouched(order: bt.Order | None) -> bool:
            return order is None or (order.alive() and not order.executed.size)

        intact = (
            self._can_amend
            and all((order is None) == (level is None) and untouched(order) for order, level in legs)
            and untouched(partial)
            and (partial is not None or part == 0)
        )
        if intact:
            for order, level in legs:
                if order is not None and not self._venue.amend(order, price=level, quantity=q):
                    intact = False
            if partial is not None and part > 0:
                intact = intact and self._venue.amend(partial, quantity=part)
            elif partial is not None:
                book.partial_order = None
                self._retire(book, partial, trade.partial_reason, "RESIZED")  # too small after the resize
        if not intact:
            self._cancel_protection(book, with_partial=True)
            self._place_exits(book, trade, with_partial=True)

    def _exit_at_market(self, book: Book, reason: str) -> None:
        trade = book.trade
        assert trade is not None
        self._cancel_protection(book, with_partial=True, reason="EXIT")
        self._cancel_entry_rest(book)
        close = self.sell if trade.side is Side.LONG else self.buy
        order = close(data=book.data, size=trade.quantity, reduce_only=True)
        book.exit_ref, book.exit_reason = order.ref, reason
        self.order_manager.submit(self._venue.track(order, "exit", parent=self._trade_id.get(book.symbol)))

    def _cancel_entry_rest(self, book: Book, reason: str = "EXIT") -> None:
        """Cancel what is left of a partly filled entry or add: the trade is being closed."""
        if book.entry_ref is None:
            return
        ref, book.entry_ref = book.entry_ref, None  # its Canceled notice is then not a refusal
        order = self._venue.by_ref(ref)
        if order is not None and order.alive():
            self._venue.cancel(order, reason)

    def _drain_notifications(self) -> None:
        """Handle the broker's notifications not delivered yet (cancels sent during the last bar).

        backtrader delivers a bar's notifications before the next bar; at the end of a run
        there is no next bar, and without this the OrderManager would keep those orders open.
        """
        broker = self.broker
        while (order := broker.get_notification()) is not None:
            if order.owner is self:
                self.notify_order(order)  # type: ignore[attr-defined]
