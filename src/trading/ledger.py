"""TradeLedger: one immutable entry per fill, with the quote at fill and strategy attribution.

The ledger records what was filled, never what was merely asked for: fill events
(`OrderFilled`, `OrderPartiallyFilled`) and `Order` records with a filled quantity.
Rejected, cancelled-unfilled and other non-fill results are skipped (a debug log says why).
The same fill is never recorded twice: a fill event repeated by an at-least-once bus, or an
`Order` passed again after more of it filled, adds only what is new.

After a run, `export()` writes the ledger as JSON (trading.ledger_store) under a folder or
any fsspec URL; `TradeLedger.load()` reads one back. See docs/ledger.md.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from trading.events import (
    Event,
    OrderCancelled,
    OrderEvent,
    OrderExpired,
    OrderFill,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
)
from trading.orders import Order, OrderSide, OrderType

if TYPE_CHECKING:
    from trading.bus import EventBus, Subscription

log = logging.getLogger(__name__)

WEIGHT_TOLERANCE = Decimal("1e-6")
"""How far from 1 the strategy weights of one symbol may sum."""

ANY_SYMBOL = "*"
"""Attribution key that applies to every symbol not named on its own."""

_SAFE_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_ZERO = Decimal(0)

Attribution = Mapping[str, Mapping[str, Any]]
"""symbol -> {strategy name: weight}; the weights of one symbol sum to 1."""


def check_id(value: str, what: str) -> str:
    """Return `value` if it can be part of a file name (1-64 of A-Z a-z 0-9 _ . -), else raise."""
    if not isinstance(value, str) or not _SAFE_ID.match(value):
        raise ValueError(f"{what} {value!r} must be 1-64 of A-Z a-z 0-9 _ . - (it names the export file)")
    return value


def to_decimal(value: Any, what: str) -> Decimal:
    """Convert a number to Decimal without binary noise (floats go through their repr)."""
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, float, str)):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    try:
        out = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not out.is_finite():
        raise ValueError(f"{what} must be finite, got {value!r}")
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerEntry:
    """One fill. `notional` is filled_qty × fill_price (gross of `fee`); bid/ask are None when unknown."""

    entry_id: str
    order_id: str
    symbol: str
    direction: OrderSide
    filled_qty: Decimal
    fill_price: Decimal
    notional: Decimal
    fee: Decimal
    bid: Decimal | None
    ask: Decimal | None
    timestamp: datetime
    order_type: OrderType | None
    strategy_names: tuple[str, ...]
    strategy_weights: tuple[Decimal, ...]
    correlation_id: str

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None or self.timestamp.utcoffset() != timedelta(0):
            raise ValueError(f"ledger timestamps must be UTC, got {self.timestamp!r}")
        if len(self.strategy_names) != len(self.strategy_weights):
            raise ValueError("strategy_names and strategy_weights must have the same length")

    @property
    def attribution(self) -> dict[str, Decimal]:
        """Return {strategy: weight}."""
        return dict(zip(self.strategy_names, self.strategy_weights, strict=True))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (Decimal as string, time as ISO 8601, enums by value)."""
        def num(x: Decimal | None) -> str | None:
            return None if x is None else str(x)

        return {
            "entry_id": self.entry_id,
            "order_id": self.order_id,
            "symbol": self.symbol,
            "direction": self.direction.value,
            "filled_qty": str(self.filled_qty),
            "fill_price": str(self.fill_price),
            "notional": str(self.notional),
            "fee": str(self.fee),
            "bid": num(self.bid),
            "ask": num(self.ask),
            "timestamp": self.timestamp.isoformat(),
            "order_type": None if self.order_type is None else self.order_type.value,
            "strategy_names": list(self.strategy_names),
            "strategy_weights": [str(w) for w in self.strategy_weights],
            "correlation_id": self.correlation_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LedgerEntry:
        """Rebuild the entry `to_dict` produced."""
        def num(x: str | None) -> Decimal | None:
            return None if x is None else Decimal(x)

        return cls(
            entry_id=data["entry_id"],
            order_id=data["order_id"],
            symbol=data["symbol"],
            direction=OrderSide(data["direction"]),
            filled_qty=Decimal(data["filled_qty"]),
            fill_price=Decimal(data["fill_price"]),
            notional=Decimal(data["notional"]),
            fee=Decimal(data["fee"]),
            bid=num(data.get("bid")),
            ask=num(data.get("ask")),
            timestamp=datetime.fromisoformat(data["timestamp"]),
            order_type=None if data.get("order_type") is None else OrderType(data["order_type"]),
            strategy_names=tuple(data.get("strategy_names", ())),
            strategy_weights=tuple(Decimal(w) for w in data.get("strategy_weights", ())),
            correlation_id=data["correlation_id"],
        )


@dataclass(frozen=True, slots=True)
class _Fill:
    """What one record call adds: the new part of an order's execution."""

    order_id: str
    symbol: str
    side: OrderSide
    qty: Decimal
    price: Decimal
    fee: Decimal
    ts: datetime
    order_type: OrderType | None
    cumulative: Decimal  # the order's filled quantity including this fill


@dataclass(slots=True)
class _Progress:
    """How much of one order the ledger already holds."""

    qty: Decimal = _ZERO
    notional: Decimal = _ZERO
    fees: Decimal = _ZERO


def validate_attribution(attribution: Attribution) -> None:
    """Raise ValueError naming the first symbol whose weights are negative or do not sum to 1."""
    for symbol in attribution:
        weights_for(attribution, symbol)


def weights_for(attribution: Attribution, symbol: str) -> tuple[tuple[str, ...], tuple[Decimal, ...]]:
    """Return (names, weights) for `symbol` (or the `*` entry); empty when it is not attributed."""
    raw = attribution.get(symbol, attribution.get(ANY_SYMBOL))
    if raw is None:
        return (), ()
    if not isinstance(raw, Mapping) or not raw:
        raise ValueError(f"strategy attribution of {symbol}: expected {{strategy: weight}}, got {raw!r}")
    names, weights = [], []
    for name, w in raw.items():
        try:
            weight = to_decimal(w, "weight")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"strategy attribution of {symbol}: {name}: {exc}") from None
        if weight < 0:
            raise ValueError(f"strategy attribution of {symbol}: weight of {name} is negative ({w})")
        names.append(str(name))
        weights.append(weight)
    total = sum(weights, _ZERO)
    if abs(total - 1) > WEIGHT_TOLERANCE:
        raise ValueError(f"strategy attribution of {symbol}: weights sum to {total}, not 1")
    return tuple(names), tuple(weights)


def plan_attribution(plan: Any) -> Attribution:
    """Return `metadata.strategy_attribution` of a rebalance plan (a mapping or an object)."""
    if plan is None:
        return {}
    meta = plan.get("metadata") if isinstance(plan, Mapping) else getattr(plan, "metadata", None)
    found = meta.get("strategy_attribution") if isinstance(meta, Mapping) else None
    if found is None:
        return {}
    if not isinstance(found, Mapping):
        raise TypeError(f"metadata.strategy_attribution must map symbol -> weights, got {found!r}")
    return found


def _quote_side(quote: Any, name: str) -> Decimal | None:
    if quote is None:
        return None
    value = quote.get(name) if isinstance(quote, Mapping) else getattr(quote, name, None)
    return None if value is None else to_decimal(value, f"quote {name}")


def _event_quote(result: Any) -> dict[str, Decimal | None] | None:
    """The bid and ask a fill event carries (the broker's quote at fill); None if it has neither."""
    if isinstance(result, OrderFill) and (result.bid is not None or result.ask is not None):
        return {"bid": result.bid, "ask": result.ask}
    return None


def _quote_or_none(quotes: Callable[[str], Any] | None, symbol: str) -> Any:
    """Ask `quotes` for the symbol's quote; a failing source must not cost the fill its entry."""
    if quotes is None:
        return None
    try:
        quote = quotes(symbol)
        return {"bid": _quote_side(quote, "bid"), "ask": _quote_side(quote, "ask")}
    except Exception:  # the fill is recorded without bid/ask instead
        log.warning("no quote for %s at fill: the quote source failed", symbol, exc_info=True)
        return None


def _utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError(f"order timestamp {ts!r} has no time zone")
    return ts.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


class TradeLedger:
    """An append-only, thread-safe record of fills; see the module docstring."""

    def __init__(
        self,
        ledger_id: str | None = None,
        *,
        correlation_id: str | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.ledger_id = check_id(ledger_id or uuid.uuid4().hex[:12], "ledger_id")
        self.correlation_id = None if correlation_id is None else check_id(correlation_id, "correlation_id")
        self.created_at: datetime | None = None  # set by load(): when the file was written
        self._clock = clock
        self._lock = threading.RLock()
        self._entries: list[LedgerEntry] = []
        self._progress: dict[str, _Progress] = {}
        self._order_types: dict[str, OrderType] = {}

    # ------------------------------------------------------------------ recording
    def record_filled_order(
        self,
        order_result: Any,
        correlation_id: str,
        rebalance_plan: Any = None,
        quote_at_fill: Any = None,
    ) -> LedgerEntry | None:
        """Record the new fill in `order_result`; return the entry, or None when nothing filled.

        `order_result` is an `OrderFilled`/`OrderPartiallyFilled` event or an `Order`.
        `rebalance_plan` carries `metadata.strategy_attribution`; `quote_at_fill` has `bid`
        and `ask` (a mapping or an object; a missing side is None). Without it, a fill event's
        own `bid` and `ask` (the venue's, when the broker knew them) are the quote.
        """
        check_id(correlation_id, "correlation_id")
        if quote_at_fill is None:
            quote_at_fill = _event_quote(order_result)
        bid, ask = _quote_side(quote_at_fill, "bid"), _quote_side(quote_at_fill, "ask")
        with self._lock:  # one record at a time: an Order's new part depends on what is recorded
            fill = self._fill_of(order_result)
            if fill is None:
                return None
            names, weights = weights_for(plan_attribution(rebalance_plan), fill.symbol)
            done = self._progress.setdefault(fill.order_id, _Progress())
            if fill.cumulative <= done.qty:
                log.debug("fill of order %s not recorded: already in the ledger (filled %s)",
                          fill.order_id, fill.cumulative)
                return None
            entry = LedgerEntry(
                entry_id=f"{self.ledger_id}-{len(self._entries) + 1:06d}",
                order_id=fill.order_id, symbol=fill.symbol, direction=fill.side,
                filled_qty=fill.qty, fill_price=fill.price, notional=fill.qty * fill.price,
                fee=fill.fee, bid=bid, ask=ask, timestamp=fill.ts,
                order_type=fill.order_type or self._order_types.get(fill.order_id),
                strategy_names=names, strategy_weights=weights, correlation_id=correlation_id,
            )
            done.qty, done.notional, done.fees = fill.cumulative, done.notional + entry.notional, done.fees + fill.fee
            self._entries.append(entry)
        return entry

    def _fill_of(self, result: Any) -> _Fill | None:
        """Return the not yet recorded part of a fill event or an Order, or None (logged)."""
        if isinstance(result, OrderFill):
            return _Fill(str(result.client_order_id), result.symbol, result.side, result.last_qty,
                         result.last_price, result.fee, result.ts, None, result.filled_qty)
        if isinstance(result, Order):
            return self._order_fill(result)
        if isinstance(result, Event):
            oid = getattr(result, "client_order_id", "?")
            why = getattr(result, "reason", "") or "not a fill"
            log.debug("%s of order %s not recorded: %s", type(result).__name__, oid, why)
            return None
        raise TypeError(f"cannot record {type(result).__name__}: pass a fill event or an Order")

    def _order_fill(self, order: Order) -> _Fill | None:
        oid = str(order.client_order_id)
        if order.filled_qty <= 0 or order.avg_fill_price is None:
            log.debug("order %s not recorded: %s with nothing filled", oid, order.status.value)
            return None
        done = self._progress.get(oid, _Progress())
        qty = order.filled_qty - done.qty
        if qty <= 0:
            log.debug("order %s not recorded: its %s filled are already in the ledger", oid, done.qty)
            return None
        # The average over the whole order, less what was recorded, is the price of the rest.
        price = (order.avg_fill_price * order.filled_qty - done.notional) / qty
        fee = order.fees - done.fees
        ts = order.updated_ts or order.created_ts
        return _Fill(oid, order.symbol, order.side, qty, price, fee,
                     _utc(ts) if ts is not None else self._clock(), order.order_type, order.filled_qty)

    # ------------------------------------------------------------------ the bus
    def subscribe(
        self,
        bus: EventBus,
        correlation_id: str,
        *,
        attribution: Attribution | None = None,
        quotes: Callable[[str], Any] | None = None,
        inline: bool = True,
    ) -> Subscription:
        """Record every fill published on `bus`, so no broker has to call the ledger.

        `attribution` maps symbol -> {strategy: weight} (key ``*``: every other symbol);
        the quote at fill is the fill event's `bid`/`ask` (what the broker saw), else what
        `quotes(symbol)` returns when a live feed has one. Order types come
        from the `OrderSubmitted` events. Inline by default: recording is a short append.
        """
        check_id(correlation_id, "correlation_id")
        self.correlation_id = self.correlation_id or correlation_id
        plan = {"metadata": {"strategy_attribution": dict(attribution or {})}}
        validate_attribution(plan["metadata"]["strategy_attribution"])

        def on_event(event: Event) -> None:
            if isinstance(event, OrderSubmitted):
                with self._lock:
                    self._order_types[str(event.client_order_id)] = event.order_type
                return
            if isinstance(event, OrderFill):
                quote = _event_quote(event) or _quote_or_none(quotes, event.symbol)
                self.record_filled_order(event, correlation_id, plan, quote)
            if isinstance(event, (OrderFilled, OrderCancelled, OrderRejected, OrderExpired)):
                with self._lock:  # the order is done: its type is no longer needed
                    self._order_types.pop(str(event.client_order_id), None)

        return bus.subscribe(on_event, OrderEvent, inline=inline, name=f"ledger-{self.ledger_id}")

    # ------------------------------------------------------------------ queries
    def get_ledger(self) -> tuple[LedgerEntry, ...]:
        """Return every entry, in the order recorded."""
        with self._lock:
            return tuple(self._entries)

    def get_entries_for_symbol(self, symbol: str) -> tuple[LedgerEntry, ...]:
        return tuple(e for e in self.get_ledger() if e.symbol == symbol)

    def get_entries_for_strategy(self, name: str) -> tuple[LedgerEntry, ...]:
        """Return the entries that `name` has a share of (any weight, zero included)."""
        return tuple(e for e in self.get_ledger() if name in e.strategy_names)

    @property
    def total_entries(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def total_buy_value(self) -> Decimal:
        """Sum of the notional of the buy fills (gross of fees)."""
        return sum((e.notional for e in self.get_ledger() if e.direction is OrderSide.BUY), _ZERO)

    @property
    def total_sell_value(self) -> Decimal:
        """Sum of the notional of the sell fills (gross of fees)."""
        return sum((e.notional for e in self.get_ledger() if e.direction is OrderSide.SELL), _ZERO)

    @property
    def total_fees(self) -> Decimal:
        return sum((e.fee for e in self.get_ledger()), _ZERO)

    # ------------------------------------------------------------------ files
    def export(
        self,
        dest: str,
        *,
        correlation_id: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> str:
        """Write the ledger as JSON under `dest` (folder or fsspec URL); return the file's URL.

        The file is ``trade-ledgers/YYYY/MM/DD/HHMMSS-{ledger_id}-{correlation_id}.json``,
        stamped with the export time (UTC).
        """
        from trading.ledger_store import write_ledger

        cid = correlation_id or self.correlation_id or self._only_correlation_id()
        return write_ledger(self, dest, check_id(cid, "correlation_id"), self._clock(), storage_options)

    def _only_correlation_id(self) -> str:
        ids = {e.correlation_id for e in self.get_ledger()}
        if len(ids) != 1:
            raise ValueError(f"export needs correlation_id: the entries have {sorted(ids) or 'none'}")
        return ids.pop()

    @classmethod
    def load(cls, url: str, *, storage_options: Mapping[str, Any] | None = None) -> TradeLedger:
        """Read one exported ledger file back (local path or fsspec URL)."""
        from trading.ledger_store import read_ledger

        return read_ledger(url, storage_options)

    @classmethod
    def restore(
        cls, ledger_id: str, correlation_id: str | None, created_at: datetime | None, entries: list[LedgerEntry]
    ) -> TradeLedger:
        """Build a ledger holding `entries` as they are (used by the loader)."""
        ledger = cls(ledger_id, correlation_id=correlation_id)
        ledger.created_at = created_at
        for e in entries:
            done = ledger._progress.setdefault(e.order_id, _Progress())
            done.qty, done.notional, done.fees = done.qty + e.filled_qty, done.notional + e.notional, done.fees + e.fee
        ledger._entries = list(entries)
        return ledger
