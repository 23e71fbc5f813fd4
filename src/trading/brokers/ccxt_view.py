"""The ccxt venue's account as reconciliation sees it (`trading.reconcile.BrokerView`).

`CcxtBrokerView(venue, symbols)` reads the venue, not the bot: its working orders (conditional
ones included) and, on futures, its positions, named by the bot's symbols. A venue order is
translated back into the atf order it stands for, so that it compares with the database's:

| venue order | atf order |
|---|---|
| LIMIT, LIMIT_MAKER (spot OCO target) | limit at its price |
| STOP_LOSS_LIMIT with the limit `stop_limit_offset` beyond the trigger (spot) | stop |
| STOP_LOSS_LIMIT (other limit), STOP (futures) | stop-limit |
| STOP_LOSS, STOP_MARKET | stop at its trigger |
| TAKE_PROFIT_MARKET (futures bracket target) | limit at its trigger |

Spot venues hold balances, not positions: `positions` is refused there (reconcile spot orders
with `open_orders`, and coins with the balances).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from trading.brokers.ccxt_orders import VenueOrder
from trading.exceptions import ATFError
from trading.orders import OrderSide, OrderStatus, OrderType
from trading.positions import Position


class NoVenuePositions(ATFError):
    """Positions asked of a spot venue, which holds balances only."""


@dataclass(frozen=True)
class VenueOrderState:
    """A working order on the venue in atf terms (a `trading.broker_state.OrderLike`)."""

    client_order_id: str
    symbol: str
    side: OrderSide
    order_type: OrderType
    quantity: Decimal
    price: Decimal | None
    stop_price: Decimal | None
    status: OrderStatus
    filled_qty: Decimal


def order_type(venue: Any, vo: VenueOrder) -> tuple[OrderType, Decimal | None, Decimal | None]:
    """The atf (type, price, stop price) a venue order stands for (see the module docstring)."""
    kind = vo.venue_type
    if kind in ("LIMIT", "LIMIT_MAKER", "TAKE_PROFIT"):
        return OrderType.LIMIT, vo.price, None
    if kind in ("TAKE_PROFIT_MARKET", "TAKE_PROFIT_LIMIT"):
        return OrderType.LIMIT, vo.stop_price if kind == "TAKE_PROFIT_MARKET" else vo.price, None
    if kind in ("STOP_LOSS", "STOP_MARKET"):
        return OrderType.STOP, None, vo.stop_price
    if kind == "STOP_LOSS_LIMIT" and vo.stop_price is not None and vo.price is not None:
        as_stop = venue.stop_limit_price(vo.symbol, vo.side, vo.stop_price)
        if as_stop == vo.price:
            return OrderType.STOP, None, vo.stop_price
        return OrderType.STOP_LIMIT, vo.price, vo.stop_price
    if kind == "STOP":
        return OrderType.STOP_LIMIT, vo.price, vo.stop_price
    return OrderType.MARKET, None, None


class CcxtBrokerView:
    """A `BrokerView` over a `CcxtVenue` for the bot symbols `symbols`."""

    def __init__(self, venue: Any, symbols: Iterable[str]) -> None:
        self.venue = venue
        self.names = {venue.symbol(name): name for name in symbols}  # unified -> the bot's name

    def open_orders(self) -> list[VenueOrderState]:
        out = []
        for unified, name in sorted(self.names.items()):
            for vo in self.venue.open_orders(unified):
                kind, price, stop = order_type(self.venue, vo)
                status = OrderStatus.PARTIALLY_FILLED if vo.filled > 0 else OrderStatus.ACCEPTED
                out.append(VenueOrderState(
                    str(vo.client_id or vo.venue_id), name, OrderSide(vo.side), kind, vo.amount, price, stop,
                    status, vo.filled,
                ))
        return out

    def positions(self) -> list[Position]:
        if not self.venue.settings.futures:
            raise NoVenuePositions(f"{self.venue.exchange.id} spot holds balances, not positions")
        held = self.venue.positions(sorted(self.names))
        return [Position(self.names[p.symbol], p.quantity, p.entry_price) for p in held if p.symbol in self.names]
