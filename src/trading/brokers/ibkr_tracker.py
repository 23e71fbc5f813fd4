"""OrderTracker: follow our orders at IB and turn IB's order events into venue facts.

Our orders are recognised by their ``orderRef`` (the ClientOrderId), so an order placed by an
earlier connection or an earlier process is found again (`adopt`, `resync`). Rules:

* the first ``PreSubmitted``/``Submitted`` status is `Accepted` (venue id: IB's permId);
* each execution is one `Filled`, reported once its commission report arrives (or, without
  one, after `commission_wait` seconds with a zero fee); executions are counted once by execId;
* ``Cancelled``/``ApiCancelled``/``Inactive`` end the order: `Rejected` if IB never accepted or
  filled it, else `Cancelled`; the end waits until every fill IB counted has been reported;
* a modification is `Modified` once IB echoes the new values in an open-order message.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from trading.brokers.ibkr_orders import Accepted, Cancelled, Filled, Modified, Rejected, VenueFact
from trading.orders import ClientOrderId

log = logging.getLogger(__name__)

_LIVE = frozenset({"PreSubmitted", "Submitted", "ApiUpdate"})
_DEAD = frozenset({"Cancelled", "ApiCancelled", "Inactive"})
_PLAIN_CANCEL = 202  # "Order Canceled": the confirmation of a cancel, not a problem
EPS = 1e-9
Schedule = Callable[[float, Callable[[], None]], Any]


def _dec(x: float) -> Decimal:
    return Decimal(repr(float(x)))


@dataclass
class Tracked:
    """What we know of one of our orders at IB."""

    cid: ClientOrderId
    quantity: float
    trade: Any = None  # ib_async Trade
    accepted: bool = False
    done: bool = False
    filled: float = 0.0  # reported to the listeners
    reported: set[str] = field(default_factory=set)
    waiting: dict[str, Any] = field(default_factory=dict)  # execId -> Fill without commission yet
    pending_end: VenueFact | None = None
    modify: tuple[float | None, float | None, float | None] | None = None  # requested qty, lmt, aux

    @property
    def order_id(self) -> int:
        return int(self.trade.order.orderId) if self.trade is not None else 0

    @property
    def venue_id(self) -> str:
        if self.trade is None:
            return ""
        perm = self.trade.orderStatus.permId or self.trade.order.permId
        return str(perm or self.trade.order.orderId)

    @property
    def complete(self) -> bool:
        return self.filled >= self.quantity - EPS


class OrderTracker:
    """Keep `Tracked` records and emit facts through `emit` (all on the IB loop thread)."""

    def __init__(self, emit: Callable[[VenueFact], None], *, commission_wait: float, schedule: Schedule) -> None:
        self._emit = emit
        self._wait = commission_wait
        self._schedule = schedule
        self._orders: dict[str, Tracked] = {}  # orderRef -> record
        self._errors: dict[int, tuple[int, str]] = {}  # orderId -> last (code, message)

    def get(self, cid: ClientOrderId) -> Tracked | None:
        return self._orders.get(str(cid))

    def records(self) -> list[Tracked]:
        return list(self._orders.values())

    def track(self, cid: ClientOrderId, quantity: float, trade: Any) -> Tracked:
        record = Tracked(cid, quantity, trade)
        self._orders[str(cid)] = record
        return record

    # ------------------------------------------------------------------ lookups at IB

    @staticmethod
    def find(ib: Any, cid: ClientOrderId) -> tuple[Any, list[Any]]:
        """Return IB's trade with orderRef `cid` (the newest, or None) and every execution of it."""
        ref = str(cid)
        trades = [t for t in ib.trades() if t.order.orderRef == ref]
        fills = {f.execution.execId: f for f in ib.fills() if f.execution.orderRef == ref}
        for t in trades:
            for f in t.fills:
                fills.setdefault(f.execution.execId, f)
        return (trades[-1] if trades else None), sorted(fills.values(), key=lambda f: f.time)

    def adopt(self, ib: Any, cid: ClientOrderId, quantity: float) -> Tracked | None:
        """Take over an order IB already holds under `cid` (placed before a reconnect or a restart).

        Return None when IB knows no order or execution with that orderRef. The facts of what
        happened to it so far are reported at once.
        """
        trade, fills = self.find(ib, cid)
        if trade is None and not fills:
            return None
        if trade is not None and trade.order.totalQuantity:
            quantity = float(trade.order.totalQuantity)
        record = self.track(cid, quantity, trade)
        log.info("IB already holds %s (%d execution(s)): adopted, not placed again", cid, len(fills))
        self._catch_up(record, trade, fills)
        return record

    def resync(self, ib: Any) -> None:
        """After a reconnect: rebind every open record to IB's new trade and report what was missed."""
        for record in self.records():
            if record.done:
                continue
            trade, fills = self.find(ib, record.cid)
            self._catch_up(record, trade, fills)

    def _catch_up(self, record: Tracked, trade: Any, fills: list[Any]) -> None:
        if trade is not None:
            record.trade = trade
        if fills or (trade is not None and trade.orderStatus.status in _LIVE):
            self._accept(record)
        for f in fills:
            if f.execution.execId in record.reported or f.execution.execId in record.waiting:
                continue
            report = f.commissionReport
            self._fill(record, f, report if report.execId else None)
        if record.done:
            return
        if trade is None or trade.orderStatus.status in _DEAD:
            # Not open at IB any more: it ended while we were away, with what it filled.
            status = trade.orderStatus.status if trade is not None else "NOT_OPEN"
            self._end(record, status, reconnect=True)
        else:
            self.on_status(trade)

    # ------------------------------------------------------------------ IB events

    def _ours(self, trade: Any) -> Tracked | None:
        record = self._orders.get(trade.order.orderRef)
        if record is not None:
            record.trade = trade  # after a reconnect IB's trade objects are new ones
        return record

    def on_error(self, req_id: int, code: int, message: str, contract: Any = None) -> None:
        if req_id > 0 and not 2100 <= code < 2200:
            self._errors[req_id] = (code, message)

    def on_status(self, trade: Any) -> None:
        record = self._ours(trade)
        if record is None or record.done:
            return
        status = trade.orderStatus.status
        if status in _LIVE:
            self._accept(record)
        elif status in _DEAD:
            # The error that caused it (if any) is published right after this status: wait a turn.
            self._schedule(0.0, lambda: self._end(record, status))

    def on_exec(self, trade: Any, fill: Any) -> None:
        record = self._ours(trade)
        exec_id = fill.execution.execId
        if record is None or exec_id in record.reported or exec_id in record.waiting:
            return
        record.waiting[exec_id] = fill
        self._schedule(self._wait, lambda: self._commission_timeout(record, exec_id))

    def on_commission(self, trade: Any, fill: Any, report: Any) -> None:
        record = self._ours(trade)
        if record is None:
            return
        waiting = record.waiting.pop(report.execId, None)
        if waiting is not None:
            self._fill(record, waiting, report)

    def on_open_order(self, trade: Any) -> None:
        record = self._ours(trade)
        if record is None or record.modify is None or record.done:
            return
        qty, lmt, aux = record.modify
        o = trade.order
        if (qty is None or math.isclose(o.totalQuantity, qty)) and (lmt is None or math.isclose(o.lmtPrice, lmt)) and (
            aux is None or math.isclose(o.auxPrice, aux)
        ):
            record.modify = None
            record.quantity = float(o.totalQuantity)
            self._emit(
                Modified(
                    record.cid,
                    quantity=_dec(qty) if qty is not None else None,
                    limit_price=_dec(lmt) if lmt is not None else None,
                    stop_price=_dec(aux) if aux is not None else None,
                )
            )

    # ------------------------------------------------------------------ facts

    def _accept(self, record: Tracked) -> None:
        if not record.accepted:
            record.accepted = True
            self._emit(Accepted(record.cid, record.venue_id))

    def _commission_timeout(self, record: Tracked, exec_id: str) -> None:
        fill = record.waiting.pop(exec_id, None)
        if fill is not None:
            log.warning("no commission report for execution %s of %s: fee reported as 0", exec_id, record.cid)
            self._fill(record, fill, None)

    def _fill(self, record: Tracked, fill: Any, report: Any | None) -> None:
        """Report one execution with its commission report (None: none came; fee 0, currency unknown)."""
        ex = fill.execution
        if ex.execId in record.reported:
            return
        self._accept(record)
        record.reported.add(ex.execId)
        record.filled += float(ex.shares)
        commission = None if report is None else report.commission
        fee = _dec(commission) if commission is not None and commission > 0 and math.isfinite(commission) else Decimal(0)
        currency = (getattr(report, "currency", "") or None) if report is not None else None
        self._emit(Filled(record.cid, _dec(ex.shares), _dec(ex.price), fee, ex.execId, ex.time, currency))
        if record.complete:
            record.done = True
        elif record.pending_end is not None and not self._fills_missing(record):
            end, record.pending_end = record.pending_end, None
            record.done = True
            self._emit(end)

    def _fills_missing(self, record: Tracked) -> bool:
        counted = float(record.trade.orderStatus.filled) if record.trade is not None else 0.0
        return bool(record.waiting) or counted > record.filled + EPS

    def _end(self, record: Tracked, status: str, *, reconnect: bool = False) -> None:
        if record.done or record.pending_end is not None:
            return
        if record.complete:
            record.done = True
            return
        code, message = self._errors.get(record.order_id, (0, ""))
        if reconnect and status == "NOT_OPEN":
            reason = "NOT_OPEN_AT_IB"  # ended while this process was not connected
        elif code and code != _PLAIN_CANCEL:
            reason = f"IB {code}: {message}"
        else:
            reason = "" if status in ("Cancelled", "ApiCancelled") else status.upper()
        fact: VenueFact
        if not record.accepted and record.filled == 0:
            fact = Rejected(record.cid, reason or status.upper())
        else:
            fact = Cancelled(record.cid, reason)
        if self._fills_missing(record):
            record.pending_end = fact  # sent after the last fill; never held forever:
            self._schedule(self._wait * 2, lambda: self._flush_end(record))
            return
        record.done = True
        self._emit(fact)

    def _flush_end(self, record: Tracked) -> None:
        if record.pending_end is not None and not record.done:
            for exec_id in list(record.waiting):
                self._commission_timeout(record, exec_id)
            if record.pending_end is not None and not record.done:
                end, record.pending_end = record.pending_end, None
                record.done = True
                self._emit(end)
