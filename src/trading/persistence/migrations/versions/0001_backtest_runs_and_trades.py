"""backtest_runs and trades

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Column types are spelled out here (not imported from models) so this revision never
# changes when the models do, and names use op.f() so the naming convention of
# the metadata is not applied twice. Money: NUMERIC(28, 10), decimal text on SQLite.
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MONEY = sa.Numeric(28, 10).with_variant(sa.String(40), "sqlite")
UTC_TS = sa.DateTime(timezone=True)
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    """Create backtest_runs and trades."""
    op.create_table(
        "backtest_runs",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("run_uuid", sa.String(36), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("symbols", JSON_DOC, nullable=False),
        sa.Column("timeframe", sa.String(), nullable=False),
        sa.Column("started_at", UTC_TS, nullable=False),
        sa.Column("data_start", UTC_TS, nullable=True),
        sa.Column("data_end", UTC_TS, nullable=True),
        sa.Column("bars", sa.Integer(), nullable=False),
        sa.Column("initial_cash", MONEY, nullable=False),
        sa.Column("final_value", MONEY, nullable=False),
        sa.Column("total_trades", sa.Integer(), nullable=False),
        sa.Column("total_pnl", MONEY, nullable=False),
        sa.Column("win_rate", sa.Float(), nullable=True),
        sa.Column("sharpe_ratio", sa.Float(), nullable=True),
        sa.Column("max_drawdown_pct", sa.Float(), nullable=True),
        sa.Column("metrics", JSON_DOC, nullable=False),
        sa.Column("config", JSON_DOC, nullable=False),
        sa.Column("report_path", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backtest_runs")),
        sa.UniqueConstraint("run_uuid", name=op.f("uq_backtest_runs_run_uuid")),
    )
    op.create_index(op.f("ix_backtest_runs_name"), "backtest_runs", ["name"])
    op.create_index(op.f("ix_backtest_runs_started_at"), "backtest_runs", ["started_at"])

    op.create_table(
        "trades",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("run_id", BIGINT_PK, nullable=True),
        sa.Column("trade_no", sa.Integer(), nullable=True),
        sa.Column("trade_type", sa.String(16), nullable=False),
        sa.Column("bot_name", sa.String(), nullable=True),
        sa.Column("symbol", sa.String(), nullable=False),
        sa.Column("side", sa.String(), nullable=False),
        sa.Column("entry_time", UTC_TS, nullable=False),
        sa.Column("exit_time", UTC_TS, nullable=False),
        sa.Column("entry_price", MONEY, nullable=False),
        sa.Column("exit_price", MONEY, nullable=False),
        sa.Column("quantity", MONEY, nullable=False),
        sa.Column("gross_pnl", MONEY, nullable=False),
        sa.Column("fees", MONEY, nullable=False),
        sa.Column("pnl", MONEY, nullable=False),
        sa.Column("pnl_pct", sa.Float(), nullable=True),
        sa.Column("exit_reason", sa.String(), nullable=True),
        sa.Column("entry_tag", sa.String(), nullable=True),
        sa.Column("strategy", sa.String(), nullable=True),
        sa.Column("bars_held", sa.Integer(), nullable=True),
        sa.Column("mae_pct", sa.Float(), nullable=True),
        sa.Column("mfe_pct", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trades")),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["backtest_runs.id"],
            name=op.f("fk_trades_run_id_backtest_runs"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "trade_type IN ('backtest', 'paper', 'live')", name=op.f("ck_trades_trade_type")
        ),
    )
    op.create_index(op.f("ix_trades_run_id"), "trades", ["run_id"])
    op.create_index(op.f("ix_trades_symbol_exit_time"), "trades", ["symbol", "exit_time"])


def downgrade() -> None:
    """Drop trades and backtest_runs (and every row in them)."""
    op.drop_index(op.f("ix_trades_symbol_exit_time"), table_name="trades")
    op.drop_index(op.f("ix_trades_run_id"), table_name="trades")
    op.drop_table("trades")
    op.drop_index(op.f("ix_backtest_runs_started_at"), table_name="backtest_runs")
    op.drop_index(op.f("ix_backtest_runs_name"), table_name="backtest_runs")
    op.drop_table("backtest_runs")
