"""Persistence of atf: backtest runs and the trading audit trail in SQLite or PostgreSQL.

See docs/persistence.md.
"""

from __future__ import annotations

from trading.persistence.audit import apply_events, event_key
from trading.persistence.bots import (
    BotInstanceInfo,
    config_hash,
    mark_bot_stopped,
    open_audit_database,
    record_heartbeat,
    register_bot_instance,
)
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
from trading.persistence.equity import record_equity_snapshot
from trading.persistence.models import (
    BacktestRun,
    Base,
    BotInstance,
    EquitySnapshot,
    FillRecord,
    OrderEventRecord,
    OrderRecord,
    PositionRecord,
    RiskEventRecord,
    Trade,
)
from trading.persistence.queries import (
    FillView,
    OrderEventView,
    OrderView,
    TradeView,
    list_fills,
    list_order_events,
    list_orders,
    list_trades,
)
from trading.persistence.recovery import (
    StoredOrder,
    load_open_orders,
    load_positions,
    record_reconciliation,
)
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
    "BotInstance",
    "BotInstanceInfo",
    "EquitySnapshot",
    "FillRecord",
    "FillView",
    "OrderEventRecord",
    "OrderEventView",
    "OrderRecord",
    "OrderView",
    "PositionRecord",
    "RiskEventRecord",
    "RunDetail",
    "RunSummary",
    "StoredOrder",
    "Trade",
    "TradeView",
    "apply_events",
    "config_hash",
    "current_revision",
    "default_db_url",
    "delete_run",
    "downgrade_database",
    "ensure_database",
    "event_key",
    "get_run",
    "head_revision",
    "list_fills",
    "list_order_events",
    "list_orders",
    "list_runs",
    "list_trades",
    "load_open_orders",
    "load_positions",
    "make_engine",
    "mark_bot_stopped",
    "open_audit_database",
    "record_equity_snapshot",
    "record_heartbeat",
    "record_reconciliation",
    "register_bot_instance",
    "resolve_db_url",
    "safe_url",
    "save_backtest",
    "upgrade_database",
]
