"""OrderLogger: every order event as one text line and one JSON record, rotated and gzipped.

Two files per log directory (docs/order-log.md):

* ``trading_orders.log``: ``%(asctime)s - %(name)s - %(levelname)s - %(message)s``, asctime
  in UTC, the message starting with the symbol;
* ``trading_orders.jsonl``: the same events as JSON objects, one per line, with a stable set
  of keys (`FIELDS`), Decimal values as strings.

Both are written by standard `logging` handlers attached to the ``trading.orders`` logger:
`RotatingFileHandler` with a `rotator` that gzips the rotated file and a `namer` that adds
``.gz``. The handlers of one directory are shared by every OrderLogger writing there and
accept only the records meant for that directory, so two loggers on different directories
never write into each other's files. `OrderLogger.subscribe` feeds the logger from the bot's
event bus, so no broker has to remember to call it.
"""

from __future__ import annotations

import gzip
import json
import logging
import logging.handlers
import os
import re
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from trading import events as ev

if TYPE_CHECKING:
    from trading.bus import EventBus, Subscription

LOGGER_NAME = "trading.orders"
TEXT_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
BASENAME = "trading_orders"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUP_COUNT = 5

# The keys of every JSON record, in this order; a field that does not apply is null.
FIELDS = (
    "ts", "event", "status", "broker", "symbol", "side", "order_type", "quantity", "price",
    "order_id", "trade_id", "pnl", "fee", "new_price", "new_quantity", "reason", "exit_reason", "entry_tag",
)
EVENTS = ("entry", "exit", "stop_loss", "take_profit", "cancel", "modify", "failed")

Number = Decimal | float | int | str

_SECRET_PAIR = re.compile(
    r"(?i)\b(api[_-]?key|apikey|api[_-]?secret|secret|password|passwd|token|signature|private[_-]?key)"
    r"(\"?'?\s*[:=]\s*\"?'?)([^\s\"'&,;}]+)"
)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


# --------------------------------------------------------------------------- files


def _gzip_rotator(source: str, dest: str) -> None:
    """Compress the file being rotated out; write beside it first so a crash never leaves half a .gz."""
    tmp = dest + ".tmp"
    with open(source, "rb") as src, gzip.open(tmp, "wb") as out:
        shutil.copyfileobj(src, out)
    os.replace(tmp, dest)
    os.remove(source)


def _gzip_namer(name: str) -> str:
    return name + ".gz"


class JsonLinesFormatter(logging.Formatter):
    """Format the record's order event as one JSON object, adding when it was logged."""

    def format(self, record: logging.LogRecord) -> str:
        doc = dict(record.order_record)  # type: ignore[attr-defined]
        doc["logged_at"] = datetime.fromtimestamp(record.created, UTC).isoformat()
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


class _SinkFilter(logging.Filter):
    """Let through only the order records addressed to one directory."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "order_sink", None) == self.key


class _Sink:
    """The two rotating handlers of one log directory, shared by the OrderLoggers writing there."""

    def __init__(self, key: str, text: Path, jsonl: Path, settings: tuple[int, int, bool]) -> None:
        self.key = key
        self.settings = settings
        self.users = 0
        # Held around each event so both files list the events in the same order.
        self.lock = threading.Lock()
        text_fmt = logging.Formatter(TEXT_FORMAT)
        text_fmt.converter = time.gmtime
        self.handlers = [self._handler(text, text_fmt), self._handler(jsonl, JsonLinesFormatter())]

    def _handler(self, path: Path, formatter: logging.Formatter) -> logging.Handler:
        max_bytes, backup_count, compress = self.settings
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
        )
        if compress:
            handler.rotator = _gzip_rotator
            handler.namer = _gzip_namer
        handler.setFormatter(formatter)
        handler.addFilter(_SinkFilter(self.key))
        return handler


_SINKS: dict[str, _Sink] = {}
_SINKS_LOCK = threading.Lock()


def _open_sink(log_dir: Path, basename: str, settings: tuple[int, int, bool]) -> _Sink:
    log_dir.mkdir(parents=True, exist_ok=True)
    key = str((log_dir / basename).resolve())
    with _SINKS_LOCK:
        sink = _SINKS.get(key)
        if sink is None:
            sink = _Sink(key, log_dir / f"{basename}.log", log_dir / f"{basename}.jsonl", settings)
            logger = logging.getLogger(LOGGER_NAME)
            for handler in sink.handlers:
                logger.addHandler(handler)
            _SINKS[key] = sink
        elif sink.settings != settings:
            raise ValueError(
                f"{key} is open with max_bytes, backup_count, compress = {sink.settings}; "
                f"another OrderLogger asked for {settings}"
            )
        sink.users += 1
        return sink


def _close_sink(sink: _Sink) -> None:
    with _SINKS_LOCK:
        sink.users -= 1
        if sink.users > 0:
            return
        _SINKS.pop(sink.key, None)
        logger = logging.getLogger(LOGGER_NAME)
        for handler in sink.handlers:
            logger.removeHandler(handler)
            handler.close()


def rotated_files(path: str | Path) -> list[Path]:
    """Return `path` and its rotated backups, oldest first (``.N.gz`` or ``.N``)."""
    path = Path(path)
    backups: list[tuple[int, Path]] = []
    for p in path.parent.glob(path.name + ".*"):
        index = p.name[len(path.name) + 1:].removesuffix(".gz")
        if index.isdigit():
            backups.append((int(index), p))
    return [p for _, p in sorted(backups, reverse=True)] + ([path] if path.exists() else [])


def read_records(log_dir: str | Path = "logs", basename: str = BASENAME) -> Iterator[dict[str, Any]]:
    """Yield the JSON records of a log directory, oldest first, rotated files included."""
    for p in rotated_files(Path(log_dir) / f"{basename}.jsonl"):
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


# --------------------------------------------------------------------------- values


def _number(value: Number | None, name: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (Decimal, float, int, str)):
        raise TypeError(f"{name} must be a Decimal, float, int or numeric string, got {value!r}")
    try:
        # repr keeps a float's shortest form: 0.1 is logged as 0.1, not 0.1000000000000000055...
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{name} is not a number: {value!r}") from None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def _utc(ts: datetime | None) -> datetime:
    if ts is None:
        return datetime.now(UTC)
    if ts.tzinfo is None:
        raise ValueError(f"ts must be timezone-aware, got {ts!r}")
    return ts.astimezone(UTC)


# --------------------------------------------------------------------------- logger


class OrderLogger:
    """Write order events to ``<log_dir>/trading_orders.log`` and ``.jsonl``; thread-safe.

    `max_bytes` is the size at which each file rotates (0: never), keeping `backup_count`
    rotated files, gzipped unless `compress` is False. `broker` names the broker when a call
    does not. `propagate` is the ``trading.orders`` logger's flag: when True every event
    also reaches the application's handlers (the root logger) once, as one record.
    Values in `secrets`, and secret-looking ``key=value`` pairs in any text, are logged as ***.
    """

    def __init__(
        self, log_dir: str | Path = "logs", *, basename: str = BASENAME, max_bytes: int = DEFAULT_MAX_BYTES,
        backup_count: int = DEFAULT_BACKUP_COUNT, compress: bool = True, broker: str | None = None,
        propagate: bool = False, secrets: Iterable[str] = (),
    ) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be 0 (no rotation) or positive, got {max_bytes}")
        if max_bytes and backup_count < 1:
            # RotatingFileHandler with no backups would reopen the full file on every record.
            raise ValueError(f"backup_count must be at least 1 when max_bytes is set, got {backup_count}")
        self.log_dir = Path(log_dir)
        self.text_path = self.log_dir / f"{basename}.log"
        self.jsonl_path = self.log_dir / f"{basename}.jsonl"
        self.broker = broker
        self.logger = logging.getLogger(LOGGER_NAME)
        self.logger.propagate = propagate
        if self.logger.level == logging.NOTSET:
            self.logger.setLevel(logging.INFO)  # the root's WARNING would drop the INFO events
        self._secrets: set[str] = set()
        self.add_secrets(secrets)
        self._sink: _Sink | None = _open_sink(self.log_dir, basename, (max_bytes, backup_count, compress))

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Stop writing; the files are closed when the last logger of the directory closes."""
        if self._sink is not None:
            _close_sink(self._sink)
            self._sink = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_secrets(self, values: Iterable[str | None]) -> None:
        """Mask these values wherever they would appear in a record (e.g. a venue error)."""
        # Very short values would mask ordinary words and numbers.
        self._secrets.update(v for v in values if isinstance(v, str) and len(v) >= 4)

    # ------------------------------------------------------------------ events
    def log_order_entry(
        self, *, symbol: str, side: Any, quantity: Number, price: Number | None = None,
        order_id: Any = None, broker: str | None = None, status: str = "submitted",
        order_type: Any = None, fee: Number | None = None, ts: datetime | None = None,
    ) -> None:
        """Log an order that opens or adds to a position (submitted, accepted or filled)."""
        self.log_event("entry", symbol=symbol, side=side, quantity=quantity, price=price, order_id=order_id,
                       broker=broker, status=status, order_type=order_type, fee=fee, ts=ts)

    def log_order_exit(
        self, *, symbol: str, side: Any, quantity: Number, price: Number | None = None,
        order_id: Any = None, pnl: Number | None = None, broker: str | None = None,
        status: str = "submitted", order_type: Any = None, fee: Number | None = None,
        trade_id: str | None = None, reason: str | None = None, exit_reason: str | None = None,
        entry_tag: str | None = None, ts: datetime | None = None,
    ) -> None:
        """Log an order that closes a position, or (status "closed", with pnl) the closed trade.

        A closed trade carries the rule that closed it (`exit_reason`: ``stop_loss``,
        ``take_profit``, a mixin's reason ...) and the entry rules that opened it (`entry_tag`).
        """
        self.log_event("exit", symbol=symbol, side=side, quantity=quantity, price=price, order_id=order_id,
                       pnl=pnl, broker=broker, status=status, order_type=order_type, fee=fee,
                       trade_id=trade_id, reason=reason, exit_reason=exit_reason, entry_tag=entry_tag, ts=ts)

    def log_stop_loss(
        self, *, symbol: str, side: Any, quantity: Number, price: Number | None = None,
        order_id: Any = None, broker: str | None = None, status: str = "submitted",
        order_type: Any = None, fee: Number | None = None, ts: datetime | None = None,
    ) -> None:
        """Log a stop-loss order; `price` is its trigger, or the fill price once filled."""
        self.log_event("stop_loss", symbol=symbol, side=side, quantity=quantity, price=price, order_id=order_id,
                       broker=broker, status=status, order_type=order_type, fee=fee, ts=ts)

    def log_take_profit(
        self, *, symbol: str, side: Any, quantity: Number, price: Number | None = None,
        order_id: Any = None, broker: str | None = None, status: str = "submitted",
        order_type: Any = None, fee: Number | None = None, ts: datetime | None = None,
    ) -> None:
        """Log a take-profit order; `price` is its limit, or the fill price once filled."""
        self.log_event("take_profit", symbol=symbol, side=side, quantity=quantity, price=price,
                       order_id=order_id, broker=broker, status=status, order_type=order_type, fee=fee, ts=ts)

    def log_order_cancel(
        self, *, symbol: str, order_id: Any, reason: str | None = None, broker: str | None = None,
        side: Any = None, quantity: Number | None = None, status: str = "cancelled",
        ts: datetime | None = None,
    ) -> None:
        """Log a cancelled (or expired, or pending-cancel) order."""
        self.log_event("cancel", symbol=symbol, order_id=order_id, reason=reason, broker=broker, side=side,
                       quantity=quantity, status=status, ts=ts)

    def log_order_modify(
        self, *, symbol: str, order_id: Any, new_price: Number | None = None,
        new_quantity: Number | None = None, broker: str | None = None, side: Any = None,
        ts: datetime | None = None,
    ) -> None:
        """Log an amended order: its new price and/or quantity."""
        self.log_event("modify", symbol=symbol, order_id=order_id, new_price=new_price,
                       new_quantity=new_quantity, broker=broker, side=side, status="modified", ts=ts)

    def log_order_failed(
        self, *, symbol: str, reason: str, side: Any = None, quantity: Number | None = None,
        price: Number | None = None, order_id: Any = None, broker: str | None = None,
        ts: datetime | None = None,
    ) -> None:
        """Log an order the venue or the broker refused, with the reason (a WARNING)."""
        self.log_event("failed", symbol=symbol, reason=reason, side=side, quantity=quantity, price=price,
                       order_id=order_id, broker=broker, status="rejected", ts=ts)

    # ------------------------------------------------------------------ writing
    def log_event(self, event: str, *, symbol: str, ts: datetime | None = None, **fields: Any) -> None:
        """Log one event of kind `event` (one of EVENTS) with any of the `FIELDS`."""
        if event not in EVENTS:
            raise ValueError(f"unknown order event {event!r}; one of {', '.join(EVENTS)}")
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise TypeError(f"unknown order log field(s): {', '.join(sorted(unknown))}")
        rec: dict[str, Any] = dict.fromkeys(FIELDS)
        rec.update(ts=_utc(ts).isoformat(), event=event, symbol=self._redact(symbol))
        for name in ("quantity", "price", "pnl", "fee", "new_price", "new_quantity"):
            value = _number(fields.pop(name, None), name)
            rec[name] = None if value is None else str(value)
        fields["broker"] = fields.get("broker") or self.broker
        for name, value in fields.items():
            rec[name] = self._redact(_text(value))
        if rec["side"] is not None:
            rec["side"] = rec["side"].lower()
        sink = self._sink
        if sink is None:
            raise RuntimeError("the OrderLogger is closed")
        level = logging.WARNING if event == "failed" else logging.INFO
        with sink.lock:
            self.logger.log(level, _message(rec), extra={"order_sink": sink.key, "order_record": rec})

    def _redact(self, text: str | None) -> str | None:
        if not text:
            return text
        for secret in self._secrets:
            text = text.replace(secret, "***")
        text = _SECRET_PAIR.sub(r"\1\2***", text)
        return _URL_PASSWORD.sub(r"\1***@", text)

    # ------------------------------------------------------------------ bus
    def subscribe(
        self, bus: EventBus, *, broker: str | None = None, inline: bool = False, name: str = "order_logger"
    ) -> Subscription:
        """Log every order event and every closed trade published on `bus`.

        Queued by default (the bus needs a spool_dir): file writes and gzip rotation then run
        on the subscriber's own thread, never on the strategy's.
        """
        return bus.subscribe(OrderEventLog(self, broker=broker), ev.OrderEvent, ev.TradeClosed,
                             inline=inline, name=name)


def _message(rec: dict[str, Any]) -> str:
    """One readable line: symbol, event, side, quantity, price, order id, then what is known."""
    parts = [rec["symbol"] or "-", rec["event"].upper()]
    if rec["side"]:
        parts.append(rec["side"].upper())
    labels = (("quantity", "qty"), ("price", "price"), ("order_id", "id"), ("pnl", "pnl"),
              ("fee", "fee"), ("new_price", "new_price"), ("new_quantity", "new_qty"),
              ("trade_id", "trade"), ("order_type", "type"), ("status", "status"),
              ("broker", "broker"), ("reason", "reason"), ("exit_reason", "exit_reason"),
              ("entry_tag", "entry_tag"), ("ts", "at"))
    parts.extend(f"{label}={rec[key]}" for key, label in labels if rec[key] is not None)
    return " ".join(parts)


# --------------------------------------------------------------------------- bus adapter

_LEG_EVENTS = {"entry": "entry", "exit": "exit", "sl": "stop_loss", "stop_loss": "stop_loss",
               "tp": "take_profit", "take_profit": "take_profit"}
_ID_LEG = re.compile(r"-([a-z0-9]+)-\d+$")  # ClientOrderId.for_signal: atf-<hash>-<leg>-<attempt>


class OrderEventLog:
    """A bus handler that turns order events and closed trades into OrderLogger calls.

    An order's kind (entry, exit, stop_loss, take_profit) comes from the tag of its
    OrderSubmitted, or else from the leg in its client order id; side and quantity of the
    submission are remembered until the order is done, for the cancel and failed lines.
    """

    def __init__(self, logger: OrderLogger, *, broker: str | None = None) -> None:
        self.logger = logger
        self.broker = broker
        self._orders: dict[str, tuple[str, ev.OrderSubmitted]] = {}
        self._lock = threading.Lock()

    def __call__(self, event: ev.Event) -> None:
        if isinstance(event, ev.TradeClosed):
            self._closed(event)
        elif isinstance(event, ev.OrderEvent):
            self._order(event)

    def _kind(self, event: ev.OrderEvent) -> tuple[str, ev.OrderSubmitted | None]:
        cid = str(event.client_order_id)
        if isinstance(event, ev.OrderSubmitted):
            kind = _LEG_EVENTS.get(event.tag) or self._leg_of(cid)
            with self._lock:
                self._orders[cid] = (kind, event)
            return kind, event
        with self._lock:
            known = self._orders.get(cid)
            if isinstance(event, (ev.OrderFilled, ev.OrderCancelled, ev.OrderRejected, ev.OrderExpired)):
                self._orders.pop(cid, None)  # done: nothing more will come for it
        return known if known is not None else (self._leg_of(cid), None)

    @staticmethod
    def _leg_of(cid: str) -> str:
        m = _ID_LEG.search(cid)
        return _LEG_EVENTS.get(m.group(1), "entry") if m else "entry"

    def _order(self, event: ev.OrderEvent) -> None:
        kind, sub = self._kind(event)
        f: dict[str, Any] = {
            "symbol": event.symbol, "order_id": event.client_order_id, "broker": self.broker, "ts": event.ts,
            "side": sub.side if sub else getattr(event, "side", None),
            "quantity": sub.quantity if sub else None, "price": _limit_or_stop(sub),
        }
        if isinstance(event, ev.OrderRejected):
            kind = "failed"
            f.update(status="rejected", reason=event.reason)
        elif isinstance(event, (ev.OrderCancelled, ev.OrderExpired, ev.OrderPendingCancel)):
            kind = "cancel"
            status = {ev.OrderCancelled: "cancelled", ev.OrderExpired: "expired"}.get(type(event), "pending_cancel")
            reason = getattr(event, "reason", "") or ("expired" if status == "expired" else None)
            f.update(status=status, reason=reason, price=None)
        elif isinstance(event, ev.OrderModified):
            kind = "modify"
            new_price = event.price if event.price is not None else event.stop_price
            f.update(status="modified", quantity=None, price=None, new_price=new_price,
                     new_quantity=event.quantity)
        else:
            f["order_type"] = sub.order_type if sub else None
            if isinstance(event, ev.OrderFill):
                f.update(status="filled" if isinstance(event, ev.OrderFilled) else "partially_filled",
                         quantity=event.last_qty, price=event.last_price, fee=event.fee)
            else:
                names = {ev.OrderSubmitted: "submitted", ev.OrderAccepted: "accepted"}
                f["status"] = names.get(type(event), type(event).__name__)
        self.logger.log_event(kind, **f)

    def _closed(self, event: ev.TradeClosed) -> None:
        closing = "sell" if event.side.value == "long" else "buy"
        self.logger.log_order_exit(
            symbol=event.symbol, side=closing, quantity=event.quantity, price=event.exit_price,
            pnl=event.realised_pnl, fee=event.fees, trade_id=event.trade_id, status="closed",
            exit_reason=event.exit_reason or None, entry_tag=event.entry_tag or None, broker=self.broker, ts=event.ts,
        )


def _limit_or_stop(sub: ev.OrderSubmitted | None) -> Decimal | None:
    if sub is None:
        return None
    return sub.price if sub.price is not None else sub.stop_price
