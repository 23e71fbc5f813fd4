"""The audit writer's health for `atf status` and alerts, and its error-message hygiene."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine


@dataclass(frozen=True)
class WriterHealth:
    """The writer's state for `atf status` and alerts.

    `state`: ``ok`` (writing to the database), ``spooling`` (the database did not take the
    last write: records go to the spool until a retry succeeds) or ``closed``.
    `quarantined`: events the database refused on their own (not an outage), kept in the
    spool's quarantine file instead (``<spool file>.quarantine``); anything above 0 needs a look.
    """

    state: str
    queued: int
    spool_pending: int
    written: int
    spooled: int
    replayed: int
    failures: int
    quarantined: int
    last_error: str | None
    last_write: datetime | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None


def scrub(message: str, engine: Engine) -> str:
    """Mask the database password should a driver message echo it."""
    password = engine.url.password
    return message.replace(str(password), "***") if password else message


def pct(sorted_values: list[float], q: float) -> float | None:
    """Return the `q` quantile of `sorted_values` in milliseconds (seconds given); None if empty."""
    n = len(sorted_values)
    return sorted_values[min(n - 1, int(q * n))] * 1000.0 if n else None
