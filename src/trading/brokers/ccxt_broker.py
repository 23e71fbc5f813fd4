"""CcxtBroker: a backtrader broker whose orders live on a ccxt venue (Binance or any ccxt id).

The pattern of the community's bt-ccxt-store: `buy`/`sell` create backtrader orders and
notify them Submitted; the venue work happens in `next()`, which Cerebro calls on every pass
of its loop (the live feed returns to the loop a few times a second): the orders created since
the last pass are sent through `CcxtExecution`, the venue is polled, and every venue fact
(accepted, partial and complete fills with the venue's fee, cancelled, rejected with the
reason, expired) becomes the backtrader notification the unchanged BaseStrategy expects.

* Client order ids: ``order.info['client_order_id']``, where BaseStrategy writes the stable id it
  tracks each order under right after creating it, so the venue, the OrderManager and the
  database agree across restarts; an order without one gets an id from its bar and ref.
* Reduce-only orders (``reduce_only=True``, or a bracket child) wait until the position exists;
  a stop and target linked with ``oco=`` go out as one OCO (see `ccxt_execution`).
* Orders created on a warm-up bar (the live feed's history) are rejected with ``WARMUP``:
  only bars that closed after the start are traded.
* No `modify`: BaseStrategy then moves a stop by cancel and replace, as venues do.
* A strategy registered with `on_pass` is called at the start of every pass, before the
  orders go out: the bot's emergency stop and forced exits act there, between bars.
* Cash and value come from the venue's balances (refreshed at each poll): the quote currency
  plus the base assets of the traded symbols at their last close (futures: the margin balance;
  positions the account holds at start are the strategy's).

BrokerFactory builds it for ``binance`` and every other ccxt exchange id (`resolve_ccxt_type`).
"""

from __future__ import annotations

import collections
import importlib.util
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import backtrader as bt

from strategy.risk_gate import bar_datetime
from trading.brokers.ccxt_config import credentials_from_env, import_ccxt, settings_from_broker
from trading.brokers.ccxt_execution import CcxtExecution
from trading.brokers.ccxt_venue import CcxtVenue
from trading.brokers.factory import BrokerSpec
from trading.bt_orders import FillDetails, attach_fill_details
from trading.events import (
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderExpired,
    OrderFill,
    OrderModified,
    OrderRejected,
)
from trading.order_manager import OrderManager
from trading.orders import ClientOrderId, Order, OrderError, OrderSide, OrderStatus, OrderType

log = logging.getLogger(__name__)
_TYPES = {bt.Order.Market: OrderType.MARKET, bt.Order.Limit: OrderType.LIMIT, bt.Order.Stop: OrderType.STOP,
          bt.Order.StopLimit: OrderType.STOP_LIMIT}
WARMUP = "WARMUP"


def _dec(x: float) -> Decimal:
    return Decimal(repr(float(x)))


class CcxtBroker(bt.BrokerBase):
    """See the module docstring."""

    params = (("bot", "atf"),)

    def __init__(self, execution: CcxtExecution) -> None:
        super().__init__()
        self.execution = execution
        self.notifs: collections.deque[bt.Order] = collections.deque()
        self.positions: dict[Any, bt.Position] = collections.defaultdict(bt.Position)
        self._unsent: list[bt.Order] = []
        self._by_cid: dict[ClientOrderId, bt.Order] = {}
        self._order_logger: Any = None
        self._quote: str | None = None
        self._pass_hook: Callable[[bool], bool] | None = None
        execution.orders.add_update_callback(self._on_update)

    # ------------------------------------------------------------------ wiring
    @property
    def order_logger(self) -> Any:
        return self._order_logger

    @order_logger.setter
    def order_logger(self, logger: Any) -> None:
        """Set by BrokerFactory; it must mask this venue's credentials too."""
        self._order_logger = logger
        if logger is not None:
            logger.add_secrets(self.execution.venue.scrub.secrets)

    @property
    def bus(self) -> Any:
        return self.execution.bus

    @bus.setter
    def bus(self, bus: Any) -> None:
        """The bus the circuit breaker's Halted / Resumed and ConnectionLost / ConnectionRestored go to."""
        self.execution.bus = bus

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        super().start()
        datas = getattr(getattr(self, "cerebro", None), "datas", None) or []
        if not self.execution.venue.connected:
            self.execution.connect([d._name for d in datas if d._name])  # futures: leverage, margin mode
        for data in datas:  # futures: a position the account already holds is the strategy's from the start
            pos = self.execution.venue_positions.get(self.execution.venue.symbol(data._name)) if data._name else None
            if pos is not None:
                self.positions[data] = bt.Position(float(pos.quantity), float(pos.entry_price))
        self.startingcash = self.getcash()

    def on_pass(self, hook: Callable[[bool], bool]) -> None:
        """Call `hook(settled)` at the start of every pass; settled: every notification was delivered.

        The orders it makes go out in the same pass. The live feed returns to the loop every
        `qcheck` seconds, so no wake-up is needed (the hook's answer is not used).
        """
        self._pass_hook = hook

    def next(self) -> None:
        if self._pass_hook is not None:
            self._pass_hook(not self.notifs)
        self._send_unsent()
        self.execution.pump()

    def settle(self) -> None:
        """Send what is pending and read the venue now (a live run calls it before the books close)."""
        self._send_unsent()
        self.execution.pump(poll=True)

    def stop(self) -> None:
        """Cerebro's end of the run: stop the order stream (the venue stays readable by REST)."""
        super().stop()
        self.close()

    def close(self) -> None:
        """Stop the order stream and its thread (idempotent; the live run calls it on the way out)."""
        self.execution.close()

    def get_notification(self) -> bt.Order | None:
        return self.notifs.popleft() if self.notifs else None

    def notify(self, order: bt.Order) -> None:
        self.notifs.append(order.clone())

    # ------------------------------------------------------------------ account
    def _quote_ccy(self) -> str:
        if self._quote is None:
            datas = getattr(getattr(self, "cerebro", None), "datas", None) or []
            venue = self.execution.venue
            names = [d._name for d in datas if d._name] or [venue.exchange.symbols[0]]
            self._quote = venue.market(venue.symbol(names[0]))["quote"]
        return self._quote

    def getcash(self) -> float:
        return float(self.execution.balances.get(self._quote_ccy(), (Decimal(0), Decimal(0)))[0])

    def getvalue(self, datas: Any = None) -> float:
        """Quote total plus the base assets of the traded symbols at their last close.

        Futures: the margin balance (wallet plus unrealised pnl at the venue's mark price).
        """
        balances, venue = self.execution.balances, self.execution.venue
        value = balances.get(self._quote_ccy(), (Decimal(0), Decimal(0)))[1]
        if venue.settings.futures:
            return float(value)
        seen: set[str] = set()
        for data in getattr(getattr(self, "cerebro", None), "datas", None) or []:
            base = venue.market(venue.symbol(data._name))["base"]
            if base in seen or not len(data):
                continue
            seen.add(base)
            value += balances.get(base, (Decimal(0), Decimal(0)))[1] * _dec(data.close[0])
        return float(value)

    def getposition(self, data: Any, clone: bool = True) -> bt.Position:
        pos = self.positions[data]
        return pos.clone() if clone else pos

    # ------------------------------------------------------------------ orders
    def buy(self, owner: Any, data: Any, size: float, price: float | None = None, plimit: float | None = None,
            exectype: int | None = None, valid: Any = None, tradeid: int = 0, oco: bt.Order | None = None,
            trailamount: float | None = None, trailpercent: float | None = None, parent: bt.Order | None = None,
            transmit: bool = True, **kwargs: Any) -> bt.Order:
        order = bt.BuyOrder(owner=owner, data=data, size=size, price=price, pricelimit=plimit, exectype=exectype,
                            valid=valid, tradeid=tradeid, trailamount=trailamount, trailpercent=trailpercent,
                            parent=parent, transmit=transmit)
        return self._submit(order, oco, kwargs)

    def sell(self, owner: Any, data: Any, size: float, price: float | None = None, plimit: float | None = None,
             exectype: int | None = None, valid: Any = None, tradeid: int = 0, oco: bt.Order | None = None,
             trailamount: float | None = None, trailpercent: float | None = None, parent: bt.Order | None = None,
             transmit: bool = True, **kwargs: Any) -> bt.Order:
        order = bt.SellOrder(owner=owner, data=data, size=size, price=price, pricelimit=plimit, exectype=exectype,
                             valid=valid, tradeid=tradeid, trailamount=trailamount, trailpercent=trailpercent,
                             parent=parent, transmit=transmit)
        return self._submit(order, oco, kwargs)

    def _submit(self, order: bt.Order, oco: bt.Order | None, info: dict[str, Any]) -> bt.Order:
        order.addcomminfo(self.getcommissioninfo(order.data))
        order.addinfo(**info)
        if oco is not None:
            order.addinfo(oco_ref=oco.ref)
        order.submit(self)
        self._unsent.append(order)
        self.notify(order)
        return order

    def cancel(self, order: bt.Order) -> bool:
        """Cancel: at once if not sent yet, otherwise on the venue at the next pass."""
        if order in self._unsent:
            self._unsent.remove(order)
            order.cancel()
            self.notify(order)
            return True
        cid = next((c for c, o in self._by_cid.items() if o is order), None)
        if cid is None or not order.alive():
            return False
        rec = self.execution.orders.get(cid)
        if rec.is_open and rec.status is not OrderStatus.PENDING_CANCEL:
            self.execution.cancel(cid, str(order.info.get("cancel_reason") or "CANCEL"))
            self.execution.flush_cancels()  # now: the strategy may send a replacement next
        return True

    def _send_unsent(self) -> None:
        batch, self._unsent = self._unsent, []
        by_ref = {o.ref: o for o in batch}
        paired: set[int] = set()
        for order in batch:
            if order.ref in paired or not order.alive():
                continue
            try:
                rec = self._record(order)
            except (OrderError, ValueError) as exc:
                self._reject(order, str(exc))
                continue
            if rec is None:
                continue
            reduce_only = bool(order.info.get("reduce_only")) or order.parent is not None
            partner = by_ref.get(order.info.get("oco_ref")) or next(
                (o for o in batch if o.info.get("oco_ref") == order.ref and o is not order), None)
            if partner is not None and partner.ref not in paired and partner.alive() and reduce_only:
                other = self._record(partner)
                if other is not None:
                    paired.add(partner.ref)
                    self.execution.submit_oco(rec, other, reduce_only=True)
                    continue
            self.execution.submit(rec, reduce_only=reduce_only, reference_price=_dec(order.data.close[0]))

    def _record(self, order: bt.Order) -> Order | None:
        """The trading Order for a backtrader order, or None after rejecting it."""
        if getattr(order.data, "backfilling", False):
            self._reject(order, f"{WARMUP}: created on a warm-up bar; only bars closed after the start trade")
            return None
        kind = _TYPES.get(order.exectype)
        if kind is None:
            self._reject(order, f"UNSUPPORTED_ORDER_TYPE: {order.getordername()} orders are not sent to the venue")
            return None
        cid = self._client_id(order)
        price, limit = order.created.price, order.created.pricelimit
        rec = Order(
            client_order_id=cid, symbol=order.data._name, side=OrderSide.BUY if order.isbuy() else OrderSide.SELL,
            order_type=kind, quantity=_dec(abs(order.created.size)),
            price=_dec(limit if kind is OrderType.STOP_LIMIT else price) if kind in (
                OrderType.LIMIT, OrderType.STOP_LIMIT) else None,
            stop_price=_dec(price) if kind in (OrderType.STOP, OrderType.STOP_LIMIT) else None,
            tag=str(order.info.get("leg") or ""),
        )
        self._by_cid[cid] = order
        return rec

    def _client_id(self, order: bt.Order) -> ClientOrderId:
        given = order.info.get("client_order_id")  # BaseStrategy's id (trading.bt_orders), or the caller's
        if given:
            return ClientOrderId(str(given))
        created = bar_datetime(order.created.dt)
        return ClientOrderId.for_signal(self.p.bot, order.data._name, created, f"o{order.ref % 10_000_000}")

    def _reject(self, order: bt.Order, reason: str) -> None:
        log.warning("order %s rejected: %s", order.ref, reason)
        order.reject(self)
        order.addinfo(reject_reason=reason)
        self.notify(order)

    # ------------------------------------------------------------------ venue facts -> notifications
    def _on_update(self, rec: Order, event: OrderEvent) -> None:
        order = self._by_cid.get(event.client_order_id)
        if order is None:
            return
        if isinstance(event, OrderAccepted):
            if order.status in (bt.Order.Created, bt.Order.Submitted):
                order.accept(self)
                self.notify(order)
        elif isinstance(event, OrderFill):
            self._execute(order, event)
        elif isinstance(event, OrderModified) and event.quantity is not None:
            size = float(event.quantity) * (1 if order.isbuy() else -1)
            order.size = order.created.size = size
            order.executed.remsize = size - order.executed.size
        elif not order.alive():
            return
        elif isinstance(event, OrderCancelled):
            order.cancel()
            self.notify(order)
        elif isinstance(event, OrderRejected):
            self._reject(order, event.reason)
        elif isinstance(event, OrderExpired):
            order.status = bt.Order.Expired
            self.notify(order)

    def _execute(self, order: bt.Order, fill: OrderFill) -> None:
        """Book one venue fill on the order and the position, as BackBroker._execute does."""
        size = float(fill.last_qty) * (1 if order.isbuy() else -1)
        price, fee = float(fill.last_price), float(fill.fee)
        comminfo = self.getcommissioninfo(order.data)
        pos = self.positions[order.data]
        pprice_orig = pos.price
        psize, pprice, opened, closed = pos.update(size, price)
        pnl = comminfo.profitandloss(-closed, pprice_orig, price) if closed else 0.0
        share = abs(closed) / abs(size) if size else 0.0
        closedvalue = comminfo.getoperationcost(closed, pprice_orig) if closed else 0.0
        openedvalue = comminfo.getoperationcost(opened, price) if opened else 0.0
        dt = bt.date2num(fill.ts.replace(tzinfo=None))
        order.execute(dt, size, price, closed, closedvalue, fee * share, opened, openedvalue, fee * (1 - share),
                      0.0, pnl, psize, pprice)
        if fill.remaining_qty == 0 and order.executed.remsize:
            order.status = bt.Order.Completed  # the venue filled what it took (rounded to its step)
        order.addcomminfo(comminfo)
        self.notify(order)
        attach_fill_details(self.notifs[-1], FillDetails(fill.fee_currency, fill.bid, fill.ask, fill.trade_id))


# --------------------------------------------------------------------------- factory


def build_ccxt_broker(broker_type: str, config: Any, *, bus: Any = None) -> CcxtBroker:
    """Build the broker for `broker_type` (a ccxt id) from a broker section; credentials from the env."""
    import_ccxt()
    settings = settings_from_broker(broker_type, config)
    venue = CcxtVenue(settings, credentials_from_env(settings))
    return CcxtBroker(CcxtExecution(venue, OrderManager(), bus=bus))


def resolve_ccxt_type(name: str) -> BrokerSpec | None:
    """Every ccxt exchange id is a broker type (when ccxt is installed); None for other names."""
    if importlib.util.find_spec("ccxt") is None:
        return None
    if name not in import_ccxt().exchanges:
        return None
    return BrokerSpec(name=name, build=lambda config: build_ccxt_broker(name, config))


# BrokerFactory resolves ``binance`` and every other ccxt id through `resolve_ccxt_type`, lazily.
__all__ = ["WARMUP", "CcxtBroker", "build_ccxt_broker"]
