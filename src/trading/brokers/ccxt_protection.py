"""Protective orders of `CcxtExecution`: when and how reduce-only exits go out.

* A reduce-only order (bracket children, exits) waits ("held") until the position it reduces
  exists; it is then sent for at most that position (spot: at most the free base balance,
  since a fee paid in the base asset leaves less than was bought).
* A stop with a target (an OCO pair):
  - spot with a venue OCO (Binance spot): one OCO list;
  - spot without: the stop rests on the venue (it holds the coins) and the target is watched
    locally: when the price reaches it the stop is cancelled and the target sent; a fill of
    the stop cancels the target;
  - futures (USDⓈ-M): both legs rest on the venue, reduce-only (stop-market and
    take-profit-market); the first fill cancels the other.
* A stop the venue cannot hold is watched locally the same way; a stop the price has already
  passed goes out as a market order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from trading.brokers import ccxt_binance
from trading.brokers.ccxt_orders import OrderRefused
from trading.brokers.ccxt_resilience import VenueUnavailable
from trading.orders import ClientOrderId, Order, OrderSide, OrderStatus, OrderType

if TYPE_CHECKING:
    from trading.brokers.ccxt_venue import CcxtVenue, VenueOrder
    from trading.order_manager import OrderManager

log = logging.getLogger(__name__)
ZERO = Decimal(0)
STOPS = (OrderType.STOP, OrderType.STOP_LIMIT)


@dataclass
class Tracked:
    """One order the execution carries out, and where it is."""

    order: Order
    symbol: str  # unified venue symbol
    reduce_only: bool
    state: str  # held | new | unconfirmed | live | local | done
    reference_price: Decimal | None = None
    venue_id: str | None = None
    reported: Decimal = ZERO
    cancel_reason: str | None = None
    as_market: bool = False  # a locally triggered stop goes out as a market order
    take_profit: bool = False  # a target sent as a take-profit-market (futures brackets)
    seen_trades: set[str] = field(default_factory=set)


class ProtectiveOrders:
    """The protective-order half of `CcxtExecution` (a mixin: it uses the execution's state)."""

    venue: CcxtVenue
    orders: OrderManager
    positions: dict[str, Decimal]
    balances: dict[str, tuple[Decimal, Decimal]]
    _tracked: dict[ClientOrderId, Tracked]

    def _reject(self, t: Tracked, reason: str) -> None:  # pragma: no cover - CcxtExecution's
        raise NotImplementedError

    def _apply(self, t: Tracked, vo: VenueOrder) -> None:  # pragma: no cover - CcxtExecution's
        raise NotImplementedError

    def _send_new(self) -> None:  # pragma: no cover - CcxtExecution's
        raise NotImplementedError

    def _crossed(self, t: Tracked) -> bool:
        """True for a protective stop whose trigger the last price has already passed."""
        o = t.order
        if not t.reduce_only or t.as_market or o.order_type not in STOPS or o.stop_price is None:
            return False
        last = self.venue.last_price(t.symbol)
        return last >= o.stop_price if o.side is OrderSide.BUY else last <= o.stop_price

    def _release_held(self) -> None:
        held = [t for t in self._tracked.values() if t.state == "held" and t.order.is_open]
        done: set[ClientOrderId] = set()
        for t in held:
            if t.order.client_order_id in done:
                continue
            cover = self._coverable(t)
            if cover <= 0:
                continue
            sibling = self._tracked.get(t.order.oco_id) if t.order.oco_id else None
            pair = sibling is not None and sibling.state == "held" and sibling.order.is_open
            if pair:
                assert sibling is not None
                done.add(sibling.order.client_order_id)
                self._release_pair(t, sibling, cover)
            else:
                self._release_one(t, cover)

    def _coverable(self, t: Tracked) -> Decimal:
        """How much of the position a reduce-only order may close now (0: not yet)."""
        pos = self.positions.get(t.symbol, ZERO)
        if pos == 0 or (pos > 0) == (t.order.side is OrderSide.BUY):
            return ZERO
        cover = min(abs(pos), t.order.remaining)
        m = self.venue.market(t.symbol)
        if m.get("spot") and t.order.side is OrderSide.SELL:
            free = self.balances.get(m["base"], (ZERO, ZERO))[0]
            cover = min(cover, free)
        return self.venue.round_amount(t.symbol, cover)

    def _shrink(self, t: Tracked, cover: Decimal) -> None:
        if cover < t.order.remaining:
            self.orders.on_modified(t.order.client_order_id, quantity=t.order.filled_qty + cover)

    def _release_one(self, t: Tracked, cover: Decimal) -> None:
        self._shrink(t, cover)
        if t.order.order_type in STOPS and not self.venue.supports_stop(t.symbol):
            t.state = "local"
        else:
            t.state = "new"

    def _release_pair(self, a: Tracked, b: Tracked, cover: Decimal) -> None:
        stop, target = (a, b) if a.order.order_type in STOPS else (b, a)
        if stop.order.order_type not in STOPS or target.order.order_type is not OrderType.LIMIT:
            self._release_one(a, cover)
            self._release_one(b, cover)
            return
        self._shrink(stop, cover)
        self._shrink(target, cover)
        if self._crossed(stop):
            stop.as_market, stop.state, target.state = True, "new", "local"  # exit now; the fill cancels the target
        elif self.venue.is_contract(stop.symbol):
            # Futures: no OCO and nothing locked, so both legs rest on the venue, reduce-only: the
            # stop as a stop-market, the target as a take-profit-market. The first to fill makes
            # the OrderManager cancel the other (carried out right after the poll that saw it).
            stop.state, target.state, target.take_profit = "new", "new", True
        elif self.venue.supports_oco(stop.symbol):
            self._place_oco(stop, target, cover)
        else:
            self._release_one(stop, cover)
            target.state = "local"  # spot: the stop holds the coins; the target is watched here

    def _place_oco(self, stop: Tracked, target: Tracked, amount: Decimal) -> None:
        v, so = self.venue, stop.order
        side = so.side.value
        trigger = v.round_price(stop.symbol, so.stop_price)  # type: ignore[arg-type]
        limit = v.round_price(stop.symbol, so.price) if so.price is not None else v.stop_limit_price(
            stop.symbol, side, trigger)
        tp = v.round_price(stop.symbol, target.order.price)  # type: ignore[arg-type]
        ids = (str(target.order.client_order_id), str(so.client_order_id))
        try:
            v.check(stop.symbol, amount, min(limit, tp))
            request = ccxt_binance.oco_request(v.exchange, v.market(stop.symbol), side=side, amount=amount,
                                               take_profit=tp, stop=trigger, stop_limit=limit,
                                               tp_client_id=ids[0], sl_client_id=ids[1])
            legs = v.place_oco(stop.symbol, request, ids)
        except OrderRefused as exc:
            self._reject(stop, exc.reason)
            self._reject(target, exc.reason)
            return
        except VenueUnavailable:
            stop.state = target.state = "unconfirmed"
            return
        stop.state = target.state = "live"
        for leg in legs:
            self._apply(target if leg.client_id == ids[0] else stop, leg)

    def _check_local(self, symbol: str, local: list[Tracked], price: Decimal) -> None:
        for t in local:
            o = t.order
            if not o.is_open:
                continue
            buy = o.side is OrderSide.BUY
            if o.order_type in STOPS:
                hit = price >= o.stop_price if buy else price <= o.stop_price  # type: ignore[operator]
            else:
                hit = price <= o.price if buy else price >= o.price  # type: ignore[operator]
            if not hit:
                continue
            sibling = self._tracked.get(o.oco_id) if o.oco_id else None
            if sibling is not None and sibling.state == "live" and sibling.order.is_open:
                sibling.cancel_reason = "OCO"
                vo = self.venue.cancel(sibling.symbol, sibling.venue_id or "")
                if vo is not None:
                    self._apply(sibling, vo)  # a fill of the sibling cancels this order instead
            if o.is_open and o.status is not OrderStatus.PENDING_CANCEL:
                log.info("%s: %s reached %s locally; sending it", o.client_order_id, symbol, price)
                t.as_market = o.order_type is OrderType.STOP
                t.state = "new"
        self._send_new()
