"""Round trips and atomicity of the backtest repository (SQLite and PostgreSQL); SQLite locking."""

from __future__ import annotations

import dataclasses
import math
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError

from trading.persistence import (
    BacktestRun,
    Trade,
    delete_run,
    ensure_database,
    get_run,
    list_runs,
    make_engine,
    save_backtest,
)
from trading.results import BacktestResult, TradeRecord

T0 = datetime(2024, 1, 2, 9, 30, tzinfo=UTC)


def make_trade(i: int, **overrides: object) -> TradeRecord:
    """Build a closed long trade whose numbers carry float noise (0.1 + 0.2 style)."""
    values: dict[str, object] = {
        "trade_id": i,
        "symbol": "BTC/USDT" if i % 2 else "ETH/USDT",
        "side": "long",
        "entry_time": T0 + timedelta(hours=i),
        "exit_time": T0 + timedelta(hours=i, minutes=45),
        "entry_price": 42000.12345678 + i,
        "exit_price": 42100.5 + i,
        "quantity": 0.1 + 0.2,  # 0.30000000000000004
        "gross_pnl": 0.3,
        "fees": 0.1,
        "pnl": 0.2,
        "pnl_pct": 0.0123,
        "exit_reason": "take_profit",
        "entry_tag": "rsi+ema",
        "bars_held": 3,
        "mae_pct": -0.5,
        "mfe_pct": 1.25,
    }
    values.update(overrides)
    return TradeRecord(**values)  # type: ignore[arg-type]


def make_result(trades: list[TradeRecord], *, name: str = "rsi_bot") -> BacktestResult:
    """Build a BacktestResult by hand."""
    index = pd.date_range("2024-01-01", periods=4, freq="1h", tz="UTC")
    return BacktestResult(
        name=name,
        symbols=["BTC/USDT", "ETH/USDT"],
        timeframe="1h",
        start=pd.Timestamp("2024-01-01T00:00:00Z"),
        end=pd.Timestamp("2024-03-01T00:00:00Z"),
        initial_cash=10000.0,
        final_value=10123.45,
        trades=trades,
        equity=pd.Series([10000.0, 10010.0, 10050.0, 10123.45], index=index),
        metrics={
            "win_rate": 66.6667,
            "sharpe_ratio": 1.42,
            "max_drawdown_pct": -3.5,
            "profit_factor": float("inf"),
            "sortino": np.float64(2.5),
            "n_days": np.int64(60),
            "by_symbol": {"BTC/USDT": {"pnl": 0.1}},
        },
        config={
            "strategy": {"name": "RsiEma", "params": {"rsi_period": 14}},
            "broker": {"fee": 0.001},
        },
        bars=1440,
    )


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    eng = ensure_database(sqlite_url)
    yield eng
    eng.dispose()


@pytest.fixture
def result() -> BacktestResult:
    return make_result([make_trade(i) for i in range(1, 6)])


def count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(model))


def test_save_list_get_round_trip(engine: Engine, result: BacktestResult) -> None:
    executed = datetime(2024, 3, 2, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    run_id = save_backtest(engine, result, report_path="reports/rsi.html", started_at=executed)

    [summary] = list_runs(engine)
    assert summary.id == run_id
    assert summary.name == "rsi_bot"
    assert summary.symbols == ["BTC/USDT", "ETH/USDT"]
    assert summary.total_trades == 5
    assert summary.total_pnl == Decimal("1.0")  # 5 x 0.2 summed exactly, not 1.0000000000000002
    assert summary.final_value == Decimal("10123.45")
    assert summary.started_at == executed
    assert summary.started_at.utcoffset() == timedelta(0)
    assert summary.win_rate == 66.6667
    assert summary.sharpe_ratio == 1.42
    assert summary.max_drawdown_pct == -3.5

    detail = get_run(engine, run_id)
    assert detail is not None
    assert detail.initial_cash == Decimal(10000)
    assert detail.report_path == "reports/rsi.html"
    assert detail.data_start == datetime(2024, 1, 1, tzinfo=UTC)
    assert detail.data_end == datetime(2024, 3, 1, tzinfo=UTC)
    assert detail.config == result.config
    assert detail.metrics == {
        "win_rate": 66.6667,
        "sharpe_ratio": 1.42,
        "max_drawdown_pct": -3.5,
        "profit_factor": None,
        "sortino": 2.5,
        "n_days": 60,
        "by_symbol": {"BTC/USDT": {"pnl": 0.1}},
    }
    assert len(detail.trades) == len(result.trades)
    for stored, original in zip(detail.trades, result.trades, strict=True):
        assert stored["trade_no"] == original.trade_id
        assert stored["trade_type"] == "backtest"
        assert stored["strategy"] == "RsiEma"
        assert stored["bot_name"] == "rsi_bot"
        assert stored["symbol"] == original.symbol
        assert stored["entry_time"] == original.entry_time
        assert stored["exit_time"] == original.exit_time
        assert stored["exit_time"].tzinfo is not None
        assert stored["exit_time"].utcoffset() == timedelta(0)
        assert isinstance(stored["quantity"], Decimal)
        assert stored["quantity"] == Decimal("0.3000000000")  # 0.30000000000000004 -> scale 10
        assert stored["gross_pnl"] == Decimal("0.3")
        assert stored["fees"] == Decimal("0.1")
        assert stored["pnl"] == Decimal("0.2")
        assert stored["entry_price"] == Decimal(repr(original.entry_price))
        assert stored["pnl_pct"] == original.pnl_pct
        assert stored["bars_held"] == 3


def test_money_keeps_more_digits_than_a_double(engine: Engine, result: BacktestResult) -> None:
    """SQLite's NUMERIC affinity would round 18 significant digits to a 15-digit float."""
    amount = Decimal("12345678.1234567891")
    bigger = dataclasses.replace(result, final_value=amount)  # type: ignore[arg-type]
    run_id = save_backtest(engine, bigger)
    detail = get_run(engine, run_id)
    assert detail is not None
    assert detail.final_value == amount


def test_list_runs_is_newest_first_with_limit_and_name(engine: Engine) -> None:
    ids = [
        save_backtest(engine, make_result([], name=name), started_at=T0 + timedelta(days=i))
        for i, name in enumerate(["a", "b", "a", "c"])
    ]
    assert [r.id for r in list_runs(engine)] == ids[::-1]
    assert [r.id for r in list_runs(engine, limit=2)] == [ids[3], ids[2]]
    assert [r.id for r in list_runs(engine, name="a")] == [ids[2], ids[0]]
    assert list_runs(engine, name="missing") == []
    with pytest.raises(ValueError):
        list_runs(engine, limit=0)


def test_run_without_trades(engine: Engine) -> None:
    run_id = save_backtest(engine, make_result([]))
    detail = get_run(engine, run_id)
    assert detail is not None
    assert detail.trades == []
    assert detail.total_trades == 0
    assert detail.total_pnl == Decimal(0)


def test_get_and_delete_unknown_run(engine: Engine) -> None:
    assert get_run(engine, 12345) is None
    assert delete_run(engine, 12345) is False


def test_delete_run_removes_its_trades_only(engine: Engine, result: BacktestResult) -> None:
    keep = save_backtest(engine, result)
    gone = save_backtest(engine, result)
    assert delete_run(engine, gone) is True
    assert get_run(engine, gone) is None
    kept = get_run(engine, keep)
    assert kept is not None and len(kept.trades) == 5
    assert count(engine, Trade) == 5


def test_constraint_violation_mid_insert_leaves_nothing(engine: Engine) -> None:
    trades = [make_trade(i) for i in range(1, 11)]
    trades[6] = make_trade(7, symbol=None)  # NOT NULL violation in the middle
    with pytest.raises(IntegrityError):
        save_backtest(engine, make_result(trades))
    assert count(engine, BacktestRun) == 0
    assert count(engine, Trade) == 0
    # The engine is still usable afterwards.
    save_backtest(engine, make_result([make_trade(1)]))
    assert count(engine, BacktestRun) == 1


def test_naive_datetime_is_rejected_atomically(engine: Engine) -> None:
    trades = [make_trade(1), make_trade(2, exit_time=datetime(2024, 1, 2, 12, 0))]
    with pytest.raises(StatementError, match="naive datetime"):
        save_backtest(engine, make_result(trades))
    assert count(engine, BacktestRun) == 0


def test_non_finite_money_is_rejected(engine: Engine) -> None:
    with pytest.raises(ValueError, match="finite"):
        save_backtest(engine, make_result([make_trade(1, pnl=math.nan)]))
    assert count(engine, BacktestRun) == 0


def test_non_finite_ratios_are_stored_as_null(engine: Engine) -> None:
    result = make_result([make_trade(1, pnl_pct=math.inf, mae_pct=math.nan)])
    result.metrics["sharpe_ratio"] = math.nan
    run_id = save_backtest(engine, result)
    detail = get_run(engine, run_id)
    assert detail is not None
    assert detail.sharpe_ratio is None
    assert detail.trades[0]["pnl_pct"] is None
    assert detail.trades[0]["mae_pct"] is None


def test_ten_thousand_trades_bulk_insert(engine: Engine) -> None:
    result = make_result([make_trade(i) for i in range(10_000)])
    run_id = save_backtest(engine, result)
    assert count(engine, Trade) == 10_000
    detail = get_run(engine, run_id)
    assert detail is not None and len(detail.trades) == 10_000


# --- SQLite connection behaviour ---------------------------------------------------------------


def test_sqlite_pragmas(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


def test_foreign_keys_are_enforced(engine: Engine) -> None:
    row = {
        "run_id": 999,
        "trade_type": "backtest",
        "symbol": "X",
        "side": "long",
        "entry_time": T0,
        "exit_time": T0,
        "entry_price": 1,
        "exit_price": 1,
        "quantity": 1,
        "gross_pnl": 0,
        "fees": 0,
        "pnl": 0,
    }
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(Trade), row)
    with engine.begin() as conn:  # paper/live trades have no run
        conn.execute(insert(Trade), {**row, "run_id": None, "trade_type": "paper"})
    assert count(engine, Trade) == 1


def test_deleting_a_run_row_cascades_to_trades(engine: Engine, result: BacktestResult) -> None:
    run_id = save_backtest(engine, result)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM backtest_runs WHERE id = :id"), {"id": run_id})
    assert count(engine, Trade) == 0


def test_transaction_takes_write_lock_on_first_statement(
    sqlite_engine: Engine, sqlite_url: str
) -> None:
    engine, db_url = sqlite_engine, sqlite_url
    impatient = make_engine(db_url, connect_args={"timeout": 0.2})
    try:
        with impatient.connect() as other, engine.connect() as holder:
            # Both connections are open (pragmas applied) before anyone holds a lock.
            holder.execute(text("SELECT 1"))  # autobegin -> BEGIN IMMEDIATE: a read takes the lock
            assert holder.in_transaction()
            started = time.perf_counter()
            with pytest.raises(OperationalError, match="locked"):
                other.execute(text("SELECT 1"))
            assert time.perf_counter() - started < 2.0
            other.rollback()
            # A plain sqlite3 connection confirms the lock is a write lock, not a shared one.
            raw = sqlite3.connect(db_url.removeprefix("sqlite:///"), timeout=0.1)
            try:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    raw.execute("BEGIN IMMEDIATE")
                assert raw.execute("SELECT count(*) FROM backtest_runs").fetchone() == (0,)
            finally:
                raw.close()
            holder.rollback()
        with impatient.connect() as other:
            assert other.execute(text("SELECT 1")).scalar() == 1
    finally:
        impatient.dispose()


def test_reads_do_not_wait_for_a_writer(
    sqlite_engine: Engine, result: BacktestResult, sqlite_url: str
) -> None:
    engine, db_url = sqlite_engine, sqlite_url
    save_backtest(engine, result)
    impatient = make_engine(db_url, connect_args={"timeout": 0.2})
    try:
        with engine.begin() as writer:
            writer.execute(text("UPDATE backtest_runs SET name = 'renamed'"))
            runs = list_runs(impatient)  # DEFERRED read: sees the last committed state
            assert [r.name for r in runs] == ["rsi_bot"]
            assert get_run(impatient, runs[0].id) is not None
    finally:
        impatient.dispose()


def test_make_engine_creates_parent_folders(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "atf.db"
    eng = ensure_database(f"sqlite:///{target}")
    try:
        assert target.is_file()
    finally:
        eng.dispose()
