"""Bot instances: open the audit database at start, register the bot, heartbeat, stop."""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from trading.events import BotStarted, BotStopped
from trading.exceptions import DatabaseError
from trading.persistence.db import ensure_database
from trading.persistence.models import BOT_MODES, BotInstance, table

BOTS = table(BotInstance)


def open_audit_database(url: str | None = None) -> Engine:
    """Return an engine for the bot's database; refuse one that is not at the current revision.

    Unlike `atf backtest`, a bot never creates or migrates the schema itself: an empty or
    older database raises `DatabaseError` naming the command to run (`atf db upgrade`).
    """
    return ensure_database(url, auto_create=False)


@dataclass(frozen=True, slots=True)
class BotInstanceInfo:
    """The registered bot; `unclean_shutdown` is True if its last run never said it stopped."""

    id: int
    name: str
    mode: str
    resumed: bool
    unclean_shutdown: bool
    last_heartbeat: datetime | None
    last_seq: int


def config_hash(config: Mapping[str, Any] | str | bytes) -> str:
    """Return the SHA-256 of a config (a mapping is hashed as canonical JSON)."""
    if isinstance(config, Mapping):
        data = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str).encode()
    else:
        data = config.encode() if isinstance(config, str) else bytes(config)
    return hashlib.sha256(data).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _check_mode(mode: str) -> None:
    if mode not in BOT_MODES:
        hint = difflib.get_close_matches(mode, BOT_MODES, n=1)
        more = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ValueError(f"mode must be one of {', '.join(BOT_MODES)}, got {mode!r}{more}")


def register_bot_instance(
    engine: Engine,
    name: str,
    mode: str,
    *,
    config_hash: str | None = None,
    exchange: str | None = None,
    strategy: str | None = None,
    started_at: datetime | None = None,
    resume: bool = True,
) -> BotInstanceInfo:
    """Mark the bot running and return its instance (the id every record of this run carries).

    With `resume` (the default, and what a restart after a crash needs) the latest instance
    of `name` in `mode` is reused, so its open orders, positions and event sequence carry on;
    otherwise, or if there is none, a new instance starts from nothing.
    """
    _check_mode(mode)
    now = started_at or _now()
    with engine.begin() as conn:
        previous = None
        if resume:
            previous = conn.execute(
                select(BOTS.c.id, BOTS.c.status, BOTS.c.last_heartbeat, BOTS.c.last_seq)
                .where(BOTS.c.name == name, BOTS.c.mode == mode)
                .order_by(BOTS.c.id.desc())
                .limit(1)
                .with_for_update()
            ).one_or_none()
        fields = {
            "status": "running",
            "started_at": now,
            "stopped_at": None,
            "stop_reason": None,
            "last_heartbeat": now,
            "config_hash": config_hash,
            "exchange": exchange,
            "strategy": strategy,
        }
        if previous is None:
            new_id = conn.execute(
                insert(BOTS)
                .values(name=name, mode=mode, created_at=now, last_seq=0, **fields)
                .returning(BOTS.c.id)
            ).scalar_one()
            return BotInstanceInfo(int(new_id), name, mode, False, False, None, 0)
        conn.execute(update(BOTS).where(BOTS.c.id == previous.id).values(**fields))
        return BotInstanceInfo(
            id=int(previous.id),
            name=name,
            mode=mode,
            resumed=True,
            unclean_shutdown=previous.status == "running",
            last_heartbeat=previous.last_heartbeat,
            last_seq=int(previous.last_seq),
        )


def _set(engine: Engine, bot_instance_id: int, **values: Any) -> None:
    with engine.begin() as conn:
        done = conn.execute(update(BOTS).where(BOTS.c.id == bot_instance_id).values(**values))
        if done.rowcount == 0:
            raise DatabaseError(f"no bot instance with id {bot_instance_id}")


def record_heartbeat(engine: Engine, bot_instance_id: int, ts: datetime | None = None) -> None:
    """Record that the bot is alive (a stale heartbeat on a running bot means it died)."""
    _set(engine, bot_instance_id, last_heartbeat=ts or _now())


def mark_bot_stopped(
    engine: Engine, bot_instance_id: int, *, reason: str = "", ts: datetime | None = None
) -> None:
    """Record a clean stop: a later `register_bot_instance` will not report a crash."""
    when = ts or _now()
    _set(
        engine,
        bot_instance_id,
        status="stopped",
        stopped_at=when,
        stop_reason=reason or None,
        last_heartbeat=when,
    )


def record_bot_event(conn: Connection, bot_instance_id: int, e: BotStarted | BotStopped) -> None:
    """Mirror a BotStarted / BotStopped from the bus on the instance row."""
    if isinstance(e, BotStarted):
        values: dict[str, Any] = {
            "status": "running",
            "started_at": e.ts,
            "stopped_at": None,
            "stop_reason": None,
        }
    else:
        values = {"status": "stopped", "stopped_at": e.ts, "stop_reason": e.reason or None}
    conn.execute(update(BOTS).where(BOTS.c.id == bot_instance_id).values(**values))
