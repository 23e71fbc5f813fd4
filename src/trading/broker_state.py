"""PaperBrokerState: the paper broker's cash, positions and open orders, kept from its events.

In paper mode the broker is a simulation inside the bot process: everything it does reaches
the bus as order events (the OrderManager publishes each fact the SimBroker reports), so
applying those events in order gives the broker's book at every point of the event stream.
`count` and `last_event` say which point. Crash recovery uses it three ways: as the broker's
view of the restarted run, persisted (`BrokerStateFile`) as the broker's view of the run
that died, and seeded from the database (`from_records`) to replay lost events onto it.

Order statuses move as in the audit tables (an edge the lifecycle lacks keeps the current
status); positions move with the arithmetic of `trading.persistence.position_book`, at the
database columns' 10 decimals, so a book seeded from the database and one kept in memory
agree to the last digit.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from trading.events import (
    Event,
    Halted,
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderExpired,
    OrderFill,
    OrderFilled,
    OrderModified,
    OrderPartiallyFilled,
    OrderPendingCancel,
    OrderRejected,
    OrderSubmitted,
    Resumed,
    RiskDenied,
    RiskWarning,
    TradeClosed,
    TradeOpened,
)
from trading.orders import TRANSITIONS, OrderSide, OrderStatus, OrderType
from trading.persistence.audit import event_key
from trading.persistence.audit_events import EquitySampled
from trading.persistence.position_book import is_flat, position_after_fill
from trading.positions import Position

_ZERO = Decimal(0)
#: The events that advance the broker's point in the stream (bot start/stop and recovery
#: records are left out: their timestamps are wall-clock time, not the bars').
COUNTED: tuple[type[Event], ...] = (
    OrderEvent,
    TradeOpened,
    TradeClosed,
    RiskDenied,
    RiskWarning,
    Halted,
    Resumed,
)
_KEEP_CLOSED = 10_000  # closed orders remembered (their last status), newest first out


class OrderLike(Protocol):
    """What reconciliation reads of an order (`Order`, `StoredOrder`, `OrderState`)."""

    @property
    def client_order_id(self) -> Any: ...
    @property
    def symbol(self) -> str: ...
    @property
    def side(self) -> OrderSide: ...
    @property
    def order_type(self) -> OrderType: ...
    @property
    def quantity(self) -> Decimal: ...
    @property
    def price(self) -> Decimal | None: ...
    @property
    def stop_price(self) -> Decimal | None: ...
    @property
    def status(self) -> OrderStatus: ...
    @property
    def filled_qty(self) -> Decimal: ...


@dataclass(frozen=True)
class OrderState:
    """An order as the broker holds it."""

    client_order_id: str
    symbol: str
    side: OrderSide
    order_type: OrderType
    quantity: Decimal
    price: Decimal | None
    stop_price: Decimal | None
    status: OrderStatus
    filled_qty: Decimal

    @classmethod
    def of(cls, order: OrderLike) -> OrderState:
        return cls(
            str(order.client_order_id),
            order.symbol,
            order.side,
            order.order_type,
            order.quantity,
            order.price,
            order.stop_price,
            order.status,
            order.filled_qty,
        )


def _advance(current: OrderStatus, target: OrderStatus) -> OrderStatus:
    return target if target is current or target in TRANSITIONS[current] else current


class PaperBrokerState:
    """The book of a broker as its events tell it; thread-safe. See the module docstring."""

    def __init__(self, initial_cash: Decimal | float | None = None) -> None:
        self._lock = threading.Lock()
        self.cash: Decimal | None = None if initial_cash is None else Decimal(str(initial_cash))
        self.count = 0
        self.last_event: Event | None = None
        self.last_ts: datetime | None = None  # when the last counted event happened
        self._last_key: str | None = None
        self.orders: dict[str, OrderState] = {}  # open orders
        self.closed: OrderedDict[str, OrderStatus] = OrderedDict()
        self.book: dict[str, Position] = {}
        self.marks: dict[str, Decimal] = {}  # last fill price per symbol
        self.changes = 0  # bumps on every applied event (savers compare it)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_records(
        cls, orders: Iterable[OrderLike], positions: Iterable[Position]
    ) -> PaperBrokerState:
        """Start from stored open orders and positions (e.g. the database's view)."""
        state = cls()
        for order in orders:
            state.orders[str(order.client_order_id)] = OrderState.of(order)
        for pos in positions:
            state.book[pos.symbol] = pos
        return state

    def apply(self, event: Event) -> None:
        """Move the book by one event (events of other kinds are ignored)."""
        if not isinstance(event, COUNTED):
            return
        with self._lock:
            self.count += 1
            self.last_event = event
            self.last_ts = event.ts
            self._last_key = None
            self.changes += 1
            if isinstance(event, OrderEvent):
                self._on_order_event(event)

    def _on_order_event(self, e: OrderEvent) -> None:
        cid = str(e.client_order_id)
        if isinstance(e, OrderSubmitted):
            if cid not in self.orders and cid not in self.closed:
                self.orders[cid] = OrderState(
                    cid,
                    e.symbol,
                    e.side,
                    e.order_type,
                    e.quantity,
                    e.price,
                    e.stop_price,
                    OrderStatus.NEW,
                    _ZERO,
                )
            return
        if isinstance(e, OrderFill):
            self._fill(e)
        order = self.orders.get(cid)
        if order is None:
            return
        if isinstance(e, OrderModified):
            order = replace(order, quantity=e.quantity, price=e.price, stop_price=e.stop_price)
        else:
            order = replace(order, status=_advance(order.status, _target(e)))
            if isinstance(e, OrderFill) and e.filled_qty > order.filled_qty:
                order = replace(order, filled_qty=e.filled_qty)
        if order.status.is_open:
            self.orders[cid] = order
        else:
            del self.orders[cid]
            self.closed[cid] = order.status
            if len(self.closed) > _KEEP_CLOSED:
                self.closed.popitem(last=False)

    def _fill(self, e: OrderFill) -> None:
        pos = self.book.get(e.symbol) or Position(e.symbol)
        change = position_after_fill(
            pos.quantity, pos.avg_entry_price, e.side, e.last_qty, e.last_price
        )
        self.book[e.symbol] = replace(
            pos,
            quantity=change.quantity,
            avg_entry_price=change.avg_entry_price,
            realised_pnl=pos.realised_pnl + change.realised,
            fees=pos.fees + e.fee,
        )
        self.marks[e.symbol] = e.last_price
        if self.cash is not None:
            self.cash -= e.side.sign * e.last_qty * e.last_price + e.fee

    # ------------------------------------------------------------------ BrokerView
    def open_orders(self) -> list[OrderState]:
        with self._lock:
            return list(self.orders.values())

    def positions(self) -> list[Position]:
        with self._lock:
            return [p for p in self.book.values() if not is_flat(p.quantity)]

    def status_of(self, client_order_id: str) -> OrderStatus | None:
        """Return the order's status, open or closed, if the broker knows it."""
        with self._lock:
            order = self.orders.get(client_order_id)
            return order.status if order is not None else self.closed.get(client_order_id)

    @property
    def last_key(self) -> str | None:
        """The idempotency key of the last counted event (`audit.event_key`)."""
        with self._lock:
            if self._last_key is None and self.last_event is not None:
                self._last_key = event_key(self.last_event)
            return self._last_key

    def equity_sample(self) -> EquitySampled | None:
        """Return cash + positions marked at their last fill price, at the last event's time."""
        with self._lock:
            if self.cash is None or self.last_event is None:
                return None
            unrealised = sum(
                (
                    p.unrealised_pnl(self.marks.get(s, p.avg_entry_price or _ZERO))
                    for s, p in self.book.items()
                ),
                _ZERO,
            )
            value = sum(
                (p.quantity * self.marks.get(s, _ZERO) for s, p in self.book.items()), _ZERO
            )
            realised = sum((p.realised_pnl - p.fees for p in self.book.values()), _ZERO)
            return EquitySampled(
                ts=self.last_event.ts,
                equity=self.cash + value,
                cash=self.cash,
                unrealised_pnl=unrealised,
                realised_pnl=realised,
            )

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        key = self.last_key
        with self._lock:
            return {
                "version": 1,
                "count": self.count,
                "last_key": key,
                "last_ts": None if self.last_ts is None else self.last_ts.isoformat(),
                "cash": _s(self.cash),
                "marks": {s: str(p) for s, p in self.marks.items()},
                "open_orders": [_order_json(o) for o in self.orders.values()],
                "positions": [
                    _position_json(p) for p in self.book.values() if not is_flat(p.quantity)
                ],
            }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PaperBrokerState:
        state = cls(None if doc.get("cash") is None else Decimal(doc["cash"]))
        state.count = int(doc["count"])
        state._last_key = doc.get("last_key")
        state.last_ts = (
            None if doc.get("last_ts") is None else datetime.fromisoformat(doc["last_ts"])
        )
        state.marks = {s: Decimal(p) for s, p in doc.get("marks", {}).items()}
        for o in doc.get("open_orders", []):
            order = OrderState(
                o["client_order_id"],
                o["symbol"],
                OrderSide(o["side"]),
                OrderType(o["order_type"]),
                Decimal(o["quantity"]),
                _d(o["price"]),
                _d(o["stop_price"]),
                OrderStatus(o["status"]),
                Decimal(o["filled_qty"]),
            )
            state.orders[order.client_order_id] = order
        for p in doc.get("positions", []):
            state.book[p["symbol"]] = Position(
                p["symbol"],
                Decimal(p["quantity"]),
                _d(p["avg_entry_price"]),
                Decimal(p["realised_pnl"]),
                Decimal(p["fees"]),
            )
        return state


def _s(x: Decimal | None) -> str | None:
    return None if x is None else str(x)


def _d(x: str | None) -> Decimal | None:
    return None if x is None else Decimal(x)


def _order_json(o: OrderState) -> dict[str, Any]:
    return {
        "client_order_id": o.client_order_id,
        "symbol": o.symbol,
        "side": o.side.value,
        "order_type": o.order_type.value,
        "quantity": str(o.quantity),
        "price": _s(o.price),
        "stop_price": _s(o.stop_price),
        "status": o.status.value,
        "filled_qty": str(o.filled_qty),
    }


def _position_json(p: Position) -> dict[str, Any]:
    return {
        "symbol": p.symbol,
        "quantity": str(p.quantity),
        "avg_entry_price": _s(p.avg_entry_price),
        "realised_pnl": str(p.realised_pnl),
        "fees": str(p.fees),
    }


_TARGET: dict[type[Event], OrderStatus] = {
    OrderAccepted: OrderStatus.ACCEPTED,
    OrderPartiallyFilled: OrderStatus.PARTIALLY_FILLED,
    OrderFilled: OrderStatus.FILLED,
    OrderPendingCancel: OrderStatus.PENDING_CANCEL,
    OrderCancelled: OrderStatus.CANCELLED,
    OrderExpired: OrderStatus.EXPIRED,
    OrderRejected: OrderStatus.REJECTED,
}


def _target(e: Event) -> OrderStatus:
    for cls in type(e).__mro__:
        if cls in _TARGET:
            return _TARGET[cls]
    raise ValueError(f"no order status for {type(e).__name__}")


class BrokerStateFile:
    """The paper broker's state on disk: replaced atomically (write, fsync, rename)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.saved_changes = -1

    def save(self, state: PaperBrokerState) -> None:
        doc = state.to_json()
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write((json.dumps(doc, indent=1) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power cut
        finally:
            os.close(dir_fd)

    def save_if_changed(self, state: PaperBrokerState) -> bool:
        changes = state.changes
        if changes == self.saved_changes:
            return False
        self.save(state)
        self.saved_changes = changes
        return True

    def load(self) -> PaperBrokerState | None:
        if not self.path.exists():
            return None
        return PaperBrokerState.from_json(json.loads(self.path.read_text()))
