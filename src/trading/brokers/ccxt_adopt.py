"""An earlier run's position and protective orders, taken over by the ccxt broker at a restart.

Each adopted leg becomes a backtrader order in the Accepted state that `CcxtBroker` knows by
its client order id, and an order `CcxtExecution` tracks as working at the venue (`adopt`):
nothing is sent, the next poll reads it like any other working order. The broker's position
(and, on spot, the execution's) starts at the adopted one, so the fills that close it and the
reduce-only replacements the strategy sends are sized against it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import backtrader as bt

from trading.orders import ClientOrderId, OrderSide, OrderType

if TYPE_CHECKING:
    from trading.brokers.ccxt_broker import CcxtBroker
    from trading.live_recovery import AdoptedLeg
    from trading.positions import Position


def adopt_leg(broker: CcxtBroker, owner: Any, data: Any, leg: AdoptedLeg) -> bt.Order:
    """Return the backtrader order of an adopted stop (stop) or target (limit), already accepted."""
    s = leg.stored
    cls = bt.SellOrder if s.side is OrderSide.SELL else bt.BuyOrder
    stop = s.order_type is OrderType.STOP
    price = s.stop_price if stop else s.price
    if s.order_type not in (OrderType.STOP, OrderType.LIMIT) or price is None:
        raise ValueError(f"{s.client_order_id}: a {s.order_type.value} order is not adopted")
    order = cls(owner=owner, data=data, size=float(s.quantity), price=float(price),
                exectype=bt.Order.Stop if stop else bt.Order.Limit)
    order.addcomminfo(broker.getcommissioninfo(data))
    order.addinfo(client_order_id=s.client_order_id, reduce_only=True, leg=s.tag or "")
    order.submit(broker)
    order.accept(broker)
    broker._by_cid[ClientOrderId(s.client_order_id)] = order  # the broker's venue facts find it here
    broker.execution.adopt(s.to_order(), leg.venue)
    return order


def adopt_position(broker: CcxtBroker, data: Any, position: Position) -> None:
    """Start the broker's position of `data` (and on spot the execution's) at the adopted one."""
    price = float(position.avg_entry_price) if position.avg_entry_price is not None else 0.0
    broker.positions[data] = bt.Position(float(position.quantity), price)
    execution = broker.execution
    if not execution.venue.settings.futures:  # futures: read from the venue at connect
        execution.positions[execution.venue.symbol(data._name)] = position.quantity
