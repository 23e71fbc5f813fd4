"""Notifier: route bot events to the channels, on a thread and event loop of its own.

`attach(bus)` subscribes `publish` inline: it updates the `StatusTracker` (memory only) and
hands the event to the notifier's loop with `call_soon_threadsafe`. Nothing the channels do (network, retries, chart rendering) runs on the bar thread
or on the bot's event loop, so a slow or dead service never slows a bar.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from notification.clock import Clock, SystemClock
from notification.commands import CommandRouter
from notification.config import NotificationSettings, ReportTimes, parse_hhmm, parse_weekly
from notification.control import BotControl
from notification.messages import Message, render, report_message, trade_pnl, unusual_message
from trading.events import Event, RiskWarning, TradeClosed
from trading.status import STATUS_FILE, StatusTracker

log = logging.getLogger(__name__)


class Channel(Protocol):
    name: str

    def accepts(self, category: str) -> bool: ...
    def post(self, msg: Message) -> None: ...
    async def start(self) -> None: ...
    async def wait_idle(self) -> None: ...
    async def close(self, timeout: float = 5.0) -> None: ...


class UnusualPnl:
    """Flag a trade whose |net pnl| exceeds k × the std of the previous `window` trades."""

    def __init__(self, k: float, window: int, min_trades: int) -> None:
        self.k, self.window, self.min_trades = k, window, min_trades
        self._pnl: deque[float] = deque(maxlen=window)

    @property
    def seen(self) -> int:
        """How many trades the current judgement rests on (at most `window`)."""
        return len(self._pnl)

    def check(self, pnl: float) -> float | None:
        """Return |pnl| / std when unusual, else None; then remember the trade."""
        hist = list(self._pnl)
        self._pnl.append(pnl)
        if len(hist) < self.min_trades:
            return None
        mean = math.fsum(hist) / len(hist)
        std = math.sqrt(math.fsum((x - mean) ** 2 for x in hist) / (len(hist) - 1))
        if std > 0 and abs(pnl) > self.k * std:
            return abs(pnl) / std
        return None


class Notifier:
    """Deliver a bot's events to Telegram and email; answer Telegram commands; send reports."""

    def __init__(
        self,
        settings: NotificationSettings,
        *,
        bot: str = "",
        initial_cash: float = 0.0,
        control: BotControl | None = None,
        status_dir: str | Path | None = None,
        channels: list[Channel] | None = None,
        clock: Clock | None = None,
        chart: Callable[[Any, str], bytes] | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.status = StatusTracker(bot=bot, initial_cash=initial_cash,
                                    path=Path(status_dir) / STATUS_FILE if status_dir is not None else None)
        self.router = CommandRouter(status=self.status.snapshot, control=control,
                                    allowed=settings.telegram.chat_id, now=self.clock.now)
        self.channels: list[Channel] = channels if channels is not None else self._build_channels(bot)
        self._chart = chart
        n = settings.notifications.unusual
        self._unusual = UnusualPnl(n.k, n.window, n.min_trades)
        self._warned: dict[tuple[str, str | None], datetime] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._inbox: deque[tuple[Event, bool]] = deque()  # (event, told already: no message)
        self._told: Callable[[Event], bool] | None = None
        self._drain_scheduled = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._save_pending = False
        self.reports_sent: list[str] = []

    def _build_channels(self, bot: str) -> list[Channel]:
        out: list[Channel] = []
        if self.settings.telegram.enabled:
            from notification.telegram import TelegramChannel

            out.append(TelegramChannel(self.settings.telegram, router=self.router))
        if self.settings.email.enabled:
            from notification.email import EmailChannel

            out.append(EmailChannel(self.settings.email, bot=bot))
        return out

    # ------------------------------------------------------------------ wiring

    def attach(self, bus: Any, *, told: Callable[[Event], bool] | None = None) -> None:
        """Subscribe to every event of the bot's bus (inline handlers that only hand over).

        `told(event)`: True for an event a restarted bot re-produces while it re-runs what its
        crashed predecessor already recorded (`AuditSession.retold`). Such an event still
        moves the status and the unusual-pnl history, but sends no message: the trader got it
        from the first run.
        """
        self._told = told
        bus.subscribe(self.publish, inline=True, name="notifier")

    def publish(self, event: Event) -> None:
        """Take an event from any thread: update the status (memory only), hand over, return."""
        self.status.handle(event)
        told = self._told is not None and self._told(event)
        self._inbox.append((event, told))  # deque.append is atomic
        loop = self._loop
        if loop is None or self._drain_scheduled:
            return
        # One wake-up per batch, not per event: the bar thread rarely shares the GIL with us.
        self._drain_scheduled = True
        try:
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # loop closed: the notifier was closed
            pass

    def _drain(self) -> None:
        self._drain_scheduled = False  # before popping: a later publish schedules another drain
        while self._inbox:
            self._on_event(*self._inbox.popleft())

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 10.0) -> None:
        """Start the notifier thread and its channels (connections are made in the background)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._main, name="notifier", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the notifier did not start")

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start_channels())
            self._loop = loop
            loop.call_soon(self._drain)  # events published before start()
            self._tasks.append(loop.create_task(self._reports(), name="notifier-reports"))
        except Exception:
            log.exception("notifier failed to start")
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    async def _start_channels(self) -> None:
        for ch in self.channels:
            await ch.start()

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued within `timeout`, then stop; undelivered messages are logged."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._aclose(timeout), loop)
        try:
            fut.result(timeout * 2 + 5)
        except Exception:
            log.exception("notifier did not close cleanly")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout + 5)
        self._loop = None

    async def _aclose(self, timeout: float) -> None:
        # A BotStopped published just before close() is still in the loop's callbacks.
        await asyncio.sleep(0)
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            log.warning("notifier closed before every message was delivered")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for ch in self.channels:
            await ch.close(timeout)
        self._save_status()

    async def flush(self) -> None:
        """Wait until every channel has sent or dropped everything queued."""
        await asyncio.gather(*(ch.wait_idle() for ch in self.channels))

    def wait_delivered(self, timeout: float) -> bool:
        """From another thread: wait until the queues are empty; False on timeout."""
        if self._loop is None:
            return True
        fut = asyncio.run_coroutine_threadsafe(asyncio.wait_for(self.flush(), timeout), self._loop)
        try:
            fut.result(timeout + 1)
            return True
        except Exception:  # noqa: BLE001
            return False

    # ------------------------------------------------------------------ routing

    def _on_event(self, event: Event, told: bool = False) -> None:
        self._schedule_save()
        if told:
            if isinstance(event, TradeClosed):
                self._unusual.check(trade_pnl(event)[0])  # history for later trades, no message
            return
        rendered = render(event)
        if rendered is None:
            return
        category, text = rendered
        if isinstance(event, RiskWarning) and self._repeated(event):
            return
        self._route(category, text)
        if isinstance(event, TradeClosed):
            sigmas = self._unusual.check(trade_pnl(event)[0])
            if sigmas is not None:
                self._route("unusual_trades", unusual_message(event, sigmas, self._unusual.seen - 1))

    def _route(self, category: str, text: str) -> None:
        mode = self.settings.notifications.route(category)
        if mode == "off":
            return
        self.send(Message(text=text, category=category, silent=mode == "silent"))

    def send(self, msg: Message) -> None:
        """Queue a message for every channel that takes its category (on the notifier loop)."""
        for ch in self.channels:
            if ch.accepts(msg.category):
                ch.post(msg)

    def _repeated(self, e: RiskWarning) -> bool:
        key, now = (e.control, e.symbol), self.clock.now()
        last = self._warned.get(key)
        cooldown = timedelta(seconds=self.settings.notifications.risk_warning_cooldown)
        if last is not None and now - last < cooldown:
            return True
        self._warned[key] = now
        return False

    def _schedule_save(self) -> None:
        if self.status.path is None or self._save_pending or self._loop is None:
            return
        self._save_pending = True
        self._loop.call_later(0.5, lambda: self._loop.run_in_executor(None, self._save_status))  # type: ignore[union-attr]

    def _save_status(self) -> None:
        self._save_pending = False
        try:
            self.status.save()
        except OSError:
            log.exception("could not write %s", self.status.path)

    # ------------------------------------------------------------------ reports

    async def _reports(self) -> None:
        times = self.settings.notifications.performance_reports
        if not isinstance(times, ReportTimes) or not (times.daily or times.weekly):
            return
        while True:
            kinds, when = next_reports(times, self.clock.now())
            await self.clock.sleep_until(when)
            for kind in kinds:
                try:
                    await self.send_report(kind, when)
                except Exception:
                    log.exception("%s report failed", kind)

    async def send_report(self, kind: str, when: datetime) -> Message:
        """Report the last full day or week before `when` (chart rendered off the loop) and send it."""
        times = self.settings.notifications.performance_reports
        tz = ZoneInfo(times.timezone if isinstance(times, ReportTimes) else "UTC")
        end = period_end(kind, when, tz)
        snap = self.status.snapshot()
        from notification.charts import equity_png

        render_chart = self._chart or equity_png
        title = f"{snap.bot or 'bot'} equity"
        loop = asyncio.get_running_loop()
        chart = await loop.run_in_executor(None, render_chart, snap.equity_series(), title)
        msg = report_message(kind, snap, end, chart, tz=tz)
        self.send(msg)
        self.reports_sent.append(kind)
        return msg


def period_end(kind: str, when: datetime, tz: ZoneInfo) -> datetime:
    """Return the end of the period a report sent at `when` covers: today's (or this week's) start."""
    local = when.astimezone(tz).replace(hour=0, minute=0, second=0, microsecond=0)
    if kind == "weekly":
        local -= timedelta(days=local.weekday())
    return local.astimezone(ZoneInfo("UTC"))


def next_reports(times: ReportTimes, now: datetime) -> tuple[list[str], datetime]:
    """Return the reports due next strictly after `now` (weekly first when both fall together)."""
    tz = ZoneInfo(times.timezone)
    local = now.astimezone(tz)
    options: list[tuple[datetime, str]] = []
    if times.daily:
        t = parse_hhmm(times.daily)
        cand = local.replace(hour=t.hour, minute=t.minute, second=0, microsecond=0)
        if cand <= local:
            cand = (cand + timedelta(days=1)).replace(hour=t.hour, minute=t.minute)
        options.append((cand, "daily"))
    if times.weekly:
        day, t = parse_weekly(times.weekly)
        cand = local.replace(hour=t.hour, minute=t.minute, second=0, microsecond=0)
        cand += timedelta(days=(day - cand.weekday()) % 7)
        if cand <= local:
            cand += timedelta(days=7)
        options.append((cand, "weekly"))
    when = min(o[0] for o in options)
    kinds = sorted((k for w, k in options if w == when), key=lambda k: k != "weekly")
    return kinds, when.astimezone(ZoneInfo("UTC"))
