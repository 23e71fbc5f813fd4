"""Persistence of atf: backtest runs and trades in SQLite or PostgreSQL.

See docs/persistence.md.
"""

from __future__ import annotations

from trading.persistence.db import (
    DEFAULT_DB_URL,
    current_revision,
    default_db_url,
    downgrade_database,
    ensure_database,
    head_revision,
    make_engine,
    resolve_db_url,
    safe_url,
    upgrade_database,
)
from trading.persistence.models import BacktestRun, Base, Trade
from trading.persistence.repository import (
    RunDetail,
    RunSummary,
    delete_run,
    get_run,
    list_runs,
    save_backtest,
)

__all__ = [
    "DEFAULT_DB_URL",
    "BacktestRun",
    "Base",
    "RunDetail",
    "RunSummary",
    "Trade",
    "current_revision",
    "default_db_url",
    "delete_run",
    "downgrade_database",
    "ensure_database",
    "get_run",
    "head_revision",
    "list_runs",
    "make_engine",
    "resolve_db_url",
    "safe_url",
    "save_backtest",
    "upgrade_database",
]
