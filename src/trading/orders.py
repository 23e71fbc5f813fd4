"""Order value types: client order ids, sides, types, statuses, the Order record and its state machine.

`OrderManager` (trading.order_manager) owns the Orders and moves them through
`TRANSITIONS`; everything here is plain data with validation.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum

from trading.exceptions import ATFError


class OrderError(ATFError):
    """An order operation broke the rules of the order book."""


class InvalidOrder(OrderError, ValueError):
    """An order's fields are inconsistent (e.g. a limit order without a price)."""


class DuplicateClientOrderId(OrderError):
    """An order with this client order id was already submitted."""


class UnknownOrder(OrderError, KeyError):
    """No order has this client order id."""


class IllegalTransition(OrderError):
    """An update would move an order along an edge the lifecycle does not have."""


_ID_CHARS = re.compile(r"^[A-Za-z0-9_.:\-]{1,36}$")
_LEG = re.compile(r"^[a-z0-9]{1,8}$")


@dataclass(frozen=True, slots=True)
class ClientOrderId:
    """The client order id: at most 36 characters of ``[A-Za-z0-9_.:-]`` (accepted by common venues)."""

    value: str

    def __post_init__(self) -> None:
        if not _ID_CHARS.match(self.value):
            raise InvalidOrder(
                f"invalid client order id {self.value!r}: 1-36 of A-Z a-z 0-9 _ . : -"
            )

    def __str__(self) -> str:
        return self.value

    @classmethod
    def for_signal(
        cls, bot: str, symbol: str, signal_ts: datetime, leg: str = "entry", attempt: int = 0
    ) -> ClientOrderId:
        """Derive the id of one order leg of one signal; the same inputs always give the same id.

        `leg` names the order of the signal (``entry``, ``sl``, ``tp``, ``exit`` ...);
        `attempt` counts deliberate re-placements (a retry of the same placement keeps it, so
        the venue or the OrderManager refuses the duplicate). The id is
        ``atf-<16 hex of sha256(bot|symbol|UTC time|leg|attempt)>-<leg>-<attempt>``.
        """
        if signal_ts.tzinfo is None:
            raise InvalidOrder("signal_ts must be timezone-aware")
        if not _LEG.match(leg):
            raise InvalidOrder(f"leg {leg!r} must be 1-8 of a-z 0-9")
        if not 0 <= attempt <= 99:
            raise InvalidOrder("attempt must be within 0..99")
        ts = signal_ts.astimezone(timezone.utc).isoformat(timespec="microseconds")
        digest = hashlib.sha256(f"{bot}|{symbol}|{ts}|{leg}|{attempt}".encode()).hexdigest()[:16]
        return cls(f"atf-{digest}-{leg}-{attempt}")


class OrderSide(Enum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        """+1 for buy, -1 for sell: the sign of the position change."""
        return 1 if self is OrderSide.BUY else -1

    @property
    def opposite(self) -> OrderSide:
        return OrderSide.SELL if self is OrderSide.BUY else OrderSide.BUY


class OrderType(Enum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"
    TRAILING_STOP = "trailing_stop"


class OrderStatus(Enum):
    NEW = "new"  # submitted, not yet acknowledged by the venue
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    PENDING_CANCEL = "pending_cancel"  # a cancel was requested; fills may still arrive
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_open(self) -> bool:
        return self in _OPEN


_OPEN = frozenset(
    {
        OrderStatus.NEW,
        OrderStatus.ACCEPTED,
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.PENDING_CANCEL,
    }
)

S = OrderStatus
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.NEW: frozenset(
        {
            S.ACCEPTED,
            S.PARTIALLY_FILLED,
            S.FILLED,
            S.CANCELLED,
            S.REJECTED,
            S.EXPIRED,
            S.PENDING_CANCEL,
        }
    ),
    S.ACCEPTED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.EXPIRED, S.PENDING_CANCEL}),
    S.PARTIALLY_FILLED: frozenset(
        {S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.EXPIRED, S.PENDING_CANCEL}
    ),
    S.PENDING_CANCEL: frozenset(
        {S.PENDING_CANCEL, S.FILLED, S.CANCELLED, S.EXPIRED}
    ),  # partial fill keeps it pending
    S.FILLED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
}
"""The order lifecycle: status -> the statuses it may move to. Terminal statuses lead nowhere."""
del S

_ZERO = Decimal(0)


@dataclass
class Order:
    """One order and its execution state; OrderManager is the only writer after submission.

    `price` is the limit price (limit, stop_limit); `stop_price` the trigger (stop,
    stop_limit, and the current trigger of a trailing stop); a trailing stop follows the
    best price by `trail_amount` (price units) or `trail_percent` (a fraction, 0.02 = 2 %).
    """

    client_order_id: ClientOrderId
    symbol: str
    side: OrderSide
    order_type: OrderType
    quantity: Decimal
    price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_amount: Decimal | None = None
    trail_percent: Decimal | None = None
    parent_id: ClientOrderId | None = None
    oco_id: ClientOrderId | None = None
    tag: str = ""
    status: OrderStatus = OrderStatus.NEW
    filled_qty: Decimal = _ZERO
    avg_fill_price: Decimal | None = None
    fees: Decimal = _ZERO
    venue_order_id: str | None = None
    best_price: Decimal | None = None  # trailing stops: the most favourable price seen
    created_ts: datetime | None = None
    updated_ts: datetime | None = None
    children: list[ClientOrderId] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("quantity", "price", "stop_price", "trail_amount", "trail_percent"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Decimal):
                raise InvalidOrder(f"{name} must be a Decimal, got {type(value).__name__}")
        if not self.quantity > 0:
            raise InvalidOrder(f"quantity must be positive, got {self.quantity}")
        t = self.order_type
        needs_price = t in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        needs_stop = t in (OrderType.STOP, OrderType.STOP_LIMIT)
        if needs_price != (self.price is not None):
            raise InvalidOrder(f"a {t.value} order {'needs' if needs_price else 'takes no'} price")
        if needs_stop and self.stop_price is None:
            raise InvalidOrder(f"a {t.value} order needs stop_price")
        if t in (OrderType.MARKET, OrderType.LIMIT) and self.stop_price is not None:
            raise InvalidOrder(f"a {t.value} order takes no stop_price")
        trailing = (self.trail_amount is not None) + (self.trail_percent is not None)
        if t is OrderType.TRAILING_STOP and trailing != 1:
            raise InvalidOrder("a trailing stop needs exactly one of trail_amount, trail_percent")
        if t is not OrderType.TRAILING_STOP and trailing:
            raise InvalidOrder(f"a {t.value} order takes no trail")
        for name in ("price", "stop_price", "trail_amount", "trail_percent"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InvalidOrder(f"{name} must be positive, got {value}")

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled_qty

    @property
    def is_open(self) -> bool:
        return self.status.is_open

    def trail_stop_for(self, best: Decimal) -> Decimal:
        """Return the trigger a trailing stop would have with `best` as the best price."""
        if self.trail_amount is not None:
            offset = self.trail_amount
        else:
            assert self.trail_percent is not None
            offset = best * self.trail_percent
        # A sell stop protects a long and sits below the high; a buy stop sits above the low.
        return best - offset if self.side is OrderSide.SELL else best + offset

    def age(self, now: datetime) -> timedelta:
        """Return the time since submission (zero before submission)."""
        return now - self.created_ts if self.created_ts is not None else timedelta(0)
