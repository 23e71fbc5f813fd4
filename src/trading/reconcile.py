"""Reconciliation: the database's open orders and positions against the broker's view.

`reconcile` compares the database's open orders and positions with a `BrokerView`, after
replaying onto the database's view the events it never received (`unrecorded`: events lost
in a crash, or executions a venue reports that the database lacks). A difference those
events explain is a `Correction` (written as a ``reconciliation`` event); one they do not
explain is a `Mismatch`, and `ReconciliationMismatch` lists every one of them: the bot must
not trade. Live brokers implement `BrokerView` over the venue and call
`reconcile_with_broker` before trading; paper bots use it through `trading.recovery`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.engine import Engine

from trading.broker_state import OrderLike, OrderState, PaperBrokerState
from trading.events import Event, OrderEvent, OrderFill
from trading.exceptions import ATFError
from trading.persistence.audit import apply_events
from trading.persistence.audit_events import Reconciled
from trading.persistence.columns import at_scale
from trading.persistence.position_book import is_flat
from trading.persistence.recovery import load_open_orders, load_positions, record_reconciliation
from trading.positions import Position

if TYPE_CHECKING:
    from trading.order_manager import OrderManager
    from trading.orders import Order
    from trading.positions import PositionManager

#: Relative tolerance of money comparisons: the database keeps 10 decimals per value.
TOLERANCE = Decimal("1e-8")


class BrokerView(Protocol):
    """The broker's account as reconciliation sees it (a venue adapter, or the paper book)."""

    def open_orders(self) -> Sequence[OrderLike]: ...

    def positions(self) -> Sequence[Position]: ...


class ManagerView:
    """A bot's `OrderManager` and `PositionManager` seen as a `BrokerView`."""

    def __init__(self, order_manager: OrderManager, position_manager: PositionManager) -> None:
        self._orders = order_manager
        self._positions = position_manager

    def open_orders(self) -> list[Order]:
        return self._orders.open_orders()

    def positions(self) -> list[Position]:
        return self._positions.open_positions()


@dataclass(frozen=True)
class Mismatch:
    """A difference no recorded or lost event explains."""

    reason: str
    symbol: str | None
    client_order_id: str | None
    db: str
    broker: str

    def __str__(self) -> str:
        return (
            f"{self.reason}: symbol {self.symbol or '-'}, client order id "
            f"{self.client_order_id or '-'}: database {self.db}; broker {self.broker}"
        )


@dataclass(frozen=True)
class Correction:
    """A difference explained by `events` events the database had not received."""

    reason: str
    symbol: str | None
    client_order_id: str | None
    db: str
    broker: str
    events: int


class ReconciliationMismatch(ATFError):
    """The database and the broker disagree in a way no lost event explains: do not trade."""

    def __init__(self, mismatches: Sequence[Mismatch]) -> None:
        self.mismatches = list(mismatches)
        n = len(self.mismatches)
        lines = "\n".join(f"  - {m}" for m in self.mismatches)
        super().__init__(
            f"refusing to trade: {n} unexplained difference{'s' if n != 1 else ''} between "
            f"the database and the broker:\n{lines}\nInvestigate, or start a new bot instance "
            "(persistence.resume: false)."
        )


@dataclass
class Reconciliation:
    """What `reconcile` found."""

    corrections: list[Correction] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def raise_if_mismatched(self) -> None:
        if self.mismatches:
            raise ReconciliationMismatch(self.mismatches)

    def records(self, ts: datetime) -> list[Reconciled]:
        """Return the ``reconciliation`` events to write: corrections, then mismatches."""
        out = [
            Reconciled.of(
                ts,
                c.reason,
                symbol=c.symbol,
                client_order_id=c.client_order_id,
                details={"db": c.db, "broker": c.broker, "restored_events": c.events},
            )
            for c in self.corrections
        ]
        out += [
            Reconciled.of(
                ts,
                m.reason,
                symbol=m.symbol,
                client_order_id=m.client_order_id,
                details={"db": m.db, "broker": m.broker, "unexplained": True},
            )
            for m in self.mismatches
        ]
        return out


# --------------------------------------------------------------------------- comparing


def same_amount(a: Decimal | None, b: Decimal | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= TOLERANCE * max(Decimal(1), abs(a), abs(b))


def same_order(a: OrderState, b: OrderState) -> bool:
    return (
        (a.symbol, a.side, a.status) == (b.symbol, b.side, b.status)
        and same_amount(a.quantity, b.quantity)
        and same_amount(a.filled_qty, b.filled_qty)
        and same_amount(a.price, b.price)
        and same_amount(a.stop_price, b.stop_price)
    )


def same_position(a: Position | None, b: Position | None) -> bool:
    """Compare quantities at the quantity column's precision: a residue below it is flat."""
    qa = at_scale(a.quantity) if a is not None else Decimal(0)
    qb = at_scale(b.quantity) if b is not None else Decimal(0)
    if is_flat(qa) and is_flat(qb):
        return True
    if is_flat(qa) or is_flat(qb) or not same_amount(qa, qb):
        return False
    return same_amount(a.avg_entry_price if a else None, b.avg_entry_price if b else None)


def _num(x: Decimal | None) -> str:
    if x is None:
        return "-"
    return format(x.normalize(), "f") if x.is_finite() else str(x)


def describe_order(o: OrderState | None, closed: str | None = None) -> str:
    if o is None:
        return f"not open ({closed})" if closed else "absent"
    return (
        f"{o.status.value} {o.side.value} {o.order_type.value} {_num(o.quantity)} filled "
        f"{_num(o.filled_qty)} price {_num(o.price)} stop {_num(o.stop_price)}"
    )


def describe_position(p: Position | None) -> str:
    if p is None or is_flat(p.quantity):
        return "flat"
    return f"{_num(p.quantity)} @ {_num(p.avg_entry_price)}"


def _orders(view: Iterable[OrderLike]) -> dict[str, OrderState]:
    return {str(o.client_order_id): OrderState.of(o) for o in view}


def _positions(view: Iterable[Position]) -> dict[str, Position]:
    return {p.symbol: p for p in view if not is_flat(p.quantity)}


def diff_books(
    expected: PaperBrokerState, broker: BrokerView, *, prefix: str = ""
) -> list[Mismatch]:
    """Return every open order and position on which `expected` and `broker` differ."""
    exp, brk = _orders(expected.open_orders()), _orders(broker.open_orders())
    out: list[Mismatch] = []
    for cid in sorted(exp.keys() | brk.keys()):
        e, b = exp.get(cid), brk.get(cid)
        if e is not None and b is not None and same_order(e, b):
            continue
        closed = expected.closed.get(cid)
        reason = (
            "ORDER_NOT_IN_DB"
            if e is None
            else "ORDER_NOT_AT_BROKER"
            if b is None
            else "ORDER_DIFFERS"
        )
        symbol = (e or b).symbol  # type: ignore[union-attr]
        out.append(
            Mismatch(
                prefix + reason,
                symbol,
                cid,
                describe_order(e, closed.value if closed else None),
                describe_order(b),
            )
        )
    pe, pb = _positions(expected.positions()), _positions(broker.positions())
    for symbol in sorted(pe.keys() | pb.keys()):
        if not same_position(pe.get(symbol), pb.get(symbol)):
            out.append(
                Mismatch(
                    prefix + "POSITION_MISMATCH",
                    symbol,
                    None,
                    describe_position(pe.get(symbol)),
                    describe_position(pb.get(symbol)),
                )
            )
    return out


def reconcile(
    db_orders: Sequence[OrderLike],
    db_positions: Sequence[Position],
    broker: BrokerView,
    *,
    unrecorded: Sequence[Event] = (),
) -> Reconciliation:
    """Compare the database's open orders and positions with the broker's.

    The database's view plus the `unrecorded` events (in order) must equal the broker's
    view; each order or position the database had wrong is a correction, anything else a
    mismatch. Money is compared to `TOLERANCE` (the database keeps 10 decimals).
    """
    expected = PaperBrokerState.from_records(db_orders, db_positions)
    for event in unrecorded:
        expected.apply(event)
    mismatches = diff_books(expected, broker)
    wrong = {(m.symbol, m.client_order_id) for m in mismatches}
    per_order: dict[str, int] = {}
    per_symbol: dict[str, int] = {}
    for e in unrecorded:
        if isinstance(e, OrderEvent):
            per_order[str(e.client_order_id)] = per_order.get(str(e.client_order_id), 0) + 1
        if isinstance(e, OrderFill):
            per_symbol[e.symbol] = per_symbol.get(e.symbol, 0) + 1
    corrections: list[Correction] = []
    db, brk = _orders(db_orders), _orders(broker.open_orders())
    for cid in sorted(db.keys() | brk.keys()):
        d, b = db.get(cid), brk.get(cid)
        symbol = (d or b).symbol  # type: ignore[union-attr]
        if (d is not None and b is not None and same_order(d, b)) or (symbol, cid) in wrong:
            continue
        closed = expected.closed.get(cid)
        corrections.append(
            Correction(
                "ORDER_RESTORED",
                symbol,
                cid,
                describe_order(d),
                describe_order(b, closed.value if closed else None),
                per_order.get(cid, 0),
            )
        )
    pd_, pb = _positions(db_positions), _positions(broker.positions())
    for symbol in sorted(pd_.keys() | pb.keys()):
        if same_position(pd_.get(symbol), pb.get(symbol)) or (symbol, None) in wrong:
            continue
        corrections.append(
            Correction(
                "POSITION_RESTORED",
                symbol,
                None,
                describe_position(pd_.get(symbol)),
                describe_position(pb.get(symbol)),
                per_symbol.get(symbol, 0),
            )
        )
    return Reconciliation(corrections, mismatches)


def reconcile_with_broker(
    engine: Engine,
    bot_instance_id: int,
    broker: BrokerView,
    *,
    unrecorded: Sequence[Event] = (),
    ts: datetime | None = None,
) -> Reconciliation:
    """Reconcile the database with a live broker before trading (the caller raises).

    `unrecorded` are events the venue reports that the database lacks (e.g. executions
    since its last fill); they are written as the real events, then every correction and
    mismatch as a ``reconciliation`` event.
    """
    rec = reconcile(
        load_open_orders(engine, bot_instance_id),
        load_positions(engine, bot_instance_id),
        broker,
        unrecorded=unrecorded,
    )
    if unrecorded:
        apply_events(engine, list(unrecorded), bot_instance_id)
    for r in rec.records(ts or datetime.now(UTC)):
        record_reconciliation(
            engine,
            bot_instance_id,
            ts=r.ts,
            reason=r.reason,
            symbol=r.symbol,
            client_order_id=r.client_order_id,
            details=r.details_dict(),
        )
    return rec
