"""CcxtExecution: carry out an OrderManager's orders on a CcxtVenue and report the venue's facts.

Intents go in through `submit`, `submit_bracket`, `submit_oco` and `cancel` (the OrderManager
records them; its cancel and modify requests come back here). Nothing talks to the venue
until `pump()`, which the owner calls often (the backtrader broker: every pass of Cerebro's
loop): it sends what is queued, carries out cancels, polls the venue's order state and turns
what changed into OrderManager facts (accepted, each fill with its fee, fee currency, trade
id and the venue's bid/ask when it was seen (`quote_at_fill`), cancelled, expired, rejected),
then releases the protective orders that were waiting.

Rules:

* Reduce-only orders and protective pairs: see `ccxt_protection` (held until the position
  exists; a venue OCO, a locally watched target, or on futures two reduce-only legs).
* Spot and USDⓈ-M futures (`market: future`). On spot a sell beyond the free base balance is
  refused (``NO_SHORT_ON_SPOT``); on futures sells open shorts. Options and inverse (COIN-M)
  contracts are rejected (``UNSUPPORTED_MARKET``).
* Futures: the margin mode and leverage are set on each traded symbol at start (`connect`)
  or before its first order; the positions (`venue_positions`) are read at each poll, and the
  position the fills make is seeded from the venue's at connect.
* An order the venue refused before or at placement is REJECTED with the reason
  (``MIN_NOTIONAL: ...``, ``INSUFFICIENT_BALANCE: ...``, ``INSUFFICIENT_MARGIN: ...``). A
  placement whose outcome is unknown stays unconfirmed and is looked up by client order id on
  every pump; it is sent again only when the venue says it does not have it.
* While the circuit breaker is open, new entries are rejected (``CIRCUIT_OPEN``); exits and
  cancels still go. The breaker's opening and closing are published as Halted / Resumed, and
  as ConnectionLost / ConnectionRestored once per outage (see `_on_halt`).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from trading.brokers.ccxt_futures import FuturesSetupError, VenuePosition
from trading.brokers.ccxt_orders import OrderRefused, PlaceRequest, VenueOrder
from trading.brokers.ccxt_protection import ProtectiveOrders, Tracked
from trading.brokers.ccxt_resilience import VenueUnavailable
from trading.brokers.ccxt_stream import StreamedOrders
from trading.brokers.ccxt_venue import CcxtVenue
from trading.events import ConnectionLost, ConnectionRestored, Halted, Resumed
from trading.order_manager import CancelRequest, ModifyRequest, OrderManager
from trading.orders import ClientOrderId, Order, OrderStatus, OrderType

log = logging.getLogger(__name__)
ZERO = Decimal(0)
_KINDS = {OrderType.MARKET: "market", OrderType.LIMIT: "limit", OrderType.STOP: "stop",
          OrderType.STOP_LIMIT: "stop_limit"}
CIRCUIT_OPEN = "CIRCUIT_OPEN"
QUOTE_LAG_S = 30.0  # a fill seen later than this after it happened gets no quote


class CcxtExecution(ProtectiveOrders, StreamedOrders):
    """See the module docstring."""

    def __init__(
        self,
        venue: CcxtVenue,
        orders: OrderManager,
        *,
        bus: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.venue, self.orders, self.bus = venue, orders, bus
        self._clock = clock
        self._tracked: dict[ClientOrderId, Tracked] = {}
        self._cancels: deque[tuple[ClientOrderId, str]] = deque()
        self._modifies: deque[ModifyRequest] = deque()
        self.positions: dict[str, Decimal] = defaultdict(Decimal)  # unified symbol -> signed quantity
        self.balances: dict[str, tuple[Decimal, Decimal]] = {}
        self.venue_positions: dict[str, VenuePosition] = {}  # futures: unified symbol -> the venue's position
        self._configured: set[str] = set()
        self._last_poll = float("-inf")
        self._resync = False
        self.halted_reason = ""
        self.connection_down = False  # ConnectionLost published, ConnectionRestored not yet
        venue.breaker.on_open, venue.breaker.on_close = self._on_halt, self._on_resume
        orders.add_request_callback(self._on_request)

    # ------------------------------------------------------------------ intents
    def connect(self, symbols: list[str] | tuple[str, ...] = ()) -> None:
        """Load markets, synchronise the clock, read the balances.

        Futures: set the margin mode and leverage of `symbols` (bot or unified names; a
        refusal raises FuturesSetupError) and take the venue's positions as the starting ones.
        """
        self.venue.connect()
        if self.venue.settings.futures:
            for name in symbols:
                self.configure(self.venue.symbol(name))
        self.balances = self.venue.balances()  # after the set-up: the leverage changes the margin
        if self.venue.settings.futures:
            self.refresh_positions(warn=False)
            for symbol, pos in self.venue_positions.items():
                self.positions[symbol] = pos.quantity

    def configure(self, symbol: str) -> None:
        """Set the configured margin mode and leverage on one contract, once."""
        if symbol not in self._configured and self.venue.is_contract(symbol):
            self.venue.configure(symbol)
            self._configured.add(symbol)

    def refresh_positions(self, *, warn: bool = True) -> None:
        """Read the venue's positions (futures); warn where they differ from what the fills made."""
        self.venue_positions = {p.symbol: p for p in self.venue.positions()}
        symbols = set(self.venue_positions) | {s for s, q in self.positions.items() if q}
        for symbol in sorted(symbols) if warn else ():
            venue = self.venue_positions[symbol].quantity if symbol in self.venue_positions else ZERO
            mine = self.positions.get(symbol, ZERO)
            if venue != mine and not any(t.symbol == symbol and t.state == "unconfirmed"
                                         for t in self._tracked.values()):
                log.warning("%s: the venue holds %s but the fills the bot saw make %s "
                            "(a trade outside the bot, a liquidation, or fills still to be read)",
                            symbol, venue, mine)

    def submit(self, order: Order, *, reduce_only: bool = False, reference_price: Decimal | None = None) -> Order:
        """Record a new order and queue it (a reduce-only one waits for its position)."""
        self.orders.submit(order)
        self._track(order, reduce_only, reference_price)
        return order

    def submit_bracket(self, entry: Order, stop_loss: Order | None, take_profit: Order | None,
                       *, reference_price: Decimal | None = None) -> Order:
        """An entry whose stop and target go out (as an OCO) once the entry has filled."""
        self.orders.submit_bracket(entry, stop_loss, take_profit)
        self._track(entry, False, reference_price)
        for child in (stop_loss, take_profit):
            if child is not None:
                self._track(child, True, None)
        return entry

    def submit_oco(self, first: Order, second: Order, *, reduce_only: bool = True) -> tuple[Order, Order]:
        self.orders.submit_oco(first, second)
        self._track(first, reduce_only, None)
        self._track(second, reduce_only, None)
        return first, second

    def cancel(self, client_order_id: ClientOrderId, reason: str = "") -> None:
        """Ask for a cancel (carried out at the next pump)."""
        self.orders.request_cancel(client_order_id, reason)

    def tracked(self, client_order_id: ClientOrderId) -> Tracked | None:
        return self._tracked.get(client_order_id)

    def adopt(self, order: Order, found: VenueOrder | None) -> None:
        """Carry on a protective order an earlier run placed (a restart): tracked under its id, never sent again.

        `found` is the venue's order (None: the earlier run held it back; it waits for its position).
        """
        self.orders.restore(order)
        self._track(order, True, None)
        t = self._tracked[order.client_order_id]
        if found is not None:
            t.state, t.venue_id, t.reported = "live", found.venue_id, order.filled_qty
            t.take_profit = found.venue_type.startswith("TAKE_PROFIT")

    def _track(self, order: Order, reduce_only: bool, reference_price: Decimal | None) -> None:
        symbol = self.venue.symbol(order.symbol)
        state = "held" if reduce_only else "new"
        self._tracked[order.client_order_id] = Tracked(order, symbol, reduce_only, state, reference_price)

    def _on_request(self, request: CancelRequest | ModifyRequest) -> None:
        # Called inside OrderManager calls: only queue, the work happens in pump().
        if isinstance(request, CancelRequest):
            self._cancels.append((request.client_order_id, request.reason))
        else:
            self._modifies.append(request)

    # ------------------------------------------------------------------ the pump
    def pump(self, *, poll: bool | None = None) -> None:
        """Send, cancel, poll (every `poll_interval`, or when `poll`) and release waiting orders.

        An unreachable venue never raises out of here: what could not be done is tried again
        at the next pump (the circuit breaker counts the failures).
        """
        due = self._clock() - self._last_poll >= self.poll_interval()  # longer while the order stream is up
        polling = bool(poll) or (poll is None and due)
        stages = [self._reconnect] if self._resync else []
        self._resync = False
        stages += [self.apply_stream, self._apply_modifies, self.flush_cancels, self._send_new]
        # Cancels go before sends: a replacement must not meet the coins its predecessor holds.
        if polling:
            self._last_poll = self._clock()
            stages += [self.poll, self.flush_cancels]  # a filled leg's sibling goes at once
        stages += [self.settle_balances, self._release_held, self._send_new]
        for stage in stages:
            try:
                stage()
            except VenueUnavailable as exc:
                log.warning("%s: %s; tried again at the next pump", stage.__name__, exc)
            except self.venue.ccxt.BaseError as exc:  # an answer we did not expect: keep trading
                log.error("%s: the venue answered %s: %s", stage.__name__, type(exc).__name__, exc)

    def poll(self) -> None:
        """Read the venue's state of every working order and report what changed."""
        symbols = {t.symbol for t in self._tracked.values() if t.state in ("live", "unconfirmed", "local")}
        for symbol in sorted(symbols):
            self._poll_symbol(symbol)
        self.refresh_balances()

    def refresh_balances(self) -> None:
        self.balances = self.venue.balances()
        if self.venue.settings.futures:
            self.refresh_positions()

    def _poll_symbol(self, symbol: str) -> None:
        mine = [t for t in self._tracked.values() if t.symbol == symbol]
        for t in [t for t in mine if t.state == "unconfirmed"]:
            found = self.venue.lookup(symbol, str(t.order.client_order_id))
            t.state = "new" if found is None else "live"
            if found is not None:
                self._apply(t, found)
        live = [t for t in mine if t.state == "live"]
        if live:
            open_now = {o.venue_id: o for o in self.venue.open_orders(symbol)}
            seen = [(t, open_now.get(t.venue_id or "") or self.venue.fetch(symbol, t.venue_id or "")) for t in live]
            # Fills first: the fill of one OCO leg explains why the venue expired the other.
            for t, vo in sorted(seen, key=lambda p: p[1] is None or p[1].filled <= p[0].reported):
                if vo is not None:
                    self._apply(t, vo)
        local = [t for t in mine if t.state == "local" and t.order.is_open]
        if local:
            self._check_local(symbol, local, self.venue.last_price(symbol))

    # ------------------------------------------------------------------ sending
    def _send_new(self) -> None:
        for t in [t for t in self._tracked.values() if t.state == "new"]:
            if not t.order.is_open:
                t.state = "done"
                continue
            if not t.reduce_only and not self.venue.breaker.allows_entries():
                self._reject(t, f"{CIRCUIT_OPEN}: new entries halted after repeated venue failures "
                                f"({self.venue.breaker.last_failure})")
                continue
            try:
                if self._crossed(t):
                    t.as_market = True  # a stop the market is already through executes now
                request = self._request(t)
                self._check(t, request)
                self.configure(t.symbol)
            except FuturesSetupError as exc:
                self._reject(t, f"FUTURES_SETUP: {exc}")
                continue
            except OrderRefused as exc:
                self._reject(t, exc.reason)
                continue
            except VenueUnavailable as exc:
                log.warning("%s not sent yet: %s", t.order.client_order_id, exc)  # nothing sent: try again later
                continue
            try:
                vo = self.venue.place(request)
            except OrderRefused as exc:
                if exc.code == "WOULD_TRIGGER_NOW" and t.reduce_only and not t.as_market:
                    t.as_market = True  # sent again at the next pass, at market
                    continue
                self._reject(t, exc.reason)
                continue
            except VenueUnavailable as exc:
                log.error("%s: placement outcome unknown (%s); looking it up before any resend",
                          t.order.client_order_id, exc)
                t.state = "unconfirmed"
                continue
            t.state = "live"
            self._apply(t, vo)

    def _request(self, t: Tracked) -> PlaceRequest:
        o, v = t.order, self.venue
        why = v.unsupported(t.symbol)
        if why is not None:
            raise OrderRefused("UNSUPPORTED_MARKET", why)
        kind = "market" if t.as_market else _KINDS.get(o.order_type)
        if kind is None:
            raise OrderRefused("UNSUPPORTED_ORDER_TYPE", f"{o.order_type.value} orders are not sent to {v.exchange.id}")
        amount = v.round_amount(t.symbol, o.remaining)
        if amount != o.remaining and amount > 0:
            self.orders.on_modified(o.client_order_id, quantity=o.filled_qty + amount)
        price = v.round_price(t.symbol, o.price) if o.price is not None and kind != "market" else None
        stop = v.round_price(t.symbol, o.stop_price) if o.stop_price is not None and kind != "market" else None
        if t.take_profit and kind == "limit":
            kind, price, stop = "take_profit", None, price  # futures target: triggers at its price, fills at market
        close = v.settings.close_position and t.reduce_only and kind in ("stop", "take_profit")
        return PlaceRequest(t.symbol, o.side.value, kind, amount, str(o.client_order_id), price, stop,
                            t.reduce_only, close)

    def _check(self, t: Tracked, r: PlaceRequest) -> None:
        contract = self.venue.is_contract(r.symbol)
        if r.kind == "stop" and not contract:
            assert r.stop_price is not None
            ref = self.venue.stop_limit_price(r.symbol, r.side, r.stop_price)
        else:
            ref = r.price or r.stop_price or t.reference_price or self.venue.last_price(r.symbol)
        self.venue.check(r.symbol, r.amount, ref, reduce_only=r.reduce_only)
        if not contract and r.side == "sell" and not r.reduce_only:
            self._no_short(r)

    def _no_short(self, r: PlaceRequest) -> None:
        """Spot cannot sell what it does not hold: refuse before sending (balances read again first)."""
        base = self.venue.market(r.symbol)["base"]
        if r.amount > self.balances.get(base, (ZERO, ZERO))[0]:
            self.refresh_balances()
            free = self.balances.get(base, (ZERO, ZERO))[0]
            if r.amount > free:
                raise OrderRefused("NO_SHORT_ON_SPOT", f"{r.symbol}: selling {r.amount.normalize():f} {base} "
                                   f"with {free.normalize():f} free; spot cannot go short "
                                   "(trade futures with market: future)")

    def _reject(self, t: Tracked, reason: str) -> None:
        t.state = "done"
        log.warning("%s rejected: %s", t.order.client_order_id, reason)
        if t.order.status is OrderStatus.PENDING_CANCEL:  # its cancel was asked for meanwhile: over either way
            self.orders.on_cancelled(t.order.client_order_id, t.cancel_reason or reason)
        elif t.order.is_open:
            self.orders.on_rejected(t.order.client_order_id, reason)

    # ------------------------------------------------------------------ venue facts
    def _apply(self, t: Tracked, vo: VenueOrder) -> None:
        """Report what the venue says of one order that the manager does not know yet."""
        o, om, cid = t.order, self.orders, t.order.client_order_id
        t.venue_id = vo.venue_id
        if o.status is OrderStatus.NEW and vo.status != "rejected":
            om.on_accepted(cid, vo.venue_id)
        if vo.filled > t.reported:
            self._report_fills(t, vo)
        if not o.is_open or vo.status == "open":
            if not o.is_open:
                t.state = "done"
            return
        t.state = "done"
        asked = t.cancel_reason is not None or o.status is OrderStatus.PENDING_CANCEL
        if vo.status == "canceled" or (vo.status == "expired" and asked):
            om.on_cancelled(cid, t.cancel_reason or ("OCO" if o.oco_id else "VENUE"))
        elif vo.status == "expired":
            om.on_expired(cid)
        elif vo.status == "rejected":
            om.on_rejected(cid, "VENUE_REJECTED")

    def _report_fills(self, t: Tracked, vo: VenueOrder) -> None:
        trades = list(vo.trades)
        if sum((x.amount for x in trades), ZERO) < vo.filled:
            trades = self.venue.trades(t.symbol, vo.venue_id)
        for trade in sorted(trades, key=lambda x: x.ts):
            if trade.trade_id in t.seen_trades or not t.order.is_open:
                continue
            t.seen_trades.add(trade.trade_id)
            qty = min(trade.amount, t.order.remaining)
            if qty > 0:
                self._fill(t, qty, trade.price, trade.fee, trade.trade_id, trade.ts, trade.fee_currency)
        rest = min(vo.filled - t.reported, t.order.remaining)
        if rest > 0 and vo.status != "open" and vo.average:
            # The venue closed the order but its trade list lags: book the rest at the average.
            self._fill(t, rest, vo.average, ZERO, None, datetime.now(UTC))

    def _fill(self, t: Tracked, qty: Decimal, price: Decimal, fee: Decimal, trade_id: str | None,
              ts: datetime, fee_currency: str | None = None) -> None:
        bid, ask = self.quote_at_fill(t.symbol, ts)
        t.reported += qty
        self.positions[t.symbol] += t.order.side.sign * qty
        self.orders.on_fill(t.order.client_order_id, qty, price, fee, trade_id=trade_id, ts=ts,
                            fee_currency=fee_currency, bid=bid, ask=ask)

    def quote_at_fill(self, symbol: str, ts: datetime) -> tuple[Decimal | None, Decimal | None]:
        """The venue's (bid, ask) for a fill at `ts` seen now; (None, None) when not known.

        Off with ``quote_at_fill: false``; none for a fill the venue dates more than
        `QUOTE_LAG_S` ago (seen after an outage: today's quote is not the one at the fill). The ticker is read once, not
        retried; its failure costs the fill its quote, never the fill.
        """
        if not self.venue.settings.quote_at_fill:
            return None, None
        # A trade without a venue time (Binance's answer to a placement) is being seen now.
        if ts.timestamp() > 0 and self.venue.server_time_ms() / 1000 - ts.timestamp() > QUOTE_LAG_S:
            log.info("%s: fill of %s seen late: recorded without bid/ask", symbol, ts.isoformat())
            return None, None
        try:
            return self.venue.quote(symbol)
        except Exception as exc:  # noqa: BLE001 - any failure: the fill goes on without its quote
            log.warning("%s: no quote at fill (%s: %s); bid/ask recorded as unknown", symbol, type(exc).__name__, exc)
            return None, None

    # ------------------------------------------------------------------ cancels and modifies
    def flush_cancels(self) -> None:
        """Carry out the cancels asked for so far (also called by the broker right after a cancel)."""
        for _ in range(len(self._cancels)):
            cid, reason = self._cancels.popleft()
            t = self._tracked.get(cid)
            if t is None or t.state == "done" or not t.order.is_open:
                continue
            t.cancel_reason = reason
            if t.state in ("held", "new", "local"):
                t.state = "done"
                self.orders.on_cancelled(cid, reason)
                continue
            try:
                if t.state == "unconfirmed":
                    found = self.venue.lookup(t.symbol, str(cid))
                    if found is None:
                        t.state = "done"
                        self.orders.on_cancelled(cid, reason)
                        continue
                    t.venue_id = found.venue_id
                vo = self.venue.cancel(t.symbol, t.venue_id or "")
            except VenueUnavailable as exc:
                log.warning("cancel of %s failed (%s); retrying at the next pump", cid, exc)
                self._cancels.append((cid, reason))
                continue
            if vo is not None:
                self._apply(t, vo)

    def _apply_modifies(self) -> None:
        while self._modifies:
            req = self._modifies.popleft()
            t = self._tracked.get(req.client_order_id)
            if t is None or not t.order.is_open:
                continue
            if t.state in ("held", "new", "local"):
                self.orders.on_modified(req.client_order_id, quantity=req.quantity, price=req.price,
                                        stop_price=req.stop_price)
            else:
                log.warning("%s: amending a working order is not supported on %s; left as it is",
                            req.client_order_id, self.venue.exchange.id)

    # ------------------------------------------------------------------ breaker and reconnection
    # The venue counts as unreachable when the breaker opens (N failed requests in a row, every
    # try of a retried request counting): ConnectionLost once, however often the breaker trips
    # again while the venue stays down; the first success closes it: ConnectionRestored once,
    # with the downtime from the first failure of the run.
    def _on_halt(self, detail: str) -> None:
        self.halted_reason = detail
        now = datetime.now(UTC)
        self._publish(Halted(ts=now, reason=CIRCUIT_OPEN, detail=detail))
        if not self.connection_down:
            self.connection_down = True
            self._publish(ConnectionLost(ts=now, venue=self.venue.exchange.id, detail=detail))

    def _on_resume(self) -> None:
        self.halted_reason = ""
        self._resync = True
        now = datetime.now(UTC)
        self._publish(Resumed(ts=now, reason="CIRCUIT_CLOSED"))
        if self.connection_down:
            self.connection_down = False
            self._publish(ConnectionRestored(ts=now, venue=self.venue.exchange.id,
                                             downtime_s=self.venue.breaker.last_downtime))

    def _publish(self, event: Any) -> None:
        if self.bus is not None:
            self.bus.publish(event)

    def _reconnect(self) -> None:
        """After an outage: resynchronise the clock and read every working order again."""
        self.venue.sync_time()
        self.poll()
