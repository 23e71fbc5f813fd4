"""Persistence of atf: backtest runs and the trading audit trail in SQLite or PostgreSQL.

See docs/persistence.md. The bot-level API (`attach_audit`, `AuditSession`,
`PersistenceSettings`, `ReconciliationMismatch`) lives in `trading.audit_session` and
`trading.recovery`, which build on this package; it is re-exported here on first use
(`__getattr__`), so importing this package never imports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trading.persistence.audit import apply_events, event_key
from trading.persistence.audit_events import EquitySampled, Reconciled
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
from trading.persistence.spool import EventSpool, SpoolChunk, spool_path
from trading.persistence.writer import AUDITED, AuditWriter, WriterHealth

if TYPE_CHECKING:
    from trading.audit_session import (
        AuditSession,
        PersistenceSettings,
        attach_audit,
        attach_audit_to_bot,
        attach_config_audit,
    )
    from trading.recovery import ReconciliationMismatch

# name -> module of the names re-exported lazily (they import this package: no cycle)
_LAZY = {
    "AuditSession": "trading.audit_session",
    "PersistenceSettings": "trading.audit_session",
    "attach_audit": "trading.audit_session",
    "attach_audit_to_bot": "trading.audit_session",
    "attach_config_audit": "trading.audit_session",
    "ReconciliationMismatch": "trading.recovery",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "AUDITED",
    "DEFAULT_DB_URL",
    "AuditSession",
    "AuditWriter",
    "BacktestRun",
    "Base",
    "BotInstance",
    "BotInstanceInfo",
    "EquitySampled",
    "EquitySnapshot",
    "EventSpool",
    "FillRecord",
    "FillView",
    "OrderEventRecord",
    "OrderEventView",
    "OrderRecord",
    "OrderView",
    "PersistenceSettings",
    "PositionRecord",
    "Reconciled",
    "ReconciliationMismatch",
    "RiskEventRecord",
    "RunDetail",
    "RunSummary",
    "SpoolChunk",
    "StoredOrder",
    "Trade",
    "TradeView",
    "WriterHealth",
    "apply_events",
    "attach_audit",
    "attach_audit_to_bot",
    "attach_config_audit",
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
    "spool_path",
    "upgrade_database",
]
