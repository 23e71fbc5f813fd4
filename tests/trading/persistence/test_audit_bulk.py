"""apply_events in bulk: a statement per table per batch, and the same records however split."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import event, insert, select
from sqlalchemy.engine import Engine

from trading.events import (
    Event,
    OrderCancelled,
    OrderModified,
    OrderPendingCancel,
    OrderRejected,
    RiskDenied,
    TradeClosed,
)
from trading.orders import OrderSide, OrderType
from trading.persistence import (
    FillRecord,
    OrderEventRecord,
    OrderRecord,
    PositionRecord,
    RiskEventRecord,
    Trade,
    apply_events,
    ensure_database,
    list_trades,
    register_bot_instance,
    sql,
)
from trading.persistence.audit_rows import BatchRows

from .builders import D, at, cid, closed, count, fill, opened, round_trip, submit

SELL = OrderSide.SELL
ETH = "ETH/USDT"
SOL = "SOL/USDT"


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """Collect the SQL statements sent (an executemany is one; SQLite's BEGIN is not counted).

    Those run on the driver directly (`sql.Prepared`) are counted by `sql.sent`.
    """
    sent: list[str] = []
    before = sql.sent(engine)

    def record(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        verb = sql.split(None, 1)[0].upper()
        if verb != "BEGIN":
            sent.append(verb)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)
        sent += (sql.sent(engine) - before).elements()


def new_bot(engine: Engine, venue: str) -> int:
    """A paper bot on its own venue (venue trade ids are unique per venue, across bots)."""
    info = register_bot_instance(
        engine, f"bot-{venue}", "paper", strategy="RsiBb", exchange=venue, resume=False
    )
    return info.id


def trips(n: int) -> list[Event]:
    """`n` round trips on three symbols, closed with the exit reason the bot's strategy gives.

    (A close without one costs a query more: the role of the order that filled last.)
    """
    symbols = ("BTC/USDT", ETH, SOL)
    return [
        replace(e, exit_reason="take_profit") if isinstance(e, TradeClosed) else e
        for k in range(n)
        for e in round_trip(k + 1, symbol=symbols[k % 3])
    ]


def test_a_batch_costs_the_same_statements_whatever_its_length(engine: Engine) -> None:
    bots = new_bot(engine, "a"), new_bot(engine, "b")
    with statements(engine) as few:
        apply_events(engine, trips(3), bots[0])
    with statements(engine) as many:
        apply_events(engine, trips(30), bots[1])
    assert count(engine, "order_events") == 5 * 3 + 5 * 30
    assert count(engine, "trades") == 33
    # read the bot, the known keys, orders, trades, positions; insert order_events, orders,
    # fills, positions, trades; set the bot's last seq. Row by row: about four per event.
    assert len(many) == len(few) == 11
    assert many.count("INSERT") == 5


def mixed_events() -> list[Event]:
    """Partial fills, a trade named after its fills, a duplicate venue execution, a stop moved
    and cancelled, a close without exit reason, a trade named before its fill, a flip, a
    rejection, a risk denial, two open trades on one symbol and replayed events."""
    sl = cid(1, "sl")
    return [
        opened("SOL-0", symbol=SOL),  # announced, never filled: stays open
        submit(1),
        fill(1, qty="1", total="2", filled="1", trade_id="T1a"),
        fill(1, qty="1", total="2", filled="2", minute=2, trade_id="T1b"),
        opened("BTC-1", minute=2),
        submit(1, leg="sl", side=SELL, order_type=OrderType.STOP, stop="95", minute=2),
        submit(1, leg="tp", side=SELL, order_type=OrderType.LIMIT, price="110", minute=2),
        OrderModified(
            ts=at(3), client_order_id=sl, symbol="BTC/USDT", quantity=D(2), stop_price=D(97)
        ),
        fill(1, leg="tp", side=SELL, price="110", minute=5, trade_id="T1c"),
        fill(1, leg="tp", side=SELL, price="110", minute=6, trade_id="T1c"),
        OrderPendingCancel(ts=at(5), client_order_id=sl, symbol="BTC/USDT", reason="oco"),
        OrderCancelled(ts=at(5), client_order_id=sl, symbol="BTC/USDT", reason="oco"),
        closed("BTC-1", minute=5),
        opened("ETH-1", symbol=ETH, minute=7),
        submit(2, symbol=ETH, minute=7),
        fill(2, symbol=ETH, minute=7, trade_id="T2a"),
        submit(3, leg="x1", side=SELL, qty="3", symbol=ETH, minute=8),
        fill(3, leg="x1", side=SELL, qty="3", price="90", symbol=ETH, minute=8, trade_id="T3a"),
        closed("ETH-1", symbol=ETH, exit="90", pnl="-20", minute=8),
        submit(4, leg="x2", side=SELL, symbol=ETH, minute=9),
        OrderRejected(ts=at(9), client_order_id=cid(4, "x2"), symbol=ETH, reason="MARGIN"),
        RiskDenied(ts=at(9), symbol=ETH, side=SELL, quantity=D(5), reason="MAX_POSITION_SIZE"),
        opened("SOL-1", symbol=SOL, minute=10),
        submit(5, symbol=SOL, minute=10),
        fill(5, symbol=SOL, minute=10, trade_id="T5a"),  # joins the newest announced trade
        submit(1),  # replayed
        fill(1, leg="tp", side=SELL, price="110", minute=5, trade_id="T1c"),  # replayed
    ]


_IGNORED = {
    "id",
    "bot_instance_id",
    "order_event_id",
    "recorded_at",
    "exchange",
    "venue",
    "bot_name",
}


def snapshot(engine: Engine, bot: int) -> dict[str, list[dict[str, Any]]]:
    """Every record of `bot`, in insertion order, without ids, venue names and write times."""
    out = {}
    with engine.connect() as conn:
        for model in (OrderRecord, OrderEventRecord, FillRecord, PositionRecord, Trade):
            t = model.__table__  # type: ignore[attr-defined]
            rows = conn.execute(select(t).where(t.c.bot_instance_id == bot).order_by(t.c.id))
            out[t.name] = [{k: v for k, v in r._mapping.items() if k not in _IGNORED} for r in rows]
        risk = RiskEventRecord.__table__
        out["risk_events"] = [
            {"seq": r.seq, "reason": r.reason}
            for r in conn.execute(select(risk).where(risk.c.bot_instance_id == bot))
        ]
    return out


def test_any_split_of_the_events_into_batches_leaves_the_same_records(engine: Engine) -> None:
    events = mixed_events()
    snapshots = []
    for size in (len(events), 1, 2, 3, 5):
        bot = new_bot(engine, f"split-{size}")
        for i in range(0, len(events), size):
            apply_events(engine, events[i : i + size], bot)
        snapshots.append(snapshot(engine, bot))
    whole = snapshots[0]
    for split in snapshots[1:]:
        assert split == whole
    # and what they agree on is right
    assert [len(whole[t]) for t in ("orders", "order_events", "fills", "positions", "trades")] == [
        7,
        18,
        6,
        3,
        4,
    ]
    assert {f["trade_key"] for f in whole["fills"][:3]} == {"BTC-1"}  # re-linked
    assert [o["trade_key"] for o in whole["orders"][:1]] == ["BTC-1"]
    _, btc, eth, _ = whole["trades"]
    assert (btc["status"], btc["exit_reason"]) == ("closed", "take_profit")
    assert eth["status"] == "closed" and eth["entry_time"] == at(7)
    pos = {p["symbol"]: p for p in whole["positions"]}
    assert pos["BTC/USDT"]["quantity"] == 0
    assert pos[ETH]["quantity"] == D(-1) and pos[ETH]["trade_key"] == str(cid(3, "x1"))
    assert pos[SOL]["trade_key"] == "SOL-1"
    assert [r["seq"] for r in whole["risk_events"]] == [17]


def test_a_close_takes_its_exit_reason_from_the_latest_fill_stored_or_new(
    engine: Engine, bot: int
) -> None:
    sl = {"leg": "sl", "side": SELL}
    apply_events(
        engine,
        [submit(1), fill(1), submit(1, **sl, minute=2), fill(1, **sl, price="95", minute=5)],
        bot,
    )
    late = fill(1, leg="tp", side=SELL, qty="0", price="110", minute=3)  # reported late
    apply_events(
        engine,
        [submit(1, leg="tp", side=SELL, minute=2), late, closed(str(cid(1)), minute=6)],
        bot,
    )
    [trade] = list_trades(engine)
    assert trade.exit_reason == "stop_loss"  # the stored fill at minute 5, not the new one at 3


def test_a_stored_fill_whose_order_is_submitted_with_the_close_names_the_exit(
    engine: Engine, bot: int
) -> None:
    tp = {"leg": "tp", "side": SELL}
    apply_events(engine, [submit(1), fill(1), fill(1, **tp, price="110", minute=5)], bot)
    apply_events(engine, [submit(1, **tp, minute=2), closed(str(cid(1)), minute=6)], bot)
    [trade] = list_trades(engine)
    assert trade.exit_reason == "take_profit"


def test_a_fill_another_writer_stores_meanwhile_is_recorded_once(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL only (SQLite's BEGIN IMMEDIATE admits one writer): another bot on the same
    venue stores the execution between this batch's read and its write: the batch is applied
    again and finds it."""
    engine = ensure_database(postgres_url)
    try:
        ours = new_bot(engine, "shared")
        theirs = register_bot_instance(engine, "other", "paper", exchange="shared").id
        original = BatchRows.load_trade_ids
        raced: list[bool] = []

        def load_then_race(self: BatchRows, venue: str | None, ids: Any) -> None:
            original(self, venue, ids)
            if not raced:
                raced.append(True)
                with engine.begin() as other:  # commits while our batch is open
                    event_id = other.execute(
                        insert(OrderEventRecord.__table__).returning(OrderEventRecord.id),
                        {
                            "bot_instance_id": theirs,
                            "seq": 1,
                            "event_key": "k" * 64,
                            "event_type": "OrderFilled",
                            "kind": "entry",
                            "ts": at(1),
                            "recorded_at": at(1),
                            "payload": {},
                        },
                    ).scalar_one()
                    other.execute(
                        insert(FillRecord.__table__),
                        {
                            "order_event_id": event_id,
                            "bot_instance_id": theirs,
                            "client_order_id": "x",
                            "symbol": "BTC/USDT",
                            "side": "buy",
                            "quantity": D(2),
                            "price": D(100),
                            "fee": D(0),
                            "ts": at(1),
                            "venue": "shared",
                            "venue_trade_id": "T-9",
                        },
                    )

        monkeypatch.setattr(BatchRows, "load_trade_ids", load_then_race)
        with caplog.at_level(logging.INFO, logger="trading.persistence.audit"):
            apply_events(engine, [submit(1), fill(1, trade_id="T-9")], ours)
        assert raced == [True]
        assert "raced another writer: applied again" in caplog.text
        assert snapshot(engine, ours)["fills"] == []  # theirs, recorded once
        assert len(snapshot(engine, ours)["order_events"]) == 2
        assert snapshot(engine, ours)["positions"] == []  # a fill not ours does not move it
        assert count(engine, "fills") == 1
    finally:
        engine.dispose()
