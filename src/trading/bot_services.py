"""The services a bot runs beside its strategy: order log, trade ledger, notifier (docs/modes.md).

Each is switched on by its YAML section (`logging.order_log`, `ledger`, `telegram`/`email`)
and listens to the bot's event bus, so the strategy and the broker never call them.
`BotServices.start` opens them before `BotStarted`; `BotServices.stop` closes them after
`BotStopped`: the ledger is exported, the notifier delivers what is queued, the bus is
drained so every queued order-log line is written, then the files are closed. A service
that fails to stop is logged and never fails the run.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trading.bus import EventBus

if TYPE_CHECKING:
    from notification.control import BotControl
    from notification.notifier import Notifier
    from trading.config import BotConfig
    from trading.ledger import TradeLedger
    from trading.order_logger import OrderLogger
    from trading.results import BacktestResult

log = logging.getLogger(__name__)

BUS_SPOOL = ".bus"  # in the output folder: events the queued services had not taken yet
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

    @property
    def any(self) -> bool:
        return self.order_log or self.ledger or self.notifier


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
        self.correlation_id = ""

    # ------------------------------------------------------------------ start
    async def start(self, started: datetime) -> None:
        """Open every planned service on the bus; call before BotStarted is published."""
        if self.bus is None:
            return
        try:
            if self.plan.order_log:
                self._start_order_log(self.bus)
            if self.plan.ledger:
                self._start_ledger(self.bus, started)
            if self.plan.notifier:
                await self._start_notifier(self.bus)
        except BaseException:
            await self.stop(None, None)
            raise

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

        self.correlation_id = correlation_id(self.config.bot.name, started)
        self.ledger = TradeLedger(correlation_id=self.correlation_id)
        self.ledger.subscribe(bus, self.correlation_id, attribution=self.config.ledger.attribution)

    async def _start_notifier(self, bus: EventBus) -> None:
        from notification.config import NotificationSettings
        from notification.notifier import Notifier

        cfg = self.config
        settings = NotificationSettings(telegram=cfg.telegram, email=cfg.email, notifications=cfg.notifications)
        self.notifier = Notifier(settings, bot=cfg.bot.name, initial_cash=cfg.broker.cash, control=self.control,
                                 status_dir=self.output_dir)
        self.notifier.attach(bus)
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
        if self.bus is not None:
            await self._settle_bus(self.bus)
        if self.order_logger is not None:
            logger, self.order_logger = self.order_logger, None
            logger.close()
            if result is not None:
                result.diagnostics["order_log"] = str(logger.log_dir)

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
