"""Records the audit writer queues beside the bus events: equity samples and reconciliations.

They are `Event`s so that they share the bus codec, the spool and the writer's order: an
equity sample or a reconciliation is written after every event published before it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from trading.events import Event


@dataclass(frozen=True, kw_only=True)
class EquitySampled(Event):
    """The account's value at `ts` (written to ``equity_snapshots``)."""

    equity: Decimal
    cash: Decimal | None = None
    unrealised_pnl: Decimal | None = None
    realised_pnl: Decimal | None = None


@dataclass(frozen=True, kw_only=True)
class Reconciled(Event):
    """One correction or mismatch found by crash recovery (an ``order_events`` row of kind
    ``reconciliation``); `reason` is an UPPER_SNAKE code, `details` canonical JSON text."""

    reason: str
    symbol: str | None = None
    client_order_id: str | None = None
    details: str = "{}"

    @classmethod
    def of(
        cls,
        ts: Any,
        reason: str,
        *,
        symbol: str | None = None,
        client_order_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Reconciled:
        text = json.dumps(dict(details or {}), sort_keys=True, separators=(",", ":"), default=str)
        return cls(
            ts=ts, reason=reason, symbol=symbol, client_order_id=client_order_id, details=text
        )

    def details_dict(self) -> dict[str, Any]:
        return dict(json.loads(self.details))
