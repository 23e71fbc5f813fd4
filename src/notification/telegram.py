"""Telegram channel: python-telegram-bot `Application`, one `Outbox` per chat, command polling.

Sending never waits for the connection: every chat has its own outbox (rate limit, merging,
retries, drops). Connecting (getMe, then polling with getUpdates for commands) runs in the
background and retries with backoff while the Bot API is unreachable. The token is
registered with `redact`, so it never reaches a log line or an exception text.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import warnings
from datetime import timedelta
from typing import Any

from notification.commands import CommandRouter
from notification.config import TelegramConfig
from notification.messages import Message
from notification.outbox import ChannelError, Outbox, RetryLater
from notification.redact import install_log_filter, register_secret, scrub

log = logging.getLogger(__name__)
CAPTION_MAX = 1024


def _import_telegram() -> Any:
    try:
        import telegram
        import telegram.ext
    except ImportError as exc:
        raise ImportError("Telegram notifications need python-telegram-bot: pip install 'atf[notify]'") from exc
    return telegram


class TelegramChannel:
    """Send notifications to the configured chats and answer their commands."""

    name = "telegram"

    def __init__(self, config: TelegramConfig, *, router: CommandRouter | None = None) -> None:
        self._tg = _import_telegram()
        if config.bot_token is None:
            raise ValueError("telegram needs bot_token")
        self.config = config
        self.router = router
        self.outboxes: dict[int, Outbox] = {}
        self.connected: asyncio.Event | None = None  # set once getMe (and polling) worked
        self._app: Any = None
        self._connector: asyncio.Task[None] | None = None
        self._polling = False
        register_secret(config.bot_token.get_secret_value())

    def __repr__(self) -> str:
        return f"TelegramChannel(chats={self.config.chat_id})"  # never the Bot: its repr has the token

    def accepts(self, category: str) -> bool:
        return True

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Build the Application and the outboxes; connect in the background. Returns at once."""
        from telegram.ext import ApplicationBuilder, MessageHandler, filters
        from telegram.request import HTTPXRequest

        install_log_filter()
        cfg = self.config
        t = cfg.timeout

        def request(read: float) -> Any:
            return HTTPXRequest(connect_timeout=t, read_timeout=read, write_timeout=t, pool_timeout=t)

        self._app = (
            ApplicationBuilder()
            .token(cfg.bot_token.get_secret_value())  # type: ignore[union-attr]
            .base_url(cfg.base_url)
            .base_file_url(cfg.base_url.replace("/bot", "/file/bot", 1))
            .request(request(t))
            .get_updates_request(request(t))
            .build()
        )
        self._app.add_handler(MessageHandler(filters.COMMAND, self._on_command))
        self._app.add_error_handler(self._on_error)
        self.connected = asyncio.Event()
        for chat in cfg.chat_id:
            box = Outbox(
                f"telegram:{chat}", functools.partial(self._send, chat), min_interval=1.0 / cfg.rate_per_second,
                timeout=t, max_attempts=cfg.max_attempts, backoff=cfg.backoff, backoff_max=cfg.backoff_max,
                queue_size=cfg.queue_size, max_chars=cfg.max_chars,
            )
            box.start()
            self.outboxes[chat] = box
        self._connector = asyncio.get_running_loop().create_task(self._connect(), name="telegram-connect")

    async def _connect(self) -> None:
        """getMe, then start polling for commands; retry with backoff until it works."""
        delay = self.config.backoff
        while True:
            try:
                await asyncio.wait_for(self._app.initialize(), self.config.timeout)
                if self.router is not None and self.config.commands:
                    if not self._app.running:
                        await self._app.start()
                    await self._app.updater.start_polling(
                        poll_interval=0.0, timeout=timedelta(seconds=self.config.poll_timeout),
                        drop_pending_updates=False, error_callback=self._on_poll_error,
                    )
                    self._polling = True
                assert self.connected is not None
                self.connected.set()
                log.info("telegram connected%s", " and polling for commands" if self._polling else "")
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep trying; sending does not depend on it
                log.warning("telegram not reachable (retry in %.2g s): %s", delay, _describe(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.backoff_max)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop polling and the outboxes (what is queued is dropped and logged); bounded by timeout."""
        if self._connector is not None:
            self._connector.cancel()
            await asyncio.gather(self._connector, return_exceptions=True)
        for box in self.outboxes.values():
            await box.close()
        app = self._app
        if app is None:
            return
        steps = []
        if self._polling and app.updater is not None and app.updater.running:
            steps.append(app.updater.stop)
        if app.running:
            steps.append(app.stop)
        steps.append(app.shutdown)
        for step in steps:
            try:
                await asyncio.wait_for(step(), timeout)
            except Exception as exc:  # noqa: BLE001 - closing must not hang or raise
                log.warning("telegram: %s did not finish cleanly: %s", step.__name__, _describe(exc))

    # ------------------------------------------------------------------ sending

    def post(self, msg: Message) -> None:
        """Queue for the message's chat, or for every configured chat."""
        targets = [msg.chat_id] if msg.chat_id is not None else list(self.outboxes)
        for chat in targets:
            box = self.outboxes.get(chat)  # type: ignore[arg-type]
            if box is not None:
                box.put(msg)

    async def wait_idle(self) -> None:
        await asyncio.gather(*(b.wait_idle() for b in self.outboxes.values()))

    async def _send(self, chat_id: int, msg: Message) -> None:
        from telegram.error import RetryAfter, TelegramError

        bot = self._app.bot
        try:
            if msg.photo is not None and len(msg.text) <= CAPTION_MAX:
                await bot.send_photo(chat_id, photo=msg.photo, caption=msg.text, disable_notification=msg.silent)
            else:
                await bot.send_message(chat_id, msg.text, disable_notification=msg.silent)
                if msg.photo is not None:
                    await bot.send_photo(chat_id, photo=msg.photo, disable_notification=True)
        except RetryAfter as exc:
            raise RetryLater(_retry_seconds(exc)) from None
        except TelegramError as exc:
            raise ChannelError(_describe(exc)) from None

    # ------------------------------------------------------------------ commands

    async def _on_command(self, update: Any, context: Any) -> None:
        msg, chat = update.effective_message, update.effective_chat
        if msg is None or chat is None or self.router is None or not msg.text:
            return
        user = update.effective_user
        reply = self.router.handle(chat.id, msg.text, user.username or str(user.id) if user else "")
        if reply is not None:
            self.post(Message(text=reply, category="command", mergeable=False, chat_id=chat.id))

    async def _on_error(self, update: object, context: Any) -> None:
        log.error("telegram command failed: %s", _describe(context.error))

    def _on_poll_error(self, exc: Exception) -> None:
        log.warning("telegram polling failed (retrying): %s", _describe(exc))


def _retry_seconds(exc: Any) -> float:
    with warnings.catch_warnings():  # PTB 22 deprecates the int form of retry_after
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return scrub(f"{type(exc).__name__}: {exc}")
