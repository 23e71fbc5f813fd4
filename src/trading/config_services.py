"""The `logging` and `ledger` sections of the bot YAML: the services a bot runs (docs/modes.md).

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
