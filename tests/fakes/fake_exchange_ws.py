"""The spot user data stream of the fake exchange, over a real websocket on 127.0.0.1 (tests only).

The subset of Binance's WebSocket API (``/ws-api/v3``) that ccxt.pro's ``binance.watch_orders``
uses on spot:

* request ``userDataStream.subscribe.signature`` (``params``: ``apiKey``, ``timestamp``,
  ``signature``: HMAC-SHA256 of the other parameters sorted by name, as ccxt signs them) ->
  ``{"id", "status": 200, "result": {"subscriptionId": n}}``; a wrong key or signature ->
  status 401 with -2014 / -1022; any other method -> status 400, -1000;
* then every change of an order of the spot engine is pushed to the subscribed connections as
  ``{"subscriptionId": n, "event": executionReport}``: NEW (placement), TRADE (each fill: last
  quantity and price, commission and its asset, trade id, cumulative quantity and quote),
  CANCELED (``C``: the original client order id), EXPIRED (the other leg of a filled OCO).

Faults: `drop()` cuts every connection (like a network failure: no close handshake);
``refuse = True`` answers new connections with HTTP 503 until set back to False.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import threading
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.fake_exchange_engine import Engine, FakeOrder


class FakeUserStream:
    """Binance spot's user data stream for one `Engine` (start / close, or use as a context manager)."""

    def __init__(self, engine: Engine, api_key: str, secret: str) -> None:
        self.engine, self._key, self._secret = engine, api_key, secret
        self.refuse = False
        self.requests: list[dict[str, Any]] = []  # WS API requests received (method and params, no signature)
        self.pushed: list[dict[str, Any]] = []  # executionReports sent to at least one subscriber
        self.connections = 0  # websocket connections accepted so far
        self._subscribed: dict[web.WebSocketResponse, int] = {}
        self._conns: dict[web.WebSocketResponse, web.Request] = {}
        self._ids = itertools.count(0)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-exchange-ws", daemon=True)
        self._runner: web.AppRunner | None = None
        self._outbox: asyncio.Queue[dict[str, Any]] | None = None
        self._sender: asyncio.Task[None] | None = None
        self.port = 0
        engine.listeners.append(self._on_order)

    # ------------------------------------------------------------------ control
    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def urls(self) -> dict[str, Any]:
        """ccxt.pro binance's ``urls['api']['ws']`` entries pointing here (the ``ws`` entry of the adapter's urls)."""
        return {"spot": f"{self.url}/ws", "ws-api": {"spot": f"{self.url}/ws-api/v3"}}

    def start(self) -> FakeUserStream:
        self._thread.start()
        self._call(self._serve())
        return self

    def close(self) -> None:
        if self._runner is not None:
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
        self.engine.listeners.remove(self._on_order)

    def drop(self) -> int:
        """Cut every open connection now; returns how many were cut."""
        return int(self._call(self._drop()))

    def subscribers(self) -> int:
        return len(self._subscribed)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # ------------------------------------------------------------------ server
    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/ws-api/v3", self._ws_api)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._outbox = asyncio.Queue()
        self._sender = asyncio.create_task(self._send_loop())

    async def _shutdown(self) -> None:
        await self._drop()
        if self._sender is not None:
            self._sender.cancel()
        assert self._runner is not None
        await self._runner.cleanup()

    async def _drop(self) -> int:
        conns = list(self._conns.items())
        self._subscribed.clear()
        for _, request in conns:
            if request.transport is not None:
                request.transport.abort()
        return len(conns)

    async def _ws_api(self, request: web.Request) -> web.StreamResponse:
        if self.refuse:
            return web.Response(status=503, text="Service Unavailable")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._conns[ws] = request
        self.connections += 1
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str(json.dumps(self._answer(ws, json.loads(msg.data))))
        finally:
            self._conns.pop(ws, None)
            self._subscribed.pop(ws, None)
        return ws

    def _answer(self, ws: web.WebSocketResponse, req: dict[str, Any]) -> dict[str, Any]:
        rid, method, params = req.get("id"), req.get("method"), dict(req.get("params") or {})
        signature = str(params.pop("signature", ""))
        self.requests.append({"method": method, "params": params})
        if method != "userDataStream.subscribe.signature":
            return _error(rid, 400, -1000, f"Unknown method {method!r}.")
        if params.get("apiKey") != self._key:
            return _error(rid, 401, -2014, "API-key format invalid.")
        payload = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        expected = hmac.new(self._secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            return _error(rid, 401, -1022, "Signature for this request is not valid.")
        sub = next(self._ids)
        self._subscribed[ws] = sub
        return {"id": rid, "status": 200, "result": {"subscriptionId": sub}, "rateLimits": []}

    # ------------------------------------------------------------------ events
    def _on_order(self, o: FakeOrder, execution: str, trade: dict | None) -> None:
        # The engine's thread, under its lock: snapshot the order now, send from the server's loop.
        event = execution_report(o, execution, trade, self.engine.clock.now_ms())
        if self._outbox is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._outbox.put_nowait, event)

    async def _send_loop(self) -> None:
        assert self._outbox is not None
        while True:
            event = await self._outbox.get()
            targets = list(self._subscribed.items())
            if targets:
                self.pushed.append(event)
            for ws, sub in targets:
                try:
                    await ws.send_str(json.dumps({"subscriptionId": sub, "event": event}))
                except (ConnectionError, RuntimeError):
                    self._subscribed.pop(ws, None)  # cut meanwhile


def execution_report(o: FakeOrder, execution: str, trade: dict | None, now_ms: int) -> dict[str, Any]:
    """Binance's spot ``executionReport`` of an order after a change."""
    cancel = execution == "CANCELED"
    return {
        "e": "executionReport", "E": now_ms, "s": o.symbol,
        "c": f"cancel-{o.order_id}" if cancel else o.client_id, "C": o.client_id if cancel else "",
        "S": o.side, "o": o.type, "f": "GTC", "q": str(o.qty), "p": str(o.price), "P": str(o.stop), "F": "0",
        "g": o.list_id, "x": execution, "X": o.status, "r": "NONE", "i": o.order_id,
        "l": trade["qty"] if trade else "0", "z": str(o.executed), "L": trade["price"] if trade else "0",
        "n": trade["commission"] if trade else "0", "N": trade["commissionAsset"] if trade else None,
        "T": trade["time"] if trade else o.update_time, "t": trade["id"] if trade else -1, "I": 0,
        "w": o.is_open, "m": bool(trade and trade["isMaker"]), "M": False, "O": o.time,
        "Z": str(o.quote_executed), "Y": trade["quoteQty"] if trade else "0", "Q": "0",
    }


def _error(rid: Any, status: int, code: int, msg: str) -> dict[str, Any]:
    return {"id": rid, "status": status, "error": {"code": code, "msg": msg}}
