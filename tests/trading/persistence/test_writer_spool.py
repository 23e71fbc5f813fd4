"""EventSpool: fsynced JSON lines, exact round trip of every event, order kept, torn tails."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

import pytest

from trading import events as ev
from trading.events import Event
from trading.orders import ClientOrderId, OrderSide, OrderType
from trading.persistence.audit_events import EquitySampled, Reconciled
from trading.persistence.spool import EventSpool, encode_line, spool_path
from trading.positions import PositionSide

T = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
CID = ClientOrderId("atf-00000000000000aa-entry-0")
D = Decimal


def every_event() -> list[Event]:
    """One of each event class, with values that a sloppy codec would change."""
    fill: dict[str, Any] = {
        "ts": T,
        "client_order_id": CID,
        "symbol": "BTC/USDT",
        "side": OrderSide.SELL,
        "last_qty": D("0.00000001"),
        "last_price": D("64123.123456789012345678"),
        "fee": D("0E-15"),
        "filled_qty": D("1.50"),
        "remaining_qty": D("-0"),
        "avg_price": D("1E+3"),
        "trade_id": "T-1",
    }
    return [
        ev.OrderSubmitted(
            ts=T,
            client_order_id=CID,
            symbol="BTC/USDT",
            side=OrderSide.BUY,
            order_type=OrderType.STOP_LIMIT,
            quantity=D("2.000"),
            price=D("10.10"),
            stop_price=D("9.9"),
            parent_id=ClientOrderId("p-1"),
            oco_id=None,
            tag="sl",
        ),
        ev.OrderAccepted(ts=T, client_order_id=CID, symbol="ÄÖ/€", venue_order_id="v\n1"),
        ev.OrderPartiallyFilled(**fill),
        ev.OrderFilled(**{**fill, "trade_id": None}),
        ev.OrderPendingCancel(ts=T, client_order_id=CID, symbol="X", reason="STOP"),
        ev.OrderCancelled(ts=T, client_order_id=CID, symbol="X", reason="", filled_qty=D("0.5")),
        ev.OrderModified(
            ts=T, client_order_id=CID, symbol="X", quantity=D("3"), stop_price=D("1.25")
        ),
        ev.OrderRejected(ts=T, client_order_id=CID, symbol="X", reason='INSUFFICIENT "FUNDS"'),
        ev.OrderExpired(ts=T, client_order_id=CID, symbol="X"),
        ev.TradeOpened(
            ts=T,
            trade_id="t1",
            symbol="X",
            side=PositionSide.SHORT,
            quantity=D("1"),
            entry_price=D("100.0000000001"),
        ),
        ev.TradeClosed(
            ts=T,
            trade_id="t1",
            symbol="X",
            side=PositionSide.LONG,
            quantity=D("1"),
            entry_price=D("100"),
            exit_price=D("99.5"),
            realised_pnl=D("-0.5"),
            fees=D("0.2"),
        ),
        ev.RiskDenied(
            ts=T,
            symbol="X",
            side=OrderSide.BUY,
            quantity=D("1"),
            reason="MAX_POSITIONS",
            client_order_id=CID,
        ),
        ev.RiskWarning(
            ts=T, control="max_drawdown", value=D("0.08"), limit=D("0.1"), fraction=D("0.8")
        ),
        ev.Halted(ts=T, reason="MAX_DAILY_LOSS", until=T + timedelta(hours=3)),
        ev.Resumed(ts=T, reason="manual"),
        ev.BotStarted(ts=datetime(2024, 1, 1, tzinfo=UTC), bot="b", mode="paper"),
        ev.BotStopped(ts=T, bot="b", reason="end_of_data"),
        EquitySampled(ts=T, equity=D("10012.5000000001"), cash=None, realised_pnl=D("-3.2")),
        Reconciled.of(
            T,
            "ORDER_RESTORED",
            symbol="X",
            client_order_id=str(CID),
            details={"db": "absent", "broker": "accepted", "restored_events": 2},
        ),
    ]


def concrete_event_classes() -> list[type[Event]]:
    out, stack = [], [Event]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__ in (ev.__name__, EquitySampled.__module__):
            out.append(cls)
    return sorted(out, key=lambda c: c.__name__)


def value_of(tp: Any, name: str) -> Any:
    """A value of type `tp` that would not survive a careless codec (field `name` for text)."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        return (value_of(item, f"{name}[0]"), value_of(item, f"{name}[1]"))
    if tp is datetime:
        return T
    if tp is Decimal:
        return D("-12.3400")
    if tp is ClientOrderId:
        return CID
    if isinstance(tp, type) and issubclass(tp, Enum):
        return list(tp)[-1]
    if tp is float:
        return 0.1 + 0.2
    if tp is int:
        return -7
    if tp is bool:
        return True
    return f"{name} \u00e9\n"


def generated(cls: type[Event]) -> Event:
    """An instance of `cls` with a value of each field's type (new event classes included)."""
    hints = ev._hints(cls)
    return cls(**{f.name: value_of(hints[f.name], f.name) for f in dataclasses.fields(cls)})


def exact(e: Event) -> tuple[type[Event], str]:
    """Type and repr: Decimal('1.50') must come back as 1.50, not 1.5 (== would accept both)."""
    return type(e), repr(e)


def test_every_event_class_round_trips_exactly_through_the_spool(tmp_path: Path) -> None:
    events = every_event() + [generated(cls) for cls in concrete_event_classes()]
    assert len(events) > 30
    spool = EventSpool(tmp_path / "s.jsonl")
    spool.append(events)
    back = EventSpool(tmp_path / "s.jsonl").peek(1000).events  # as a new process reads it
    assert [exact(e) for e in back] == [exact(e) for e in events]
    assert spool.inexact == 0


def test_append_is_fsynced_once_per_batch_and_on_disk_when_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.jsonl"
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    spool = EventSpool(path)
    spool.append(every_event()[:3])
    assert synced == [path.stat().st_ino]  # one fsync, of the spool file itself
    assert path.read_bytes().count(b"\n") == 3
    spool.append(every_event()[3:5])
    assert len(synced) == 2 and len(spool) == 5


def test_order_is_kept_across_batches_partial_reads_and_truncation(tmp_path: Path) -> None:
    events = [ev.Resumed(ts=T + timedelta(seconds=i), reason=f"r{i}") for i in range(25)]
    spool = EventSpool(tmp_path / "s.jsonl")
    for i in range(0, 25, 7):
        spool.append(events[i : i + 7])
    got: list[Event] = []
    while len(spool):
        chunk = spool.peek(4)
        assert chunk.events == spool.peek(4).events  # peek does not consume
        got += chunk.events
        spool.consume(chunk)
    assert got == events
    assert spool.path.stat().st_size == 0  # replayed: truncated
    spool.append(events[:2])  # and usable again from the start
    assert spool.peek(10).events == events[:2]


def test_a_chunk_cannot_be_consumed_twice_or_out_of_order(tmp_path: Path) -> None:
    spool = EventSpool(tmp_path / "s.jsonl")
    spool.append([ev.Resumed(ts=T, reason=str(i)) for i in range(4)])
    first = spool.peek(2)
    spool.consume(first)
    with pytest.raises(ValueError, match="in order"):
        spool.consume(first)


def test_a_torn_last_line_is_cut_off_and_every_earlier_line_kept(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    events = every_event()
    EventSpool(path).append(events[:10])
    torn = encode_line(events[10])[:-9]  # the process died in the middle of this write
    with open(path, "ab") as f:
        f.write(torn)
    spool = EventSpool(path)  # the next process
    assert spool.torn_bytes == len(torn)
    assert len(spool) == 10
    assert path.read_bytes().endswith(b"\n")
    spool.append(events[11:13])  # new records start on a line of their own
    assert [exact(e) for e in spool.peek(100).events] == [
        exact(e) for e in events[:10] + events[11:13]
    ]


def test_an_unreadable_line_is_moved_aside_not_dropped_and_does_not_block(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    events = [ev.Resumed(ts=T, reason=str(i)) for i in range(3)]
    spool = EventSpool(path)
    spool.append(events[:1])
    with open(path, "ab") as f:
        f.write(b'{"type":"NoSuchEvent","ts":"x"}\n')
    spool = EventSpool(path)
    spool.append(events[1:])
    chunk = spool.peek(10)
    assert chunk.events == events and chunk.lines == 4
    spool.consume(chunk)
    assert spool.rejected == 1
    assert spool.rejected_path.read_bytes() == b'{"type":"NoSuchEvent","ts":"x"}\n'


def test_one_spool_file_per_bot_instance(tmp_path: Path) -> None:
    a, b = spool_path(tmp_path, "rsi bot/1", 3), spool_path(tmp_path, "rsi bot/1", 4)
    assert a != b and a.parent == b.parent == tmp_path
    assert a.name == "audit-rsi_bot_1-3.jsonl"
