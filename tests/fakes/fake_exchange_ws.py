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

USDⓈ-M futures (ccxt.pro ``binanceusdm``): ``POST /fapi/v1/listenKey`` (`fake_exchange_fapi`) hands
out a listen key; ``/fapi/private/ws?listenKey=...`` then receives every change of the futures
engine's orders as ``ORDER_TRADE_UPDATE`` (``o``: the order, with the fill, fee, trade id and
realised pnl) and of its conditional orders as ``ALGO_UPDATE`` (NEW, CANCELED, TRIGGERED with the
order it placed, FINISHED, EXPIRED). An unknown listen key is refused (HTTP 400).

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
from tests.fakes.fake_exchange_futures import AlgoOrder, FuturesEngine, FuturesOrder


class FakeUserStream:
    """Binance spot's user data stream for one `Engine` (start / close, or use as a context manager)."""

    def __init__(self, engine: Engine, api_key: str, secret: str, futures: FuturesEngine | None = None) -> None:
        self.engine, self.futures, self._key, self._secret = engine, futures, api_key, secret
        self.listen_keys: set[str] = set()
        self._futures_subscribers: set[web.WebSocketResponse] = set()
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
        self._outbox: asyncio.Queue[tuple[str, dict[str, Any]]] | None = None
        self._sender: asyncio.Task[None] | None = None
        self.port = 0
        engine.listeners.append(self._on_order)
        if futures is not None:
            futures.listeners.append(self._on_futures_order)

    # ------------------------------------------------------------------ control
    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def urls(self) -> dict[str, Any]:
        """ccxt.pro binance's ``urls['api']['ws']`` entries pointing here (the ``ws`` entry of the adapter's urls)."""
        return {"spot": f"{self.url}/ws", "ws-api": {"spot": f"{self.url}/ws-api/v3"},
                "linear": f"{self.url}/fapi/ws"}  # ccxt.pro adds /private to it for the user data stream

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
        if self.futures is not None:
            self.futures.listeners.remove(self._on_futures_order)

    def drop(self) -> int:
        """Cut every open connection now; returns how many were cut."""
        return int(self._call(self._drop()))

    def subscribers(self) -> int:
        return len(self._subscribed) + len(self._futures_subscribers)

    def new_listen_key(self) -> str:
        """A listen key for the futures user data stream (``POST /fapi/v1/listenKey``)."""
        key = f"fake-listen-key-{len(self.listen_keys) + 1}"
        self.listen_keys.add(key)
        return key

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # ------------------------------------------------------------------ server
    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/ws-api/v3", self._ws_api)
        app.router.add_get("/fapi/private/ws", self._futures_ws)
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
        self._futures_subscribers.clear()
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

    async def _futures_ws(self, request: web.Request) -> web.StreamResponse:
        if self.refuse:
            return web.Response(status=503, text="Service Unavailable")
        if request.query.get("listenKey") not in self.listen_keys:
            return web.Response(status=400, text="Invalid listenKey.")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._conns[ws] = request
        self._futures_subscribers.add(ws)
        self.connections += 1
        try:
            async for _ in ws:  # the futures stream takes no requests
                pass
        finally:
            self._conns.pop(ws, None)
            self._futures_subscribers.discard(ws)
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
        self._queue("spot", event)

    def _on_futures_order(self, o: FuturesOrder | AlgoOrder, execution: str, trade: dict | None) -> None:
        now = self.engine.clock.now_ms()
        self._queue("futures", algo_update(o, now) if isinstance(o, AlgoOrder) else order_trade_update(o, execution, trade, now))

    def _queue(self, kind: str, event: dict[str, Any]) -> None:
        if self._outbox is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._outbox.put_nowait, (kind, event))

    async def _send_loop(self) -> None:
        assert self._outbox is not None
        while True:
            kind, event = await self._outbox.get()
            if kind == "spot":
                targets = [(ws, json.dumps({"subscriptionId": sub, "event": event}))
                           for ws, sub in self._subscribed.items()]
            else:
                targets = [(ws, json.dumps(event)) for ws in self._futures_subscribers]
            if targets:
                self.pushed.append(event)
            for ws, text in targets:
                try:
                    await ws.send_str(text)
                except (ConnectionError, RuntimeError):
                    self._subscribed.pop(ws, None)  # cut meanwhile
                    self._futures_subscribers.discard(ws)


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


def order_trade_update(o: FuturesOrder, execution: str, trade: dict | None, now_ms: int) -> dict[str, Any]:
    """Binance futures' ``ORDER_TRADE_UPDATE`` of an order after a change."""
    avg = o.cum_quote / o.executed if o.executed else 0
    return {"e": "ORDER_TRADE_UPDATE", "E": now_ms, "T": now_ms, "o": {
        "s": o.symbol, "c": o.client_id, "S": o.side, "o": o.type, "f": "GTC", "q": str(o.qty), "p": str(o.price),
        "ap": str(avg), "sp": str(o.stop), "x": execution, "X": o.status, "i": o.order_id,
        "l": trade["qty"] if trade else "0", "z": str(o.executed), "L": trade["price"] if trade else "0",
        "N": trade["commissionAsset"] if trade else "USDT", "n": trade["commission"] if trade else "0",
        "T": trade["time"] if trade else o.update_time, "t": trade["id"] if trade else 0, "b": "0", "a": "0",
        "m": bool(trade and trade["maker"]), "R": o.reduce_only, "wt": "CONTRACT_PRICE", "ot": o.orig_type or o.type,
        "ps": "BOTH", "cp": o.close_position, "rp": trade["realizedPnl"] if trade else "0", "V": "NONE",
        "pm": "NONE", "gtd": 0}}


def algo_update(a: AlgoOrder, now_ms: int) -> dict[str, Any]:
    """Binance futures' ``ALGO_UPDATE`` of a conditional order after a change."""
    return {"e": "ALGO_UPDATE", "T": now_ms, "E": now_ms, "o": {
        "caid": a.client_id, "aid": a.algo_id, "at": "CONDITIONAL", "o": a.type, "s": a.symbol, "S": a.side,
        "ps": "BOTH", "f": "GTC", "q": str(a.qty), "X": a.status, "ai": a.actual_order_id,
        "ap": str(a.actual_price), "aq": "0", "act": "0", "tp": str(a.trigger), "p": str(a.price), "V": "NONE",
        "wt": "CONTRACT_PRICE", "pm": "NONE", "cp": a.close_position, "pP": False, "R": a.reduce_only,
        "tt": a.trigger_time, "gtd": 0, "rm": ""}}


def _error(rid: Any, status: int, code: int, msg: str) -> dict[str, Any]:
    return {"id": rid, "status": status, "error": {"code": code, "msg": msg}}
