"""OrderLogger: text and JSON-lines order log, rotation with gzip, isolation, threads, the bus feed."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tests.trading.paper_run import paper_config, write_replay_bars
from trading.bot import BaseTradingBot
from trading.bus import EventBus
from trading.events import (
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderModified,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
    TradeClosed,
)
from trading.order_logger import FIELDS, LOGGER_NAME, OrderLogger, read_records, rotated_files
from trading.orders import ClientOrderId, OrderSide, OrderType
from trading.positions import PositionSide

LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) - trading\.orders - (INFO|WARNING) - "
    r"(\S+) (ENTRY|EXIT|STOP_LOSS|TAKE_PROFIT|CANCEL|MODIFY|FAILED)\b(.*)$"
)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _restore_order_logger() -> Iterator[None]:
    logger = logging.getLogger(LOGGER_NAME)
    propagate = logger.propagate
    yield
    files = [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
    assert files == [], "an OrderLogger was left open"
    logger.propagate = propagate


def text_lines(path: Path) -> list[str]:
    lines: list[str] = []
    for p in rotated_files(path):
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rt", encoding="utf-8") as f:
            lines.extend(line.rstrip("\n") for line in f)
    return lines


def test_each_method_writes_one_line_and_one_record_with_the_same_event(tmp_path: Path) -> None:
    with OrderLogger(tmp_path, broker="paper") as log:
        log.log_order_entry(symbol="BTC/USDT", side=OrderSide.BUY, quantity=Decimal("0.5"),
                            price=Decimal("42000.10"), order_id="o-1", order_type=OrderType.LIMIT, ts=T0)
        log.log_stop_loss(symbol="BTC/USDT", side="sell", quantity=0.5, price=41000.0, order_id="o-2", ts=T0)
        log.log_take_profit(symbol="BTC/USDT", side="SELL", quantity=0.5, price=45000, order_id="o-3", ts=T0)
        log.log_order_modify(symbol="BTC/USDT", order_id="o-2", new_price=0.1, new_quantity="0.25", ts=T0)
        log.log_order_cancel(symbol="BTC/USDT", order_id="o-3", reason="oco", ts=T0)
        log.log_order_exit(symbol="BTC/USDT", side="sell", quantity=0.5, price=41000, pnl=Decimal("-550.05"),
                           order_id="o-2", status="closed", exit_reason="trailing_stop", entry_tag="RSIOrBBEntryMixin",
                           ts=T0 + timedelta(hours=2))
        log.log_order_failed(symbol="ETH/USDT", side="buy", quantity=1, reason="INSUFFICIENT_BALANCE",
                             broker="binance", ts=T0)
    records = list(read_records(tmp_path))
    assert [r["event"] for r in records] == [
        "entry", "stop_loss", "take_profit", "modify", "cancel", "exit", "failed"]
    assert all(list(r) == [*FIELDS, "logged_at"] for r in records)
    entry, sl, _, modify, cancel, exit_, failed = records
    assert entry == {**entry, "ts": "2024-05-01T12:00:00+00:00", "status": "submitted", "broker": "paper",
                     "symbol": "BTC/USDT", "side": "buy", "order_type": "limit", "quantity": "0.5",
                     "price": "42000.10", "order_id": "o-1", "pnl": None}
    assert (sl["side"], sl["price"]) == ("sell", "41000.0")
    assert (modify["new_price"], modify["new_quantity"]) == ("0.1", "0.25")  # a float keeps its short form
    assert (cancel["status"], cancel["reason"]) == ("cancelled", "oco")
    assert (exit_["pnl"], exit_["status"], exit_["ts"]) == ("-550.05", "closed", "2024-05-01T14:00:00+00:00")
    assert (exit_["exit_reason"], exit_["entry_tag"]) == ("trailing_stop", "RSIOrBBEntryMixin")
    assert entry["exit_reason"] is None and entry["entry_tag"] is None
    assert (failed["broker"], failed["reason"], failed["status"]) == ("binance", "INSUFFICIENT_BALANCE", "rejected")
    assert all(datetime.fromisoformat(r["logged_at"]).utcoffset() == timedelta(0) for r in records)

    lines = text_lines(tmp_path / "trading_orders.log")
    assert len(lines) == len(records)
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [m.group(2) for m in parsed] == ["INFO"] * 6 + ["WARNING"]  # type: ignore[union-attr]
    assert [(m.group(3), m.group(4)) for m in parsed][:2] == [("BTC/USDT", "ENTRY"), ("BTC/USDT", "STOP_LOSS")]  # type: ignore[union-attr]
    assert lines[0].endswith("BTC/USDT ENTRY BUY qty=0.5 price=42000.10 id=o-1 type=limit status=submitted "
                             "broker=paper at=2024-05-01T12:00:00+00:00")
    assert " SELL qty=0.5 price=41000 id=o-2 pnl=-550.05 " in lines[5]
    assert " exit_reason=trailing_stop entry_tag=RSIOrBBEntryMixin at=" in lines[5]


def test_rotated_files_are_gzipped_and_read_back_oldest_first(tmp_path: Path) -> None:
    with OrderLogger(tmp_path, max_bytes=1500, backup_count=100) as log:
        for i in range(120):
            log.log_order_entry(symbol="AAA", side="buy", quantity=i + 1, price=10, order_id=f"id-{i}")
    backups = sorted(tmp_path.glob("trading_orders.jsonl.*.gz"))
    assert len(backups) >= 5 and sorted(tmp_path.glob("trading_orders.log.*.gz"))
    for p in backups:
        with gzip.open(p, "rt") as f:
            assert all(json.loads(line)["event"] == "entry" for line in f)  # a real gzip of whole lines
    assert all(p.stat().st_size <= 1500 for p in [tmp_path / "trading_orders.jsonl"])
    assert [r["order_id"] for r in read_records(tmp_path)] == [f"id-{i}" for i in range(120)]
    lines = text_lines(tmp_path / "trading_orders.log")
    assert [re.search(r"id=(\S+)", line).group(1) for line in lines] == [f"id-{i}" for i in range(120)]  # type: ignore[union-attr]
    assert not list(tmp_path.glob("*.tmp"))


def test_only_backup_count_rotated_files_are_kept_and_the_oldest_go_first(tmp_path: Path) -> None:
    with OrderLogger(tmp_path, max_bytes=1000, backup_count=2) as log:
        for i in range(100):
            log.log_order_cancel(symbol="AAA", order_id=f"id-{i}")
    assert sorted(p.name for p in tmp_path.glob("trading_orders.jsonl*")) == [
        "trading_orders.jsonl", "trading_orders.jsonl.1.gz", "trading_orders.jsonl.2.gz"]
    ids = [int(r["order_id"].split("-")[1]) for r in read_records(tmp_path)]
    assert ids == list(range(ids[0], 100)) and ids[0] > 0  # the newest, contiguous, oldest dropped


def test_two_loggers_on_different_directories_never_share_handlers_or_lines(tmp_path: Path) -> None:
    a, b = OrderLogger(tmp_path / "a"), OrderLogger(tmp_path / "b")
    again = OrderLogger(tmp_path / "a")  # the same directory: shares a's files, writes each line once
    try:
        a.log_order_entry(symbol="AAA", side="buy", quantity=1, order_id="from-a")
        b.log_order_entry(symbol="BBB", side="buy", quantity=1, order_id="from-b")
        again.log_order_cancel(symbol="AAA", order_id="from-again")
        assert [r["order_id"] for r in read_records(tmp_path / "a")] == ["from-a", "from-again"]
        assert [r["order_id"] for r in read_records(tmp_path / "b")] == ["from-b"]
        assert len(text_lines(tmp_path / "a" / "trading_orders.log")) == 2
        a.close()
        again.log_order_cancel(symbol="AAA", order_id="after-a-closed")
        assert [r["order_id"] for r in read_records(tmp_path / "a")][-1] == "after-a-closed"
        with pytest.raises(ValueError, match="max_bytes"):
            OrderLogger(tmp_path / "b", max_bytes=123)  # one directory, one rotation policy
    finally:
        again.close()
        b.close()
    with pytest.raises(RuntimeError, match="closed"):
        b.log_order_cancel(symbol="BBB", order_id="late")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("propagate", [True, False])
def test_each_event_reaches_the_root_logger_once_when_propagating_and_never_otherwise(
    tmp_path: Path, propagate: bool
) -> None:
    root, capture = logging.getLogger(), _Capture()
    root.addHandler(capture)
    try:
        with OrderLogger(tmp_path / "a", propagate=propagate) as a, OrderLogger(tmp_path / "b", propagate=propagate) as b:
            a.log_order_entry(symbol="AAA", side="buy", quantity=1, order_id="1")
            b.log_order_failed(symbol="BBB", reason="NO", order_id="2")
    finally:
        root.removeHandler(capture)
    ours = [r for r in capture.records if r.name == LOGGER_NAME]
    assert [r.getMessage().split()[0] for r in ours] == (["AAA", "BBB"] if propagate else [])


def test_many_threads_logging_at_once_lose_no_record_and_tear_no_line(tmp_path: Path) -> None:
    threads, per_thread = 8, 150
    with OrderLogger(tmp_path, max_bytes=20_000, backup_count=200) as log:
        start = threading.Barrier(threads)

        def work(t: int) -> None:
            start.wait()
            for i in range(per_thread):
                log.log_order_entry(symbol=f"S{t}", side="buy", quantity=Decimal(i), price=1.5, order_id=f"{t}-{i}")

        pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
    records = list(read_records(tmp_path))
    assert len(records) == threads * per_thread
    assert len({r["order_id"] for r in records}) == threads * per_thread
    for t in range(threads):  # each thread's events in its own order
        assert [r["order_id"] for r in records if r["symbol"] == f"S{t}"] == [f"{t}-{i}" for i in range(per_thread)]
    lines = text_lines(tmp_path / "trading_orders.log")
    assert all(LINE.match(line) for line in lines)
    # Both files list the events in the same order.
    assert [re.search(r"id=(\S+)", line).group(1) for line in lines] == [r["order_id"] for r in records]  # type: ignore[union-attr]


def test_secrets_never_reach_either_file(tmp_path: Path) -> None:
    key, secret = "AbCdEf0123456789KEY", "s3cr3t-Value-42"
    with OrderLogger(tmp_path, secrets=[key]) as log:
        log.log_order_failed(symbol="BTC/USDT", reason=f"binance -2015 invalid key {key} for this IP")
        log.log_order_failed(symbol="BTC/USDT", reason=f"GET /api/v3/order?apiKey={secret}&signature=deadbeef01")
        log.log_order_failed(symbol="BTC/USDT", reason=f'{{"api_secret": "{secret}"}}')
        log.log_order_cancel(symbol="BTC/USDT", order_id="x", reason=f"db postgresql://atf:{secret}@db/atf down")
        log.add_secrets(["zz"])  # too short to mask: ordinary text stays readable
        log.log_order_cancel(symbol="BTC/USDT", order_id="zz-1", reason="fizz")
    text = (tmp_path / "trading_orders.log").read_text() + (tmp_path / "trading_orders.jsonl").read_text()
    assert key not in text and secret not in text and "deadbeef01" not in text
    assert "apiKey=***" in text and "atf:***@db" in text
    assert "zz-1" in text and "reason=fizz" in text


def test_bad_values_and_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="backup_count"):
        OrderLogger(tmp_path, max_bytes=100, backup_count=0)
    with OrderLogger(tmp_path) as log:
        with pytest.raises(ValueError, match="quantity"):
            log.log_order_entry(symbol="A", side="buy", quantity="lots")
        with pytest.raises(TypeError, match="price"):
            log.log_order_entry(symbol="A", side="buy", quantity=1, price=True)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timezone"):
            log.log_order_entry(symbol="A", side="buy", quantity=1, ts=datetime(2024, 1, 1))
    assert list(read_records(tmp_path)) == []


# --------------------------------------------------------------------------- the bus feed


def _cid(leg: str, n: int = 0) -> ClientOrderId:
    return ClientOrderId.for_signal("bot", "AAA", T0 + timedelta(hours=n), leg)


def test_bus_events_map_to_the_order_log_by_the_orders_tag(tmp_path: Path) -> None:
    entry, sl, tp = _cid("entry"), _cid("sl"), _cid("tp")
    base = {"ts": T0, "symbol": "AAA"}
    fill = {"side": OrderSide.SELL, "fee": Decimal("0.1"), "remaining_qty": Decimal(0), "avg_price": Decimal(9)}
    events: list[Event] = [
        OrderSubmitted(**base, client_order_id=entry, side=OrderSide.BUY, order_type=OrderType.MARKET,
                       quantity=Decimal(2), tag="entry"),
        OrderAccepted(**base, client_order_id=entry),
        OrderFilled(**base, client_order_id=entry, side=OrderSide.BUY, last_qty=Decimal(2), last_price=Decimal(10),
                    fee=Decimal("0.02"), filled_qty=Decimal(2), remaining_qty=Decimal(0), avg_price=Decimal(10)),
        OrderSubmitted(**base, client_order_id=sl, side=OrderSide.SELL, order_type=OrderType.STOP,
                       quantity=Decimal(2), stop_price=Decimal(9), tag="sl"),
        OrderSubmitted(**base, client_order_id=tp, side=OrderSide.SELL, order_type=OrderType.LIMIT,
                       quantity=Decimal(2), price=Decimal(12), tag="tp"),
        OrderModified(**base, client_order_id=sl, quantity=Decimal(2), stop_price=Decimal("9.5")),
        OrderPartiallyFilled(**base, client_order_id=sl, last_qty=Decimal(1), last_price=Decimal(9),
                             filled_qty=Decimal(1), **{**fill, "remaining_qty": Decimal(1)}),
        TradeClosed(**base, trade_id="AAA-3", side=PositionSide.LONG, quantity=Decimal(2), entry_price=Decimal(10),
                    exit_price=Decimal(9), realised_pnl=Decimal(-2), fees=Decimal("0.12"), exit_reason="stop_loss",
                    entry_tag="FireAtBars"),
        OrderFilled(**base, client_order_id=sl, last_qty=Decimal(1), last_price=Decimal(9),
                    filled_qty=Decimal(2), **fill),
        OrderCancelled(**base, client_order_id=tp, reason="OCO"),
        # Seen without its submission (e.g. after a restart): the leg comes from the id.
        OrderExpired(**base, client_order_id=_cid("tp", 5)),
        OrderRejected(**base, client_order_id=_cid("entry", 7), reason="VENUE_REJECTED"),
    ]
    bus = EventBus()
    with OrderLogger(tmp_path) as log:
        sub = log.subscribe(bus, broker="paper", inline=True)
        for e in events:
            bus.publish(e)
    assert sub.failed == 0 and sub.processed == len(events)
    got = [(r["event"], r["status"], r["order_id"], r["side"], r["quantity"], r["price"]) for r in read_records(tmp_path)]
    assert got == [
        ("entry", "submitted", str(entry), "buy", "2", None),
        ("entry", "accepted", str(entry), "buy", "2", None),
        ("entry", "filled", str(entry), "buy", "2", "10"),
        ("stop_loss", "submitted", str(sl), "sell", "2", "9"),
        ("take_profit", "submitted", str(tp), "sell", "2", "12"),
        ("modify", "modified", str(sl), "sell", None, None),
        ("stop_loss", "partially_filled", str(sl), "sell", "1", "9"),
        ("exit", "closed", None, "sell", "2", "9"),
        ("stop_loss", "filled", str(sl), "sell", "1", "9"),
        ("cancel", "cancelled", str(tp), "sell", "2", None),
        ("cancel", "expired", str(_cid("tp", 5)), None, None, None),
        ("failed", "rejected", str(_cid("entry", 7)), None, None, None),
    ]
    records = list(read_records(tmp_path))
    assert records[5]["new_price"] == "9.5" and records[7]["pnl"] == "-2" and records[7]["trade_id"] == "AAA-3"
    assert (records[7]["exit_reason"], records[7]["entry_tag"]) == ("stop_loss", "FireAtBars")
    assert all(r["exit_reason"] is None for k, r in enumerate(records) if k != 7)
    assert records[-1]["reason"] == "VENUE_REJECTED" and all(r["broker"] == "paper" for r in records)


BROKER = {
    "cash": 10000.0,
    "commission_rate": 0.001,
    "paper_trading_config": {
        "mode": "advanced",
        "slippage_model": "percent",
        "base_slippage": 0.0005,
        "partial_fill_probability": 0.3,
        "reject_probability": 0.15,
        "seed": 5,
    },
}


def test_a_paper_replay_logs_every_order_event_and_every_closed_trade_once(tmp_path: Path) -> None:
    cfg = paper_config("order_log_test", BROKER)
    csv = write_replay_bars(tmp_path / "aaa.csv")
    seen: list[Event] = []

    async def run():  # type: ignore[no-untyped-def]
        bus = EventBus(spool_dir=tmp_path / "spool")
        bus.subscribe(seen.append, inline=True, name="truth")
        with OrderLogger(tmp_path / "logs", max_bytes=20_000, backup_count=100) as log:
            log.subscribe(bus, broker="paper")  # queued: writes on its own thread
            result = await BaseTradingBot(cfg, mode="paper", replay=csv, speed="max", bus=bus).start_trading()
            await bus.close(timeout=60)
        return result

    result = asyncio.run(run())
    records = list(read_records(tmp_path / "logs"))
    order_events = [e for e in seen if isinstance(e, OrderEvent)]
    closed = [e for e in seen if isinstance(e, TradeClosed)]
    assert len(records) == len(order_events) + len(closed)
    assert list((tmp_path / "logs").glob("trading_orders.jsonl.*.gz"))  # the run rotated

    def ids(status: str) -> list[str | None]:
        return [r["order_id"] for r in records if r["status"] == status]

    submitted = [e for e in order_events if isinstance(e, OrderSubmitted)]
    fills = [e for e in order_events if isinstance(e, (OrderFilled, OrderPartiallyFilled))]
    rejected = [e for e in order_events if isinstance(e, OrderRejected)]
    cancelled = [e for e in order_events if isinstance(e, OrderCancelled)]
    assert ids("submitted") == [str(e.client_order_id) for e in submitted]
    assert [(r["order_id"], r["quantity"], r["price"], r["fee"]) for r in records
            if r["status"] in ("filled", "partially_filled")] == [
        (str(e.client_order_id), str(e.last_qty), str(e.last_price), str(e.fee)) for e in fills]
    assert ids("cancelled") == [str(e.client_order_id) for e in cancelled]
    assert [(r["order_id"], r["reason"]) for r in records if r["event"] == "failed"] == [
        (str(e.client_order_id), e.reason) for e in rejected]
    # The run had every kind of event worth logging.
    tags = {e.tag for e in submitted}
    assert {"entry", "sl", "tp"} <= tags and rejected and cancelled
    assert any(isinstance(e, OrderPartiallyFilled) for e in fills)
    # Every record of an order carries the kind of its submission.
    kind = {str(e.client_order_id): {"entry": "entry", "exit": "exit", "sl": "stop_loss", "tp": "take_profit"}[e.tag]
            for e in submitted}
    assert all(r["event"] == kind[r["order_id"]] for r in records if r["event"] not in ("cancel", "failed", "modify")
               and r["order_id"] is not None)
    # One exit record per round trip, when the position went flat. The result has a row per
    # exit leg (a partly filled exit closes a trip in several rows), so its rows are grouped by
    # entry; a position still open at the end (marked end_of_data) has no record.
    trips: dict[tuple[str, datetime], list] = {}
    for t in result.trades:
        trips.setdefault((t.symbol, t.entry_time), []).append(t)
    closed_trips = sorted((legs for legs in trips.values() if all(t.exit_reason != "end_of_data" for t in legs)),
                          key=lambda legs: max(t.exit_time for t in legs))
    exits = sorted((r for r in records if r["status"] == "closed"), key=lambda r: r["ts"])
    assert len(exits) == len(closed_trips) == len(closed) >= 3
    assert any(len(legs) > 1 for legs in closed_trips)  # the run had a trip closed in several legs
    for rec, legs in zip(exits, closed_trips, strict=True):
        assert rec["ts"] == max(t.exit_time for t in legs).isoformat()
        assert rec["symbol"] == legs[0].symbol and rec["side"] == ("sell" if legs[0].side == "long" else "buy")
        assert float(rec["quantity"]) == pytest.approx(sum(t.quantity for t in legs), rel=1e-9)
        assert float(rec["pnl"]) == pytest.approx(sum(t.gross_pnl for t in legs), rel=1e-9, abs=1e-9)
        assert float(rec["fee"]) == pytest.approx(sum(t.fees for t in legs), rel=1e-9)
        # The reason of the leg that flattened the position, and the tag of the entry.
        last = max(legs, key=lambda t: t.exit_time)
        assert (rec["exit_reason"], rec["entry_tag"]) == (last.exit_reason, legs[0].entry_tag)
    assert len({r["exit_reason"] for r in exits}) > 1 and all(r["exit_reason"] and r["entry_tag"] for r in exits)
    assert all(r["broker"] == "paper" for r in records)

    lines = text_lines(tmp_path / "logs" / "trading_orders.log")
    assert len(lines) == len(records)
    for line, rec in zip(lines, records, strict=True):
        m = LINE.match(line)
        assert m is not None, line
        assert (m.group(3), m.group(4)) == (rec["symbol"], rec["event"].upper())
        for key, label in (("order_id", "id"), ("quantity", "qty"), ("price", "price"), ("pnl", "pnl")):
            if rec[key] is not None:
                assert f" {label}={rec[key]} " in f"{line} "
