"""The backtrader venue of an OrderManager: a strategy's backtrader orders kept in step with it.

BaseStrategy creates its orders with backtrader and hands each one to `track` at once; the
OrderManager then holds it under a client order id derived from the bot, the symbol, the bar
it was created on and its leg (`entry`, `add`, `sl`, `ptp`, `tp`, `exit`), so a replay of
the same bars gives the same ids. From there:

* every backtrader notification becomes the OrderManager fact (`on_notification`): accepted,
  a fill with what this notification added (quantity, average price, commission, and the
  `FillDetails` the broker put on the notification: fee currency, bid and ask), cancelled,
  rejected, expired. The OrderManager publishes the events; its fills feed the
  PositionManager (`feed`).
* the strategy's cancels and amends go through the OrderManager (`cancel`, `amend`); its
  `CancelRequest` / `ModifyRequest` come back here and are carried out on the broker
  (`SimBroker.modify` for amends), an amend confirmed at once (`OrderModified`) as a venue
  acknowledges it.
* with `TradeLabels` between the PositionManager and the bus, a `TradeClosed` carries the
  exit reason of the order whose fill flattened the position and the trade's entry tag.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import backtrader as bt

from strategy.risk_gate import bar_datetime, dec
from trading.events import Event, OrderFill, TradeClosed
from trading.order_links import CancelRequest, ModifyRequest, Request
from trading.order_manager import OrderManager
from trading.orders import ClientOrderId, Order, OrderSide, OrderStatus, OrderType
from trading.positions import PositionManager

DUST = 1e-9  # relative: what a float position may keep of a fill that closed it

_TYPES = {bt.Order.Market: OrderType.MARKET, bt.Order.Limit: OrderType.LIMIT, bt.Order.Stop: OrderType.STOP}


#: The attribute of a backtrader order notification that holds the `FillDetails` of the
#: execution it reports; brokers set it on the clone they notify (absent: nothing known).
FILL_DETAILS = "atf_fill_details"


@dataclass(frozen=True, slots=True)
class FillDetails:
    """What a broker knows of one execution beyond backtrader's price, size and commission.

    `fee_currency`: the currency of the commission; `bid`, `ask`: the venue's quote when the
    fill was seen; `trade_id`: the venue's id of the execution (a ccxt trade id, IB's execId),
    which the audit trail stores as `fills.venue_trade_id` and uses to record a fill once.
    None: not known (never made up).
    """

    fee_currency: str | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    trade_id: str | None = None


def attach_fill_details(notification: Any, details: FillDetails) -> None:
    """Put `details` on a notification (the clone a broker queued, not the live order)."""
    setattr(notification, FILL_DETAILS, details)


@dataclass(frozen=True, slots=True)
class Fill:
    """What one notification of an order added: quantity, average price, commission."""

    quantity: float
    price: float
    fee: float


class TradeLabels:
    """Publish the PositionManager's events, a TradeClosed with the labels of the closing order.

    `BacktraderOrders` names the backtrader order whose fill it is applying (`order`);
    `labeller(order)` (set by the strategy) returns its exit reason and the trade's entry tag.
    They are looked up only when that fill closes a position.
    """

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self.labeller: Callable[[bt.Order], tuple[str, str]] | None = None
        self.order: bt.Order | None = None

    def publish(self, event: Event) -> None:
        if isinstance(event, TradeClosed) and self.order is not None and self.labeller is not None:
            reason, tag = self.labeller(self.order)
            event = dataclasses.replace(event, exit_reason=reason or event.exit_reason,
                                        entry_tag=tag or event.entry_tag)
        self.bus.publish(event)


class BacktraderOrders:
    """Keep `manager` in step with the orders of one strategy on the broker `broker()` returns."""

    def __init__(self, bot: str, manager: OrderManager, broker: Callable[[], Any]) -> None:
        self.bot = bot
        self.manager = manager
        self._broker = broker
        self._bt: dict[ClientOrderId, bt.Order] = {}
        self._ids: dict[int, ClientOrderId] = {}  # backtrader ref -> client order id
        self._reported: dict[int, float] = {}  # ref -> quantity already told as fills
        self._cancel_reason: dict[ClientOrderId, str] = {}
        self._confirmed = False
        self._position_after: float | None = None  # broker position after the fill being told
        self.labels: TradeLabels | None = None  # set by a strategy that labels its closed trades
        manager.add_request_callback(self._carry_out)

    def feed(self, positions: PositionManager) -> None:
        """Apply every fill of the manager to `positions`, in the broker's own arithmetic.

        The broker keeps its position in floats; fills told as Decimals of float quantities
        do not add up to it exactly (0.1 + 0.2). Each fill is therefore applied as the
        change from the position held to the broker's position after the fill, so the
        PositionManager holds what the broker holds and goes flat when it does. A broker
        position within `DUST` of the fill's size after it is float residue: flat.
        """

        def on_fill(order: Order, fill: OrderFill) -> None:
            after = self._position_after
            if after is not None and abs(after) <= DUST * float(fill.last_qty):
                after = 0.0
            held = positions.position(fill.symbol).quantity
            qty = fill.last_qty if after is None else abs(dec(after) - held)
            if qty <= 0:
                return
            labels = self.labels
            if labels is not None:
                labels.order = self._bt.get(fill.client_order_id)
            try:
                positions.apply_fill(fill.symbol, fill.side, qty, fill.last_price, fill.fee, ts=fill.ts,
                                     order_id=str(fill.client_order_id))
            finally:
                if labels is not None:
                    labels.order = None

        self.manager.add_fill_callback(on_fill)

    # ------------------------------------------------------------------ orders

    def track(self, order: bt.Order, leg: str, *, parent: ClientOrderId | None = None) -> Order:
        """Describe a new backtrader order as an Order (not yet submitted to the manager).

        A second order of the same leg and symbol on one bar takes the next attempt number.
        The id is also written into ``order.info['client_order_id']``: a live broker sends the
        order under it (the venue, the OrderManager and the database then name it the same).
        """
        symbol = order.data._name
        created = bar_datetime(order.created.dt)
        attempt, cid = 0, ClientOrderId.for_signal(self.bot, symbol, created, leg, 0)
        while cid in self._bt or cid in self.manager:
            attempt += 1
            cid = ClientOrderId.for_signal(self.bot, symbol, created, leg, attempt)
        kind = _TYPES.get(order.exectype)
        if kind is None:
            raise ValueError(f"{symbol} {leg}: backtrader order type {order.getordername()} is not tracked")
        price = dec(order.created.price)
        self._bt[cid], self._ids[order.ref] = order, cid
        order.addinfo(client_order_id=cid)
        return Order(
            client_order_id=cid,
            symbol=symbol,
            side=OrderSide.BUY if order.isbuy() else OrderSide.SELL,
            order_type=kind,
            quantity=dec(abs(order.created.size)),
            price=price if kind is OrderType.LIMIT else None,
            stop_price=price if kind is OrderType.STOP else None,
            parent_id=parent,
            tag=leg,
        )

    def adopt(self, order: bt.Order, cid: ClientOrderId) -> None:
        """Hold a backtrader order for `cid`, an order the manager already has (a restart adopts it)."""
        self._bt[cid], self._ids[order.ref] = order, cid
        self._reported[order.ref] = abs(order.executed.size)
        order.addinfo(client_order_id=cid)

    def id_of(self, order: bt.Order) -> ClientOrderId | None:
        return self._ids.get(order.ref)

    def order_of(self, order: bt.Order) -> Order | None:
        """Return the manager's record of a backtrader order (None if it was never tracked)."""
        cid = self._ids.get(order.ref)
        return None if cid is None else self.manager.get(cid)

    def backtrader_order(self, cid: ClientOrderId) -> bt.Order | None:
        return self._bt.get(cid)

    def by_ref(self, ref: int) -> bt.Order | None:
        cid = self._ids.get(ref)
        return None if cid is None else self._bt.get(cid)

    def cancel(self, order: bt.Order, reason: str) -> None:
        """Ask the manager to cancel a working order; nothing if it is done or already being cancelled."""
        rec = self.order_of(order)
        if rec is not None and rec.is_open and rec.status is not OrderStatus.PENDING_CANCEL:
            self.manager.request_cancel(rec.client_order_id, reason)

    def amend(self, order: bt.Order, *, price: float | None = None, quantity: float | None = None) -> bool:
        """Move the price (limit or stop trigger) and/or the quantity of a working order in place.

        Return True when the venue confirmed it (or nothing had to change), False when the
        order can no longer be amended: the caller then cancels and sends a new one.
        """
        rec = self.order_of(order)
        if rec is None or rec.status not in (OrderStatus.NEW, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED):
            return False
        change: dict[str, Decimal] = {}
        if price is not None:
            key = "stop_price" if rec.order_type is OrderType.STOP else "price"
            if getattr(rec, key) != dec(price):
                change[key] = dec(price)
        if quantity is not None and rec.quantity != dec(quantity):
            if dec(quantity) <= rec.filled_qty:
                return False
            change["quantity"] = dec(quantity)
        if not change:
            return True
        self._confirmed = False
        self.manager.request_modify(rec.client_order_id, **change)
        return self._confirmed

    # ------------------------------------------------------------------ venue facts

    def on_notification(self, order: bt.Order, ts: datetime) -> Fill | None:
        """Tell the manager what this notification says; return the fill it reports, if any."""
        cid = self._ids.get(order.ref)
        if cid is None:
            return None
        rec = self.manager.get(cid)
        status = order.status
        if status == bt.Order.Accepted:
            if rec.status is OrderStatus.NEW:  # not if a cancel was asked for meanwhile
                self.manager.on_accepted(cid, str(order.ref), ts=ts)
        elif status in (bt.Order.Partial, bt.Order.Completed):
            return self._fill(order, rec, ts)
        elif not rec.is_open:
            pass  # already settled (e.g. a sibling the manager cancelled first)
        elif status == bt.Order.Canceled:
            self.manager.on_cancelled(cid, self._cancel_reason.pop(cid, "") or self._venue_reason(order), ts=ts)
        elif status in (bt.Order.Margin, bt.Order.Rejected):
            reason = str(order.info.get("reject_reason") or order.getstatusname().upper())
            if rec.status is OrderStatus.NEW:
                self.manager.on_rejected(cid, reason, ts=ts)
            else:  # refused at the fill (cash), after the venue had accepted it
                self.manager.on_cancelled(cid, reason, ts=ts)
        elif status == bt.Order.Expired:
            self.manager.on_expired(cid, ts=ts)
        return None

    def _fill(self, order: bt.Order, rec: Order, ts: datetime) -> Fill | None:
        ex = order.executed
        total = abs(ex.size)
        before = self._reported.get(order.ref, 0.0)
        qty = total - before
        if qty <= 0:
            return None
        self._reported[order.ref] = total
        if before == 0:
            price, fee = ex.price, ex.comm
        else:  # the execution bits since the previous notification
            bits = list(ex.iterpending())
            price = sum(abs(b.size) * b.price for b in bits) / sum(abs(b.size) for b in bits)
            fee = sum(b.comm for b in bits)
        fill = Fill(qty, price, max(fee, 0.0))
        done = order.status == bt.Order.Completed
        if done and dec(total) != rec.quantity:
            # A reduce-only order completes at the position it could close: the venue cut it.
            self.manager.on_modified(rec.client_order_id, quantity=dec(total), ts=ts)
        last = rec.remaining if done else dec(total) - rec.filled_qty
        self._position_after = ex.psize
        details = getattr(order, FILL_DETAILS, None) or FillDetails()
        try:
            self.manager.on_fill(rec.client_order_id, last, dec(price), dec(fill.fee), ts=ts,
                                 trade_id=details.trade_id, fee_currency=details.fee_currency,
                                 bid=details.bid, ask=details.ask)
        finally:
            self._position_after = None
        return fill

    @staticmethod
    def _venue_reason(order: bt.Order) -> str:
        # Cancels nobody asked for: a reduce-only order with nothing left to reduce, or the
        # broker's own OCO/bracket handling.
        return "REDUCE_ONLY" if order.info.get("reduce_only") else "VENUE"

    # ------------------------------------------------------------------ requests

    def _carry_out(self, request: Request) -> None:
        order = self._bt.get(request.client_order_id)
        if order is None:
            return
        if isinstance(request, CancelRequest):
            self._cancel_reason.setdefault(request.client_order_id, request.reason)
            if order.alive():
                self._broker().cancel(order)
            return
        if self._apply(order, request):
            self._confirmed = True
            self.manager.on_modified(
                request.client_order_id, quantity=request.quantity, price=request.price,
                stop_price=request.stop_price,
            )

    def _apply(self, order: bt.Order, request: ModifyRequest) -> bool:
        """Amend the backtrader order in place through the broker; False when it refuses.

        The broker refuses an order it no longer holds, and a size at or below what has
        executed already (fills the manager may not have been told yet).
        """
        new_price = request.stop_price if order.exectype == bt.Order.Stop else request.price
        return bool(self._broker().modify(
            order,
            price=float(new_price) if new_price is not None else None,
            size=float(request.quantity) if request.quantity is not None else None,
        ))
