"""IBKRBroker: a backtrader broker that trades at Interactive Brokers, for the unchanged BaseStrategy.

The strategy places backtrader orders as usual; the broker sends them to IB through an
`IBKRAdapter` and turns IB's facts back into backtrader notifications:

* Orders made during one strategy step are sent together when the strategy is done with
  the bar (`flush`, called by `IBKRLiveFeed` before it waits for the next bar, and on every
  `next`). A market/limit/stop entry made while flat, followed by reduce-only orders of the
  other side on the same data (the strategy's stop and target), goes out as an IB bracket:
  the children carry the entry as parent and wait for its fill; orders linked by ``oco``
  share an OCA group (the first fill cancels the others). backtrader's own brackets
  (``buy_bracket``: children with ``parent=``) go out the same way.
* Each order's orderRef is the strategy's ClientOrderId (from its OrderManager), so a retry
  or a restarted bot finds it at IB and never places it twice.
* Orders made on warm-up bars (`warmup_end` of the feed) are not sent: they are rejected with
  reason ``WARMUP_BAR``, unless IB already holds them (a restart replaying its history), in
  which case they are adopted with what happened to them.
* `modify` (the strategy's amend of a stop or target price, or a resize) changes the order
  in place at IB at the next flush. `cancel` goes to IB at once.
* Fills update the broker's positions (what this broker's orders built, starting flat) and
  are notified with IB's commission. Cash and value are IB's TotalCashValue and NetLiquidation.

Facts arrive on the IB loop thread and are applied on Cerebro's thread (`next`, `flush`,
`get_notification`), so backtrader objects are only touched by Cerebro's thread.

The IB feeds block until the next bar, so Cerebro's loop passes only at bars unless woken:
`wake` has every feed return once without a bar. A strategy registered with `on_pass` is
called on every pass (the bot's emergency stop and forced exits act there, between bars);
while it answers True, each fact from IB wakes the loop, so its news is applied at once.
"""

from __future__ import annotations

import logging
import queue
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import backtrader as bt

from strategy.risk_gate import bar_datetime, dec
from trading.brokers.ibkr import IBKRAdapter
from trading.brokers.ibkr_config import IBKRConnectionError, IBKRError, IBKRSettings
from trading.brokers.ibkr_contracts import ContractSpecError
from trading.brokers.ibkr_orders import (
    Accepted,
    Cancelled,
    Filled,
    OrderTicket,
    Rejected,
    VenueFact,
)
from trading.bt_orders import FillDetails, attach_fill_details
from trading.orders import ClientOrderId, OrderSide, OrderType

log = logging.getLogger(__name__)

_TYPES = {bt.Order.Market: OrderType.MARKET, bt.Order.Limit: OrderType.LIMIT, bt.Order.Stop: OrderType.STOP,
          bt.Order.StopLimit: OrderType.STOP_LIMIT}
_LEGS = {OrderType.MARKET: "exit", OrderType.LIMIT: "tp", OrderType.STOP: "sl", OrderType.STOP_LIMIT: "sl"}


class IBKRBroker(bt.BrokerBase):
    """Trade at IB through `adapter`; see the module docstring."""

    def __init__(self, adapter: IBKRAdapter, *, bot_name: str = "atf") -> None:
        super().__init__()
        self.adapter = adapter
        self.bot_name = bot_name
        self.order_logger: Any = None  # set by BrokerFactory
        self.notifs: deque[bt.Order] = deque()
        self.positions: defaultdict[Any, bt.Position] = defaultdict(bt.Position)
        self._facts: queue.SimpleQueue[VenueFact] = queue.SimpleQueue()
        self._batch: list[bt.Order] = []
        self._orders: dict[ClientOrderId, bt.Order] = {}  # sent (or adopted) orders by client order id
        self._cids: dict[int, ClientOrderId] = {}  # backtrader ref -> client order id
        self._dirty: dict[int, bt.Order] = {}  # amended since the last flush
        self._own_ids: Counter[tuple[str, float, str]] = Counter()
        self.startingcash = 0.0
        self._pass_hook: Callable[[bool], bool] | None = None
        self._follow = False  # the hook awaits IB's news: each fact wakes Cerebro's loop
        adapter.add_listener(self._on_fact)

    @property
    def bus(self) -> Any:
        return self.adapter.bus

    @bus.setter
    def bus(self, bus: Any) -> None:
        """The bus the adapter's ConnectionLost / ConnectionRestored go to."""
        self.adapter.bus = bus

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        super().start()
        self.adapter.connect()
        self.startingcash = self.getcash()  # backtrader's writers and analyzers read it

    def stop(self) -> None:
        self.flush()
        super().stop()

    def close(self) -> None:
        """Disconnect from IB (the adapter is this broker's)."""
        self.adapter.close()

    # ------------------------------------------------------------------ account

    def getcash(self) -> float:
        value = self.adapter.account_value("TotalCashValue")
        return float(value) if value is not None else 0.0

    def getvalue(self, datas: Any = None) -> float:
        if datas:
            return sum(self.positions[d].size * d.close[0] * float(self.getcommissioninfo(d).p.mult)
                       for d in datas if len(d))
        value = self.adapter.account_value("NetLiquidation")
        return float(value) if value is not None else 0.0

    def getposition(self, data: Any) -> bt.Position:
        return self.positions[data]

    # ------------------------------------------------------------------ orders

    def buy(self, owner: Any, data: Any, size: float, price: float | None = None, plimit: float | None = None,
            exectype: int | None = None, valid: Any = None, tradeid: int = 0, oco: Any = None,
            trailamount: float | None = None, trailpercent: float | None = None, parent: Any = None,
            transmit: bool = True, **kwargs: Any) -> bt.Order:
        return self._submit(bt.BuyOrder(owner=owner, data=data, size=size, price=price, pricelimit=plimit,
                                        exectype=exectype, valid=valid, tradeid=tradeid, oco=oco,
                                        trailamount=trailamount, trailpercent=trailpercent, parent=parent,
                                        transmit=transmit), kwargs)

    def sell(self, owner: Any, data: Any, size: float, price: float | None = None, plimit: float | None = None,
             exectype: int | None = None, valid: Any = None, tradeid: int = 0, oco: Any = None,
             trailamount: float | None = None, trailpercent: float | None = None, parent: Any = None,
             transmit: bool = True, **kwargs: Any) -> bt.Order:
        return self._submit(bt.SellOrder(owner=owner, data=data, size=size, price=price, pricelimit=plimit,
                                         exectype=exectype, valid=valid, tradeid=tradeid, oco=oco,
                                         trailamount=trailamount, trailpercent=trailpercent, parent=parent,
                                         transmit=transmit), kwargs)

    def _submit(self, order: bt.Order, info: dict[str, Any]) -> bt.Order:
        order.addinfo(**info)
        order.addcomminfo(self.getcommissioninfo(order.data))
        order.submit(self)
        self._batch.append(order)
        self.notify(order)
        return order

    def cancel(self, order: bt.Order, bracket: bool = False) -> bool:
        """Cancel an order: at once if not sent yet, else ask IB (the Canceled notice follows)."""
        if not order.alive():
            return False
        if any(o is order for o in self._batch):
            self._batch = [o for o in self._batch if o is not order]
            order.cancel()
            self.notify(order)
            return True
        cid = self._cids.get(order.ref)
        if cid is None:
            return False
        try:
            return self.adapter.cancel(cid)
        except IBKRError as exc:
            log.error("cancel of %s failed: %s", cid, exc)
            return False

    def modify(self, order: bt.Order, *, price: float | None = None, size: float | None = None) -> bool:
        """Amend a working order in place: its stop or limit `price`, its unsigned total `size`, or both.

        The same contract as `SimBroker.modify`: False, changing nothing, when the order is no
        longer working or `size` is not above what has executed. IB gets the change at the
        next flush (same orderId: an amendment, not a new order).
        """
        if not order.alive() or (size is not None and abs(size) <= abs(order.executed.size)):
            return False
        if price is not None:
            order.created.price = price
            order.price = price
        if size is not None:
            signed = abs(size) if order.isbuy() else -abs(size)
            order.size = order.created.size = signed
            order.executed.remsize = signed - order.executed.size
        if order.ref in self._cids:
            self._dirty[order.ref] = order
        return True

    # ------------------------------------------------------------------ sending

    def on_pass(self, hook: Callable[[bool], bool]) -> None:
        """Call `hook(settled)` on every pass, after IB's facts are applied; settled: all were delivered.

        The orders it makes go out at the next `flush` (the feed's, right after the pass).
        While it returns True, IB's facts wake the loop (`wake`).
        """
        self._pass_hook = hook

    def wake(self) -> None:
        """Have Cerebro's loop run a pass now, without a bar (thread-safe)."""
        for data in getattr(getattr(self, "cerebro", None), "datas", None) or []:
            wake = getattr(data, "wake", None)
            if callable(wake):
                wake()

    def _on_fact(self, fact: VenueFact) -> None:
        self._facts.put(fact)  # IB loop thread
        if self._follow:
            self.wake()

    def next(self) -> None:
        self._apply_facts()
        hook = self._pass_hook
        if hook is None:
            return
        self._follow = hook(not self.notifs)
        if self._follow and (self.notifs or not self._facts.empty()):
            self.wake()  # deliver IB's news first, then a pass that acts on it

    def settle(self) -> None:
        """Send the last step's orders, wait until IB answered all sent so far, apply its news.

        A live run calls it before the books close, so fills IB reported by then are in them.
        """
        self.flush()
        try:
            self.adapter.sync()
        except (IBKRError, TimeoutError) as exc:
            log.warning("IB's last state not read at stop: %s", exc)
        self._apply_facts()

    def flush(self) -> None:
        """Apply IB's news, then send the orders and amendments of the last strategy step."""
        self._apply_facts()
        batch, self._batch = [o for o in self._batch if o.alive()], []
        if batch:
            self._send(batch)
        dirty, self._dirty = self._dirty, {}
        for order in dirty.values():
            if order.alive():
                self._amend(order)

    def _send(self, batch: list[bt.Order]) -> None:
        tickets: list[tuple[bt.Order, OrderTicket]] = []
        for order in batch:
            ticket = self._ticket(order)
            if ticket is None:
                self._reject(order, "UNSUPPORTED_ORDER_TYPE")
                continue
            tickets.append((order, ticket))
        tickets = self._link(tickets)
        stale = [(o, t) for o, t in tickets if o.created.dt <= getattr(o.data, "warmup_end", float("-inf"))]
        fresh = [(o, t) for o, t in tickets if all(o is not s for s, _ in stale)]
        for order, ticket in tickets:
            self._orders[ticket.cid] = order
        try:
            if stale:
                held = self.adapter.adopt([t for _, t in stale])
                for order, ticket in stale:
                    if ticket.cid not in held:
                        self._reject(order, "WARMUP_BAR")
            if fresh:
                self.adapter.place([t for _, t in fresh])
        except (IBKRConnectionError, ContractSpecError) as exc:
            # Nothing reached IB: the orders are refused here.
            log.error("orders not sent to IB: %s", exc)
            for order, _ in fresh:
                self._reject(order, f"IB_UNAVAILABLE: {exc}" if isinstance(exc, IBKRConnectionError) else str(exc))
        except (IBKRError, TimeoutError) as exc:
            # IB may have them: their facts will tell.
            log.error("sending orders to IB did not complete: %s", exc)

    def _ticket(self, order: bt.Order) -> OrderTicket | None:
        kind = _TYPES.get(order.exectype)
        if kind is None:
            return None
        cid = self._client_order_id(order, kind)
        self._cids[order.ref] = cid
        price = order.created.price
        return OrderTicket(
            cid=cid,
            symbol=order.data._name,
            side=OrderSide.BUY if order.isbuy() else OrderSide.SELL,
            order_type=kind,
            quantity=dec(abs(order.created.size)),
            limit_price=dec(order.created.pricelimit if kind is OrderType.STOP_LIMIT else price)
            if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT) else None,
            stop_price=dec(price) if kind in (OrderType.STOP, OrderType.STOP_LIMIT) else None,
        )

    def _link(self, tickets: list[tuple[bt.Order, OrderTicket]]) -> list[tuple[bt.Order, OrderTicket]]:
        """Make brackets (entry while flat + reduce-only exits of the other side) and OCA groups."""
        groups: dict[int, str] = {}
        for order, _ in tickets:
            if order.oco is not None and order.oco.ref in self._cids:
                group = f"oca-{self._cids[order.oco.ref]}"
                groups[order.ref] = groups[order.oco.ref] = group
            elif order.parent is not None and order.parent.ref in self._cids:
                groups[order.ref] = f"oca-{self._cids[order.parent.ref]}"  # backtrader's buy_bracket
        entries: dict[int, tuple[ClientOrderId, bool]] = {}  # data -> (entry id, buys)
        linked: list[tuple[bt.Order, OrderTicket]] = []
        for order, ticket in tickets:
            key = id(order.data)
            parent = None
            if order.parent is not None:
                parent = self._cids.get(order.parent.ref)
            elif not order.info.get("reduce_only"):
                if self.positions[order.data].size == 0:
                    entries[key] = (ticket.cid, order.isbuy())
            elif key in entries and entries[key][1] != order.isbuy():
                parent = entries[key][0]
            linked.append((order, replace(ticket, parent=parent, oca_group=groups.get(order.ref, ""))))
        # A family is sent by its last member: the others are held (transmit=False) until then.
        out = []
        for i, (order, ticket) in enumerate(linked):
            family = ticket.parent or ticket.cid
            later = any((t.parent or t.cid) == family for _, t in linked[i + 1 :])
            out.append((order, replace(ticket, transmit=not later)))
        return out

    def _client_order_id(self, order: bt.Order, kind: OrderType) -> ClientOrderId:
        # BaseStrategy records each order in its OrderManager under an id derived from the bar
        # and the leg and writes it into the order's info (trading.bt_orders); IB's orderRef
        # must be that same id.
        given = order.info.get("client_order_id")
        if given:
            return ClientOrderId(str(given))
        leg = "entry" if not order.info.get("reduce_only") else _LEGS[kind]
        key = (order.data._name, order.created.dt, leg)
        attempt = self._own_ids[key]
        self._own_ids[key] += 1
        return ClientOrderId.for_signal(self.bot_name, order.data._name, bar_datetime(order.created.dt), leg, attempt)

    def _amend(self, order: bt.Order) -> None:
        cid = self._cids[order.ref]
        kind = _TYPES.get(order.exectype)
        price = dec(order.created.price)
        try:
            self.adapter.modify(
                cid, quantity=dec(abs(order.created.size)),
                limit_price=price if kind is OrderType.LIMIT else None,
                stop_price=price if kind in (OrderType.STOP, OrderType.STOP_LIMIT) else None,
            )
        except IBKRError as exc:
            log.error("amend of %s not sent to IB: %s", cid, exc)

    def _reject(self, order: bt.Order, reason: str) -> None:
        if order.alive():
            order.reject(self)
            order.addinfo(reject_reason=reason)
            self.notify(order)

    # ------------------------------------------------------------------ IB's facts

    def _apply_facts(self) -> None:
        while True:
            try:
                fact = self._facts.get_nowait()
            except queue.Empty:
                return
            order = self._orders.get(fact.cid)
            if order is None:
                continue
            if isinstance(fact, Accepted):
                if order.status in (bt.Order.Created, bt.Order.Submitted):
                    order.accept(self)
                    self.notify(order)
            elif isinstance(fact, Filled):
                self._execute(order, fact)
            elif isinstance(fact, Cancelled):
                if order.alive():
                    order.cancel()
                    self.notify(order)
            elif isinstance(fact, Rejected):
                self._reject(order, fact.reason)

    def _execute(self, order: bt.Order, fact: Filled) -> None:
        if order.status in (bt.Order.Created, bt.Order.Submitted):
            order.accept(self)
        size = float(fact.quantity) * (1 if order.isbuy() else -1)
        price = float(fact.price)
        position = self.positions[order.data]
        pprice_orig = position.price
        psize, pprice, opened, closed = position.update(size, price)
        comm = float(fact.fee)
        closedcomm = comm * closed / size if size else 0.0
        info = order.comminfo or self.getcommissioninfo(order.data)
        pnl = info.profitandloss(-closed, pprice_orig, price) if closed else 0.0
        dt = order.data.datetime[0] if len(order.data) else 0.0
        if not order.alive():
            log.error("IB filled %s after it ended here: position updated", fact.cid)
            return
        order.execute(dt, size, price, closed, info.getoperationcost(closed, pprice_orig), closedcomm,
                      opened, info.getoperationcost(opened, price), comm - closedcomm, 0.0, pnl, psize, pprice)
        if abs(order.executed.remsize) <= 1e-9 * max(1.0, abs(order.created.size)):
            order.executed.remsize = 0.0
            order.completed()
        self.notify(order)
        attach_fill_details(self.notifs[-1], FillDetails(fee_currency=fact.fee_currency, trade_id=fact.exec_id))  # no quote

    def notify(self, order: bt.Order) -> None:
        self.notifs.append(order.clone())

    def get_notification(self) -> bt.Order | None:
        if not self.notifs:
            self._apply_facts()
        return self.notifs.popleft() if self.notifs else None

    def venue_order_id(self, order: bt.Order) -> ClientOrderId | None:
        """Return the client order id (IB orderRef) a backtrader order was sent under."""
        return self._cids.get(order.ref)


def build_ibkr_broker(config: Any) -> IBKRBroker:
    """Build the IB broker from a broker section (``trading_mode`` and its ``ibkr`` mapping)."""
    return IBKRBroker(IBKRAdapter(IBKRSettings.from_broker_config(config)))


__all__ = ["IBKRBroker", "build_ibkr_broker"]
