"""A fake Telegram Bot API on 127.0.0.1 for python-telegram-bot (base_url points here).

It records sendMessage / sendPhoto / sendDocument, serves queued updates to getUpdates
(long polling, offsets as the real API), and can be made to hang, to answer 429 with
retry_after, or be stopped (down). It runs on its own thread and event loop, so the code
under test and the test itself both talk to it as to a remote server.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

SEND_METHODS = ("sendMessage", "sendPhoto", "sendDocument")


@dataclass(frozen=True)
class Sent:
    method: str
    chat_id: int
    text: str  # text, or caption of a photo/document
    silent: bool
    file: bytes | None
    at: float  # time.monotonic() when the request arrived


class FakeTelegramAPI:
    def __init__(self, token: str) -> None:
        self.token = token
        self.sent: list[Sent] = []
        self.calls: list[str] = []  # every method called, in order
        self._cond = threading.Condition()
        self._updates: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._hang = False
        self._too_many: list[int] = []  # retry_after of the next sends to refuse with 429
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------------ control (test thread)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    def start(self) -> FakeTelegramAPI:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(ready,), daemon=True, name="fake-telegram")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake Telegram server did not start")
        return self

    def stop(self) -> None:
        """Shut down (the port then refuses connections: the service is down)."""
        loop = self._loop
        if loop is None:
            return
        self.hang(False)
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._loop = None

    def hang(self, on: bool = True) -> None:
        """While on, every request is held without an answer (and never processed)."""
        with self._cond:
            self._hang = on
            if self._loop is not None and not on:
                self._loop.call_soon_threadsafe(self._release_all)

    def too_many_requests(self, count: int, retry_after: int = 1) -> None:
        """Answer the next `count` sends with 429 and this retry_after."""
        with self._cond:
            self._too_many.extend([retry_after] * count)

    def push_command(self, chat_id: int, text: str, user_id: int | None = None) -> None:
        """Queue a message with a bot command, as a user typing it in that chat."""
        command = text.split()[0]
        update = {
            "update_id": next(self._ids),
            "message": {
                "message_id": next(self._ids), "date": int(time.time()),
                "chat": {"id": chat_id, "type": "private"},
                "from": {"id": user_id or chat_id, "is_bot": False, "first_name": "Trader", "username": f"u{chat_id}"},
                "text": text, "entities": [{"type": "bot_command", "offset": 0, "length": len(command)}],
            },
        }
        with self._cond:
            self._updates.append(update)
            self.calls.append("(update queued)")
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._updates_arrived.set)

    def wait_for(self, predicate: Callable[[list[Sent]], bool], timeout: float = 10.0) -> list[Sent]:
        """Wait until `predicate(sent)` holds; return a copy of the sends (AssertionError on timeout)."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.sent), timeout):
                raise AssertionError(f"timed out; sent so far: {[s.text[:60] for s in self.sent]}")
            return list(self.sent)

    def wait_sent(self, count: int, timeout: float = 10.0, chat_id: int | None = None) -> list[Sent]:
        return [s for s in self.wait_for(
            lambda sent: sum(chat_id in (None, s.chat_id) for s in sent) >= count, timeout)
            if chat_id in (None, s.chat_id)]

    def to(self, chat_id: int) -> list[Sent]:
        with self._cond:
            return [s for s in self.sent if s.chat_id == chat_id]

    def count(self, method: str) -> int:
        with self._cond:
            return self.calls.count(method)

    # ------------------------------------------------------------------ server (its own loop)

    def _main(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._updates_arrived = asyncio.Event()
        self._released = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        loop.run_forever()
        loop.close()

    async def _shutdown(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def _release_all(self) -> None:
        self._released.set()
        self._released = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _params(request)
        with self._cond:
            self.calls.append(method)
            hang = self._hang
        if hang:
            # Held without an answer; once released it is refused unprocessed (the client gave up).
            await self._released.wait()
            return web.json_response({"ok": False, "error_code": 503, "description": "Service Unavailable"},
                                     status=503)
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        if method == "getMe":
            return _ok({"id": 4242, "is_bot": True, "first_name": "atf", "username": "atf_test_bot"})
        if method in ("deleteWebhook", "setMyCommands"):
            return _ok(True)
        if method == "getUpdates":
            return _ok(await self._get_updates(params))
        if method in SEND_METHODS:
            return self._send(method, params)
        return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        deadline = time.monotonic() + float(params.get("timeout") or 0)
        while True:
            with self._cond:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
                if self._updates:
                    return list(self._updates)
                self._updates_arrived.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            try:
                await asyncio.wait_for(self._updates_arrived.wait(), left)
            except TimeoutError:
                return []

    def _send(self, method: str, params: dict[str, Any]) -> web.Response:
        with self._cond:
            if self._too_many:
                wait = self._too_many.pop(0)
                return web.json_response(
                    {"ok": False, "error_code": 429, "description": f"Too Many Requests: retry after {wait}",
                     "parameters": {"retry_after": wait}}, status=429)
            chat = int(params["chat_id"])
            text = str(params.get("text") or params.get("caption") or "")
            file = params.get("photo") or params.get("document")
            self.sent.append(Sent(method, chat, text, params.get("disable_notification") is True,
                                  file if isinstance(file, bytes) else None, time.monotonic()))
            self._cond.notify_all()
            mid = next(self._ids)
        result: dict[str, Any] = {"message_id": mid, "date": int(time.time()),
                                  "chat": {"id": chat, "type": "private"}}
        if method == "sendMessage":
            result["text"] = text
        else:
            result["caption"] = text
            result["photo"] = [{"file_id": f"f{mid}", "file_unique_id": f"u{mid}", "width": 640, "height": 320}]
        return _ok(result)


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


async def _params(request: web.Request) -> dict[str, Any]:
    """Read form, multipart or JSON parameters; JSON-encoded values (booleans, ids) decoded."""
    if request.content_type == "application/json":
        return dict(await request.json())
    out: dict[str, Any] = dict(request.query)
    form = await request.post()
    for key, value in form.items():
        if hasattr(value, "file"):
            out[key] = value.file.read()
            continue
        if key in ("text", "caption"):
            out[key] = value
            continue
        try:
            out[key] = json.loads(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            out[key] = value
    return out
