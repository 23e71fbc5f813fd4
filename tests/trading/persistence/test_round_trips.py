"""Positions and paper/live round trips written from fills and trade events."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from trading.orders import OrderSide, OrderType
from trading.persistence import apply_events, list_fills, list_orders, list_trades, load_positions
from trading.persistence.position_book import position_after_fill
from trading.positions import PositionManager

from .builders import T0, D, at, cid, closed, fill, opened, round_trip, submit


def test_a_round_trip_opens_then_closes_one_trade_row(engine: Engine, bot: int) -> None:
    events = round_trip(1)
    apply_events(engine, events[:4], bot)  # up to TradeOpened
    [trade] = list_trades(engine)
    assert (trade.status, trade.trade_type, trade.bot, trade.strategy) == (
        "open",
        "paper",
        "paper_bot",
        "RsiBb",
    )
    assert trade.entry_time == at(1) and trade.exit_time is None and trade.pnl is None
    apply_events(engine, events[4:], bot)
    [trade] = list_trades(engine)
    assert trade.status == "closed"
    assert (trade.entry_price, trade.exit_price, trade.quantity) == (D(100), D(110), D(2))
    assert (trade.gross_pnl, trade.fees, trade.pnl) == (D(20), D("0.42"), D("19.58"))
    assert trade.pnl_pct == pytest.approx(19.58 / 200 * 100)
    assert trade.exit_reason == "take_profit"  # the role of the order that filled last
    assert trade.exit_time == at(5)
    assert trade.trade_key == str(cid(1))
    assert load_positions(engine, bot) == []
    [flat] = load_positions(engine, bot, include_flat=True)
    assert flat.quantity == 0 and flat.realised_pnl == D(20) and flat.fees == D("0.42")


def test_exit_reason_follows_the_closing_order(engine: Engine, bot: int) -> None:
    apply_events(
        engine,
        [
            submit(1),
            fill(1),
            opened(str(cid(1))),
            submit(1, leg="sl", side=OrderSide.SELL, order_type=OrderType.STOP, stop="95"),
            fill(1, leg="sl", side=OrderSide.SELL, price="95", minute=4),
            closed(str(cid(1)), exit="95", pnl="-10", minute=4),
        ],
        bot,
    )
    [trade] = list_trades(engine)
    assert trade.exit_reason == "stop_loss"


def test_a_trade_id_announced_after_the_fills_relinks_orders_and_fills(
    engine: Engine, bot: int
) -> None:
    """The bot names trades SYMBOL-bar, not by order id: the position adopts the name."""
    apply_events(
        engine,
        [
            submit(1),
            fill(1, qty="1", total="2", filled="1"),
            fill(1, qty="1", total="2", filled="2", minute=2),
        ],
        bot,
    )
    assert {f.trade_key for f in list_fills(engine)} == {str(cid(1))}
    apply_events(engine, [opened("BTC/USDT-17", minute=2)], bot)
    assert {f.trade_key for f in list_fills(engine)} == {"BTC/USDT-17"}
    assert list_orders(engine)[0].trade_key == "BTC/USDT-17"
    [pos] = load_positions(engine, bot)
    assert pos.trade_id == "BTC/USDT-17" and pos.opened_ts == at(1)


def test_a_trade_announced_before_its_fill_gives_the_fill_its_key(engine: Engine, bot: int) -> None:
    apply_events(engine, [submit(1), opened("BTC/USDT-3", minute=1), fill(1)], bot)
    assert [f.trade_key for f in list_fills(engine)] == ["BTC/USDT-3"]
    assert load_positions(engine, bot)[0].trade_id == "BTC/USDT-3"


def test_a_close_without_an_open_row_is_inserted_closed_with_the_position_entry_time(
    engine: Engine, bot: int
) -> None:
    apply_events(engine, [submit(1), fill(1, minute=1)], bot)
    apply_events(
        engine,
        [
            submit(2, leg="exit", side=OrderSide.SELL, minute=3),
            fill(2, leg="exit", side=OrderSide.SELL, price="104", minute=4),
            closed(str(cid(1)), exit="104", pnl="8", minute=4),
        ],
        bot,
    )
    [trade] = list_trades(engine)
    assert trade.status == "closed" and trade.entry_time == at(1)
    assert trade.exit_reason == "exit_signal"
    apply_events(engine, [closed(str(cid(1)), exit="104", pnl="8", minute=4)], bot)
    assert len(list_trades(engine)) == 1


def test_a_short_and_a_flip(engine: Engine, bot: int) -> None:
    apply_events(
        engine,
        [
            submit(1, side=OrderSide.SELL, qty="3"),
            fill(1, side=OrderSide.SELL, qty="3", price="50", fee="0"),
            submit(2, leg="x1", side=OrderSide.BUY, qty="5", minute=2),  # closes 3, opens 2 long
            fill(2, leg="x1", side=OrderSide.BUY, qty="5", price="40", fee="0", minute=3),
        ],
        bot,
    )
    [pos] = load_positions(engine, bot)
    assert pos.quantity == D(2) and pos.avg_entry_price == D(40)
    assert pos.realised_pnl == D(30)  # 3 x (50 - 40) on the short
    assert pos.trade_id == str(cid(2, "x1")) and pos.opened_ts == at(3)


def test_positions_of_several_symbols_are_kept_apart(engine: Engine, bot: int) -> None:
    apply_events(
        engine,
        [
            submit(1),
            fill(1, qty="2", price="100"),
            submit(2, symbol="ETH/USDT"),
            fill(2, symbol="ETH/USDT", qty="2", price="10"),
            submit(3, minute=2),
            fill(3, qty="1", price="130", minute=3),
        ],
        bot,
    )
    positions = {p.symbol: p for p in load_positions(engine, bot)}
    assert positions["BTC/USDT"].quantity == D(3)
    assert positions["BTC/USDT"].avg_entry_price == D(110)
    assert positions["ETH/USDT"].quantity == D(2)
    assert positions["ETH/USDT"].fees == D("0.2")


def test_backtest_trades_and_paper_trades_live_side_by_side(engine: Engine, bot: int) -> None:
    from trading.persistence import save_backtest

    from .test_repository import make_result, make_trade

    save_backtest(engine, make_result([make_trade(1)]))
    apply_events(engine, round_trip(1), bot)
    assert [t.trade_type for t in list_trades(engine)] == ["backtest", "paper"]
    assert [t.status for t in list_trades(engine, trade_type="backtest")] == ["closed"]


# --- the arithmetic against PositionManager ------------------------------------------------------

fills_strategy = st.lists(
    st.tuples(
        st.sampled_from([OrderSide.BUY, OrderSide.SELL]),
        st.integers(min_value=1, max_value=40).map(lambda n: Decimal(n) / 4),
        st.integers(min_value=80, max_value=120).map(Decimal),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(fills_strategy)
def test_position_arithmetic_matches_position_manager(
    fills: list[tuple[OrderSide, Decimal, Decimal]],
) -> None:
    manager = PositionManager()
    q, avg, realised = Decimal(0), None, Decimal(0)
    for side, qty, price in fills:
        expected = manager.apply_fill("X", side, qty, price, ts=T0)
        change = position_after_fill(q, avg, side, qty, price)
        flipped = q != 0 and change.quantity != 0 and (q > 0) != (change.quantity > 0)
        assert change.opened == ((q == 0 and change.quantity != 0) or flipped)
        assert change.closed == ((q != 0 and change.quantity == 0) or flipped)
        q, avg, realised = change.quantity, change.avg_entry_price, realised + change.realised
        assert q == expected.quantity
        # the book keeps the columns' 10 decimals; the manager keeps the full context precision
        exp_avg = expected.avg_entry_price
        assert (avg is None) == (exp_avg is None)
        if avg is not None and exp_avg is not None:
            assert abs(avg - exp_avg) <= Decimal("1e-9")
        assert abs(realised - expected.realised_pnl) <= Decimal("1e-8")
