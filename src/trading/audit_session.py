"""attach_audit: one call gives a bot its audit trail, spool and crash recovery.

    session = attach_audit(bus, name="rsi_bot", mode="paper", settings={"url": url})
    ...  # the bot runs; every order, trade, risk and bot event reaches the database
    session.close(reason="end_of_data")  # flush, mark the instance stopped
    session.raise_if_refused()           # ReconciliationMismatch if recovery refused

On attach: open the database (refused unless at head), register (resume) the bot instance,
replay a spool left by an earlier process, load where the previous run stopped and, for a
paper bot, watch the restarted run until it passes that point (`trading.recovery`). Then
the paper broker's state is saved next to the spool every `state_interval` seconds.
See docs/persistence.md, "Writer and spool" and "Crash recovery".
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trading.broker_state import COUNTED, BrokerStateFile, PaperBrokerState
from trading.events import BotStopped, Event, OrderFill
from trading.persistence.audit_events import EquitySampled
from trading.persistence.bots import (
    BotInstanceInfo,
    config_hash,
    mark_bot_stopped,
    open_audit_database,
    register_bot_instance,
)
from trading.persistence.db import safe_url
from trading.persistence.spool import EventSpool, spool_path
from trading.persistence.spool_location import default_spool_dir
from trading.persistence.writer import AUDITED, AuditWriter, WriterHealth
from trading.recovery import CrashRecovery, ReconciliationMismatch, load_resume_point

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from trading.bot import BaseTradingBot
    from trading.bus import EventBus
    from trading.config import BotConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PersistenceSettings:
    """The ``persistence:`` section of a bot config (all optional)."""

    url: str | None = None  # None: $ATF_DATABASE_URL, else sqlite:///$ATF_DB_PATH
    spool_dir: str | None = None  # None: the database's own (`default_spool_dir`)
    batch_size: int = 500
    batch_delay: float = 0.0  # seconds to wait for a batch to fill (0: write what is queued)
    retry_initial: float = 0.1
    retry_max: float = 5.0
    heartbeat_interval: float = 10.0
    equity_interval: float = 60.0
    state_interval: float = 1.0  # paper broker state saves
    resume: bool = True  # False: a new bot instance with a clean slate
    close_timeout: float = 30.0
    checkpoint_interval: float | None = 1.0  # SQLite WAL checkpoints (None: in the commits)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> PersistenceSettings:
        """Build from a config mapping; a misspelt key raises with a "did you mean" hint."""
        values = dict(values or {})
        known = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in known:
                hint = difflib.get_close_matches(key, known, n=1)
                more = f"; did you mean {hint[0]!r}?" if hint else ""
                raise ValueError(f"unknown persistence setting {key!r}{more}")
        return cls(**values)


@dataclass(frozen=True)
class RunContext:
    """What the audit trail stamps on each fill of one run (`stamp`), as the trade ledger does.

    `correlation_id`: the run's id (`bot_services.correlation_id`, the ledger's too);
    `attribution`: symbol ('*': any other) -> {strategy: weight} (``ledger.attribution``).
    A fill of a symbol without attribution keeps none: the database gives it the bot's
    strategy with weight 1.
    """

    correlation_id: str | None = None
    attribution: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        from trading.ledger import validate_attribution

        validate_attribution(self.attribution)

    def stamp(self, event: Event) -> Event:
        """Return the fill with the run's correlation id and attribution (what it lacks of them)."""
        if not isinstance(event, OrderFill):
            return event
        changes: dict[str, Any] = {}
        if event.correlation_id is None and self.correlation_id:
            changes["correlation_id"] = self.correlation_id
        if event.strategy_names is None and self.attribution:
            from trading.ledger import weights_for

            names, weights = weights_for(self.attribution, event.symbol)
            if names:
                changes.update(strategy_names=names, strategy_weights=weights)
        return dataclasses.replace(event, **changes) if changes else event


class AuditSession:
    """A bot's writer, paper broker book and crash recovery, fed by one inline subscriber.

    Fills are stamped with the run's `RunContext` before they are queued (so a spooled fill
    keeps the run it came from); the idempotency key leaves the stamp out (`audit`).
    """

    def __init__(
        self,
        engine: Engine,
        info: BotInstanceInfo,
        writer: AuditWriter,
        book: PaperBrokerState,
        state_file: BrokerStateFile,
        recovery: CrashRecovery | None,
        settings: PersistenceSettings,
        context: RunContext | None = None,
    ) -> None:
        self.context = context or RunContext()
        self.engine = engine
        self.info = info
        self.writer = writer
        self.book = book
        self.state_file = state_file
        self.recovery = recovery
        self.settings = settings
        self.closed = False
        self._retold: Event | None = None  # the event on the bus now, if the first run had it

    # ------------------------------------------------------------------ the bus handler
    def on_event(self, event: Event) -> None:
        """Queue the event for the database and move the paper book (inline, no I/O)."""
        counted = isinstance(event, COUNTED)
        recovery = self.recovery
        if recovery is not None and recovery.pending:
            if counted:
                recovery.before(event)  # the resume point passed: check before this event
            elif isinstance(event, BotStopped):
                recovery.end()
        self._retold = event if counted and recovery is not None and recovery.replaying_recorded else None
        self.writer.submit(self.context.stamp(event))
        if counted:
            self.book.apply(event)
            if recovery is not None and recovery.pending:
                recovery.after(event)

    def retold(self, event: Event) -> bool:
        """True for the event being published now if a restarted run re-produces it from what
        the previous run recorded. Inline subscribers called after this session (the notifier)
        ask it to leave such events unsent."""
        return event is self._retold

    @property
    def recovering(self) -> bool:
        """True while a restarted run has not yet passed where the previous run stopped."""
        return self.recovery is not None and self.recovery.pending

    @property
    def refusal(self) -> ReconciliationMismatch | None:
        return None if self.recovery is None else self.recovery.error

    def raise_if_refused(self) -> None:
        """Raise the `ReconciliationMismatch` recovery found, if any."""
        if self.refusal is not None:
            raise self.refusal

    # ------------------------------------------------------------------ periodic jobs
    def _save_state(self) -> None:
        if not self.recovering and self.refusal is None:
            self.state_file.save_if_changed(self.book)

    def _equity(self) -> EquitySampled | None:
        return None if self.recovering else self.book.equity_sample()

    # ------------------------------------------------------------------ stop
    def close(self, reason: str = "", timeout: float | None = None) -> bool:
        """Flush, stop the writer, save the paper state, mark the instance stopped.

        Return True if every record reached the database. Otherwise the rest is in the spool
        and the instance stays marked running, so the next start replays and recovers.
        """
        if self.closed:
            return True
        self.closed = True
        if self.recovery is not None:
            self.recovery.end()
        timeout = self.settings.close_timeout if timeout is None else timeout
        all_written = self.writer.close(timeout)
        try:
            self._save_state()
        except OSError:
            log.exception("could not save the paper broker state to %s", self.state_file.path)
        if all_written and self.refusal is None:
            try:
                mark_bot_stopped(self.engine, self.info.id, reason=reason)
            except Exception as exc:  # noqa: BLE001 - the database went away at the very end
                log.warning(
                    "could not mark bot instance %d stopped: %s", self.info.id, type(exc).__name__
                )
                all_written = False
        self.engine.dispose()
        return all_written

    def health(self) -> dict[str, Any]:
        """Return the writer's health plus the instance and recovery state (for status)."""
        h: WriterHealth = self.writer.health()
        rec = self.recovery
        return {
            **dataclasses.asdict(h),
            "database": safe_url(self.engine.url),
            "bot_instance_id": self.info.id,
            "spool": str(self.writer.spool.path),
            "recovering": self.recovering,
            "restored_events": 0 if rec is None else len(rec.lost),
            "refused": None if self.refusal is None else str(self.refusal),
        }


def attach_audit(
    bus: EventBus | None,
    *,
    name: str,
    mode: str,
    settings: PersistenceSettings | Mapping[str, Any] | None = None,
    strategy: str | None = None,
    exchange: str | None = None,
    config: Mapping[str, Any] | None = None,
    initial_cash: Decimal | float | None = None,
    on_refuse: Callable[[ReconciliationMismatch], None] | None = None,
    equity_source: Callable[[], EquitySampled | None] | None = None,
    context: RunContext | None = None,
) -> AuditSession:
    """Open the audit database, register the bot, recover, and subscribe to `bus`.

    `context`: the run's correlation id and strategy attribution, stamped on its fills.

    Raise `DatabaseError` if the database is unreachable or not at head (a bot does not
    start without its record). `on_refuse` is called (on the strategy's thread) when crash
    recovery finds an unexplained mismatch: stop the bot there. With `bus` None, feed
    `session.on_event` yourself.
    """
    s = (
        settings
        if isinstance(settings, PersistenceSettings)
        else PersistenceSettings.from_mapping(settings)
    )
    engine = open_audit_database(s.url)
    try:
        info = register_bot_instance(
            engine,
            name,
            mode,
            strategy=strategy,
            exchange=exchange,
            resume=s.resume,
            config_hash=None if config is None else config_hash(config),
        )
        spool_dir = Path(s.spool_dir) if s.spool_dir else default_spool_dir(engine.url)
        spool = EventSpool(spool_path(spool_dir, name, info.id))
        book = PaperBrokerState(initial_cash)
        state_file = BrokerStateFile(spool_dir / f"{spool.path.stem}.broker.json")
        holder: list[AuditSession] = []
        writer = AuditWriter(
            engine,
            info.id,
            spool,
            batch_size=s.batch_size,
            batch_delay=s.batch_delay,
            retry_initial=s.retry_initial,
            retry_max=s.retry_max,
            heartbeat_interval=s.heartbeat_interval,
            equity_interval=s.equity_interval,
            checkpoint_interval=s.checkpoint_interval,
            equity_source=equity_source or (lambda: holder[0]._equity()),
            periodic=[(s.state_interval, lambda: holder[0]._save_state())]
            if mode == "paper"
            else [],
        )
        if len(spool) and not writer.replay_spool():
            log.warning(
                "spool %s not replayed yet (%s); the writer retries", spool.path, writer.last_error
            )
        recovery = None
        if mode == "paper" and info.resumed:
            point = load_resume_point(engine, info.id, state_file)
            if point.active:
                emit = bus.publish if bus is not None else writer.submit
                recovery = CrashRecovery(point, book, emit=emit, on_refuse=on_refuse)
        session = AuditSession(engine, info, writer, book, state_file, recovery, s, context)
        holder.append(session)
    except BaseException:
        engine.dispose()
        raise
    writer.start()
    if bus is not None:
        bus.subscribe(session.on_event, *AUDITED, inline=True, name=f"audit-{name}-{info.id}")
    log.info(
        "audit trail of %s (instance %d%s) in %s",
        name,
        info.id,
        ", recovering" if recovery is not None else "",
        safe_url(engine.url),
    )
    return session


def attach_audit_to_bot(
    bot: BaseTradingBot, settings: PersistenceSettings | Mapping[str, Any] | None = None
) -> AuditSession:
    """`attach_audit` for a `BaseTradingBot` (its bus, name, mode, strategy and cash);
    a mismatch found by recovery stops the bot after the current bar.

    A bot whose config has a `persistence:` section attaches itself (`BotServices`): call
    this only for a bot built without one."""
    if bot.bus is None:
        raise ValueError("the bot needs an EventBus (bus=...) for its audit trail")
    return attach_config_audit(
        bot.bus,
        bot.config,
        bot.mode,
        settings,
        on_refuse=lambda _err: bot.request_stop("reconciliation_mismatch"),
    )


def attach_config_audit(
    bus: EventBus,
    config: BotConfig,
    mode: str,
    settings: PersistenceSettings | Mapping[str, Any] | None = None,
    *,
    on_refuse: Callable[[ReconciliationMismatch], None] | None = None,
    correlation_id: str | None = None,
) -> AuditSession:
    """`attach_audit` for the bot a `BotConfig` describes (name, strategy, venue, cash); its
    fills carry `correlation_id` and the ``ledger.attribution`` of their symbol."""
    return attach_audit(
        bus,
        name=config.bot.name,
        mode=mode,
        settings=settings,
        strategy=config.strategy.name,
        exchange=config.broker.type,
        config=config.model_dump(mode="json"),
        initial_cash=config.broker.cash,
        on_refuse=on_refuse,
        context=RunContext(correlation_id, config.ledger.attribution),
    )
