"""Typed trading events (past tense, frozen, UTC) and their JSON codec.

Every change in the trading core is told as one of these events on the `EventBus`
(`trading.bus`). Events are immutable facts: consumers (persistence, logging,
notifications, analytics) may keep them, serialise them and replay them.
`encode_event` / `decode_event` turn an event into a JSON-safe dict and back without loss
(Decimal as string, datetime as ISO 8601, enums by value).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trading.orders import ClientOrderId, OrderSide, OrderType
    from trading.positions import PositionSide


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event: `ts` is when it happened, timezone-aware UTC."""

    ts: datetime

    def __post_init__(self) -> None:
        # A naive or non-UTC timestamp would sort wrongly against others once persisted.
        if self.ts.tzinfo is None or self.ts.utcoffset() != timedelta(0):
            raise ValueError(
                f"{type(self).__name__}.ts must be timezone-aware UTC, got {self.ts!r}"
            )


# --------------------------------------------------------------------------- orders


@dataclass(frozen=True, kw_only=True)
class OrderEvent(Event):
    """Base of the events of one order."""

    client_order_id: ClientOrderId
    symbol: str


@dataclass(frozen=True, kw_only=True)
class OrderSubmitted(OrderEvent):
    side: OrderSide
    order_type: OrderType
    quantity: Decimal
    price: Decimal | None = None
    stop_price: Decimal | None = None
    parent_id: ClientOrderId | None = None
    oco_id: ClientOrderId | None = None
    tag: str = ""


@dataclass(frozen=True, kw_only=True)
class OrderAccepted(OrderEvent):
    venue_order_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class OrderFill(OrderEvent):
    """Base of the two fill events: `last_*` is this fill, the rest is cumulative.

    Optional details, None when nobody knows them (never made up):

    * `fee_currency`: the currency `fee` is in (the venue's, or the quote currency the
      simulated broker charges in);
    * `bid`, `ask`: the venue's best bid and ask when the fill was seen (a live venue's
      ticker; never derived from OHLCV bars);
    * `correlation_id`, `strategy_names`, `strategy_weights`: the run the fill belongs to
      and its strategy attribution (parallel tuples, weights summing to 1). Brokers leave
      them None; the bot's audit trail stamps them from its run (`trading.audit_session`).
    """

    side: OrderSide
    last_qty: Decimal
    last_price: Decimal
    fee: Decimal
    filled_qty: Decimal
    remaining_qty: Decimal
    avg_price: Decimal
    trade_id: str | None = None
    fee_currency: str | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    correlation_id: str | None = None
    strategy_names: tuple[str, ...] | None = None
    strategy_weights: tuple[Decimal, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class OrderPartiallyFilled(OrderFill):
    """A fill that leaves a remainder."""


@dataclass(frozen=True, kw_only=True)
class OrderFilled(OrderFill):
    """The fill that completes the order (`remaining_qty` is zero)."""


@dataclass(frozen=True, kw_only=True)
class OrderPendingCancel(OrderEvent):
    """A cancel was requested from the venue; fills may still arrive until it confirms."""

    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class OrderCancelled(OrderEvent):
    reason: str = ""
    filled_qty: Decimal = Decimal(0)


@dataclass(frozen=True, kw_only=True)
class OrderModified(OrderEvent):
    quantity: Decimal
    price: Decimal | None = None
    stop_price: Decimal | None = None


@dataclass(frozen=True, kw_only=True)
class OrderRejected(OrderEvent):
    reason: str


@dataclass(frozen=True, kw_only=True)
class OrderExpired(OrderEvent):
    filled_qty: Decimal = Decimal(0)


# --------------------------------------------------------------------------- trades


@dataclass(frozen=True, kw_only=True)
class TradeOpened(Event):
    """A position left FLAT; `trade_id` is the client order id of the opening order."""

    trade_id: str
    symbol: str
    side: PositionSide
    quantity: Decimal
    entry_price: Decimal


@dataclass(frozen=True, kw_only=True)
class TradeClosed(Event):
    """A position returned to FLAT (or flipped); pnl is gross of `fees`.

    `exit_reason` is the reason of the order whose fill flattened the position (the exit
    rule's name, e.g. ``stop_loss``, ``take_profit``, ``force_exit``); `entry_tag` names the
    entry rules that opened it. Both are empty when the publisher does not know them.
    """

    trade_id: str
    symbol: str
    side: PositionSide
    quantity: Decimal
    entry_price: Decimal
    exit_price: Decimal
    realised_pnl: Decimal
    fees: Decimal
    exit_reason: str = ""
    entry_tag: str = ""


# --------------------------------------------------------------------------- risk and bot


@dataclass(frozen=True, kw_only=True)
class RiskDenied(Event):
    symbol: str
    side: OrderSide
    quantity: Decimal
    reason: str
    detail: str = ""
    client_order_id: ClientOrderId | None = None


@dataclass(frozen=True, kw_only=True)
class RiskWarning(Event):
    """A control reached `fraction` of its limit (value / limit)."""

    control: str
    value: Decimal
    limit: Decimal
    fraction: Decimal
    symbol: str | None = None


@dataclass(frozen=True, kw_only=True)
class Halted(Event):
    """New entries are refused; `until` is None when only `resume()` lifts the halt."""

    reason: str
    detail: str = ""
    until: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class Resumed(Event):
    reason: str


@dataclass(frozen=True, kw_only=True)
class BotStarted(Event):
    bot: str
    mode: str


@dataclass(frozen=True, kw_only=True)
class BotStopped(Event):
    bot: str
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class BotError(Event):
    """The bot's run failed; `error` is the exception's type and message."""

    error: str


# --------------------------------------------------------------------------- venue connection


@dataclass(frozen=True, kw_only=True)
class ConnectionLost(Event):
    """The connection to a venue (exchange, broker gateway, data feed) dropped."""

    venue: str
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class ConnectionRestored(Event):
    """The connection to `venue` is back after `downtime_s` seconds."""

    venue: str
    downtime_s: float = 0.0

    @property
    def downtime(self) -> timedelta:
        return timedelta(seconds=self.downtime_s)


# --------------------------------------------------------------------------- codec


def _event_classes() -> dict[str, type[Event]]:
    out: dict[str, type[Event]] = {}
    stack: list[type[Event]] = [Event]
    while stack:
        cls = stack.pop()
        # A subclass elsewhere with the same name (a test double) never shadows ours.
        if cls.__name__ not in out or cls.__module__ == __name__:
            out[cls.__name__] = cls
        stack.extend(cls.__subclasses__())
    return out


def _hints(cls: type[Event]) -> dict[str, Any]:
    # Imported here: orders and positions import this module.
    from trading.orders import ClientOrderId, OrderSide, OrderType
    from trading.positions import PositionSide

    names = {
        "ClientOrderId": ClientOrderId,
        "OrderSide": OrderSide,
        "OrderType": OrderType,
        "PositionSide": PositionSide,
    }
    return typing.get_type_hints(cls, localns=names)


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value):
        return str(value)  # value types such as ClientOrderId render as their text
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any, tp: Any) -> Any:
    if value is None:
        return None
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        return tuple(_decode(v, item) for v in value)
    if tp is datetime:
        return datetime.fromisoformat(value)
    if isinstance(tp, type) and issubclass(tp, (Decimal, Enum)):
        return tp(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp(value)
    return value


def encode_event(event: Event) -> dict[str, Any]:
    """Return a JSON-safe dict of the event, with its class name under "type"."""
    out: dict[str, Any] = {"type": type(event).__name__}
    for f in dataclasses.fields(event):
        out[f.name] = _encode(getattr(event, f.name))
    return out


def decode_event(data: dict[str, Any]) -> Event:
    """Rebuild the event `encode_event` produced; raise ValueError for an unknown type."""
    name = data.get("type")
    cls = _event_classes().get(str(name))
    if cls is None:
        raise ValueError(f"unknown event type {name!r}")
    hints = _hints(cls)
    kwargs = {k: _decode(v, hints[k]) for k, v in data.items() if k != "type"}
    return cls(**kwargs)
