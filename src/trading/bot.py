"""BaseTradingBot: one bot, one code path, three modes (docs/modes.md).

Every mode assembles the same Cerebro (`engine.build_cerebro`): the composed BaseStrategy
and the SimBroker with the configured fill model. Only the feed changes: historical bars
preloaded (backtest) or bars streamed one by one by `ReplayProducer` (paper replay).
Cerebro runs in a worker thread; the asyncio loop keeps the producer, `stop()` and
`emergency_stop()` responsive. The bot's OrderManager and PositionManager hold every order
and position and publish their events. The services the YAML switches on (order log, trade
ledger, notifier: `trading.bot_services`) listen to the same bus; they start before
BotStarted and stop after BotStopped. Operators (Telegram) pause and resume entries and
close positions through the `request_*` methods, which are thread-safe and take effect at
the next bar (in a live run at a venue the emergency stop and forced exits act at once,
between bars); a paper bot with a ``persistence:`` section logs each one at the bar it is
applied, so a restart re-runs it there (`trading.action_log`). A live run (`atf live`, or `atf paper` without replay) reads closed bars from
the venue and, in live mode, trades there (`trading.live_run.LiveSession`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from strategy.base import BaseStrategy
from trading.bot_services import BotServices
from trading.bot_strategy import EMERGENCY_STOP, BotStrategy, SharedControls
from trading.bt_orders import TradeLabels
from trading.bus import EventBus
from trading.config import BotConfig, DataSection
from trading.data.replay import ReplayFeed, ReplayProducer
from trading.engine import build_cerebro, collect_result, load_bars
from trading.events import BotError, BotStarted, BotStopped
from trading.exceptions import ATFError
from trading.live_run import LiveSession
from trading.live_sources import ModeUnavailable  # noqa: F401 - re-exported: trading.bot.ModeUnavailable
from trading.order_manager import OrderManager
from trading.positions import PositionManager
from trading.results import BacktestResult

if TYPE_CHECKING:
    from trading.audit_session import AuditSession

Mode = Literal["backtest", "paper", "live"]
STATE_FILE = "state.json"

log = logging.getLogger(__name__)


class LiveTradingRefused(ATFError):
    """Live trading was asked for without the config and the user both agreeing to it."""


def check_live_allowed(cfg: BotConfig, *, confirm_live: bool) -> None:
    """Refuse live trading unless `broker.trading_mode: live` and the user confirmed it."""
    if cfg.broker.trading_mode != "live":
        raise LiveTradingRefused(
            f"bot '{cfg.bot.name}' has broker.trading_mode: {cfg.broker.trading_mode}; "
            "set broker.trading_mode: live in the config to trade with real money"
        )
    if not confirm_live:
        raise LiveTradingRefused("live trading places real orders: pass --confirm-live to start it")


class BaseTradingBot:
    """Run one bot in backtest, paper (replay or live bars) or live mode; see docs/modes.md.

    `frames` gives the bars (symbol -> OHLCV frame) instead of the configured data; in paper
    mode `replay` names the CSV to stream (one file, or symbol -> file); a paper run with
    neither reads live bars from the configured venue. `speed` is the replay pace (N× real
    time; None or "max": as fast as the strategy takes them).

    `order_manager` and `position_manager` are the bot's record of every order and position
    (docs/trading-core.md): the strategy registers each order it sends, the broker's
    notifications become their facts, they publish the order and trade events on `bus`,
    and the state saved at stop is read from them.

    `services` runs what the config switches on (order log, trade ledger, notifier); with
    no `bus` given and a service on, the bot makes one and closes it when the run ends.
    `state_dir` is the output folder: state.json, status.json, and the relative paths of
    the order log and the ledger export.
    """

    def __init__(
        self,
        config: BotConfig,
        *,
        frames: Mapping[str, pd.DataFrame] | None = None,
        replay: str | Path | Mapping[str, str | Path] | None = None,
        speed: float | str | None = None,
        bus: EventBus | None = None,
        mode: Mode | None = None,
        state_dir: str | Path | None = None,
        confirm_live: bool = False,
        cancel_on_stop: bool = False,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.mode: Mode = mode or config.bot.mode
        self.frames = dict(frames) if frames is not None else None
        self.replay = replay
        self.speed = None if speed in (None, "max") else float(speed)  # type: ignore[arg-type]
        if self.speed is not None and self.speed <= 0:
            raise ValueError(f"speed must be positive or 'max', got {speed}")
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.confirm_live = confirm_live
        self.services = BotServices(config, self.mode, output_dir=self.state_dir, control=self, bus=bus)
        self.bus = bus = self.services.bus
        self._control = SharedControls(bot=config.bot.name, bus=bus, cancel_on_stop=cancel_on_stop)
        # The bot's record of orders and positions; the strategy feeds them in every mode.
        self.order_manager = OrderManager(bus)
        self._labels = TradeLabels(bus) if bus is not None else None  # exit reason on TradeClosed
        self.position_manager = PositionManager(self._labels)  # type: ignore[arg-type]  # fed by the fills
        self._pacing = {k: v for k, v in (("clock", clock), ("sleep", sleep)) if v is not None}
        self._producer: ReplayProducer | LiveSession | None = None
        self._feeds: dict[str, ReplayFeed] = {}
        self._done = asyncio.Event()
        self._running = False
        self.stop_reason = ""
        self.result: BacktestResult | None = None

    # ------------------------------------------------------------------ control
    async def start_trading(self) -> BacktestResult:
        """Run until the data ends or `stop()`; return the result (one JSON contract)."""
        self._done.clear()
        if self.mode == "live":
            check_live_allowed(self.config, confirm_live=self.confirm_live)
        session: LiveSession | None = None
        if self.mode == "live" or (self.mode == "paper" and self.frames is None and self.replay is None):
            session = LiveSession(self.config, self.mode)  # venue, extras and credentials checked now
        frames = {} if session is not None else self.frames if self.frames is not None else self._load_frames()
        if self.bus is not None:
            await self.bus.start()
        await self._start_services()
        name = self.config.bot.name
        self._control.publish(BotStarted(ts=_now(), bot=name, mode=self.mode))
        self._running = True
        result: BacktestResult | None = None
        try:
            if session is not None:
                result = await self._run_live(session)
            else:
                result = await (self._run_replay(frames) if self.mode == "paper" else self._run_backtest(frames))
        except Exception as exc:
            self._control.publish(BotError(ts=_now(), error=f"{type(exc).__name__}: {exc}"))
            self._control.publish(BotStopped(ts=_now(), bot=name, reason="error"))
            raise
        finally:
            self._running = False
            if result is None:  # failed or cancelled: the services still stop
                await self._stop_services(None)
                self._done.set()
        reason = self.stop_reason or "end_of_data"
        result.diagnostics["mode"] = self.mode
        result.diagnostics["stop_reason"] = reason
        journal = self._control.journal
        if journal is not None:
            result.diagnostics["actions"] = journal.summary()
            if journal.requests:  # asked for after the last bar: nothing acted on them
                log.warning("%d operator request(s) arrived after the last bar and were not applied: %s",
                            len(journal.requests), ", ".join(k + (f" {s}" if s else "") for k, s in journal.requests))
        self._write_state(reason)
        self._control.publish(BotStopped(ts=_now(), bot=name, reason=reason))
        try:
            await self._stop_services(result)  # raises a crash recovery's refusal, once all is closed
        finally:
            self.result = result
            self._done.set()
        return result

    async def _start_services(self) -> None:
        """Start everything that runs beside the strategy (the one place services start)."""
        await self.services.start(started=_now())
        self._attach_action_log()

    def _attach_action_log(self) -> None:
        """A paper bot with an audit trail logs the operator actions it applies, per bar, and a
        restart re-runs them (`trading.action_log`); requests then wait for the bar thread."""
        audit = self.services.audit
        if self.mode != "paper" or audit is None:
            return
        from trading.action_log import ActionLog, action_log_path

        self._control.journal = ActionLog(
            action_log_path(audit.state_file.path), self._apply_action,
            fresh=not audit.info.resumed, holding=lambda: audit.recovering,
        )

    def _request(self, kind: str, symbol: str | None = None) -> bool:
        """Queue an operator action for the action log (True), or False when there is none."""
        journal = self._control.journal
        if journal is None:
            return False
        journal.request(kind, symbol)
        return True

    def _apply_action(self, kind: str, symbol: str | None) -> None:
        """What an operator's request does to the controls (at the bar, on the bar thread, when
        it goes through the action log; at once otherwise). The strategy acts on it next."""
        from trading import action_log as actions

        ctl = self._control
        if kind == actions.STOP_ENTRIES:
            ctl.entries_paused = True
        elif kind == actions.RESUME:
            ctl.entries_paused = False
            ctl.resume.set()
        elif kind == actions.FORCE_EXIT:
            ctl.force_exits.append(symbol)
            ctl.poke()  # a live run at a venue acts now, between bars
        elif kind == actions.EMERGENCY_STOP:
            self.stop_reason = EMERGENCY_STOP
            ctl.halted = True
            ctl.emergency.set()
            ctl.poke()
        elif kind == actions.CANCEL_ON_STOP:
            ctl.cancel_working = True  # a restart's re-run: the strategy cancels at the end of the bar
        else:
            raise ValueError(f"unknown operator action {kind!r}")

    async def _stop_services(self, result: BacktestResult | None) -> None:
        """Stop what `_start_services` started (the one place services stop); once per run."""
        await self.services.stop(result, self.state)

    def request_stop(self, reason: str = "stop") -> None:
        """Ask the bot to end after the current bar; thread-safe, returns at once."""
        self.stop_reason = self.stop_reason or reason
        self._control.stop_requested.set()
        if self._producer is not None:
            self._producer.stop()
        for feed in self._feeds.values():
            feed.finish()  # wakes a feed waiting for its next bar

    def request_emergency_stop(self) -> None:
        """Ask for an emergency stop (see `emergency_stop`); thread-safe, returns at once."""
        if not self._request("emergency_stop"):
            self._apply_action("emergency_stop", None)

    def request_stop_entries(self) -> None:
        """Refuse new entries (and adds) until `request_resume`; open positions keep their exits.

        Thread-safe, returns at once; from the next bar's decisions on, told as Halted(ENTRIES_PAUSED).
        """
        if not self._request("stop_entries"):
            self._apply_action("stop_entries", None)

    def request_resume(self) -> None:
        """Allow entries again after `request_stop_entries`, and lift a drawdown halt.

        The drawdown halt is lifted through `RiskController.resume` (the drawdown is then
        measured from the equity at the resume). A daily-loss halt still ends with its UTC
        day, and an emergency stop is never resumed. Thread-safe; applied at the next bar.
        """
        if not self._request("resume"):
            self._apply_action("resume", None)

    @property
    def exits_act(self) -> str:
        """When a forced exit or an emergency stop acts: "now" in a live run at a venue (between
        bars, within a pass of the loop), "at the next bar" in backtests, replays and paper runs."""
        return "now" if self.mode == "live" else "at the next bar"

    def request_force_exit(self, symbol: str | None) -> None:
        """Close the position in `symbol` (None: every position) with a market order; keep running.

        Working orders of the symbol (its stop, targets, an entry's rest) are cancelled with
        the reason ``force_exit``; nothing is halted, so later signals trade as usual (not on
        the bar the exit is taken on). A live run at a venue sends the cancels and the market
        order within one pass of its loop (seconds), between bars; a backtest, a replay or a
        paper run at the next bar, filled at the following open. Thread-safe, returns at once.
        """
        if symbol is not None and symbol not in self.config.bot.symbols:
            raise ValueError(f"bot '{self.config.bot.name}' does not trade {symbol!r} "
                             f"(symbols: {', '.join(self.config.bot.symbols)})")
        if not self._request("force_exit", symbol):
            self._apply_action("force_exit", symbol)

    async def stop(self, reason: str = "stop") -> None:
        """End after the current bar, save the state and wait until `start_trading` returns."""
        self.request_stop(reason)
        if self._running:
            await self._done.wait()

    async def emergency_stop(self) -> None:
        """Halt, cancel every working order, close every position with market orders, then end the run.

        A live run at a venue acts within one pass of its loop (seconds), between bars, and
        ends once the venue has no position and no working order of the bot and the closing
        fills are booked (reason ``emergency_stop`` in the order log, the audit trail and the
        trades; state.json written). A backtest, a replay or a paper run acts at the next
        bar, the positions closed at the following open, and ends then. Returns once the run ended.
        """
        self.request_emergency_stop()
        if self._running:
            await self._done.wait()

    @property
    def state(self) -> dict[str, Any] | None:
        """Return the state saved at the last stop (positions, open orders, last bar times)."""
        return self._control.state

    @property
    def audit(self) -> AuditSession | None:
        """Return the audit trail's session (the `persistence:` section), None when it is off."""
        return self.services.audit

    # ------------------------------------------------------------------ runs
    async def _run_backtest(self, frames: dict[str, pd.DataFrame]) -> BacktestResult:
        cerebro, _ = build_cerebro(self.config, frames, strategy_cls=self._strategy_cls(),
                                   order_logger=self.services.order_logger)
        strat = (await asyncio.to_thread(cerebro.run))[0]
        return collect_result(self.config, _seen(frames, strat), cerebro, strat)

    async def _run_replay(self, frames: dict[str, pd.DataFrame]) -> BacktestResult:
        self._feeds = {sym: ReplayFeed() for sym in frames}
        self._producer = ReplayProducer(frames, self._feeds, speed=self.speed, **self._pacing)  # type: ignore[arg-type]
        cerebro, _ = build_cerebro(self.config, frames, strategy_cls=self._strategy_cls(), feeds=self._feeds,
                                   order_logger=self.services.order_logger)
        if self._control.stop_requested.is_set():
            self._producer.stop()
        producer = asyncio.create_task(self._producer.run(), name=f"replay-{self.config.bot.name}")
        try:
            strat = (await asyncio.to_thread(cerebro.run))[0]
        finally:
            self._producer.stop()
            if not producer.done():
                producer.cancel()
            (failure,) = await asyncio.gather(producer, return_exceptions=True)
        if isinstance(failure, Exception):
            raise failure
        seen = _seen(frames, strat)
        if not seen:
            raise ATFError(f"bot '{self.config.bot.name}' stopped before its first bar")
        return collect_result(self.config, seen, cerebro, strat)

    async def _run_live(self, session: LiveSession) -> BacktestResult:
        self._producer = session  # request_stop ends its feeds
        if self._control.stop_requested.is_set():
            session.stop()
        return await session.run(self._strategy_cls(), order_logger=self.services.order_logger, bus=self.bus,
                                 audit=self.services.audit)

    def _strategy_cls(self) -> type[BotStrategy]:
        # build_cerebro passes only the engine's parameters: bind this bot's control here.
        params = (("control", self._control), ("labels", self._labels), ("bus", self.bus),
                  ("orders", self.order_manager), ("positions", self.position_manager),
                  ("bot_name", self.config.bot.name))
        return type("BotStrategy", (BotStrategy,), {"params": params})

    def _load_frames(self) -> dict[str, pd.DataFrame]:
        cfg, replay = self.config, self.replay
        if isinstance(replay, Mapping):
            data = DataSection(source="csv", paths={s: str(p) for s, p in replay.items()}, tz=cfg.data.tz)
            return load_bars(cfg.model_copy(update={"data": data}))
        return load_bars(cfg, data_file=replay)

    def _write_state(self, reason: str) -> None:
        state = self._control.state
        if state is None or self.state_dir is None:
            return
        from trading.analytics.report import atomic_write_bytes

        doc = {"bot": self.config.bot.name, "mode": self.mode, "stopped_at": _now().isoformat(),
               "stop_reason": reason, "halted": self._control.halted,
               "entries_paused": self._control.entries_paused, **state}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.state_dir / STATE_FILE, (json.dumps(doc, indent=2) + "\n").encode())


def _seen(frames: Mapping[str, pd.DataFrame], strat: BaseStrategy) -> dict[str, pd.DataFrame]:
    """Cut each frame to the bars the strategy saw (all of them unless stopped early)."""
    out = {}
    for book in strat.books:
        n = book.clock.lencount
        if n:
            out[book.symbol] = frames[book.symbol].iloc[:n]
    return out


def _now() -> datetime:
    return datetime.now(UTC)
