"""IBKRAdapter: one connection to TWS / IB Gateway through ib_async, callable from any thread.

* Connection: host, port (from `trading_mode` and `app`), client id; the account is checked
  (a paper bot refuses a live account). A lost connection is re-established with exponential
  backoff; then every open order is re-bound by its orderRef and what was missed (fills,
  cancels) is reported, and the reconnect callbacks (the live feeds) run. On `bus` (when set)
  the drop is published as ConnectionLost (venue ``ibkr``) and the reconnection as
  ConnectionRestored with the downtime, once per outage.
* Contracts: bot symbols map to contract specs (`ibkr_contracts`), qualified with IB.
* Orders: `place` takes `OrderTicket`s (market, limit, stop, stop-limit, trailing, brackets
  with transmit flags and an OCA group). Before placing, an order is looked up at IB by its
  orderRef = ClientOrderId, open or executed: a retry or a restarted process adopts it and
  never places it twice. `cancel` and `modify` act on orders by client order id.
* What IB reports comes back as venue facts (`ibkr_orders`), delivered to the listeners on
  the IB loop thread; `OrderManagerBridge` (ibkr_bridge) reports them into an OrderManager.
* Positions, account values (NetLiquidation, AvailableFunds, ...) and the account summary.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from trading.brokers.ibkr_config import (
    IBKRConnectionError,
    IBKRError,
    IBKRSettings,
    mask_account,
    require_ib_async,
)
from trading.brokers.ibkr_contracts import Instrument, qualify, spec_for_symbol
from trading.brokers.ibkr_loop import IBLoop
from trading.brokers.ibkr_orders import OrderTicket, Rejected, VenueFact, to_ib_order
from trading.brokers.ibkr_tracker import OrderTracker
from trading.events import ConnectionLost, ConnectionRestored
from trading.orders import ClientOrderId

log = logging.getLogger(__name__)

_CONNECTIVITY = {1100: "connectivity between IB and TWS lost", 1101: "connectivity restored, data lost",
                 1102: "connectivity restored, data kept"}


@dataclass(frozen=True)
class PlaceResult:
    cid: ClientOrderId
    order_id: int  # IB's orderId (0 if the order was refused before reaching IB)
    adopted: bool  # IB already held it: nothing was sent


@dataclass(frozen=True)
class PositionInfo:
    symbol: str
    quantity: Decimal  # signed
    avg_cost: Decimal  # per unit of price (IB's avgCost divided by the multiplier)


def _dec(value: Any) -> Decimal | None:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


class IBKRAdapter:
    """Talk to IB for one bot; see the module docstring. Public methods are thread-safe."""

    def __init__(self, settings: IBKRSettings, *, loop: IBLoop | None = None) -> None:
        self._ib_mod = require_ib_async()
        self.settings = settings
        self.loop = loop or IBLoop()
        self._own_loop = loop is None
        self.ib: Any = None
        self.account = ""
        self.instruments: dict[str, Instrument] = {}
        self._symbol_of: dict[int, str] = {}
        self._listeners: list[Callable[[VenueFact], None]] = []
        self._reconnect_callbacks: list[Callable[[], Awaitable[None] | None]] = []
        self.tracker = OrderTracker(self._publish, commission_wait=settings.commission_wait, schedule=self._schedule)
        self._values: dict[tuple[str, str, str], str] = {}  # (account, tag, currency) -> value
        self._base_currency = ""
        self._want = False  # connected once: reconnect when the connection drops
        self._closing = False
        self._reconnect_task: asyncio.Future[None] | None = None
        self.connected = threading.Event()
        self.reconnects = 0
        self.gave_up = False
        self.bus: Any = None  # ConnectionLost / ConnectionRestored go here when set
        self._lost_at: float | None = None  # monotonic time of the drop while an outage lasts

    # ------------------------------------------------------------------ listeners

    def add_listener(self, listener: Callable[[VenueFact], None]) -> None:
        """Call `listener(fact)` for every venue fact (on the IB loop thread)."""
        self._listeners.append(listener)

    def add_reconnect_callback(self, callback: Callable[[], Awaitable[None] | None]) -> None:
        """Run `callback()` on the loop after each successful reconnection."""
        self._reconnect_callbacks.append(callback)

    def _publish(self, fact: VenueFact) -> None:
        for listener in list(self._listeners):
            try:
                listener(fact)
            except Exception:
                log.exception("IB fact listener %r failed", listener)

    def _schedule(self, delay: float, fn: Callable[[], None]) -> None:
        self.loop.loop.call_later(delay, fn)

    # ------------------------------------------------------------------ connection

    def connect(self) -> None:
        """Connect, check the account and qualify the configured contracts (idempotent)."""
        if self.connected.is_set():
            return
        s = self.settings
        budget = s.connect_timeout * 2 + s.request_timeout * (1 + len(s.contracts))
        self.loop.run(self._connect_first, timeout=budget)

    async def _connect_first(self) -> None:
        if self._reconnect_task is not None:  # already on it: wait for that attempt series
            await asyncio.wait({self._reconnect_task})
            if not self.connected.is_set():
                raise IBKRConnectionError("reconnecting to IB failed")
            return
        if self.ib is None:
            self._make_ib()
        await self._connect_once()
        self._want, self.gave_up = True, False
        self._connection_restored()  # after a series that gave up, a new connect() ends the outage

    def _make_ib(self) -> None:
        ib = self._ib_mod.IB()
        ib.orderStatusEvent += self.tracker.on_status
        ib.execDetailsEvent += self.tracker.on_exec
        ib.commissionReportEvent += self.tracker.on_commission
        ib.openOrderEvent += self.tracker.on_open_order
        ib.errorEvent += self._on_error
        ib.accountValueEvent += self._on_account_value
        ib.disconnectedEvent += self._on_disconnected
        self.ib = ib

    async def _connect_once(self) -> None:
        s = self.settings
        where = f"{s.host}:{s.resolved_port} (client id {s.client_id})"
        # ib_async keeps waiting for the API to start after the peer hung up (e.g. client id
        # in use): its apiError event ends the attempt at once instead.
        errors: list[str] = []
        failed = asyncio.Event()

        def on_api_error(message: str) -> None:
            errors.append(message or "the connection was closed during the handshake")
            failed.set()

        self.ib.client.apiError += on_api_error
        self.ib.client.conn.disconnected += on_api_error
        connect = asyncio.ensure_future(self.ib.connectAsync(
            s.host, s.resolved_port, s.client_id, timeout=s.connect_timeout, account=s.account or ""))
        watch = asyncio.ensure_future(failed.wait())
        try:
            await asyncio.wait({connect, watch}, return_when=asyncio.FIRST_COMPLETED)
            if not connect.done():
                connect.cancel()
                await asyncio.gather(connect, return_exceptions=True)
                raise IBKRConnectionError(f"cannot connect to IB at {where}: {errors[-1]}")
            connect.result()
        except IBKRConnectionError:
            raise
        except Exception as exc:
            raise IBKRConnectionError(f"cannot connect to IB at {where}: {errors[-1] if errors else repr(exc)}") from exc
        finally:
            watch.cancel()
            self.ib.client.apiError -= on_api_error
            self.ib.client.conn.disconnected -= on_api_error
        try:
            self.account = self._choose_account(self.ib.managedAccounts())
            # Orders of every client id, so that ours are found by orderRef whoever placed them.
            await asyncio.wait_for(self.ib.reqAllOpenOrdersAsync(), s.request_timeout)
            for symbol in s.contracts:
                await self._instrument(symbol)
        except BaseException:
            self.ib.disconnect()
            raise
        self.connected.set()
        log.info("connected to IB at %s, account %s", where, mask_account(self.account))

    def _choose_account(self, accounts: list[str]) -> str:
        s = self.settings
        shown = ", ".join(mask_account(a) for a in accounts)
        if s.account:
            if s.account not in accounts:
                raise IBKRConnectionError(f"account {mask_account(s.account)} is not managed by this login ({shown})")
            account = s.account
        elif len(accounts) == 1:
            account = accounts[0]
        else:
            raise IBKRConnectionError(f"the login manages {len(accounts)} accounts ({shown}): set broker.ibkr.account")
        if s.trading_mode == "paper" and s.require_paper_account and not account.startswith("D"):
            raise IBKRConnectionError(
                f"trading_mode is paper but account {mask_account(account)} is not a paper account "
                "(IB paper account ids start with D): check the port and the login"
            )
        if s.trading_mode == "live" and account.startswith("D"):
            log.warning("trading_mode is live but account %s looks like a paper account", mask_account(account))
        return account

    def _on_disconnected(self) -> None:
        self.connected.clear()
        if self._closing or not self._want or self._reconnect_task is not None:
            return
        log.warning("IB connection lost; reconnecting")
        if self._lost_at is None:
            self._lost_at = time.monotonic()
            s = self.settings
            self._publish_event(ConnectionLost(
                ts=datetime.now(UTC), venue="ibkr",
                detail=f"connection to {s.host}:{s.resolved_port} (client id {s.client_id}) dropped; reconnecting",
            ))
        self._reconnect_task = asyncio.ensure_future(self._reconnect())

    def _connection_restored(self) -> None:
        if self._lost_at is None:
            return
        downtime, self._lost_at = time.monotonic() - self._lost_at, None
        self._publish_event(ConnectionRestored(ts=datetime.now(UTC), venue="ibkr", downtime_s=downtime))

    def _publish_event(self, event: Any) -> None:
        if self.bus is None:
            return
        try:
            self.bus.publish(event)
        except Exception:
            log.exception("could not publish %s", type(event).__name__)

    async def _reconnect(self) -> None:
        attempt = 0
        try:
            for attempt, delay in enumerate(self.settings.reconnect.delays(), start=1):
                await asyncio.sleep(delay)
                if self._closing:
                    return
                try:
                    await self._connect_once()
                except (TimeoutError, IBKRError, OSError) as exc:
                    log.warning("reconnect attempt %d to IB failed: %s", attempt, exc)
                    continue
                self.reconnects += 1
                self._connection_restored()
                self.tracker.resync(self.ib)
                for callback in list(self._reconnect_callbacks):
                    try:
                        result = callback()
                        if inspect.isawaitable(result):
                            await result
                    except Exception:
                        log.exception("reconnect callback %r failed", callback)
                return
            self.gave_up = True
            log.error("gave up reconnecting to IB after %d attempt(s)", attempt)
        finally:
            self._reconnect_task = None

    def close(self) -> None:
        """Disconnect for good (no reconnection) and stop the loop if this adapter made it."""
        self._closing = True
        if self.loop.running:
            self.loop.call(self._close_now)
            if self._own_loop:
                self.loop.close()

    def _close_now(self) -> None:
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        if self.ib is not None:
            self.ib.disconnect()
        self.connected.clear()

    def _require_connected(self) -> None:
        if not self.connected.is_set():
            raise IBKRConnectionError("not connected to IB" + (" (reconnecting)" if self._want else ""))

    def _on_error(self, req_id: int, code: int, message: str, contract: Any = None) -> None:
        self.tracker.on_error(req_id, code, message, contract)
        if code in _CONNECTIVITY:
            log.warning("IB %d: %s", code, _CONNECTIVITY[code])

    def sync(self) -> None:
        """Return once IB has answered a request sent now: everything sent before was processed."""
        self._require_connected()
        self.loop.run(self.ib.reqCurrentTimeAsync, timeout=self.settings.request_timeout)

    # ------------------------------------------------------------------ contracts

    def instrument(self, symbol: str) -> Instrument:
        """Return the qualified instrument of a bot symbol (asking IB the first time)."""
        known = self.instruments.get(symbol)
        if known is not None:
            return known
        self._require_connected()
        return self.loop.run(lambda: self._instrument(symbol), timeout=self.settings.request_timeout)

    async def _instrument(self, symbol: str) -> Instrument:
        known = self.instruments.get(symbol)
        if known is None:
            known = await qualify(self.ib, symbol, spec_for_symbol(symbol, self.settings.contracts))
            self.instruments[symbol] = known
            self._symbol_of.setdefault(known.con_id, symbol)  # two symbols on one contract: the first
            self._symbol_of.setdefault(int(known.data.conId), symbol)
        return known

    # ------------------------------------------------------------------ orders

    def place(self, tickets: Sequence[OrderTicket]) -> list[PlaceResult]:
        """Place the tickets in order (a bracket: entry first); adopt those IB already holds."""
        self._require_connected()

        async def place() -> list[PlaceResult]:
            for t in tickets:
                await self._instrument(t.symbol)
            return self._place_now(list(tickets))

        return self.loop.run(place, timeout=self.settings.request_timeout)

    def _place_now(self, tickets: list[OrderTicket]) -> list[PlaceResult]:
        results: dict[ClientOrderId, PlaceResult] = {}
        for t in tickets:
            record = self.tracker.get(t.cid) or self.tracker.adopt(self.ib, t.cid, float(t.quantity))
            if record is not None:
                results[t.cid] = PlaceResult(t.cid, record.order_id, adopted=True)
        new = [t for t in tickets if t.cid not in results]
        for i, t in enumerate(new):
            parent_id = 0
            if t.parent is not None:
                parent = self.tracker.get(t.parent)
                if parent is None or (parent.done and parent.filled == 0):
                    self._publish(Rejected(t.cid, "PARENT_NOT_ACTIVE"))
                    results[t.cid] = PlaceResult(t.cid, 0, adopted=False)
                    continue
                parent_id = 0 if parent.done else parent.order_id
            family = t.parent or t.cid
            # The last new order of a family transmits it (IB sends the held ones with it).
            later = any((o.parent or o.cid) == family for o in new[i + 1 :])
            ticket = replace(t, transmit=t.transmit or not later)
            order = to_ib_order(ticket, self.ib.client.getReqId(), parent_id, self.account)
            trade = self.ib.placeOrder(self.instruments[t.symbol].trade, order)
            record = self.tracker.track(t.cid, float(t.quantity), trade)
            results[t.cid] = PlaceResult(t.cid, record.order_id, adopted=False)
        return [results[t.cid] for t in tickets]

    def adopt(self, tickets: Sequence[OrderTicket]) -> set[ClientOrderId]:
        """Take over the tickets IB already holds (by orderRef) without placing any; return their ids."""
        self._require_connected()

        def run() -> set[ClientOrderId]:
            tracker = self.tracker
            return {t.cid for t in tickets
                    if tracker.get(t.cid) is not None or tracker.adopt(self.ib, t.cid, float(t.quantity)) is not None}

        return self.loop.call(run, timeout=self.settings.request_timeout)

    def cancel(self, cid: ClientOrderId) -> bool:
        """Ask IB to cancel an order; False if IB does not hold it open."""
        return self.loop.call(self._cancel, cid, timeout=self.settings.request_timeout)

    def _cancel(self, cid: ClientOrderId) -> bool:
        record = self.tracker.get(cid)
        if record is None or record.done or record.trade is None or record.trade.isDone():
            return False
        self._require_connected()
        self.ib.cancelOrder(record.trade.order)
        return True

    def modify(
        self,
        cid: ClientOrderId,
        *,
        quantity: Decimal | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
    ) -> bool:
        """Change an open order in place (same orderId); `Modified` follows IB's echo. False if not open."""
        return self.loop.call(self._modify, cid, quantity, limit_price, stop_price, timeout=self.settings.request_timeout)

    def _modify(self, cid: ClientOrderId, quantity: Decimal | None, limit: Decimal | None, stop: Decimal | None) -> bool:
        record = self.tracker.get(cid)
        if record is None or record.done or record.trade is None or record.trade.isDone():
            return False
        self._require_connected()
        o = record.trade.order
        want = (None if quantity is None else float(quantity), None if limit is None else float(limit),
                None if stop is None else float(stop))
        have = (o.totalQuantity, o.lmtPrice, o.auxPrice)
        if all(w is None or math.isclose(w, h) for w, h in zip(want, have)):
            return True
        o.totalQuantity, o.lmtPrice, o.auxPrice = (h if w is None else w for w, h in zip(want, have))
        record.modify = want
        self.ib.placeOrder(record.trade.contract, o)
        return True

    # ------------------------------------------------------------------ account

    def _on_account_value(self, value: Any) -> None:
        self._values[(value.account, value.tag, value.currency)] = value.value
        if value.tag == "NetLiquidation" and value.currency not in ("", "BASE"):
            self._base_currency = value.currency

    def account_values(self, currency: str | None = None) -> dict[str, Decimal]:
        """Return the account's numeric values (NetLiquidation, AvailableFunds, ...) in `currency`.

        Default: the account's base currency (the one NetLiquidation is reported in).
        """
        want = currency or self._base_currency
        out: dict[str, Decimal] = {}
        for (account, tag, ccy), raw in list(self._values.items()):
            if account != self.account or ccy not in (want, "BASE") or (ccy == "BASE" and tag in out):
                continue
            value = _dec(raw)
            if value is not None:
                out[tag] = value
        return out

    def account_value(self, tag: str) -> Decimal | None:
        return self.account_values().get(tag)

    def account_summary(self) -> dict[str, Decimal]:
        """Ask IB for the account summary (reqAccountSummary) and return its numeric values."""
        self._require_connected()
        rows = self.loop.run(lambda: self.ib.accountSummaryAsync(self.account), timeout=self.settings.request_timeout)
        return {r.tag: v for r in rows if (v := _dec(r.value)) is not None}

    def positions(self) -> dict[str, PositionInfo]:
        """Return the account's positions by bot symbol (IB's local symbol for other contracts)."""

        def read() -> dict[str, PositionInfo]:
            out: dict[str, PositionInfo] = {}
            for p in self.ib.positions(self.account):
                c = p.contract
                symbol = self._symbol_of.get(int(c.conId)) or c.localSymbol or c.symbol
                mult = float(c.multiplier or 1) or 1.0
                out[symbol] = PositionInfo(symbol, _dec(p.position) or Decimal(0), _dec(p.avgCost / mult) or Decimal(0))
            return out

        return self.loop.call(read, timeout=self.settings.request_timeout)

    # ------------------------------------------------------------------ bars

    async def history(self, symbol: str, bar_size: str, duration: str, *, keep_up_to_date: bool) -> Any:
        """Request historical bars (on the loop); with `keep_up_to_date` IB keeps the last bar updated."""
        inst = await self._instrument(symbol)
        s = self.settings
        return await self.ib.reqHistoricalDataAsync(
            inst.data, "", duration, bar_size, s.bars_source(inst.spec.sec_type), s.use_rth,
            formatDate=2, keepUpToDate=keep_up_to_date, timeout=s.request_timeout,
        )

    async def realtime_bars(self, symbol: str) -> Any:
        """Subscribe to IB's 5-second real-time bars (on the loop)."""
        inst = await self._instrument(symbol)
        s = self.settings
        return self.ib.reqRealTimeBars(inst.data, 5, s.bars_source(inst.spec.sec_type), s.use_rth)
