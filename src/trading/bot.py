"""BaseTradingBot: one bot, one code path, three modes (docs/modes.md).

Every mode assembles the same Cerebro (`engine.build_cerebro`): the composed BaseStrategy
and the SimBroker with the configured fill model. Only the feed changes: historical bars
preloaded (backtest) or bars streamed one by one by `ReplayProducer` (paper replay).
Cerebro runs in a worker thread; the asyncio loop keeps the producer, `stop()` and
`emergency_stop()` responsive. The bot's OrderManager and PositionManager hold every order
and position and publish their events. Live feeds and brokers come with the live issue.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from strategy.base import BaseStrategy
from strategy.mixins.base import OpenTrade
from strategy.risk_gate import bar_datetime
from trading.bus import EventBus
from trading.config import BotConfig, DataSection
from trading.data.replay import ReplayFeed, ReplayProducer
from trading.engine import build_cerebro, collect_result, load_bars
from trading.events import BotStarted, BotStopped, Event
from trading.exceptions import ATFError
from trading.order_manager import OrderManager
from trading.orders import Order, OrderStatus
from trading.positions import Position, PositionManager
from trading.results import BacktestResult

Mode = Literal["backtest", "paper", "live"]
STATE_FILE = "state.json"
EMERGENCY_STOP = "emergency_stop"


class LiveTradingRefused(ATFError):
    """Live trading was asked for without the config and the user both agreeing to it."""


class ModeUnavailable(ATFError):
    """The mode needs a feed or broker that this installation does not have."""


def check_live_allowed(cfg: BotConfig, *, confirm_live: bool) -> None:
    """Refuse live trading unless `broker.trading_mode: live` and the user confirmed it."""
    if cfg.broker.trading_mode != "live":
        raise LiveTradingRefused(
            f"bot '{cfg.bot.name}' has broker.trading_mode: {cfg.broker.trading_mode}; "
            "set broker.trading_mode: live in the config to trade with real money"
        )
    if not confirm_live:
        raise LiveTradingRefused("live trading places real orders: pass --confirm-live to start it")


def live_unavailable(what: str) -> ModeUnavailable:
    """Say what a live feed or broker needs that is missing."""
    if importlib.util.find_spec("ccxt") is None:
        need = "install the live extra: pip install 'atf[live]' (ccxt, ib_async)"
    else:
        need = "live feeds and broker adapters are not built yet (the live broker issue)"
    return ModeUnavailable(f"{what} needs a live data feed and broker: {need}; "
                           "offline, replay recorded bars with `atf paper CONFIG --replay FILE`")


@dataclass
class _Control:
    """What the asyncio side and the strategy (worker thread) share."""

    bot: str
    bus: EventBus | None = None
    stop_requested: threading.Event = field(default_factory=threading.Event)
    emergency: threading.Event = field(default_factory=threading.Event)
    cancel_on_stop: bool = False
    flattening: bool = False
    halted: bool = False
    state: dict[str, Any] | None = None

    def publish(self, event: Event) -> None:
        if self.bus is not None:
            self.bus.publish(event)  # never blocks: consumers run on their own queues


class BotStrategy(BaseStrategy):
    """BaseStrategy plus the bot's controls: stop, emergency stop, state snapshot."""

    params = (("control", None),)  # type: ignore[assignment]  # backtrader merges it with the base's

    def next(self) -> None:
        ctl: _Control = self.p.control
        if ctl.emergency.is_set() and not ctl.flattening:
            ctl.flattening = ctl.halted = True
            self.risk.halt("EMERGENCY_STOP", "emergency stop: orders cancelled, positions closed")
            self._flatten()
        super().next()
        if ctl.flattening and all(b.trade is None for b in self.books):
            ctl.stop_requested.set()
        if ctl.stop_requested.is_set():
            self.env.runstop()  # cerebro ends after this bar; stop() runs next

    def _may_enter(self) -> bool:
        return not self.p.control.halted

    def _flatten(self) -> None:
        """Cancel every working order and close every position at the next open."""
        for book in self.books:
            trade = book.trade
            if trade is None:
                continue
            if not trade.is_filled:
                self._cancel_protection(book, with_partial=True, reason=EMERGENCY_STOP.upper())
                self._cancel_entry_rest(book, EMERGENCY_STOP.upper())
                book.trade = None
            elif book.exit_ref is None:
                self.decisions.append((book.symbol, book.clock.lencount - 1, "exit", EMERGENCY_STOP))
                self._exit_at_market(book, EMERGENCY_STOP)

    def stop(self) -> None:
        ctl: _Control = self.p.control
        self._drain_notifications()
        om = self.order_manager
        cancelled = 0
        if ctl.cancel_on_stop:
            working = [o for o in om.open_orders() if o.status is not OrderStatus.PENDING_CANCEL]
            for order in working:
                held = self._venue.backtrader_order(order.client_order_id)
                if held is not None:
                    self._venue.cancel(held, "STOP")
            self._drain_notifications()
            cancelled = sum(om.get(o.client_order_id).status is OrderStatus.CANCELLED for o in working)
        ctl.state = {**self._snapshot(), "cancelled_on_stop": cancelled}
        super().stop()  # marks what is still open to the last close (end_of_data) in the result

    def _snapshot(self) -> dict[str, Any]:
        """Return open positions and working orders (from the PositionManager and OrderManager)."""
        last = {}
        for book in self.books:
            n = book.clock.lencount
            if n:
                last[book.symbol] = bar_datetime(book.clock.array[n - 1]).isoformat()
        books = {b.symbol: b for b in self.books}
        positions = [_position_state(p, books[p.symbol].trade) for p in self.position_manager.open_positions()]
        orders = [_order_state(o) for o in self.order_manager.open_orders()]
        return {"last_bar_time": last, "positions": positions, "open_orders": orders}


def _num(x: Decimal | None) -> float | None:
    return None if x is None else float(x)


def _position_state(pos: Position, trade: OpenTrade | None) -> dict[str, Any]:
    """Describe an open position for state.json; the strategy adds its levels and entry tag."""
    return {
        "symbol": pos.symbol, "side": pos.side.value, "quantity": float(abs(pos.quantity)),
        "entry_price": _num(pos.avg_entry_price), "entry_time": pos.opened_ts.isoformat() if pos.opened_ts else None,
        "trade_id": pos.trade_id, "entries": pos.entries, "realised_pnl": float(pos.realised_pnl),
        "fees": float(pos.fees), "stop": trade.stop if trade else None,
        "take_profit": trade.take_profit if trade else None, "entry_tag": trade.entry_tag if trade else None,
    }


def _order_state(order: Order) -> dict[str, Any]:
    return {
        "client_order_id": str(order.client_order_id), "symbol": order.symbol, "side": order.side.value,
        "type": order.order_type.value, "status": order.status.value, "quantity": float(order.quantity),
        "filled": float(order.filled_qty), "price": _num(order.price), "stop_price": _num(order.stop_price),
        "tag": order.tag, "parent_id": str(order.parent_id) if order.parent_id else None,
        "oco_id": str(order.oco_id) if order.oco_id else None,
    }


class BaseTradingBot:
    """Run one bot in backtest, paper (replay) or live mode; see docs/modes.md.

    `frames` gives the bars (symbol -> OHLCV frame) instead of the configured data; in paper
    mode `replay` names the CSV to stream (one file, or symbol -> file). `speed` is the
    replay pace (N× real time; None or "max": as fast as the strategy takes them).

    `order_manager` and `position_manager` are the bot's record of every order and position
    (docs/trading-core.md): the strategy registers each order it sends, the broker's
    notifications become their facts, they publish the order and trade events on `bus`,
    and the state saved at stop is read from them.
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
        self.bus = bus
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.confirm_live = confirm_live
        self._control = _Control(bot=config.bot.name, bus=bus, cancel_on_stop=cancel_on_stop)
        # The bot's record of orders and positions; the strategy feeds them in every mode.
        self.order_manager = OrderManager(bus)
        self.position_manager = PositionManager(bus)  # fed by the order manager's fills
        self._pacing = {k: v for k, v in (("clock", clock), ("sleep", sleep)) if v is not None}
        self._producer: ReplayProducer | None = None
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
            raise live_unavailable("live trading")
        if self.mode == "paper" and self.frames is None and self.replay is None:
            raise live_unavailable("paper trading without --replay")
        frames = self.frames if self.frames is not None else self._load_frames()
        if self.bus is not None:
            await self.bus.start()
        self._control.publish(BotStarted(ts=_now(), bot=self.config.bot.name, mode=self.mode))
        self._running = True
        try:
            result = await (self._run_replay(frames) if self.mode == "paper" else self._run_backtest(frames))
        finally:
            self._running = False
            self._done.set()
        reason = self.stop_reason or "end_of_data"
        result.diagnostics["mode"] = self.mode
        result.diagnostics["stop_reason"] = reason
        self._write_state(reason)
        self._control.publish(BotStopped(ts=_now(), bot=self.config.bot.name, reason=reason))
        self.result = result
        return result

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
        self.stop_reason = EMERGENCY_STOP
        self._control.halted = True
        self._control.emergency.set()

    async def stop(self, reason: str = "stop") -> None:
        """End after the current bar, save the state and wait until `start_trading` returns."""
        self.request_stop(reason)
        if self._running:
            await self._done.wait()

    async def emergency_stop(self) -> None:
        """Cancel every open order, close every position at the next bar's open, then halt."""
        self.request_emergency_stop()
        if self._running:
            await self._done.wait()

    @property
    def state(self) -> dict[str, Any] | None:
        """Return the state saved at the last stop (positions, open orders, last bar times)."""
        return self._control.state

    # ------------------------------------------------------------------ runs
    async def _run_backtest(self, frames: dict[str, pd.DataFrame]) -> BacktestResult:
        cerebro, _ = build_cerebro(self.config, frames, strategy_cls=self._strategy_cls())
        strat = (await asyncio.to_thread(cerebro.run))[0]
        return collect_result(self.config, _seen(frames, strat), cerebro, strat)

    async def _run_replay(self, frames: dict[str, pd.DataFrame]) -> BacktestResult:
        self._feeds = {sym: ReplayFeed() for sym in frames}
        self._producer = ReplayProducer(frames, self._feeds, speed=self.speed, **self._pacing)  # type: ignore[arg-type]
        cerebro, _ = build_cerebro(self.config, frames, strategy_cls=self._strategy_cls(), feeds=self._feeds)
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

    def _strategy_cls(self) -> type[BotStrategy]:
        # build_cerebro passes only the engine's parameters: bind this bot's control here.
        params = (("control", self._control), ("bus", self.bus), ("orders", self.order_manager),
                  ("positions", self.position_manager), ("bot_name", self.config.bot.name))
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
               "stop_reason": reason, "halted": self._control.halted, **state}
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
