"""Save, list, show and delete backtest runs."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine, Row

from trading.persistence.columns import json_safe
from trading.persistence.db import read_connection
from trading.persistence.models import BacktestRun, Trade, finite_or_none, table, to_decimal

if TYPE_CHECKING:
    from trading.results import BacktestResult, TradeRecord

_RUNS = table(BacktestRun)
_TRADES = table(Trade)

_SUMMARY_COLUMNS = (
    _RUNS.c.id,
    _RUNS.c.run_uuid,
    _RUNS.c.name,
    _RUNS.c.started_at,
    _RUNS.c.symbols,
    _RUNS.c.timeframe,
    _RUNS.c.bars,
    _RUNS.c.total_trades,
    _RUNS.c.total_pnl,
    _RUNS.c.win_rate,
    _RUNS.c.sharpe_ratio,
    _RUNS.c.max_drawdown_pct,
    _RUNS.c.final_value,
)
_DETAIL_COLUMNS = (
    _RUNS.c.initial_cash,
    _RUNS.c.data_start,
    _RUNS.c.data_end,
    _RUNS.c.metrics,
    _RUNS.c.config,
    _RUNS.c.report_path,
)
#: Keys of each dict in `RunDetail.trades`, in display order.
TRADE_FIELDS: tuple[str, ...] = tuple(c.name for c in _TRADES.columns if c.name != "run_id")


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One line of `atf runs list`."""

    id: int
    run_uuid: str
    name: str
    started_at: datetime
    symbols: list[str]
    timeframe: str
    bars: int
    total_trades: int
    total_pnl: Decimal
    win_rate: float | None
    sharpe_ratio: float | None
    max_drawdown_pct: float | None
    final_value: Decimal


@dataclass(frozen=True, slots=True)
class RunDetail(RunSummary):
    """A saved run with its metrics, config and trades (`atf runs show`)."""

    initial_cash: Decimal
    data_start: datetime | None
    data_end: datetime | None
    metrics: dict[str, Any]
    config: dict[str, Any]
    report_path: str | None
    trades: list[dict[str, Any]] = field(default_factory=list)


def save_backtest(
    engine: Engine,
    result: BacktestResult,
    *,
    report_path: str | None = None,
    started_at: datetime | None = None,
) -> int:
    """Store `result` and all its trades in one transaction; return the new run id.

    `started_at` is when the run was executed (default: now, UTC).
    """
    trades = list(result.trades)
    run_row = _run_row(result, trades, report_path=report_path, started_at=started_at)
    strategy = _strategy_name(result)
    with engine.begin() as conn:
        run_id = conn.execute(insert(_RUNS).returning(_RUNS.c.id), run_row).scalar_one()
        if trades:
            rows = [
                _trade_row(t, run_id=run_id, bot=result.name, strategy=strategy) for t in trades
            ]
            conn.execute(insert(_TRADES), rows)
    return int(run_id)


def list_runs(
    engine: Engine, *, limit: int | None = 20, name: str | None = None
) -> list[RunSummary]:
    """Return the newest runs first, optionally only those called `name` (`limit=None`: all)."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be positive or None, got {limit}")
    stmt = select(*_SUMMARY_COLUMNS).order_by(_RUNS.c.started_at.desc(), _RUNS.c.id.desc())
    if name is not None:
        stmt = stmt.where(_RUNS.c.name == name)
    if limit is not None:
        stmt = stmt.limit(limit)
    with read_connection(engine) as conn:
        return [_summary(row) for row in conn.execute(stmt)]


def get_run(engine: Engine, run_id: int) -> RunDetail | None:
    """Return the run with `run_id` and its trades (in the order they were saved), or None."""
    with read_connection(engine) as conn, conn.begin():
        row = conn.execute(
            select(*_SUMMARY_COLUMNS, *_DETAIL_COLUMNS).where(_RUNS.c.id == run_id)
        ).one_or_none()
        if row is None:
            return None
        trade_rows = conn.execute(
            select(*(_TRADES.c[k] for k in TRADE_FIELDS))
            .where(_TRADES.c.run_id == run_id)
            .order_by(_TRADES.c.id)
        )
        trades = [dict(r._mapping) for r in trade_rows]
    m = row._mapping
    return RunDetail(
        **_summary_fields(row),
        initial_cash=m["initial_cash"],
        data_start=m["data_start"],
        data_end=m["data_end"],
        metrics=m["metrics"],
        config=m["config"],
        report_path=m["report_path"],
        trades=trades,
    )


def delete_run(engine: Engine, run_id: int) -> bool:
    """Delete a run and its trades; return False if there was no such run."""
    with engine.begin() as conn:
        conn.execute(delete(_TRADES).where(_TRADES.c.run_id == run_id))
        return conn.execute(delete(_RUNS).where(_RUNS.c.id == run_id)).rowcount > 0


# --- row building ----------------------------------------------------------------------------


def _run_row(
    result: BacktestResult,
    trades: list[TradeRecord],
    *,
    report_path: str | None,
    started_at: datetime | None,
) -> dict[str, Any]:
    metrics = json_safe(dict(result.metrics))
    total_pnl = sum((to_decimal(t.pnl) for t in trades), Decimal(0))
    win_rate = _metric(metrics, "win_rate")
    if win_rate is None and trades:
        win_rate = 100.0 * sum(1 for t in trades if t.pnl > 0) / len(trades)
    return {
        "run_uuid": str(uuid.uuid4()),
        "name": result.name,
        "symbols": [str(s) for s in result.symbols],
        "timeframe": result.timeframe,
        "started_at": started_at or datetime.now(UTC),
        "data_start": result.start,
        "data_end": result.end,
        "bars": int(result.bars),
        "initial_cash": result.initial_cash,
        "final_value": result.final_value,
        "total_trades": len(trades),
        "total_pnl": total_pnl,
        "win_rate": win_rate,
        "sharpe_ratio": _metric(metrics, "sharpe_ratio", "sharpe"),
        "max_drawdown_pct": _metric(metrics, "max_drawdown_pct"),
        "metrics": metrics,
        "config": json_safe(dict(result.config)),
        "report_path": None if report_path is None else str(report_path),
    }


def _trade_row(t: TradeRecord, *, run_id: int, bot: str, strategy: str | None) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "trade_no": t.trade_id,
        "trade_type": "backtest",
        "bot_name": bot,
        "symbol": t.symbol,
        "side": t.side,
        "entry_time": t.entry_time,
        "exit_time": t.exit_time,
        "entry_price": t.entry_price,
        "exit_price": t.exit_price,
        "quantity": t.quantity,
        "gross_pnl": t.gross_pnl,
        "fees": t.fees,
        "pnl": t.pnl,
        "pnl_pct": finite_or_none(t.pnl_pct),
        "exit_reason": t.exit_reason,
        "entry_tag": t.entry_tag,
        "strategy": strategy,
        "bars_held": None if t.bars_held is None else int(t.bars_held),
        "mae_pct": finite_or_none(t.mae_pct),
        "mfe_pct": finite_or_none(t.mfe_pct),
    }


def _strategy_name(result: BacktestResult) -> str | None:
    """Find the strategy name in the config: ``strategy: X`` or ``strategy: {name|class: X}``."""
    strategy = result.config.get("strategy") if isinstance(result.config, Mapping) else None
    if isinstance(strategy, str):
        return strategy
    if isinstance(strategy, Mapping):
        for key in ("name", "class", "type"):
            if isinstance(strategy.get(key), str):
                return strategy[key]
    return None


def _metric(metrics: Mapping[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return finite_or_none(value)
    return None


def _summary_fields(row: Row[*tuple[Any, ...]]) -> dict[str, Any]:
    m = row._mapping
    return {c.name: m[c.name] for c in _SUMMARY_COLUMNS}


def _summary(row: Row[*tuple[Any, ...]]) -> RunSummary:
    return RunSummary(**_summary_fields(row))
