"""Reconciliation and crash recovery on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pandas as pd  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import Engine

from tests.trading.persistence.builders import D, accept, cid, fill, opened, round_trip, submit
from trading.audit_session import PersistenceSettings, attach_audit
from trading.broker_state import BrokerStateFile, OrderState, PaperBrokerState
from trading.bus import EventBus
from trading.events import Event
from trading.orders import OrderSide, OrderStatus
from trading.persistence import (
    apply_events,
    ensure_database,
    list_fills,
    list_order_events,
    load_open_orders,
    load_positions,
    register_bot_instance,
    upgrade_database,
)
from trading.persistence.audit_events import Reconciled
from trading.positions import Position
from trading.recovery import (
    CrashRecovery,
    ManagerView,
    ReconciliationMismatch,
    diff_books,
    load_resume_point,
    reconcile,
    reconcile_with_broker,
)


@pytest.fixture(params=("sqlite", "postgresql"))
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend (the persistence suite's fixtures live below it)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'atf.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = ensure_database(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def bot(engine: Engine) -> int:
    return register_bot_instance(engine, "paper_bot", "paper", strategy="RsiBb").id


@dataclass
class Venue:
    """A broker's account as a venue reports it (the `BrokerView` a live adapter provides)."""

    orders: list[OrderState] = field(default_factory=list)
    held: list[Position] = field(default_factory=list)

    def open_orders(self) -> list[OrderState]:
        return self.orders

    def positions(self) -> list[Position]:
        return self.held


def book_of(events: list[Event]) -> PaperBrokerState:
    book = PaperBrokerState(Decimal(10_000))
    for e in events:
        book.apply(e)
    return book


def test_a_fill_the_database_never_received_is_a_correction_not_a_mismatch(
    engine: Engine, bot: int
) -> None:
    events = [submit(1), accept(1), fill(1), opened(str(cid(1)))]
    apply_events(engine, events[:2], bot)  # the fill was lost in the crash
    rec = reconcile(
        load_open_orders(engine, bot),
        load_positions(engine, bot),
        book_of(events),
        unrecorded=events[2:],
    )
    assert rec.ok
    assert [(c.reason, c.client_order_id, c.db, c.broker, c.events) for c in rec.corrections] == [
        (
            "ORDER_RESTORED",
            str(cid(1)),
            "accepted buy market 2 filled 0 price - stop -",
            "not open (filled)",
            1,
        ),
        ("POSITION_RESTORED", None, "flat", "2 @ 100", 1),
    ]


def test_an_open_order_in_the_database_the_broker_does_not_have_refuses_to_trade(
    engine: Engine, bot: int
) -> None:
    apply_events(engine, [submit(1), accept(1), submit(2, qty="5"), accept(2)], bot)
    broker = book_of([submit(2, qty="5"), accept(2)])
    rec = reconcile(load_open_orders(engine, bot), load_positions(engine, bot), broker)
    assert [(m.reason, m.symbol, m.client_order_id) for m in rec.mismatches] == [
        ("ORDER_NOT_AT_BROKER", "BTC/USDT", str(cid(1)))
    ]
    with pytest.raises(ReconciliationMismatch) as err:
        rec.raise_if_mismatched()
    message = str(err.value)
    assert "refusing to trade: 1 unexplained difference" in message
    assert f"ORDER_NOT_AT_BROKER: symbol BTC/USDT, client order id {cid(1)}" in message
    assert "database accepted buy market 2 filled 0" in message and "broker absent" in message


def test_a_position_quantity_that_differs_is_a_mismatch_with_both_values(
    engine: Engine, bot: int
) -> None:
    apply_events(engine, [submit(1), accept(1), fill(1, qty="2", price="100")], bot)
    venue = Venue(held=[Position("BTC/USDT", D("3"), D("100"))])
    rec = reconcile(load_open_orders(engine, bot), load_positions(engine, bot), venue)
    assert [str(m) for m in rec.mismatches] == [
        "POSITION_MISMATCH: symbol BTC/USDT, client order id -: database 2 @ 100; broker 3 @ 100"
    ]


def test_an_order_only_the_broker_has_is_explained_only_by_a_lost_submission(
    engine: Engine, bot: int
) -> None:
    broker = book_of([submit(7), accept(7)])
    db_view = (load_open_orders(engine, bot), load_positions(engine, bot))
    unexplained = reconcile(*db_view, broker)
    assert [(m.reason, m.client_order_id) for m in unexplained.mismatches] == [
        ("ORDER_NOT_IN_DB", str(cid(7)))
    ]
    explained = reconcile(*db_view, broker, unrecorded=[submit(7), accept(7)])
    assert explained.ok and [c.reason for c in explained.corrections] == ["ORDER_RESTORED"]


def test_reconcile_with_broker_writes_the_lost_events_and_each_correction(
    engine: Engine, bot: int
) -> None:
    events = [submit(1), accept(1), fill(1), opened(str(cid(1)))]
    apply_events(engine, events[:2], bot)
    rec = reconcile_with_broker(engine, bot, book_of(events), unrecorded=events[2:])
    assert rec.ok
    assert len(list_fills(engine)) == 1  # the lost fill is in the ledger, as the real event
    notes = list_order_events(engine, kind="reconciliation")
    assert [n.payload["reason"] for n in notes] == ["ORDER_RESTORED", "POSITION_RESTORED"]
    assert [p.quantity for p in load_positions(engine, bot)] == [D("2")]
    again = reconcile_with_broker(engine, bot, book_of(events))
    assert again.ok and again.corrections == []  # nothing left to correct


# --------------------------------------------------------------------------- paper re-runs


def stream() -> list[Event]:
    """Three round trips of a paper bot, minutes apart (ts increases from trip to trip)."""
    out: list[Event] = []
    for n in (1, 2, 3):
        for e in round_trip(n):
            out.append(type(e)(**{**e.__dict__, "ts": e.ts + pd.Timedelta(minutes=10 * n)}))
    return out


def rerun(
    point_engine: Engine, bot: int, events: list[Event], state: BrokerStateFile | None
) -> tuple[CrashRecovery, list[Reconciled], list[ReconciliationMismatch], int | None]:
    """Feed a restarted run's events through CrashRecovery as the audit session does."""
    book = PaperBrokerState(Decimal(10_000))
    emitted: list[Event] = []
    refusals: list[ReconciliationMismatch] = []
    recovery = CrashRecovery(
        load_resume_point(point_engine, bot, state),
        book,
        emit=emitted.append,
        on_refuse=refusals.append,
    )
    checked_at = None
    for i, e in enumerate(events):
        recovery.before(e)
        book.apply(e)
        recovery.after(e)
        if checked_at is None and not recovery.pending:
            checked_at = i
    recovery.end()
    return recovery, [e for e in emitted if isinstance(e, Reconciled)], refusals, checked_at


def saved_state(tmp_path: Path, events: list[Event]) -> BrokerStateFile:
    f = BrokerStateFile(tmp_path / "broker.json")
    f.save(book_of(events))
    return f


def test_a_rerun_is_checked_where_the_previous_run_stopped_and_lost_events_become_corrections(
    engine: Engine, bot: int, tmp_path: Path
) -> None:
    events = stream()
    apply_events(engine, events[:9], bot)  # the database got 9 events; the broker state 12
    state = saved_state(tmp_path, events[:12])
    recovery, emitted, refusals, checked_at = rerun(engine, bot, events, state)
    assert refusals == [] and recovery.result is not None and recovery.result.ok
    assert checked_at == 11  # at the saved state's point, not later
    assert recovery.lost == events[9:12]
    assert all(isinstance(e, Reconciled) for e in emitted) and emitted
    assert {e.reason for e in emitted} <= {"ORDER_RESTORED", "POSITION_RESTORED"}


def test_an_order_the_rerun_never_places_makes_the_bot_refuse_listing_it(
    engine: Engine, bot: int, tmp_path: Path
) -> None:
    events = stream()
    stray = [submit(99, minute=2), accept(99, minute=2)]
    apply_events(engine, events[:5] + stray + events[5:9], bot)
    recovery, emitted, refusals, _ = rerun(engine, bot, events, None)
    assert len(refusals) == 1 and refusals[0] is recovery.error
    assert [(m.reason, m.client_order_id) for m in refusals[0].mismatches] == [
        ("ORDER_NOT_AT_BROKER", str(cid(99)))
    ]
    unexplained = [e for e in emitted if e.details_dict().get("unexplained")]
    assert [e.client_order_id for e in unexplained] == [str(cid(99))]


def test_a_rerun_that_does_not_reproduce_the_recorded_events_refuses(
    engine: Engine, bot: int
) -> None:
    events = stream()
    apply_events(engine, events[:3], bot)  # ends with the fill at 100
    other = list(events)
    other[2] = fill(1, price="101")  # another fill model or other bars
    _, _, refusals, _ = rerun(engine, bot, other, None)
    assert [m.reason for m in refusals[0].mismatches] == ["CRASH_POINT_NOT_REPRODUCED"]


def test_a_rerun_that_diverges_from_the_saved_broker_state_refuses(
    engine: Engine, bot: int, tmp_path: Path
) -> None:
    events = stream()
    apply_events(engine, events[:3], bot)
    state = saved_state(tmp_path, events[:6])
    other = list(events)
    other[5] = fill(1, leg="tp", side=OrderSide.SELL, price="109", minute=5)
    _, _, refusals, _ = rerun(engine, bot, other, state)
    assert [m.reason for m in refusals[0].mismatches] == ["BROKER_STATE_DIVERGED"]


def test_a_rerun_that_ends_before_the_recorded_point_refuses(engine: Engine, bot: int) -> None:
    events = stream()
    apply_events(engine, events, bot)
    _, _, refusals, _ = rerun(engine, bot, events[:10], None)
    assert [m.reason for m in refusals[0].mismatches] == ["CRASH_POINT_NOT_REPRODUCED"]


def test_a_clean_restart_through_attach_audit_adds_nothing_and_corrects_nothing(
    db_url: str, tmp_path: Path
) -> None:
    from .persistence.builders import counts

    upgrade_database(db_url)
    settings = {"url": db_url, "spool_dir": str(tmp_path), "heartbeat_interval": 0.05}
    events = stream()
    for run in (events[:12], events):  # the first run stops cleanly after 12 events
        bus = EventBus()
        session = attach_audit(bus, name="p", mode="paper", settings=settings)
        for e in run:
            bus.publish(e)
        assert session.close("stop")
        assert session.refusal is None
        first = counts(session.engine) if run is events else None
    assert session.recovery is not None and session.recovery.result is not None
    assert session.recovery.result.corrections == [] and len(session.recovery.lost) == 0
    assert first is not None and first["orders"] == 6 and first["fills"] == 6


def test_the_paper_book_equals_the_bots_managers_and_its_cash_the_broker_value(
    tmp_path: Path,
) -> None:
    from tests.trading.persistence.test_paper_replay import CONFIG
    from trading.bot import BaseTradingBot
    from trading.config import parse_config
    from trading.data import generate_ohlcv

    bars = generate_ohlcv(400, seed=5, timeframe="1h", start="2021-03-01").rename_axis("datetime")
    bars.to_csv(tmp_path / "a.csv")
    bus, cfg = EventBus(), parse_config(CONFIG)
    book = PaperBrokerState(Decimal(str(cfg.broker.cash)))
    bus.subscribe(book.apply, inline=True, name="book")
    trader = BaseTradingBot(cfg, mode="paper", replay=tmp_path / "a.csv", speed="max", bus=bus)
    result = asyncio.run(trader.start_trading())
    assert book.count > 50
    assert diff_books(book, ManagerView(trader.order_manager, trader.position_manager)) == []
    last_close = Decimal(str(bars["close"].iloc[-1]))
    assert book.cash is not None
    value = book.cash + sum((p.quantity * last_close for p in book.positions()), Decimal(0))
    assert float(value) == pytest.approx(result.final_value, rel=1e-9)
    f = BrokerStateFile(tmp_path / "s.json")
    f.save(book)
    assert f.load().to_json() == book.to_json()  # type: ignore[union-attr]
    assert not list(tmp_path.glob("*.tmp"))


def test_a_misspelt_persistence_setting_says_what_was_meant() -> None:
    with pytest.raises(ValueError, match="did you mean 'spool_dir'"):
        PersistenceSettings.from_mapping({"spool_directory": "x"})
    assert PersistenceSettings.from_mapping({"batch_size": 7}).batch_size == 7


def test_the_open_order_status_survives_the_state_file(tmp_path: Path) -> None:
    book = book_of([submit(1), accept(1), fill(1, qty="1", total="2", filled="1")])
    f = BrokerStateFile(tmp_path / "s.json")
    f.save(book)
    loaded = f.load()
    assert loaded is not None
    assert [o.status for o in loaded.open_orders()] == [OrderStatus.PARTIALLY_FILLED]
    assert loaded.count == 3 and loaded.last_key == book.last_key and loaded.last_ts == book.last_ts
