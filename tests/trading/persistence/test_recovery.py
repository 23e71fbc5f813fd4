"""Bot instances, crash recovery (open orders, positions, reconciliation) and equity snapshots."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from trading.events import OrderCancelled
from trading.exceptions import DatabaseError
from trading.orders import ClientOrderId, InvalidOrder, OrderSide, OrderStatus, OrderType
from trading.persistence import (
    apply_events,
    config_hash,
    list_order_events,
    list_orders,
    load_open_orders,
    load_positions,
    mark_bot_stopped,
    open_audit_database,
    record_equity_snapshot,
    record_heartbeat,
    record_reconciliation,
    register_bot_instance,
    upgrade_database,
)
from trading.positions import Position

from .builders import D, accept, at, cid, count, fill, submit


def test_the_bot_refuses_a_database_that_is_not_at_head(db_url: str) -> None:
    with pytest.raises(DatabaseError, match="atf db upgrade"):
        open_audit_database(db_url)  # empty: never created behind the user's back
    upgrade_database(db_url, "0001")
    with pytest.raises(DatabaseError, match=r"revision 0001 .*needs 0002.*atf db upgrade"):
        open_audit_database(db_url)
    upgrade_database(db_url)
    engine = open_audit_database(db_url)
    try:
        assert register_bot_instance(engine, "b", "paper").id == 1
    finally:
        engine.dispose()


def test_register_resumes_the_latest_instance_and_reports_a_crash(engine: Engine) -> None:
    first = register_bot_instance(engine, "b", "paper", config_hash=config_hash({"a": 1}))
    assert (first.resumed, first.unclean_shutdown, first.last_seq) == (False, False, 0)
    apply_events(engine, [submit(1)], first.id)
    record_heartbeat(engine, first.id, at(30))
    # The process dies: no mark_bot_stopped. The restart resumes the same instance.
    again = register_bot_instance(engine, "b", "paper")
    assert again.id == first.id
    assert again.resumed and again.unclean_shutdown
    assert again.last_heartbeat == at(30) and again.last_seq == 1
    mark_bot_stopped(engine, again.id, reason="stop")
    clean = register_bot_instance(engine, "b", "paper")
    assert clean.id == first.id and not clean.unclean_shutdown
    fresh = register_bot_instance(engine, "b", "paper", resume=False)
    assert fresh.id != first.id and not fresh.resumed
    other_mode = register_bot_instance(engine, "b", "live")
    assert other_mode.id not in (first.id, fresh.id)


def test_register_rejects_an_unknown_mode_with_a_hint(engine: Engine) -> None:
    with pytest.raises(ValueError, match="did you mean 'paper'"):
        register_bot_instance(engine, "b", "papr")


def test_heartbeat_of_an_unknown_instance_raises(engine: Engine) -> None:
    with pytest.raises(DatabaseError, match="no bot instance"):
        record_heartbeat(engine, 42)


def test_config_hash_is_canonical() -> None:
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert config_hash("x") == config_hash(b"x")


def test_load_open_orders_returns_working_orders_as_domain_orders(engine: Engine, bot: int) -> None:
    apply_events(
        engine,
        [
            submit(1),
            accept(1),
            fill(1, qty="1", total="2", filled="1"),  # partially filled
            submit(
                2, leg="sl", side=OrderSide.SELL, order_type=OrderType.STOP, stop="95", minute=2
            ),
            submit(
                3, leg="tp", side=OrderSide.SELL, order_type=OrderType.LIMIT, price="110", minute=2
            ),
            OrderCancelled(ts=at(3), client_order_id=cid(3, "tp"), symbol="BTC/USDT"),
            submit(4, minute=4),
            fill(4, minute=5),  # filled: done
        ],
        bot,
    )
    stored = load_open_orders(engine, bot)
    assert [s.client_order_id for s in stored] == [str(cid(1)), str(cid(2, "sl"))]
    entry, stop = stored
    assert entry.status is OrderStatus.PARTIALLY_FILLED
    assert (entry.filled_qty, entry.remaining_qty) == (D(1), D(1))
    order = entry.to_order()
    assert order.client_order_id == ClientOrderId(str(cid(1)))
    assert order.remaining == D(1) and order.is_open and order.venue_order_id == "V1"
    assert stop.to_order().stop_price == D(95)
    assert stop.role == "stop_loss"
    other = register_bot_instance(engine, "other", "paper").id
    assert load_open_orders(engine, other) == []


def test_a_trailing_stop_needs_its_trail_from_the_caller(engine: Engine, bot: int) -> None:
    apply_events(
        engine,
        [submit(1, leg="sl", side=OrderSide.SELL, order_type=OrderType.TRAILING_STOP)],
        bot,
    )
    [stored] = load_open_orders(engine, bot)
    with pytest.raises(InvalidOrder, match="trail"):
        stored.to_order()


def test_reconciliation_records_and_applies_the_broker_view_once(engine: Engine, bot: int) -> None:
    apply_events(engine, [submit(1), accept(1), fill(1, qty="2", price="100")], bot)
    apply_events(engine, [submit(2, minute=2), accept(2, minute=2)], bot)
    broker_position = Position(symbol="BTC/USDT", quantity=D(3), avg_entry_price=D(100))
    kwargs = {
        "ts": at(10),
        "reason": "POSITION_MISMATCH",
        "symbol": "BTC/USDT",
        "details": {"db": "2", "broker": "3"},
        "position": broker_position,
    }
    assert record_reconciliation(engine, bot, **kwargs) is True
    assert record_reconciliation(engine, bot, **kwargs) is False  # the same correction again
    assert record_reconciliation(
        engine,
        bot,
        ts=at(10),
        reason="ORDER_NOT_AT_BROKER",
        client_order_id=str(cid(2)),
        order_status=OrderStatus.CANCELLED,
    )
    [pos] = load_positions(engine, bot)
    assert pos.quantity == D(3) and pos.avg_entry_price == D(100)
    assert pos.trade_id == str(cid(1))  # the round trip keeps its key
    assert [s.client_order_id for s in load_open_orders(engine, bot)] == []
    [order2] = [o for o in list_orders(engine) if o.client_order_id == str(cid(2))]
    assert (
        order2.status == "cancelled" and order2.status_reason == "reconciled: ORDER_NOT_AT_BROKER"
    )
    log = list_order_events(engine, kind="reconciliation")
    assert [(e.event_type, e.symbol, e.client_order_id) for e in log] == [
        ("Reconciliation", "BTC/USDT", None),
        ("Reconciliation", None, str(cid(2))),
    ]
    assert log[0].payload["details"] == {"db": "2", "broker": "3"}
    assert log[0].payload["position"]["quantity"] == "3"
    assert [e.seq for e in list_order_events(engine)] == [1, 2, 3, 4, 5, 6, 7]


def test_equity_snapshots_are_one_per_bot_and_time(engine: Engine, bot: int) -> None:
    assert record_equity_snapshot(engine, bot, ts=at(0), equity=D("10000.5"), cash=D(9000))
    assert not record_equity_snapshot(engine, bot, ts=at(0), equity=D("10000.5"))
    assert record_equity_snapshot(engine, bot, ts=at(1), equity=Decimal("10001.25"))
    assert count(engine, "equity_snapshots") == 2
    with engine.connect() as conn:
        cash = conn.execute(text("SELECT cash FROM equity_snapshots ORDER BY ts")).scalars().all()
    assert [None if c is None else Decimal(str(c)) for c in cash] == [D(9000), None]
