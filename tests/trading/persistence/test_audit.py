"""apply_events: each event's record set in one transaction, idempotent on replay, on both backends."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from trading.events import (
    BotStopped,
    Halted,
    OrderCancelled,
    OrderFilled,
    OrderModified,
    OrderPendingCancel,
    OrderRejected,
    Resumed,
    RiskDenied,
    RiskWarning,
)
from trading.exceptions import DatabaseError
from trading.orders import OrderSide, OrderType
from trading.persistence import (
    FillRecord,
    OrderEventRecord,
    OrderRecord,
    PositionRecord,
    RiskEventRecord,
    apply_events,
    event_key,
    list_fills,
    list_order_events,
    list_orders,
    register_bot_instance,
)
from trading.persistence.audit import order_role

from .builders import D, accept, at, cid, count, counts, fill, round_trip, submit


def rows(engine: Engine, model: type, **where: object) -> list[dict]:
    table = model.__table__  # type: ignore[attr-defined]
    stmt = select(table).order_by(table.c.id)
    for k, v in where.items():
        stmt = stmt.where(table.c[k] == v)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def test_a_fill_writes_the_order_update_its_event_and_the_ledger_row(
    engine: Engine, bot: int
) -> None:
    apply_events(engine, [submit(1, qty="2"), accept(1)], bot)
    apply_events(
        engine, [fill(1, qty="0.5", total="2", filled="0.5", price="100", fee="0.05")], bot
    )

    [order] = rows(engine, OrderRecord)
    assert order["client_order_id"] == str(cid(1))
    assert order["status"] == "partially_filled"
    assert order["role"] == "entry"
    assert order["venue_order_id"] == "V1"
    assert order["exchange"] == "paper-sim"
    assert order["strategy"] == "RsiBb"
    assert (order["quantity"], order["filled_qty"], order["remaining_qty"]) == (
        D(2),
        D("0.5"),
        D("1.5"),
    )
    assert order["avg_fill_price"] == D(100)
    assert order["fee"] == D("0.05")
    assert order["created_at"] == at(0) and order["updated_at"] == at(1)

    events = rows(engine, OrderEventRecord)
    assert [e["event_type"] for e in events] == [
        "OrderSubmitted",
        "OrderAccepted",
        "OrderPartiallyFilled",
    ]
    assert [e["status"] for e in events] == ["new", "accepted", "partially_filled"]
    assert [e["kind"] for e in events] == ["entry"] * 3
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert events[2]["payload"]["last_qty"] == "0.5"  # the event's JSON, Decimals as text

    [ledger] = rows(engine, FillRecord)
    assert ledger["order_event_id"] == events[2]["id"]
    assert (ledger["side"], ledger["quantity"], ledger["price"], ledger["fee"]) == (
        "buy",
        D("0.5"),
        D(100),
        D("0.05"),
    )
    assert ledger["order_type"] == "market"
    assert ledger["strategy_names"] == ["RsiBb"] and ledger["strategy_weights"] == {"RsiBb": "1"}
    assert ledger["bid"] is None and ledger["ask"] is None
    assert ledger["venue"] == "paper-sim"
    assert ledger["trade_key"] == str(cid(1))


def test_applying_the_same_events_again_adds_nothing(engine: Engine, bot: int) -> None:
    events = round_trip(1) + round_trip(2, symbol="ETH/USDT")
    apply_events(engine, events, bot)
    before = counts(engine)
    seq_before = [e["seq"] for e in rows(engine, OrderEventRecord)]
    apply_events(engine, events, bot)  # the whole spool replayed
    apply_events(engine, events[3:9], bot)  # an overlapping batch
    apply_events(engine, [events[2], events[2]], bot)  # a duplicate inside one batch
    assert counts(engine) == before
    assert before == {
        "orders": 4,
        "order_events": 10,
        "fills": 4,
        "trades": 2,
        "positions": 2,
        "risk_events": 0,
    }
    assert [e["seq"] for e in rows(engine, OrderEventRecord)] == seq_before == list(range(1, 11))
    [order] = rows(engine, OrderRecord, client_order_id=str(cid(1)))
    assert order["fee"] == D("0.2")  # not counted twice


def test_a_duplicate_inside_one_new_batch_is_written_once(engine: Engine, bot: int) -> None:
    one = submit(7)
    apply_events(engine, [one, one, accept(7), accept(7)], bot)
    assert count(engine, "order_events") == 2


def test_the_event_key_is_the_content_so_a_different_fill_is_a_new_event() -> None:
    a = fill(1, qty="1", total="2", filled="1")
    b = fill(1, qty="1", total="2", filled="2")  # same size and price, the next fill
    assert event_key(a) == event_key(fill(1, qty="1", total="2", filled="1"))
    assert event_key(a) != event_key(b)
    assert len(event_key(a)) == 64


def test_a_failing_event_rolls_back_the_whole_batch(engine: Engine, bot: int) -> None:
    events = round_trip(1)
    apply_events(engine, events[:1], bot)
    with (
        engine.begin() as conn
    ):  # a second order on the symbol now fails: the 4th event of the batch
        conn.execute(text("CREATE UNIQUE INDEX ux_test_symbol ON orders (symbol)"))
    with pytest.raises(IntegrityError):
        apply_events(engine, events[1:], bot)
    assert counts(engine) == {
        "orders": 1,
        "order_events": 1,
        "fills": 0,
        "trades": 0,
        "positions": 0,
        "risk_events": 0,
    }
    with engine.begin() as conn:
        assert conn.execute(text("SELECT last_seq FROM bot_instances")).scalar() == 1
        conn.execute(text("DROP INDEX ux_test_symbol"))
    apply_events(engine, events[1:], bot)  # the retry of the same batch goes through
    assert count(engine, "order_events") == 5
    assert count(engine, "trades") == 1


def test_unknown_bot_instance_is_refused(engine: Engine) -> None:
    with pytest.raises(DatabaseError, match="register_bot_instance"):
        apply_events(engine, [submit(1)], 999)
    assert count(engine, "orders") == 0


def test_every_event_kind_and_status(engine: Engine, bot: int) -> None:
    sl = submit(3, leg="sl", side=OrderSide.SELL, order_type=OrderType.STOP, stop="95", minute=2)
    tp = submit(4, leg="tp", side=OrderSide.SELL, order_type=OrderType.LIMIT, price="110", minute=2)
    manual = submit(
        5, leg="x1", side=OrderSide.BUY, order_type=OrderType.LIMIT, price="90", minute=2
    )
    events = [
        submit(1),
        fill(1),
        sl,
        tp,
        manual,
        OrderModified(
            ts=at(3),
            client_order_id=cid(3, "sl"),
            symbol="BTC/USDT",
            quantity=D(2),
            stop_price=D("97"),
        ),
        OrderPendingCancel(ts=at(4), client_order_id=cid(4, "tp"), symbol="BTC/USDT", reason="oco"),
        OrderCancelled(ts=at(4), client_order_id=cid(4, "tp"), symbol="BTC/USDT", reason="oco"),
        OrderRejected(ts=at(4), client_order_id=cid(5, "x1"), symbol="BTC/USDT", reason="MARGIN"),
        fill(3, leg="sl", side=OrderSide.SELL, price="97", minute=6),
    ]
    apply_events(engine, events, bot)
    log = [(e["event_type"], e["kind"], e["status"]) for e in rows(engine, OrderEventRecord)]
    assert log == [
        ("OrderSubmitted", "entry", "new"),
        ("OrderFilled", "entry", "filled"),
        ("OrderSubmitted", "stop_loss", "new"),
        ("OrderSubmitted", "take_profit", "new"),
        ("OrderSubmitted", "entry", "new"),  # unknown leg, no position to reduce: an entry
        ("OrderModified", "modify", "new"),
        ("OrderPendingCancel", "cancel", "pending_cancel"),
        ("OrderCancelled", "cancel", "cancelled"),
        ("OrderRejected", "failed", "rejected"),
        ("OrderFilled", "stop_loss", "filled"),
    ]
    by_id = {o["client_order_id"]: o for o in rows(engine, OrderRecord)}
    assert by_id[str(cid(3, "sl"))]["stop_price"] == D(97)
    assert by_id[str(cid(4, "tp"))]["status_reason"] == "oco"
    assert by_id[str(cid(5, "x1"))]["status"] == "rejected"
    assert by_id[str(cid(5, "x1"))]["status_reason"] == "MARGIN"


def test_an_order_without_a_known_leg_that_reduces_the_position_is_an_exit(
    engine: Engine, bot: int
) -> None:
    apply_events(
        engine, [submit(1), fill(1), submit(2, leg="x1", side=OrderSide.SELL, minute=3)], bot
    )
    assert rows(engine, OrderRecord, client_order_id=str(cid(2, "x1")))[0]["role"] == "exit"


def test_a_late_event_never_moves_an_order_back(engine: Engine, bot: int) -> None:
    apply_events(engine, [submit(1), fill(1), accept(1, minute=2)], bot)  # ack after the fill
    [order] = rows(engine, OrderRecord)
    assert order["status"] == "filled"
    assert order["venue_order_id"] == "V1"
    assert [e["event_type"] for e in rows(engine, OrderEventRecord)][-1] == "OrderAccepted"


def test_a_fill_for_an_order_never_submitted_is_kept_in_the_log_and_the_ledger(
    engine: Engine, bot: int
) -> None:
    apply_events(engine, [fill(9, side=OrderSide.BUY)], bot)
    assert count(engine, "orders") == 0
    assert count(engine, "order_events") == 1
    assert count(engine, "fills") == 1
    assert count(engine, "positions") == 1


def test_a_venue_trade_id_is_recorded_once_even_under_another_event(
    engine: Engine, bot: int
) -> None:
    first = fill(1, trade_id="T-1")
    again = fill(1, trade_id="T-1", minute=2)  # reported again later (another ts: another event)
    apply_events(engine, [submit(1), first, again], bot)
    assert count(engine, "order_events") == 3
    assert count(engine, "fills") == 1
    [pos] = rows(engine, PositionRecord)
    assert pos["quantity"] == D(2)


@dataclass(frozen=True, kw_only=True)
class QuotedFill(OrderFilled):
    """A richer fill event, as a broker with quotes and plan metadata could publish."""

    bid: Decimal | None = None
    ask: Decimal | None = None
    strategy_names: list[str] | None = None
    strategy_weights: dict[str, Decimal] | None = None
    correlation_id: str | None = None
    fee_currency: str | None = None


def test_fill_extras_bid_ask_attribution_and_correlation(engine: Engine, bot: int) -> None:
    base = fill(1)
    quoted = QuotedFill(
        **{k: getattr(base, k) for k in base.__dataclass_fields__ if k not in QuotedFill.__annotations__},
        bid=D("99.9"),
        ask=D("100.1"),
        strategy_names=["rsi", "macd"],
        strategy_weights={"rsi": D("0.75"), "macd": D("0.25")},
        correlation_id="rebal-42",
        fee_currency="USDT",
    )
    apply_events(engine, [submit(1), quoted], bot)
    [ledger] = rows(engine, FillRecord)
    assert (ledger["bid"], ledger["ask"]) == (D("99.9"), D("100.1"))
    assert ledger["strategy_names"] == ["rsi", "macd"]
    assert ledger["strategy_weights"] == {"rsi": "0.75", "macd": "0.25"}
    assert ledger["correlation_id"] == "rebal-42"
    assert ledger["fee_currency"] == "USDT"
    assert [f.id for f in list_fills(engine, strategy="macd")] == [ledger["id"]]
    assert list_fills(engine, strategy="RsiBb") == []
    assert [f.correlation_id for f in list_fills(engine, correlation_id="rebal-42")] == ["rebal-42"]


def test_risk_events_get_their_own_rows_in_the_bot_sequence(engine: Engine, bot: int) -> None:
    events = [
        submit(1),
        RiskDenied(
            ts=at(1),
            symbol="BTC/USDT",
            side=OrderSide.BUY,
            quantity=D(5),
            reason="MAX_POSITION_SIZE",
            detail="5 > 3",
            client_order_id=cid(2),
        ),
        RiskWarning(ts=at(2), control="daily_loss", value=D(80), limit=D(100), fraction=D("0.8")),
        Halted(ts=at(3), reason="DAILY_LOSS", detail="-100"),
        Resumed(ts=at(4), reason="NEW_DAY"),
    ]
    apply_events(engine, events, bot)
    apply_events(engine, events, bot)
    risk = rows(engine, RiskEventRecord)
    assert [(r["event_type"], r["reason"]) for r in risk] == [
        ("RiskDenied", "MAX_POSITION_SIZE"),
        ("RiskWarning", "daily_loss"),
        ("Halted", "DAILY_LOSS"),
        ("Resumed", "NEW_DAY"),
    ]
    assert risk[0]["client_order_id"] == str(cid(2)) and risk[0]["detail"] == "5 > 3"
    assert risk[1]["detail"] == "80 of 100 (0.8)"
    assert [r["seq"] for r in risk] == [2, 3, 4, 5]  # after the submission's 1


def test_bot_stopped_is_recorded_on_the_instance(engine: Engine, bot: int) -> None:
    apply_events(engine, [BotStopped(ts=at(9), bot="paper_bot", reason="end_of_data")], bot)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT status, stop_reason FROM bot_instances")).one()
    assert tuple(row) == ("stopped", "end_of_data")


def test_two_bots_may_use_the_same_client_order_ids(engine: Engine, bot: int) -> None:
    other = register_bot_instance(engine, "paper_bot", "paper", resume=False).id
    apply_events(engine, round_trip(1), bot)
    apply_events(engine, round_trip(1), other)  # a fresh run of the same bars
    assert count(engine, "orders") == 4
    assert len(list_orders(engine, bot="paper_bot")) == 4
    assert [e.seq for e in list_order_events(engine, client_order_id=str(cid(1)))] == [
        1,
        1,
        2,
        2,
        3,
        3,
    ]


@pytest.mark.parametrize(
    ("tag", "client_order_id", "role"),
    [
        ("entry", "x", "entry"),
        ("sl", "x", "stop_loss"),
        ("TP", "x", "take_profit"),
        ("", "atf-0123456789abcdef-exit-0", "exit"),
        ("", "atf-0123456789abcdef-sl-3", "stop_loss"),
        ("", "my-own-id", None),
    ],
)
def test_order_role_from_tag_or_client_order_id(
    tag: str, client_order_id: str, role: str | None
) -> None:
    assert order_role(tag, client_order_id) == role
