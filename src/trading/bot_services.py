"""The services a bot runs beside its strategy: audit trail, order log, trade ledger, notifier.

Each is switched on by its YAML section (`persistence`, `logging.order_log`, `ledger`,
`telegram`/`email`) and listens to the bot's event bus, so the strategy and the broker never
call them (docs/modes.md). `BotServices.start` opens them before `BotStarted`, the audit
trail first: a database that refuses the bot stops it before anything else starts.
`BotServices.stop` closes them after `BotStopped`: the ledger is exported, the notifier
delivers what is queued, the audit trail is flushed and the instance marked stopped, the bus
is drained so every queued order-log line is written, then the files are closed. A service
that fails to stop is logged and never fails the run; but when crash recovery refused to
trade, `stop` raises its `ReconciliationMismatch` once everything is closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trading.bus import EventBus

if TYPE_CHECKING:
    from notification.control import BotControl
    from notification.notifier import Notifier
    from trading.audit_session import AuditSession, PersistenceSettings
    from trading.config import BotConfig
    from trading.ledger import TradeLedger
    from trading.order_logger import OrderLogger
    from trading.results import BacktestResult

log = logging.getLogger(__name__)

BUS_SPOOL = ".bus"  # in the output folder: events the queued services had not taken yet
OLD_SPOOL_DIR = "state/audit-spool"  # the audit spool's default before it left the output folder
BUS_QUEUE = 8192
DRAIN_TIMEOUT = 30.0
NOTIFIER_CLOSE_TIMEOUT = 5.0
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


@dataclass(frozen=True)
class ServicePlan:
    """Which services one run starts (from the config, the mode and the output folder)."""

    order_log: bool = False
    ledger: bool = False
    notifier: bool = False
    audit: bool = False

    @property
    def any(self) -> bool:
        return self.order_log or self.ledger or self.notifier or self.audit


def plan_services(config: BotConfig, mode: str, output_dir: Path | None) -> ServicePlan:
    """Resolve the `enabled: null` defaults: on for paper and live runs that have an output folder.

    Backtests stay fast: nothing runs unless a section says `enabled: true`. A paper or live
    bot created without an output folder (a script, a test) writes no files unless asked.
    """
    auto = mode != "backtest" and output_dir is not None
    order_log, ledger = config.logging.order_log.enabled, config.ledger.enabled
    return ServicePlan(
        order_log=auto if order_log is None else order_log,
        ledger=auto if ledger is None else ledger,
        notifier=config.telegram.enabled or config.email.enabled,
        audit=audit_enabled(config, mode),
    )


def audit_enabled(config: BotConfig, mode: str) -> bool:
    """Resolve `persistence.enabled: null`: on for paper and live runs whose YAML has a
    `persistence:` section, or when ATF_DATABASE_URL names a database. Never for backtests
    (they save `backtest_runs` through the `database` section)."""
    if mode == "backtest":
        return False
    if config.persistence.enabled is not None:
        return config.persistence.enabled
    from trading.persistence.db import ENV_DATABASE_URL

    return "persistence" in config.model_fields_set or bool(os.environ.get(ENV_DATABASE_URL))


def audit_settings(config: BotConfig, output_dir: Path | None) -> PersistenceSettings:
    """Return the writer's settings: the URL falls back to `database.url` (then the
    environment); the spool folder does not depend on `output_dir`, so a bot restarted with
    another ``--output`` replays what its predecessor left. Unset, it is the database's
    (`default_spool_dir`); a relative `spool_dir` is from the working directory, like a
    relative SQLite path."""
    from trading.audit_session import PersistenceSettings

    section = config.persistence
    values = section.model_dump(exclude={"enabled"})
    values["url"] = section.url or config.database.url
    if section.spool_dir is not None:
        values["spool_dir"] = os.path.abspath(os.path.expanduser(section.spool_dir))
    elif output_dir is not None:
        _warn_of_old_spool(output_dir / OLD_SPOOL_DIR, values["url"])
    return PersistenceSettings(**values)


def _warn_of_old_spool(folder: Path, url: str | None) -> None:
    """Say so if the spool folder inside the output folder (before 2026-12) holds records."""
    left = [p for p in folder.glob("audit-*.jsonl") if p.stat().st_size > 0] if folder.is_dir() else []
    if left:
        from trading.persistence.spool_location import default_spool_dir

        log.warning(
            "%d audit spool file(s) in %s, the spool folder of older atf versions, are not "
            "replayed from there: move them and their .broker.json files to %s (the default "
            "now), or set persistence.spool_dir: %s", len(left), folder, default_spool_dir(url),
            folder.resolve(),
        )


def resolve_location(value: str, output_dir: Path | None) -> str:
    """Return a relative path inside `output_dir` (when there is one); absolute paths and URLs as they are."""
    if _URL.match(value) or Path(value).is_absolute() or output_dir is None:
        return value
    return str(output_dir / value)


def correlation_id(bot: str, start: datetime) -> str:
    """Return the ledger's run id, ``{bot}-{start:%Y%m%dT%H%M%S}`` (the bot name cut to fit 64 characters)."""
    return f"{bot[:48]}-{start:%Y%m%dT%H%M%S}"


class BotServices:
    """Start and stop the order log, the trade ledger and the notifier of one bot run."""

    def __init__(
        self,
        config: BotConfig,
        mode: str,
        *,
        output_dir: Path | None = None,
        control: BotControl | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.config = config
        self.mode = mode
        self.output_dir = output_dir
        self.control = control
        self.plan = plan_services(config, mode, output_dir)
        # A bus of our own when a service needs one and none was given; it is closed at stop.
        self.owns_bus = bus is None and self.plan.any
        if self.owns_bus:
            spool = output_dir / BUS_SPOOL if output_dir is not None else None
            bus = EventBus(spool_dir=spool, queue_size=BUS_QUEUE)
        self.bus = bus
        self.order_logger: OrderLogger | None = None
        self.ledger: TradeLedger | None = None
        self.notifier: Notifier | None = None
        self.audit: AuditSession | None = None
        self.correlation_id = ""

    # ------------------------------------------------------------------ start
    async def start(self, started: datetime) -> None:
        """Open every planned service on the bus; call before BotStarted is published."""
        if self.bus is None:
            return
        # The run's id: on the ledger's entries and the audit trail's fills alike.
        self.correlation_id = correlation_id(self.config.bot.name, started)
        try:
            if self.plan.audit:
                await self._start_audit(self.bus)
            if self.plan.order_log:
                self._start_order_log(self.bus)
            if self.plan.ledger:
                self._start_ledger(self.bus, started)
            if self.plan.notifier:
                await self._start_notifier(self.bus)
        except BaseException:
            await self.stop(None, None)
            raise

    async def _start_audit(self, bus: EventBus) -> None:
        from trading.audit_session import attach_config_audit

        control = self.control

        def refuse(_err: Exception) -> None:  # the mismatch is raised by `stop`
            if control is not None:
                control.request_stop("reconciliation_mismatch")

        settings = audit_settings(self.config, self.output_dir)
        self.audit = await asyncio.to_thread(
            attach_config_audit, bus, self.config, self.mode, settings, on_refuse=refuse,
            correlation_id=self.correlation_id,
        )

    def _start_order_log(self, bus: EventBus) -> None:
        from trading.order_logger import OrderLogger

        section, broker = self.config.logging.order_log, self.config.broker.type
        self.order_logger = OrderLogger(
            resolve_location(section.dir, self.output_dir), max_bytes=section.max_bytes,
            backup_count=section.backup_count, compress=section.compress, broker=broker,
            propagate=section.propagate, secrets=self._secrets(),
        )
        name = f"order_log-{self.config.bot.name}"
        try:
            self.order_logger.subscribe(bus, broker=broker, name=name)  # queued: writes off the bar thread
        except ValueError as exc:
            if "spool_dir" not in str(exc):
                raise
            # A bus without a spool folder takes no queued subscriber: write inside publish.
            self.order_logger.subscribe(bus, broker=broker, inline=True, name=f"{name}-inline")

    def _start_ledger(self, bus: EventBus, started: datetime) -> None:
        from trading.ledger import TradeLedger

        self.correlation_id = self.correlation_id or correlation_id(self.config.bot.name, started)
        self.ledger = TradeLedger(correlation_id=self.correlation_id)
        self.ledger.subscribe(bus, self.correlation_id, attribution=self.config.ledger.attribution)

    async def _start_notifier(self, bus: EventBus) -> None:
        from notification.config import NotificationSettings
        from notification.notifier import Notifier

        cfg = self.config
        settings = NotificationSettings(telegram=cfg.telegram, email=cfg.email, notifications=cfg.notifications)
        self.notifier = Notifier(settings, bot=cfg.bot.name, initial_cash=cfg.broker.cash, control=self.control,
                                 status_dir=self.output_dir)
        self.notifier.attach(bus, told=None if self.audit is None else self.audit.retold)
        await asyncio.to_thread(self.notifier.start)  # returns once its loop runs; connects in the background

    def _secrets(self) -> list[str]:
        cfg = self.config
        values = (cfg.telegram.bot_token, cfg.email.password)
        return [v.get_secret_value() for v in values if v is not None]

    # ------------------------------------------------------------------ stop
    async def stop(self, result: BacktestResult | None, state: dict[str, Any] | None) -> None:
        """Export the ledger (into `result.diagnostics`), close the notifier, drain the bus, close the log.

        Call after BotStopped (or BotError) is published; `result` is None when the run failed.
        """
        if self.ledger is not None:
            outcome = await self._export_ledger()
            if result is not None:
                result.diagnostics["ledger"] = outcome
        if self.notifier is not None:
            notifier, self.notifier = self.notifier, None
            if result is not None:
                notifier.status.load_result(result, state)
            await asyncio.to_thread(notifier.close, NOTIFIER_CLOSE_TIMEOUT)
        if self.audit is not None and not self.audit.closed:
            await self._close_audit(self.audit, result)
        if self.bus is not None:
            await self._settle_bus(self.bus)
        if self.order_logger is not None:
            logger, self.order_logger = self.order_logger, None
            logger.close()
            if result is not None:
                result.diagnostics["order_log"] = str(logger.log_dir)
        if self.audit is not None and result is not None:
            self.audit.raise_if_refused()  # a failed run raises its own error instead

    async def _close_audit(self, audit: AuditSession, result: BacktestResult | None) -> None:
        """Flush the audit trail and mark the instance stopped (with the stop reason)."""
        reason = "error" if result is None else str(result.diagnostics.get("stop_reason") or "end_of_data")
        try:
            all_written = await asyncio.to_thread(audit.close, reason)
        except Exception:  # what was not written is in the spool
            log.exception("audit trail of %s not closed cleanly", self.config.bot.name)
            all_written = False
        if result is not None:
            rec = audit.recovery
            result.diagnostics["audit"] = {
                "database": audit.health()["database"],
                "bot_instance_id": audit.info.id,
                "resumed": audit.info.resumed,
                "all_written": all_written,
                "spool": str(audit.writer.spool.path),
                "quarantined": audit.writer.quarantined,  # refused records, kept in the file below
                "quarantine": str(audit.writer.spool.quarantine_path),
                "restored_events": 0 if rec is None else len(rec.lost),
                "refused": None if audit.refusal is None else str(audit.refusal),
            }

    async def _export_ledger(self) -> dict[str, Any]:
        assert self.ledger is not None
        from trading.config import redact

        section = self.config.ledger
        url = resolve_location(section.export_url, self.output_dir)
        outcome: dict[str, Any] = {"correlation_id": self.correlation_id, "entries": self.ledger.total_entries}
        try:
            outcome["url"] = await asyncio.to_thread(
                self.ledger.export, url, storage_options=section.storage_options or None
            )
        except Exception as exc:  # noqa: BLE001 - an export failure never fails the run
            where, why = redact(url), redact(f"{type(exc).__name__}: {exc}")
            log.error("trade ledger export to %s failed: %s", where, why)
            outcome["error"] = why
        return outcome

    async def _settle_bus(self, bus: EventBus) -> None:
        """Let the queued services write what was published; close the bus when it is ours."""
        try:
            if self.owns_bus:
                await bus.close(DRAIN_TIMEOUT)  # whatever is left goes to the spool, not lost
            else:
                await bus.drain(DRAIN_TIMEOUT)
        except Exception:
            log.warning("event bus not drained within %.0f s; the order log may miss its last events",
                        DRAIN_TIMEOUT, exc_info=True)
