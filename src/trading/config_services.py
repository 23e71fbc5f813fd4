"""The `logging`, `ledger` and `persistence` sections of the bot YAML: the services a bot runs
(docs/modes.md).

The `telegram`, `email` and `notifications` sections are `notification.config`'s. An
`enabled: null` leaves the choice to the mode (`trading.bot_services.plan_services`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class StrictModel(BaseModel):
    """A frozen model that rejects unknown keys (every section of the bot YAML)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class OrderLogSection(StrictModel):
    """The order event log (docs/order-log.md): trading_orders.log and trading_orders.jsonl."""

    enabled: bool | None = Field(
        None, description="Write the order log; null: on for paper and live runs, off for backtests."
    )
    dir: str = Field("logs", description="Log folder; a relative path is inside the bot's output folder.")
    max_bytes: int = Field(10 * 1024 * 1024, ge=0, description="Rotate each file at this size; 0: never.")
    backup_count: int = Field(5, ge=0, description="Rotated files kept (gzipped unless compress is false).")
    compress: bool = Field(True, description="Gzip rotated files.")
    propagate: bool = Field(False, description="Also send order events to the application's log handlers.")

    @model_validator(mode="after")
    def _backups_for_rotation(self) -> OrderLogSection:
        if self.max_bytes and self.backup_count < 1:
            raise ValueError("backup_count must be at least 1 when max_bytes is set (0 max_bytes: never rotate)")
        return self


class LoggingSection(StrictModel):
    order_log: OrderLogSection = Field(default_factory=OrderLogSection)


class LedgerSection(StrictModel):
    """The trade ledger (docs/ledger.md): one entry per fill, exported as JSON after the run."""

    enabled: bool | None = Field(
        None, description="Record and export the ledger; null: on for paper and live runs, off for backtests."
    )
    export_url: str = Field(
        "ledgers", description="Folder or fsspec URL (s3://bucket/prefix); a relative path is inside the "
        "bot's output folder.",
    )
    attribution: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="symbol ('*': every other symbol) -> {strategy: weight}, weights summing to 1."
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options of export_url (no secrets: use the standard AWS variables)."
    )

    @field_validator("attribution")
    @classmethod
    def _weights(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        from trading.ledger import validate_attribution

        validate_attribution(v)
        return v


class PersistenceSection(StrictModel):
    """The audit trail of paper and live bots (docs/persistence.md, "Configuration").

    The fields are those of `trading.audit_session.PersistenceSettings` (a test keeps the
    defaults equal) plus `enabled`; `persistence:` with nothing under it takes every default.
    """

    enabled: bool | None = Field(
        None,
        description="Record orders, fills, trades and positions in the database; null: on for paper and live "
        "runs when this section is in the YAML or ATF_DATABASE_URL is set. Backtests never (they save "
        "backtest_runs through the database section).",
    )
    url: str | None = Field(
        None,
        description="SQLAlchemy URL; write a password as ${VAR}. Default: database.url, else ATF_DATABASE_URL, "
        "else sqlite:///$ATF_DB_PATH (./atf.db). The database must be at head: `atf db upgrade`.",
    )
    spool_dir: str | None = Field(
        None,
        description="Spool files and saved paper broker states. Default: the database's own folder, "
        "<database file>-spool beside a SQLite file, else $XDG_STATE_HOME/atf/spool/<database> "
        "(~/.local/state); never inside --output, so a restarted bot finds what a crashed one left. "
        "A relative path is from the working directory, like a relative SQLite path.",
    )
    batch_size: int = Field(500, ge=1, description="Most events written per transaction.")
    batch_delay: float = Field(0.0, ge=0, description="Seconds the writer waits for a batch to fill.")
    retry_initial: float = Field(0.1, gt=0, description="First wait (s) before retrying a failed database.")
    retry_max: float = Field(5.0, gt=0, description="Longest wait (s) between retries (doubling from retry_initial).")
    heartbeat_interval: float = Field(10.0, gt=0, description="Seconds between heartbeats of the bot instance.")
    equity_interval: float = Field(60.0, gt=0, description="Seconds between equity snapshots.")
    state_interval: float = Field(1.0, gt=0, description="Seconds between saves of the paper broker state.")
    resume: bool = Field(
        True, description="Resume the bot instance of this name (crash recovery); false: a new instance."
    )
    close_timeout: float = Field(
        30.0, ge=0, description="Seconds the stop waits for the database before leaving the rest in the spool."
    )
    checkpoint_interval: float | None = Field(
        1.0, gt=0, description="SQLite: seconds between WAL checkpoints, run on a thread of their own instead of "
        "in the writer's commits (sooner when the WAL passes 4 MB); null: SQLite's own, in the commits.",
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_section(cls, data: Any) -> Any:
        return {} if data is None else data  # `persistence:` alone switches the defaults on

    @model_validator(mode="after")
    def _retry_order(self) -> PersistenceSection:
        if self.retry_max < self.retry_initial:
            raise ValueError(
                f"retry_max ({self.retry_max}) must be at least retry_initial ({self.retry_initial})"
            )
        return self
