"""TradeLedger: what a fill records, what is skipped, totals, filters, exports (local, memory, S3), bus."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal as D
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.trading.paper_run import paper_config, write_replay_bars
from trading.bot import BaseTradingBot
from trading.bus import EventBus
from trading.events import (
    Event,
    OrderCancelled,
    OrderFill,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
)
from trading.ledger import LedgerEntry, TradeLedger
from trading.ledger_store import LedgerFileError, query_entries, read_ledgers
from trading.orders import ClientOrderId, Order, OrderSide, OrderStatus, OrderType

T0 = datetime(2024, 5, 6, 14, 30, tzinfo=UTC)
EXPORTED = datetime(2024, 5, 6, 23, 59, 58, tzinfo=UTC)
PLAN = {"metadata": {"strategy_attribution": {"AAA": {"momentum": 0.6, "carry": 0.4}, "BBB": {"carry": "1"}}}}


def fill(cid: str = "o-1", side: OrderSide = OrderSide.BUY, qty: str = "2", price: str = "101.25", *,
         symbol: str = "AAA", fee: str = "0.2", filled: str | None = None, remaining: str = "0",
         partial: bool = False, ts: datetime = T0) -> OrderFill:
    cls = OrderPartiallyFilled if partial else OrderFilled
    return cls(ts=ts, client_order_id=ClientOrderId(cid), symbol=symbol, side=side, last_qty=D(qty),
               last_price=D(price), fee=D(fee), filled_qty=D(filled or qty), remaining_qty=D(remaining),
               avg_price=D(price))


def order(status: OrderStatus, filled: str = "0", avg: str | None = None, *, cid: str = "o-9",
          side: OrderSide = OrderSide.SELL, order_type: OrderType = OrderType.LIMIT, fees: str = "0") -> Order:
    return Order(client_order_id=ClientOrderId(cid), symbol="AAA", side=side, order_type=order_type,
                 quantity=D(5), price=D(99) if order_type is OrderType.LIMIT else None, status=status,
                 filled_qty=D(filled), avg_fill_price=None if avg is None else D(avg), fees=D(fees),
                 created_ts=T0 - timedelta(minutes=1), updated_ts=T0)


@dataclass
class Case:
    name: str
    result: Any
    plan: Any = None
    quote: Any = None
    expect: dict[str, Any] | None = field(default_factory=dict)  # None: not recorded


CASES = [
    Case("buy fill event", fill(), PLAN, {"bid": D("101.2"), "ask": D("101.3")},
         {"direction": OrderSide.BUY, "filled_qty": D(2), "fill_price": D("101.25"), "notional": D("202.50"),
          "fee": D("0.2"), "bid": D("101.2"), "ask": D("101.3"), "timestamp": T0, "order_id": "o-1",
          "strategy_names": ("momentum", "carry"), "strategy_weights": (D("0.6"), D("0.4"))}),
    Case("sell fill event", fill(side=OrderSide.SELL, qty="1.5", price="99.5", fee="0"), None, None,
         {"direction": OrderSide.SELL, "notional": D("149.25"), "strategy_names": (), "strategy_weights": ()}),
    Case("partial fill event records only this fill", fill(qty="1", filled="1", remaining="3", partial=True),
         None, None, {"filled_qty": D(1), "notional": D("101.25")}),
    Case("filled Order", order(OrderStatus.FILLED, "5", "99.1", fees="0.5"), PLAN, None,
         {"direction": OrderSide.SELL, "filled_qty": D(5), "fill_price": D("99.1"), "notional": D("495.5"),
          "fee": D("0.5"), "order_type": OrderType.LIMIT, "timestamp": T0}),
    Case("partially filled Order", order(OrderStatus.PARTIALLY_FILLED, "2", "99"), None, None,
         {"filled_qty": D(2), "fill_price": D(99)}),
    Case("cancelled Order keeps what filled before the cancel", order(OrderStatus.CANCELLED, "1", "99"),
         None, None, {"filled_qty": D(1)}),
    Case("rejected Order", order(OrderStatus.REJECTED), None, None, None),
    Case("cancelled unfilled Order", order(OrderStatus.CANCELLED), None, None, None),
    Case("accepted Order nothing filled yet", order(OrderStatus.ACCEPTED), None, None, None),
    Case("rejected event", OrderRejected(ts=T0, client_order_id=ClientOrderId("o-2"), symbol="AAA",
                                         reason="INSUFFICIENT_MARGIN"), None, None, None),
    Case("cancelled event", OrderCancelled(ts=T0, client_order_id=ClientOrderId("o-3"), symbol="AAA"),
         None, None, None),
    Case("missing quote", fill(), None, None, {"bid": None, "ask": None}),
    Case("quote with one side", fill(), None, {"bid": 101.2}, {"bid": D("101.2"), "ask": None}),
    Case("quote object", fill(), None, SimpleNamespace(bid=D(101), ask=D("101.5")),
         {"bid": D(101), "ask": D("101.5")}),
    Case("plan object with a string weight", fill(symbol="BBB"), SimpleNamespace(metadata=PLAN["metadata"]),
         None, {"strategy_names": ("carry",), "strategy_weights": (D(1),)}),
    Case("symbol outside the plan is unattributed", fill(symbol="CCC"), PLAN, None,
         {"strategy_names": (), "strategy_weights": ()}),
    Case("wildcard attribution", fill(symbol="CCC"), {"metadata": {"strategy_attribution": {"*": {"base": 1}}}},
         None, {"strategy_names": ("base",)}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_record_filled_order(case: Case) -> None:
    ledger = TradeLedger("L1")
    entry = ledger.record_filled_order(case.result, "run-1", case.plan, case.quote)
    if case.expect is None:
        assert entry is None and ledger.total_entries == 0
        return
    assert entry is not None and ledger.get_ledger() == (entry,)
    assert entry.correlation_id == "run-1" and entry.entry_id == "L1-000001"
    assert entry.notional == entry.filled_qty * entry.fill_price
    for key, want in case.expect.items():
        assert getattr(entry, key) == want, key


def test_an_order_not_recorded_says_why_in_a_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    ledger = TradeLedger()
    with caplog.at_level(logging.DEBUG, logger="trading.ledger"):
        ledger.record_filled_order(order(OrderStatus.REJECTED, cid="bad-1"), "run-1")
        ledger.record_filled_order(OrderRejected(ts=T0, client_order_id=ClientOrderId("bad-2"), symbol="AAA",
                                                 reason="MAX_POSITIONS"), "run-1")
    assert "bad-1 not recorded: rejected with nothing filled" in caplog.text
    assert "bad-2 not recorded: MAX_POSITIONS" in caplog.text


def test_anything_else_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="fill event or an Order"):
        TradeLedger().record_filled_order({"symbol": "AAA"}, "run-1")


@pytest.mark.parametrize(("weights", "problem"), [
    ({"a": 0.5, "b": 0.4}, "sum to 0.9"),
    ({"a": 0.7, "b": 0.4}, "sum to 1.1"),
    ({"a": 1.5, "b": -0.5}, "weight of b is negative"),
    ({}, "expected"),
    ({"a": "half"}, "a:"),
    ({"a": float("nan")}, "finite"),
])
def test_bad_strategy_weights_raise_naming_the_symbol(weights: dict[str, Any], problem: str) -> None:
    plan = {"metadata": {"strategy_attribution": {"AAA": weights}}}
    with pytest.raises(ValueError, match="attribution of AAA") as info:
        TradeLedger().record_filled_order(fill(), "run-1", plan)
    assert problem in str(info.value)


def test_weights_within_the_tolerance_are_kept_as_given() -> None:
    plan = {"metadata": {"strategy_attribution": {"AAA": {"a": "0.3333333", "b": "0.3333333", "c": "0.3333334"}}}}
    entry = TradeLedger().record_filled_order(fill(), "run-1", plan)
    assert entry is not None and entry.strategy_weights == (D("0.3333333"), D("0.3333333"), D("0.3333334"))


def test_the_same_fill_twice_is_recorded_once_and_an_order_passed_again_adds_only_its_new_part() -> None:
    ledger = TradeLedger()
    assert ledger.record_filled_order(fill(), "run-1") is not None
    assert ledger.record_filled_order(fill(), "run-1") is None  # redelivered by an at-least-once bus
    first = ledger.record_filled_order(order(OrderStatus.PARTIALLY_FILLED, "2", "10", fees="0.02"), "run-1")
    rest = ledger.record_filled_order(order(OrderStatus.FILLED, "5", "10.6", fees="0.05"), "run-1")
    assert ledger.record_filled_order(order(OrderStatus.FILLED, "5", "10.6", fees="0.05"), "run-1") is None
    assert first is not None and rest is not None
    assert (rest.filled_qty, rest.fill_price, rest.fee) == (D(3), D(11), D("0.03"))
    assert first.notional + rest.notional == D(5) * D("10.6")
    assert ledger.total_entries == 3


def test_totals_and_filters() -> None:
    ledger = TradeLedger()
    ledger.record_filled_order(fill("b1", qty="2", price="100", fee="0.1"), "run-1", PLAN)
    ledger.record_filled_order(fill("b2", qty="1", price="50", symbol="BBB", fee="0.05"), "run-1", PLAN)
    ledger.record_filled_order(fill("s1", OrderSide.SELL, qty="2", price="110", fee="0.11"), "run-1", PLAN)
    ledger.record_filled_order(order(OrderStatus.REJECTED), "run-1", PLAN)
    assert ledger.total_entries == 3
    assert ledger.total_buy_value == D(250) and ledger.total_sell_value == D(220)
    assert ledger.total_fees == D("0.26")
    assert all(isinstance(v, D) for v in (ledger.total_buy_value, ledger.total_sell_value))
    assert [e.order_id for e in ledger.get_entries_for_symbol("AAA")] == ["b1", "s1"]
    assert [e.order_id for e in ledger.get_entries_for_strategy("carry")] == ["b1", "b2", "s1"]
    assert [e.order_id for e in ledger.get_entries_for_strategy("momentum")] == ["b1", "s1"]
    assert ledger.get_entries_for_strategy("nobody") == ()


def test_entries_are_immutable_and_in_utc() -> None:
    ledger = TradeLedger()
    entry = ledger.record_filled_order(fill(), "run-1")
    assert entry is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.fill_price = D(1)  # type: ignore[misc]
    paris = order(OrderStatus.FILLED, "5", "99", cid="o-7")
    paris.updated_ts = datetime(2024, 5, 6, 16, 30, tzinfo=timezone(timedelta(hours=2)))
    moved = ledger.record_filled_order(paris, "run-1")
    assert moved is not None and moved.timestamp == T0 and moved.timestamp.tzinfo is UTC


def test_concurrent_records_lose_nothing() -> None:
    ledger = TradeLedger()
    start = threading.Barrier(8)

    def worker(t: int) -> None:
        start.wait()
        for i in range(250):
            side = OrderSide.BUY if i % 2 else OrderSide.SELL
            ledger.record_filled_order(fill(f"t{t}-{i}", side, qty="1", price="3", fee="0.01"), "run-1")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    entries = ledger.get_ledger()
    assert ledger.total_entries == len(entries) == 2000
    assert len({e.entry_id for e in entries}) == 2000
    assert ledger.total_buy_value == ledger.total_sell_value == D(3000)


# ----------------------------------------------------------------------------- export


def sample_ledger(ledger_id: str = "L1", when: datetime = EXPORTED) -> TradeLedger:
    ledger = TradeLedger(ledger_id, correlation_id="run-1", clock=lambda: when)
    ledger.record_filled_order(fill("b1", qty="2", price="100.10", fee="0.2"), "run-1", PLAN, {"bid": "100", "ask": "100.2"})
    ledger.record_filled_order(fill("s1", OrderSide.SELL, qty="2", price="101", fee="0.2",
                                    ts=T0 + timedelta(hours=2)), "run-1", PLAN)
    ledger.record_filled_order(order(OrderStatus.FILLED, "5", "99.5", cid="b2", side=OrderSide.BUY), "run-1")
    return ledger


def test_local_export_path_and_content_and_round_trip(tmp_path: Path) -> None:
    ledger = sample_ledger()
    where = ledger.export(str(tmp_path / "out"))
    path = tmp_path / "out" / "trade-ledgers" / "2024" / "05" / "06" / "235958-L1-run-1.json"
    assert where == str(path) and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == 1 and doc["ledger_id"] == "L1" and doc["correlation_id"] == "run-1"
    assert doc["created_at"] == "2024-05-06T23:59:58+00:00"
    assert doc["totals"] == {"entries": 3, "buy_value": "697.70", "sell_value": "202", "fees": "0.4"}
    first = doc["entries"][0]
    assert first == {
        "entry_id": "L1-000001", "order_id": "b1", "symbol": "AAA", "direction": "buy", "filled_qty": "2",
        "fill_price": "100.10", "notional": "200.20", "fee": "0.2", "bid": "100", "ask": "100.2",
        "timestamp": "2024-05-06T14:30:00+00:00", "order_type": None,
        "strategy_names": ["momentum", "carry"], "strategy_weights": ["0.6", "0.4"], "correlation_id": "run-1",
    }
    assert doc["entries"][2]["order_type"] == "limit" and doc["entries"][2]["bid"] is None
    back = TradeLedger.load(where)
    assert back.get_ledger() == ledger.get_ledger()
    assert (back.ledger_id, back.correlation_id, back.created_at) == ("L1", "run-1", EXPORTED)
    assert back.total_buy_value == ledger.total_buy_value
    assert TradeLedger.load(path.as_uri()).get_ledger() == ledger.get_ledger()  # file:// URL


def test_a_failed_local_export_leaves_neither_a_partial_file_nor_a_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = sample_ledger()
    first = Path(ledger.export(str(tmp_path)))
    ledger.record_filled_order(fill("b9"), "run-1")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        ledger.export(str(tmp_path))
    assert [p.name for p in first.parent.iterdir()] == [first.name]
    assert len(json.loads(first.read_text())["entries"]) == 3  # the earlier export is intact


def test_memory_export_and_folder_reading(tmp_path: Path) -> None:
    a, b = sample_ledger("LA"), sample_ledger("LB", EXPORTED + timedelta(days=40))
    where = a.export("memory://ledgers/bot1")
    assert where == "memory:///ledgers/bot1/trade-ledgers/2024/05/06/235958-LA-run-1.json"
    b.export("memory://ledgers/bot1")
    assert TradeLedger.load(where).get_ledger() == a.get_ledger()
    files = read_ledgers("memory://ledgers/bot1")
    assert [f.ledger.ledger_id for f in files] == ["LA", "LB"]
    assert [f.source for f in read_ledgers("memory://ledgers/bot1/trade-ledgers/2024/06")] == [
        "memory:///ledgers/bot1/trade-ledgers/2024/06/15/235958-LB-run-1.json"]
    only = query_entries("memory://ledgers/bot1", symbol="AAA", strategy="momentum", until=T0 + timedelta(hours=1))
    assert [(e.entry_id, e.order_id) for e in only] == [("LA-000001", "b1"), ("LB-000001", "b1")]
    with pytest.raises(FileNotFoundError, match="no trade ledger files"):
        read_ledgers("memory://ledgers/none")


def test_export_needs_one_correlation_id_and_a_file_safe_one() -> None:
    ledger = TradeLedger()
    ledger.record_filled_order(fill("a"), "run-1")
    ledger.record_filled_order(fill("b"), "run-2")
    with pytest.raises(ValueError, match="needs correlation_id"):
        ledger.export("memory://x")
    assert ledger.export("memory://x", correlation_id="run-2").endswith("-run-2.json")
    with pytest.raises(ValueError, match="names the export file"):
        ledger.record_filled_order(fill("c"), "../../etc")


def test_loading_a_tampered_or_foreign_file_fails_with_the_reason(tmp_path: Path) -> None:
    path = Path(sample_ledger().export(str(tmp_path)))
    doc = json.loads(path.read_text())
    doc["entries"][0]["notional"] = "1"
    path.write_text(json.dumps(doc))
    with pytest.raises(LedgerFileError, match="totals .* do not match"):
        TradeLedger.load(str(path))
    path.write_text(json.dumps({**doc, "schema_version": 99}))
    with pytest.raises(LedgerFileError, match="schema_version 99"):
        TradeLedger.load(str(path))
    path.write_text('{"trades": []}')
    with pytest.raises(LedgerFileError, match="not a trade ledger"):
        TradeLedger.load(str(path))


# ----------------------------------------------------------------------------- S3 (moto server)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An s3fs filesystem on the moto server, configured only through the AWS environment variables."""
    import s3fs

    secret = "test-secret-" + secrets.token_hex(8)
    for key, value in {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": secret,
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()  # an instance cached under other settings must not be reused
    fs = s3fs.S3FileSystem()
    bucket = "ledgers-" + secrets.token_hex(4)
    fs.mkdir(bucket)
    yield SimpleNamespace(fs=fs, bucket=bucket, secret=secret)
    s3fs.S3FileSystem.clear_instance_cache()


def test_s3_export_lands_as_one_object_at_the_dated_key_and_loads_back(
    s3: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = sample_ledger()
    with caplog.at_level(logging.DEBUG):
        where = ledger.export(f"s3://{s3.bucket}/prod/bot1")
    key = f"{s3.bucket}/prod/bot1/trade-ledgers/2024/05/06/235958-L1-run-1.json"
    assert where == f"s3://{key}"
    s3.fs.invalidate_cache()
    assert s3.fs.find(s3.bucket) == [key]  # nothing else was written: no temporary objects
    doc = json.loads(s3.fs.cat_file(key))
    assert doc["totals"]["entries"] == 3 and doc["ledger_id"] == "L1"
    assert TradeLedger.load(where).get_ledger() == ledger.get_ledger()
    entries = query_entries(f"s3://{s3.bucket}/prod", symbol="AAA")
    assert [e.order_id for e in entries] == ["b1", "b2", "s1"]  # by fill time
    assert s3.secret not in caplog.text and s3.secret not in s3.fs.cat_file(key).decode()


# ----------------------------------------------------------------------------- the bot's bus


BROKER = {
    "trading_mode": "paper",
    "cash": 10000.0,
    "commission_rate": 0.001,
    "paper_trading_config": {"slippage_model": "percent", "base_slippage": 0.0005},
}


@pytest.fixture(scope="module")
def bars_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_replay_bars(tmp_path_factory.mktemp("bars") / "aaa.csv")


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "queued"])
def test_a_paper_replay_records_every_fill_through_the_bus(bars_csv: Path, tmp_path: Path, inline: bool) -> None:
    cfg = paper_config("ledger_test", BROKER, strategy="rsi_bb")
    bus = EventBus(tmp_path / "spool")
    fills: list[OrderFill] = []
    types: dict[str, OrderType] = {}

    def watch(e: Event) -> None:
        if isinstance(e, OrderFill):
            fills.append(e)
        elif isinstance(e, OrderSubmitted):
            types[str(e.client_order_id)] = e.order_type

    bus.subscribe(watch, inline=True, name="watch")
    ledger = TradeLedger(correlation_id="replay-1", clock=lambda: EXPORTED)
    ledger.subscribe(bus, "replay-1", attribution={"*": {cfg.strategy.name: 1}}, inline=inline)

    async def run() -> Any:
        result = await BaseTradingBot(cfg, mode="paper", replay=bars_csv, speed="max", bus=bus).start_trading()
        await bus.close(timeout=30)
        return result

    result = asyncio.run(run())
    entries = ledger.get_ledger()
    assert len(fills) >= 10 and len(entries) == len(fills)
    assert [(e.order_id, e.direction, e.filled_qty, e.fill_price, e.fee, e.timestamp) for e in entries] == [
        (str(f.client_order_id), f.side, f.last_qty, f.last_price, f.fee, f.ts) for f in fills]
    assert [e.order_type for e in entries] == [types[e.order_id] for e in entries]
    assert {e.order_type for e in entries} >= {OrderType.MARKET}
    assert all(e.strategy_names == ("rsi_bb",) and e.strategy_weights == (D(1),) for e in entries)
    assert all(e.bid is None and e.ask is None for e in entries)  # a replay of bars has no quotes
    # The money the ledger saw move is the money of the trades: entries bought, exits sold.
    closed = [t for t in result.trades if t.exit_reason != "end_of_data"]
    assert all(t.side == "long" for t in result.trades)
    bought = sum(t.entry_price * t.quantity for t in result.trades)
    sold = sum(t.exit_price * t.quantity for t in closed)
    assert float(ledger.total_buy_value) == pytest.approx(bought, rel=1e-9)
    assert float(ledger.total_sell_value) == pytest.approx(sold, rel=1e-9)
    # After the run the export lands at the dated path and reads back the same.
    where = ledger.export(str(tmp_path / "exports"))
    assert where == str(tmp_path / "exports" / "trade-ledgers" / "2024" / "05" / "06"
                        / f"235958-{ledger.ledger_id}-replay-1.json")
    assert TradeLedger.load(where).get_ledger() == entries


def test_subscribe_refuses_bad_attribution_before_the_run() -> None:
    with pytest.raises(ValueError, match="attribution of BBB"):
        TradeLedger().subscribe(EventBus(), "run-1", attribution={"AAA": {"x": 1}, "BBB": {"x": 0.5}})


def test_a_fill_delivered_twice_on_the_bus_is_recorded_once() -> None:
    bus, ledger = EventBus(), TradeLedger()
    ledger.subscribe(bus, "run-1", quotes=lambda symbol: {"bid": "101", "ask": "101.5"})
    bus.publish(OrderSubmitted(ts=T0, client_order_id=ClientOrderId("o-1"), symbol="AAA", side=OrderSide.BUY,
                               order_type=OrderType.LIMIT, quantity=D(2), price=D(102)))
    bus.publish(fill(qty="1", filled="1", remaining="1", partial=True))
    bus.publish(fill(qty="1", filled="1", remaining="1", partial=True))
    bus.publish(fill(qty="1", filled="2", price="101.5"))
    entries = ledger.get_ledger()
    assert [(e.filled_qty, e.fill_price, e.order_type, e.bid) for e in entries] == [
        (D(1), D("101.25"), OrderType.LIMIT, D(101)), (D(1), D("101.5"), OrderType.LIMIT, D(101))]


@pytest.mark.parametrize("quote", [ConnectionError("feed down"), {"bid": "n/a", "ask": "101"}], ids=["raises", "garbage"])
def test_a_failing_quote_source_still_records_the_fill_without_bid_and_ask(quote: Any) -> None:
    def quotes(symbol: str) -> Any:
        if isinstance(quote, Exception):
            raise quote
        return quote

    bus, ledger = EventBus(), TradeLedger()
    ledger.subscribe(bus, "run-1", quotes=quotes)
    bus.publish(fill())
    [entry] = ledger.get_ledger()
    assert (entry.filled_qty, entry.bid, entry.ask) == (D(2), None, None)
    assert not bus.failures


def test_entry_dict_round_trip_keeps_every_field() -> None:
    entry = sample_ledger().get_ledger()[0]
    assert LedgerEntry.from_dict(json.loads(json.dumps(entry.to_dict()))) == entry
