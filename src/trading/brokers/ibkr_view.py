"""The Interactive Brokers account as reconciliation sees it (`trading.reconcile.BrokerView`).

`IbkrBrokerView(adapter, symbols)` reads IB through an `IBKRAdapter` (connecting it if needed),
not the bot: the account's working orders that carry an atf client order id (IB ``orderRef``)
on the contracts of the bot's symbols, and the account's positions in those contracts, named by
the bot's symbols. Orders without such an orderRef (typed in TWS, placed by other programs) are
not the bot's and are left out.

A working order is translated back into the atf order it stands for (`VenueOrderState`, as
`CcxtBrokerView` returns): ``MKT`` market, ``LMT`` limit at lmtPrice, ``STP`` stop at auxPrice,
``STP LMT`` stop-limit (lmtPrice, auxPrice), ``TRAIL`` trailing stop at its current
trailStopPrice. Held bracket children (``PreSubmitted``) count as working, as the tracker
counts them accepted.

IB's ``avgCost`` is per contract: a stock's or a forex pair's is the price per share or per unit
of the base currency, a future's is the price times the multiplier. `positions` divides by the
contract's multiplier (the qualified instrument's), so the average is per unit of price like the
database's ``avg_entry_price``. IB also folds commissions into avgCost; with `db_positions` given,
a position whose quantity is the database's and whose average differs from the database's by no
more than the position's recorded fees per unit is reported at the database's average (as
`SpotAwareView` reports the database's values the venue rounded).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from trading.brokers.ccxt_view import VenueOrderState
from trading.orders import OrderSide, OrderStatus, OrderType
from trading.positions import Position
from trading.reconcile import TOLERANCE

log = logging.getLogger(__name__)

UNSET_DOUBLE = 1.7976931348623157e308  # IB's "no value" for a price field
CLIENT_ID_PREFIX = "atf-"  # every ClientOrderId the bots make (ClientOrderId.for_signal)
_TYPES = {"MKT": OrderType.MARKET, "LMT": OrderType.LIMIT, "STP": OrderType.STOP, "STP LMT": OrderType.STOP_LIMIT,
          "TRAIL": OrderType.TRAILING_STOP}


def ib_decimal(value: Any) -> Decimal | None:
    """A price or quantity IB sent (float, text) as a Decimal; None for IB's unset value."""
    if value is None or value == "":
        return None
    try:
        if float(value) >= UNSET_DOUBLE:
            return None
        d = Decimal(repr(float(value)))
    except (InvalidOperation, ValueError, TypeError):
        return None
    return d if d.is_finite() else None


def per_unit(avg_cost: Any, multiplier: Any) -> Decimal | None:
    """IB's avgCost per contract as a price per unit: divided by the contract's multiplier."""
    cost = ib_decimal(avg_cost)
    if cost is None:
        return None
    mult = ib_decimal(multiplier or 1) or Decimal(1)
    return cost / mult if mult != 0 else cost


def order_state(trade: Any, symbol: str) -> VenueOrderState | None:
    """The atf order an ib_async Trade stands for; None for an order type atf never places."""
    o = trade.order
    kind = _TYPES.get(str(o.orderType))
    if kind is None:
        log.warning("order %s at IB has type %s, which atf does not place", o.orderRef, o.orderType)
        return None
    lmt, aux = ib_decimal(o.lmtPrice), ib_decimal(o.auxPrice)
    price = lmt if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT) else None
    if kind is OrderType.TRAILING_STOP:
        stop = ib_decimal(getattr(o, "trailStopPrice", None))
    else:
        stop = aux if kind in (OrderType.STOP, OrderType.STOP_LIMIT) else None
    filled = ib_decimal(trade.orderStatus.filled) or Decimal(0)
    return VenueOrderState(
        client_order_id=str(o.orderRef), symbol=symbol, side=OrderSide.BUY if o.action == "BUY" else OrderSide.SELL,
        order_type=kind, quantity=ib_decimal(o.totalQuantity) or Decimal(0), price=price, stop_price=stop,
        status=OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.ACCEPTED, filled_qty=filled,
    )


class IbkrBrokerView:
    """A `BrokerView` over an `IBKRAdapter` for the bot symbols `symbols` (see the module docstring)."""

    def __init__(self, adapter: Any, symbols: Iterable[str], *, db_positions: Iterable[Position] = (),
                 prefix: str = CLIENT_ID_PREFIX) -> None:
        self.adapter = adapter
        self.symbols = list(symbols)
        self.prefix = prefix
        self._db_positions = {p.symbol: p for p in db_positions}

    def _instruments(self) -> dict[int, tuple[str, Any]]:
        """conId -> (bot symbol, instrument) of the bot's contracts (qualified with IB if new)."""
        self.adapter.connect()  # idempotent
        out: dict[int, tuple[str, Any]] = {}
        for name in self.symbols:
            inst = self.adapter.instrument(name)
            out.setdefault(inst.con_id, (name, inst))
        return out

    def open_orders(self) -> list[VenueOrderState]:
        contracts = self._instruments()
        account = self.adapter.account

        def read() -> list[VenueOrderState]:
            out = []
            for trade in self.adapter.ib.openTrades():
                o = trade.order
                ref = str(o.orderRef or "")
                mine = contracts.get(int(trade.contract.conId))
                if mine is None or not ref.startswith(self.prefix) or (o.account and account and o.account != account):
                    continue
                state = order_state(trade, mine[0])
                if state is not None:
                    out.append(state)
            return sorted(out, key=lambda s: (s.symbol, s.client_order_id))

        self.adapter.sync()  # everything IB sent before now has been processed
        return self.adapter.loop.call(read, timeout=self.adapter.settings.request_timeout)

    def positions(self) -> list[Position]:
        contracts = self._instruments()
        account = self.adapter.account

        def read() -> list[tuple[str, Decimal, Decimal | None]]:
            out = []
            for p in self.adapter.ib.positions(account):
                mine = contracts.get(int(p.contract.conId))
                qty = ib_decimal(p.position)
                if mine is None or not qty:
                    continue
                name, inst = mine
                out.append((name, qty, per_unit(p.avgCost, inst.trade.multiplier or p.contract.multiplier)))
            return out

        self.adapter.sync()
        held = self.adapter.loop.call(read, timeout=self.adapter.settings.request_timeout)
        return sorted((self._as_db(Position(name, qty, avg)) for name, qty, avg in held), key=lambda p: p.symbol)

    def _as_db(self, p: Position) -> Position:
        """Report IB's average as the database's when the commissions paid can explain the difference."""
        ours = self._db_positions.get(p.symbol)
        if ours is None or ours.quantity != p.quantity or ours.avg_entry_price is None or p.avg_entry_price is None:
            return p
        allowed = abs(ours.fees) / abs(p.quantity) + TOLERANCE * abs(ours.avg_entry_price)
        if abs(p.avg_entry_price - ours.avg_entry_price) <= allowed:
            return Position(p.symbol, p.quantity, ours.avg_entry_price)
        return p
