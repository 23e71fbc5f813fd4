"""audit trail: bot_instances, orders, order_events, fills, positions, equity_snapshots,
risk_events; paper/live round trips in trades

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01 00:00:00

Hand-written. `trades` gains `status` (existing rows: 'closed'), `bot_instance_id` and
`trade_key`, and its exit columns become nullable for open paper/live trades; on SQLite this
is a batch rebuild of `trades` (a child table only: nothing references it, so no cascade).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Types and value lists are spelled out (not imported from models): see 0001.
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MONEY = sa.Numeric(28, 10).with_variant(sa.String(40), "sqlite")
UTC_TS = sa.DateTime(timezone=True)
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

SIDES = "side IN ('buy', 'sell')"
ORDER_TYPES = "order_type IN ('market', 'limit', 'stop', 'stop_limit', 'trailing_stop')"
ORDER_STATUSES = (
    "status IN ('new', 'accepted', 'partially_filled', 'pending_cancel', 'filled', "
    "'cancelled', 'rejected', 'expired')"
)
ORDER_ROLES = "role IS NULL OR role IN ('entry', 'exit', 'stop_loss', 'take_profit')"
EVENT_KINDS = (
    "kind IN ('entry', 'exit', 'stop_loss', 'take_profit', 'cancel', 'modify', 'failed', "
    "'reconciliation')"
)
CLOSED_HAS_EXIT = (
    "status = 'open' OR (exit_time IS NOT NULL AND exit_price IS NOT NULL "
    "AND gross_pnl IS NOT NULL AND pnl IS NOT NULL)"
)


def _id() -> sa.Column:
    return sa.Column("id", BIGINT_PK, nullable=False)


def _bot(table: str) -> tuple[sa.Column, sa.ForeignKeyConstraint]:
    return (
        sa.Column("bot_instance_id", BIGINT_PK, nullable=False),
        sa.ForeignKeyConstraint(
            ["bot_instance_id"],
            ["bot_instances.id"],
            name=op.f(f"fk_{table}_bot_instance_id_bot_instances"),
        ),
    )


def upgrade() -> None:
    """Create the audit tables and let `trades` hold open paper/live round trips."""
    op.create_table(
        "bot_instances",
        _id(),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("exchange", sa.String(64), nullable=True),
        sa.Column("strategy", sa.String(), nullable=True),
        sa.Column("config_hash", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", UTC_TS, nullable=False),
        sa.Column("stopped_at", UTC_TS, nullable=True),
        sa.Column("stop_reason", sa.String(), nullable=True),
        sa.Column("last_heartbeat", UTC_TS, nullable=True),
        sa.Column("last_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bot_instances")),
        sa.CheckConstraint(
            "mode IN ('backtest', 'paper', 'live')", name=op.f("ck_bot_instances_mode")
        ),
        sa.CheckConstraint(
            "status IN ('running', 'stopped')", name=op.f("ck_bot_instances_status")
        ),
    )
    op.create_index(op.f("ix_bot_instances_name_mode"), "bot_instances", ["name", "mode"])

    op.create_table(
        "orders",
        _id(),
        *_bot("orders"),
        sa.Column("client_order_id", sa.String(36), nullable=False),
        sa.Column("venue_order_id", sa.String(128), nullable=True),
        sa.Column("trade_key", sa.String(64), nullable=True),
        sa.Column("exchange", sa.String(64), nullable=True),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("order_type", sa.String(16), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("role", sa.String(16), nullable=True),
        sa.Column("quantity", MONEY, nullable=False),
        sa.Column("price", MONEY, nullable=True),
        sa.Column("stop_price", MONEY, nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("filled_qty", MONEY, nullable=False),
        sa.Column("remaining_qty", MONEY, nullable=False),
        sa.Column("avg_fill_price", MONEY, nullable=True),
        sa.Column("fee", MONEY, nullable=False),
        sa.Column("fee_currency", sa.String(16), nullable=True),
        sa.Column("parent_client_order_id", sa.String(36), nullable=True),
        sa.Column("oco_client_order_id", sa.String(36), nullable=True),
        sa.Column("tag", sa.String(64), nullable=True),
        sa.Column("strategy", sa.String(), nullable=True),
        sa.Column("status_reason", sa.String(), nullable=True),
        sa.Column("created_at", UTC_TS, nullable=False),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint(
            "bot_instance_id",
            "client_order_id",
            name=op.f("uq_orders_bot_instance_id_client_order_id"),
        ),
        sa.CheckConstraint(SIDES, name=op.f("ck_orders_side")),
        sa.CheckConstraint(ORDER_TYPES, name=op.f("ck_orders_order_type")),
        sa.CheckConstraint(ORDER_STATUSES, name=op.f("ck_orders_status")),
        sa.CheckConstraint(ORDER_ROLES, name=op.f("ck_orders_role")),
    )
    op.create_index(
        op.f("ix_orders_bot_instance_id_status"), "orders", ["bot_instance_id", "status"]
    )
    op.create_index(op.f("ix_orders_symbol_created_at"), "orders", ["symbol", "created_at"])
    op.create_index(op.f("ix_orders_created_at"), "orders", ["created_at"])
    op.create_index(op.f("ix_orders_strategy"), "orders", ["strategy"])
    op.create_index(op.f("ix_orders_venue_order_id"), "orders", ["venue_order_id"])

    op.create_table(
        "order_events",
        _id(),
        *_bot("order_events"),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("event_key", sa.String(64), nullable=False),
        sa.Column("client_order_id", sa.String(36), nullable=True),
        sa.Column("symbol", sa.String(64), nullable=True),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(20), nullable=True),
        sa.Column("ts", UTC_TS, nullable=False),
        sa.Column("recorded_at", UTC_TS, nullable=False),
        sa.Column("payload", JSON_DOC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_events")),
        sa.UniqueConstraint(
            "bot_instance_id", "event_key", name=op.f("uq_order_events_bot_instance_id_event_key")
        ),
        sa.UniqueConstraint(
            "bot_instance_id", "seq", name=op.f("uq_order_events_bot_instance_id_seq")
        ),
        sa.CheckConstraint(EVENT_KINDS, name=op.f("ck_order_events_kind")),
    )
    op.create_index(
        op.f("ix_order_events_bot_instance_id_client_order_id"),
        "order_events",
        ["bot_instance_id", "client_order_id"],
    )
    op.create_index(op.f("ix_order_events_ts"), "order_events", ["ts"])

    op.create_table(
        "fills",
        _id(),
        sa.Column("order_event_id", BIGINT_PK, nullable=False),
        *_bot("fills"),
        sa.Column("client_order_id", sa.String(36), nullable=False),
        sa.Column("trade_key", sa.String(64), nullable=True),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("quantity", MONEY, nullable=False),
        sa.Column("price", MONEY, nullable=False),
        sa.Column("bid", MONEY, nullable=True),
        sa.Column("ask", MONEY, nullable=True),
        sa.Column("fee", MONEY, nullable=False),
        sa.Column("fee_currency", sa.String(16), nullable=True),
        sa.Column("ts", UTC_TS, nullable=False),
        sa.Column("order_type", sa.String(16), nullable=True),
        sa.Column("strategy_names", JSON_DOC, nullable=True),
        sa.Column("strategy_weights", JSON_DOC, nullable=True),
        sa.Column("correlation_id", sa.String(64), nullable=True),
        sa.Column("venue", sa.String(64), nullable=True),
        sa.Column("venue_trade_id", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fills")),
        sa.ForeignKeyConstraint(
            ["order_event_id"],
            ["order_events.id"],
            name=op.f("fk_fills_order_event_id_order_events"),
        ),
        sa.UniqueConstraint("order_event_id", name=op.f("uq_fills_order_event_id")),
        sa.UniqueConstraint("venue", "venue_trade_id", name=op.f("uq_fills_venue_venue_trade_id")),
        sa.CheckConstraint(SIDES, name=op.f("ck_fills_side")),
    )
    op.create_index(op.f("ix_fills_bot_instance_id_ts"), "fills", ["bot_instance_id", "ts"])
    op.create_index(op.f("ix_fills_symbol_ts"), "fills", ["symbol", "ts"])
    op.create_index(
        op.f("ix_fills_bot_instance_id_client_order_id"),
        "fills",
        ["bot_instance_id", "client_order_id"],
    )
    op.create_index(op.f("ix_fills_correlation_id"), "fills", ["correlation_id"])

    op.create_table(
        "positions",
        _id(),
        *_bot("positions"),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("quantity", MONEY, nullable=False),
        sa.Column("avg_entry_price", MONEY, nullable=True),
        sa.Column("realised_pnl", MONEY, nullable=False),
        sa.Column("fees", MONEY, nullable=False),
        sa.Column("trade_key", sa.String(64), nullable=True),
        sa.Column("opened_at", UTC_TS, nullable=True),
        sa.Column("updated_at", UTC_TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_positions")),
        sa.UniqueConstraint(
            "bot_instance_id", "symbol", name=op.f("uq_positions_bot_instance_id_symbol")
        ),
        sa.CheckConstraint("side IN ('flat', 'long', 'short')", name=op.f("ck_positions_side")),
    )

    op.create_table(
        "equity_snapshots",
        _id(),
        *_bot("equity_snapshots"),
        sa.Column("ts", UTC_TS, nullable=False),
        sa.Column("equity", MONEY, nullable=False),
        sa.Column("cash", MONEY, nullable=True),
        sa.Column("unrealised_pnl", MONEY, nullable=True),
        sa.Column("realised_pnl", MONEY, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_equity_snapshots")),
        sa.UniqueConstraint(
            "bot_instance_id", "ts", name=op.f("uq_equity_snapshots_bot_instance_id_ts")
        ),
    )

    op.create_table(
        "risk_events",
        _id(),
        *_bot("risk_events"),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("event_key", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("symbol", sa.String(64), nullable=True),
        sa.Column("client_order_id", sa.String(36), nullable=True),
        sa.Column("detail", sa.String(), nullable=True),
        sa.Column("ts", UTC_TS, nullable=False),
        sa.Column("recorded_at", UTC_TS, nullable=False),
        sa.Column("payload", JSON_DOC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_events")),
        sa.UniqueConstraint(
            "bot_instance_id", "event_key", name=op.f("uq_risk_events_bot_instance_id_event_key")
        ),
        sa.UniqueConstraint(
            "bot_instance_id", "seq", name=op.f("uq_risk_events_bot_instance_id_seq")
        ),
    )
    op.create_index(op.f("ix_risk_events_ts"), "risk_events", ["ts"])

    with op.batch_alter_table("trades") as batch:
        for name in ("exit_time", "exit_price", "gross_pnl", "pnl"):
            batch.alter_column(
                name, existing_type=UTC_TS if name == "exit_time" else MONEY, nullable=True
            )
        batch.add_column(sa.Column("status", sa.String(8), server_default="closed", nullable=False))
        batch.add_column(sa.Column("bot_instance_id", BIGINT_PK, nullable=True))
        batch.add_column(sa.Column("trade_key", sa.String(64), nullable=True))
        batch.create_foreign_key(
            op.f("fk_trades_bot_instance_id_bot_instances"),
            "bot_instances",
            ["bot_instance_id"],
            ["id"],
        )
        batch.create_unique_constraint(
            op.f("uq_trades_bot_instance_id_trade_key"), ["bot_instance_id", "trade_key"]
        )
        batch.create_check_constraint(
            op.f("ck_trades_status"), sa.text("status IN ('open', 'closed')")
        )
        batch.create_check_constraint(op.f("ck_trades_closed_has_exit"), sa.text(CLOSED_HAS_EXIT))
        batch.create_index(op.f("ix_trades_bot_instance_id"), ["bot_instance_id"])
        batch.create_index(op.f("ix_trades_bot_name_entry_time"), ["bot_name", "entry_time"])
        batch.create_index(op.f("ix_trades_strategy"), ["strategy"])


def downgrade() -> None:
    """Drop the audit tables and every paper/live trade; backtest trades are kept."""
    # Open trades have no exit and would break the NOT NULL columns of 0001.
    op.execute(sa.text("DELETE FROM trades WHERE bot_instance_id IS NOT NULL OR status = 'open'"))
    with op.batch_alter_table("trades") as batch:
        batch.drop_index(op.f("ix_trades_strategy"))
        batch.drop_index(op.f("ix_trades_bot_name_entry_time"))
        batch.drop_index(op.f("ix_trades_bot_instance_id"))
        batch.drop_constraint(op.f("ck_trades_closed_has_exit"), type_="check")
        batch.drop_constraint(op.f("ck_trades_status"), type_="check")
        batch.drop_constraint(op.f("uq_trades_bot_instance_id_trade_key"), type_="unique")
        batch.drop_constraint(op.f("fk_trades_bot_instance_id_bot_instances"), type_="foreignkey")
        batch.drop_column("trade_key")
        batch.drop_column("bot_instance_id")
        batch.drop_column("status")
        for name in ("exit_time", "exit_price", "gross_pnl", "pnl"):
            batch.alter_column(
                name, existing_type=UTC_TS if name == "exit_time" else MONEY, nullable=False
            )

    op.drop_index(op.f("ix_risk_events_ts"), table_name="risk_events")
    op.drop_table("risk_events")
    op.drop_table("equity_snapshots")
    op.drop_table("positions")
    for name in (
        "correlation_id",
        "bot_instance_id_client_order_id",
        "symbol_ts",
        "bot_instance_id_ts",
    ):
        op.drop_index(op.f(f"ix_fills_{name}"), table_name="fills")
    op.drop_table("fills")
    op.drop_index(op.f("ix_order_events_ts"), table_name="order_events")
    op.drop_index(
        op.f("ix_order_events_bot_instance_id_client_order_id"), table_name="order_events"
    )
    op.drop_table("order_events")
    for name in (
        "venue_order_id",
        "strategy",
        "created_at",
        "symbol_created_at",
        "bot_instance_id_status",
    ):
        op.drop_index(op.f(f"ix_orders_{name}"), table_name="orders")
    op.drop_table("orders")
    op.drop_index(op.f("ix_bot_instances_name_mode"), table_name="bot_instances")
    op.drop_table("bot_instances")
