"""The query layer: orders, trades, fills and order events by bot, symbol, strategy, dates, status."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy.engine import Engine

from trading.events import OrderCancelled
from trading.orders import OrderSide, OrderType
from trading.persistence import (
    apply_events,
    list_fills,
    list_order_events,
    list_orders,
    list_trades,
    register_bot_instance,
)

from .builders import at, cid, round_trip, submit


@pytest.fixture
def two_bots(engine: Engine) -> tuple[int, int]:
    """Bot `alpha` (strategy Rsi) trades BTC then ETH; bot `beta` (Macd) trades BTC later."""
    alpha = register_bot_instance(engine, "alpha", "paper", strategy="Rsi").id
    beta = register_bot_instance(engine, "beta", "live", strategy="Macd").id
    apply_events(engine, round_trip(1), alpha)
    apply_events(engine, shifted(round_trip(2, symbol="ETH/USDT"), 60), alpha)
    apply_events(engine, shifted(round_trip(3), 120), beta)
    stop = submit(
        4, leg="sl", side=OrderSide.SELL, order_type=OrderType.STOP, stop="90", minute=121
    )
    apply_events(engine, [stop], beta)
    apply_events(
        engine,
        [
            submit(5, minute=130),
            OrderCancelled(ts=at(131), client_order_id=cid(5), symbol="BTC/USDT"),
        ],
        beta,
    )
    return alpha, beta


def shifted(events: list, minutes: int) -> list:  # type: ignore[type-arg]
    from dataclasses import replace
    from datetime import timedelta

    return [replace(e, ts=e.ts + timedelta(minutes=minutes)) for e in events]


def ids(rows: list) -> list[str]:  # type: ignore[type-arg]
    return [r.client_order_id for r in rows]


def test_orders_by_bot_symbol_strategy_and_status(
    engine: Engine, two_bots: tuple[int, int]
) -> None:
    assert len(list_orders(engine)) == 8
    assert ids(list_orders(engine, bot="alpha")) == [
        str(cid(1)),
        str(cid(1, "tp")),
        str(cid(2)),
        str(cid(2, "tp")),
    ]
    assert {o.symbol for o in list_orders(engine, symbol="ETH/USDT")} == {"ETH/USDT"}
    assert {o.bot for o in list_orders(engine, strategy="Macd")} == {"beta"}
    assert ids(list_orders(engine, status="open")) == [str(cid(4, "sl"))]
    assert ids(list_orders(engine, status="cancelled")) == [str(cid(5))]
    assert len(list_orders(engine, status="done")) == 7
    assert list_orders(engine, bot="nobody") == []


def test_orders_by_date_range_is_half_open_and_limit_takes_the_newest(
    engine: Engine, two_bots: tuple[int, int]
) -> None:
    window = list_orders(engine, since=at(60), until=at(121))
    # beta's take profit is submitted at minute 121 itself: `until` is exclusive.
    assert ids(window) == [str(cid(2)), str(cid(2, "tp")), str(cid(3))]
    newest = list_orders(engine, limit=2)
    assert ids(newest) == [str(cid(4, "sl")), str(cid(5))]  # oldest first within the page
    assert [o.created_at for o in newest] == sorted(o.created_at for o in newest)


def test_trades_by_bot_symbol_strategy_status_and_exit_window(
    engine: Engine, two_bots: tuple[int, int]
) -> None:
    trades = list_trades(engine)
    assert [(t.bot, t.symbol, t.trade_type) for t in trades] == [
        ("alpha", "BTC/USDT", "paper"),
        ("alpha", "ETH/USDT", "paper"),
        ("beta", "BTC/USDT", "live"),
    ]
    assert [t.symbol for t in list_trades(engine, bot="alpha", symbol="ETH/USDT")] == ["ETH/USDT"]
    assert [t.bot for t in list_trades(engine, strategy="Macd")] == ["beta"]
    assert list_trades(engine, status="open") == []
    assert [t.bot for t in list_trades(engine, trade_type="live")] == ["beta"]
    # Closed trades are dated by their exit: the first exits at minute 5.
    assert [t.symbol for t in list_trades(engine, since=at(5), until=at(6))] == ["BTC/USDT"]
    assert list_trades(engine, since=at(6), until=at(65)) == []


def test_fills_and_events_filters(engine: Engine, two_bots: tuple[int, int]) -> None:
    assert len(list_fills(engine)) == 6
    assert [f.strategy_names for f in list_fills(engine, strategy="Rsi")] == [["Rsi"]] * 4
    assert {f.bot for f in list_fills(engine, symbol="BTC/USDT")} == {"alpha", "beta"}
    assert len(list_fills(engine, since=at(120))) == 2
    cancel = list_order_events(engine, kind="cancel")
    assert [(e.bot, e.event_type, e.status) for e in cancel] == [
        ("beta", "OrderCancelled", "cancelled")
    ]
    # In time order: the stop (seq 6, minute 121) was recorded after the fill of minute 125.
    assert [e.seq for e in list_order_events(engine, bot="beta")] == [1, 2, 3, 4, 6, 5, 7, 8]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda e: list_orders(e, status="filed"), "did you mean 'filled'"),
        (lambda e: list_trades(e, status="opn"), "did you mean 'open'"),
        (lambda e: list_trades(e, trade_type="papr"), "did you mean 'paper'"),
        (lambda e: list_orders(e, since=datetime(2024, 1, 1)), "timezone-aware"),
        (lambda e: list_fills(e, limit=0), "limit must be positive"),
    ],
)
def test_bad_filters_raise_with_a_hint(engine: Engine, call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(engine)  # type: ignore[operator]
