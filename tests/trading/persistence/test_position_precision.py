"""Positions at the column's precision: no float residue between batches, spool and recovery.

Fill quantities come from float sizing (`Decimal(repr(float))`, 15+ decimals) while the
database keeps 10. A position recorded in one batch and closed by a fill applied later (a
later batch, a spool replay, or a fill lost in a crash and re-derived by recovery) must end
exactly flat, in the database and in the book reconciliation builds from it.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from sqlalchemy.engine import Engine

from tests.trading.persistence.builders import D, accept, cid, closed, fill, opened, submit
from trading.broker_state import PaperBrokerState
from trading.events import Event
from trading.orders import OrderSide
from trading.persistence import apply_events, load_open_orders, load_positions
from trading.persistence.columns import MONEY_SCALE
from trading.persistence.position_book import position_after_fill
from trading.persistence.spool import EventSpool
from trading.positions import Position
from trading.reconcile import reconcile, same_position

# float sizing: 2000 * 0.2 / 94.93126243717342 -> repr has 15 decimals
QTY = repr(2000 * 0.2 / 94.93126243717342)
PRICE = "94.93126243717342"


def entry_and_exit(qty: str = QTY) -> list[Event]:
    return [
        submit(1, qty=qty),
        accept(1),
        fill(1, qty=qty, price=PRICE, fee="0.04"),
        opened(str(cid(1)), qty=qty, price=PRICE),
        submit(1, leg="sl", side=OrderSide.SELL, qty=qty, minute=1),
        accept(1, leg="sl", minute=1),
        fill(1, leg="sl", side=OrderSide.SELL, qty=qty, price="95", fee="0.04", minute=3),
    ]


def book_of(events: list[Event]) -> PaperBrokerState:
    book = PaperBrokerState(Decimal(10_000))
    for e in events:
        book.apply(e)
    return book


def test_the_sizing_quantity_has_more_decimals_than_the_column() -> None:
    assert len(QTY.split(".")[1]) > MONEY_SCALE  # the premise of every test below


def test_a_position_closed_in_a_later_batch_is_flat_in_the_database(
    engine: Engine, bot: int
) -> None:
    events = entry_and_exit()
    apply_events(engine, events[:4], bot)
    apply_events(engine, events[4:], bot)
    (pos,) = load_positions(engine, bot, include_flat=True)
    assert pos.quantity == 0 and pos.avg_entry_price is None


def test_a_fill_lost_in_the_crash_closes_the_recorded_position_exactly(
    engine: Engine, bot: int
) -> None:
    events = entry_and_exit()
    apply_events(engine, events[:6], bot)  # the closing fill never reached the database
    rec = reconcile(
        load_open_orders(engine, bot),
        load_positions(engine, bot),
        book_of(events),
        unrecorded=events[6:],
    )
    assert rec.mismatches == []
    assert [c.reason for c in rec.corrections] == ["ORDER_RESTORED", "POSITION_RESTORED"]


def test_a_spooled_close_replayed_after_an_outage_leaves_no_residue(
    engine: Engine, bot: int, tmp_path: Path
) -> None:
    events = entry_and_exit()
    apply_events(engine, events[:4], bot)
    spool = EventSpool(tmp_path / "bot.jsonl")
    spool.append(events[4:])  # the database was down: the exit went to the spool
    chunk = spool.peek(100)
    apply_events(engine, chunk.events, bot)  # and is replayed when it is back
    spool.consume(chunk)
    assert len(spool) == 0
    (pos,) = load_positions(engine, bot, include_flat=True)
    assert pos.quantity == 0
    assert book_of(events).positions() == []


def test_scaled_in_fills_whose_roundings_add_up_close_flat_without_a_flip(
    engine: Engine, bot: int
) -> None:
    # each entry rounds down by 0.4 of the last stored digit; the exit of their sum rounds up
    a = "1.00000000004"
    events = [
        submit(1, qty=a),
        fill(1, qty=a, price="100"),
        opened(str(cid(1)), qty=a),
        submit(2, qty=a, minute=1),
        fill(2, qty=a, price="102", minute=2),
        submit(3, leg="exit", side=OrderSide.SELL, qty="2.00000000008", minute=3),
        fill(3, leg="exit", side=OrderSide.SELL, qty="2.00000000008", price="105", minute=4),
        closed(str(cid(1)), qty="2.00000000008", entry="101", exit="105", pnl="8", minute=4),
    ]
    for e in events:  # one event per batch: nothing is carried in memory between them
        apply_events(engine, [e], bot)
    (pos,) = load_positions(engine, bot, include_flat=True)
    assert (pos.quantity, pos.avg_entry_price) == (0, None)
    assert pos.realised_pnl == D("8")  # 2 closed at 105 against an average of 101
    assert book_of(events).positions() == []


def test_position_arithmetic_keeps_the_column_scale_and_closes_dust() -> None:
    q = D(QTY)
    opened_ = position_after_fill(D(0), None, OrderSide.BUY, q, D(PRICE))
    assert opened_.quantity == q.quantize(D("1e-10"))
    closed_ = position_after_fill(
        opened_.quantity, opened_.avg_entry_price, OrderSide.SELL, q, D(95)
    )
    assert (closed_.quantity, closed_.closed, closed_.opened) == (0, True, False)
    flipped = position_after_fill(D("2"), D(100), OrderSide.SELL, D("3.5"), D(101))
    assert (flipped.quantity, flipped.opened, flipped.closed) == (D("-1.5"), True, True)
    reduced = position_after_fill(D("2"), D(100), OrderSide.SELL, D("0.5"), D(104))
    assert (reduced.quantity, reduced.realised, reduced.closed) == (D("1.5"), D("2"), False)
    # one quantum over the open quantity is rounding, not a flip to a 1e-10 short
    dust = position_after_fill(D("2"), D(100), OrderSide.SELL, D("2.0000000001"), D(101))
    assert (dust.quantity, dust.realised, dust.opened, dust.closed) == (0, D("2"), False, True)


def test_reconciliation_reads_a_residue_below_the_column_scale_as_flat() -> None:
    residue = Position("AAA", D("-0.00000000000965"), D(PRICE))
    assert same_position(residue, None)
    assert not same_position(Position("AAA", D("-0.001"), D(PRICE)), None)
