"""Tell backtrader order notifications as typed order events (OrderSubmitted ... OrderFilled).

Each order gets a `ClientOrderId` derived from the bot, the symbol, the bar it was created on
and its leg (`entry`, `sl`, `tp`, `exit`), so a replay of the same bars gives the same ids.
Fills are reported per notification: `last_*` is what filled since the previous one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import backtrader as bt

from strategy.risk_gate import bar_datetime
from trading.events import (
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
)
from trading.orders import ClientOrderId, OrderSide, OrderType

_TYPES = {bt.Order.Market: OrderType.MARKET, bt.Order.Limit: OrderType.LIMIT, bt.Order.Stop: OrderType.STOP,
          bt.Order.StopLimit: OrderType.STOP_LIMIT}


def _dec(x: float) -> Decimal:
    return Decimal(repr(float(x)))


def order_leg(order: bt.Order) -> str:
    """Name the role of a BaseStrategy order from its type: entry, sl, tp or exit."""
    if order.exectype == bt.Order.Stop:
        return "sl"
    if order.exectype == bt.Order.Limit:
        return "tp"
    return "exit" if order.info.get("reduce_only") else "entry"


class OrderEventPublisher:
    """Turn the notifications of one strategy's orders into events for `publish`."""

    def __init__(self, bot: str, publish: Callable[[Event], None]) -> None:
        self.bot = bot
        self.publish = publish
        self._ids: dict[int, ClientOrderId] = {}
        self._used: set[ClientOrderId] = set()
        self._filled: dict[int, tuple[float, float, float]] = {}  # ref -> (qty, notional, fees) reported

    def client_order_id(self, order: bt.Order) -> ClientOrderId:
        """Return the order's id; a second order of the same leg on one bar takes the next attempt."""
        cid = self._ids.get(order.ref)
        if cid is None:
            leg, symbol = order_leg(order), order.data._name
            created = bar_datetime(order.created.dt)
            attempt = 0
            cid = ClientOrderId.for_signal(self.bot, symbol, created, leg, attempt)
            while cid in self._used and attempt < 99:
                attempt += 1
                cid = ClientOrderId.for_signal(self.bot, symbol, created, leg, attempt)
            self._ids[order.ref] = cid
            self._used.add(cid)
        return cid

    def on_order(self, order: bt.Order, now: datetime) -> None:
        """Publish the event of this notification (`now`: the current bar's time)."""
        cid = self.client_order_id(order)
        symbol = order.data._name
        side = OrderSide.BUY if order.isbuy() else OrderSide.SELL
        size = abs(order.created.size)
        status = order.status
        base: dict[str, Any] = {"ts": now, "client_order_id": cid, "symbol": symbol}
        if status == order.Submitted:
            price = order.created.price
            stop = order.exectype == bt.Order.Stop
            self.publish(OrderSubmitted(
                **base, side=side, order_type=_TYPES.get(order.exectype, OrderType.MARKET), quantity=_dec(size),
                price=None if stop or price is None else _dec(price),
                stop_price=_dec(price) if stop and price is not None else None, tag=order_leg(order),
            ))
        elif status == order.Accepted:
            self.publish(OrderAccepted(**base, venue_order_id=str(order.ref)))
        elif status in (order.Partial, order.Completed):
            ex = order.executed
            qty, notional, fees = abs(ex.size), abs(ex.size) * ex.price, ex.comm
            q0, n0, f0 = self._filled.get(order.ref, (0.0, 0.0, 0.0))
            self._filled[order.ref] = (qty, notional, fees)
            last = qty - q0
            if last <= 0:
                return
            cls = OrderFilled if status == order.Completed else OrderPartiallyFilled
            self.publish(cls(
                **base, side=side, last_qty=_dec(last), last_price=_dec((notional - n0) / last), fee=_dec(fees - f0),
                filled_qty=_dec(qty), remaining_qty=_dec(max(size - qty, 0.0)), avg_price=_dec(ex.price),
            ))
        elif status == order.Canceled:
            self.publish(OrderCancelled(**base, filled_qty=_dec(abs(order.executed.size))))
        elif status in (order.Margin, order.Rejected):
            reason = order.info.get("reject_reason") or order.getstatusname().upper()
            self.publish(OrderRejected(**base, reason=str(reason)))
        elif status == order.Expired:
            self.publish(OrderExpired(**base, filled_qty=_dec(abs(order.executed.size))))
