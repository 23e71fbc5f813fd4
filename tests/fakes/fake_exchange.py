"""A fake Binance REST API (spot and USDⓈ-M futures) on 127.0.0.1 for the real ccxt client (tests only).

Implements what the ccxt adapter, the live feed and `atf data download` use: ``ping``,
``time``, ``exchangeInfo``, ``klines``, ``ticker/24hr`` (bid and ask `spread` apart around
the last price) and the signed ``account``,
``order`` (POST/GET/DELETE), ``openOrders``, ``allOrders``, ``myTrades``, ``orderList/oco``;
and under ``/fapi`` the USDⓈ-M futures account of `fake_exchange_futures` (positions, leverage,
margin type, orders, the Algo Service's conditional orders, userTrades; see `fake_exchange_fapi`).
Both accounts trade on the same price paths.
With ``client_id_lookup=False`` it behaves like a venue that cannot fetch an order by its
client order id (the adapter must then search the order lists). Signed requests
are checked like Binance does: the ``X-MBX-APIKEY`` header, the HMAC-SHA256 signature and the
timestamp against the server clock and ``recvWindow`` (-1021 when the client clock is off).

Faults are queued per endpoint with `fault(method, path, kind, times)`:

* ``rate_limit``: HTTP 429 with ``Retry-After`` and code -1003, nothing done
* ``unavailable`` / ``server_error``: HTTP 503 / 500, nothing done
* ``timeout``: hang for `hang_seconds`, nothing done (the client times out)
* ``timeout_after_accept``: do the request (e.g. accept the order), then hang before answering
* ``insufficient_balance``: -2010 "Account has insufficient balance for requested action."
* ``insufficient_margin``: -2019 "Margin is insufficient." (futures)
* ``unknown_status``: do the request, then answer HTTP 503 with -1007 "... Send status unknown;
  execution status unknown." (what Binance futures says when its backend is slow)

Every request is recorded in `requests` (method, path, parameters without the signature).

With ``websocket=True`` the user data streams are served too (`ws`, see `fake_exchange_ws`):
ccxt.pro's ``watch_orders`` gets an ``executionReport`` (spot) or an ``ORDER_TRADE_UPDATE`` /
``ALGO_UPDATE`` (futures) at every order change.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from tests.fakes import fake_exchange_fapi
from tests.fakes.fake_exchange_engine import (
    INSUFFICIENT,
    Engine,
    FakeClock,
    FakeError,
    FakeMarket,
    FakeOrder,
    PricePath,
)
from tests.fakes.fake_exchange_futures import MARGIN_SHORT, AlgoOrder, FuturesEngine, FuturesOrder
from tests.fakes.fake_exchange_ws import FakeUserStream

API_KEY = "fake-api-key-0123456789"
API_SECRET = "fake-api-secret-9876543210"
INTERVALS = {"1s": 1_000, "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
             "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "12h": 43_200_000,
             "1d": 86_400_000, "1w": 604_800_000}
SIGNED = {"/api/v3/account", "/api/v3/order", "/api/v3/openOrders", "/api/v3/allOrders", "/api/v3/myTrades",
          "/api/v3/orderList/oco"}


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str]
    ts: float


class FakeExchange:
    """The fake venue: an `Engine` served over HTTP on 127.0.0.1 (use as a context manager)."""

    def __init__(
        self,
        *,
        start_ms: int = 1_704_067_200_000,  # 2024-01-01 00:00 UTC
        speed: float = 0.0,
        tick_ms: int = 15_000,
        markets: list[FakeMarket] | None = None,
        prices: dict[str, list[float]] | None = None,
        seed: int = 1,
        history_ms: int = 30 * 86_400_000,
        balances: dict[str, str] | None = None,
        check_timestamp: bool = True,
        hang_seconds: float = 1.5,
        client_id_lookup: bool = True,
        futures_markets: list[FakeMarket] | None = None,
        futures_wallet: str = "10000",
        websocket: bool = False,
    ) -> None:
        self.clock = FakeClock(start_ms, speed)
        self.tick_ms = tick_ms
        self.markets = markets or [FakeMarket()]
        first = start_ms - history_ms
        paths = {
            m.symbol: PricePath(first, tick_ms, seed=seed + i, prices=(prices or {}).get(m.symbol))
            for i, m in enumerate(self.markets)
        }
        self.engine = Engine(self.clock, self.markets, paths, balances or {"USDT": "10000", "BTC": "0"})
        self.futures = FuturesEngine(self.clock, futures_markets or self.markets, paths, futures_wallet)
        self.check_timestamp, self.hang_seconds = check_timestamp, hang_seconds
        self.client_id_lookup = client_id_lookup  # False: GET order by origClientOrderId is refused
        self.requests: list[Request] = []
        self.spread = Decimal(0)  # the ticker's ask minus bid, around the last price
        self._faults: dict[tuple[str, str], deque[str]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-exchange", daemon=True)
        self.ws = FakeUserStream(self.engine, API_KEY, API_SECRET, self.futures) if websocket else None

    # ------------------------------------------------------------------ control
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def api_urls(self) -> dict[str, Any]:
        """The `exchange.urls['api']` entries that point ccxt's binance client here."""
        base = self.url
        urls: dict[str, Any] = {"public": f"{base}/api/v3", "private": f"{base}/api/v3", "v1": f"{base}/api/v1",
                "sapi": f"{base}/sapi/v1"}
        for side in ("Public", "Private"):
            urls[f"fapi{side}"] = f"{base}/fapi/v1"
            for v in ("V2", "V3"):
                urls[f"fapi{side}{v}"] = f"{base}/fapi/{v.lower()}"
        if self.ws is not None:
            urls["ws"] = self.ws.urls()
        return urls

    def start(self) -> Self:
        self._thread.start()
        if self.ws is not None:
            self.ws.start()
        return self

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fault(self, method: str, path: str, kind: str, times: int = 1) -> None:
        """Answer the next `times` requests to `method path` with the fault `kind`."""
        with self._lock:
            self._faults[(method.upper(), path)].extend([kind] * times)

    def script(self, symbol: str, prices: list[float]) -> None:
        """From the current tick on, move `symbol` through `prices` (one per tick), then stay."""
        with self.engine.lock, self.futures.lock:
            self.engine.advance()
            self.futures.advance()
            path = self.engine.paths[symbol]
            path.script(path.index_at(self.clock.now_ms()), prices)

    def match(self) -> None:
        """Match the resting orders against the ticks so far now, without waiting for a request."""
        with self.engine.lock, self.futures.lock:
            self.engine.advance()
            self.futures.advance()

    def fill(self, client_id: str, qty: str, price: str | None = None) -> None:
        """Execute `qty` of the open spot order `client_id` now (a partial fill; at its limit by default)."""
        order = next(o for o in self.orders_by_client_id(client_id) if o.is_open)
        self.engine.fill_part(order, Decimal(qty), None if price is None else Decimal(price))

    def step(self, ticks: int = 1) -> None:
        """Move the frozen clock on by `ticks` price ticks."""
        self.clock.advance(ticks * self.tick_ms)

    def calls(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method.upper() and r.path == path]

    def orders_by_client_id(self, client_id: str) -> list[FakeOrder]:
        return [o for o in self.engine.orders.values() if o.client_id == client_id]

    def futures_orders(self, client_id: str) -> list[FuturesOrder]:
        """The futures account's regular orders under `client_id` (a triggered algo order's too)."""
        return [o for o in self.futures.orders.values() if o.client_id == client_id]

    def algo_orders(self, client_id: str) -> list[AlgoOrder]:
        return [a for a in self.futures.algos.values() if a.client_id == client_id]

    def now_ms(self) -> int:
        return self.clock.now_ms()

    # ------------------------------------------------------------------ dispatch
    def handle(self, method: str, path: str, params: dict[str, str], headers: Any, raw: str) -> tuple[int, Any, dict]:
        with self._lock:
            self.requests.append(Request(method, path, {k: v for k, v in params.items() if k != "signature"},
                                         time.monotonic()))
            queue = self._faults.get((method, path))
            fault = queue.popleft() if queue else None
        if fault == "rate_limit":
            return 429, {"code": -1003, "msg": "Too many requests; current limit is 1200 request weight per 1 MINUTE."}, {"Retry-After": "1"}
        if fault in ("unavailable", "server_error"):
            return (503 if fault == "unavailable" else 500), "Service Unavailable.", {}
        if fault == "timeout":
            time.sleep(self.hang_seconds)
            return 504, "Gateway Timeout", {}
        if fault == "insufficient_balance":
            return _error(INSUFFICIENT)
        if fault == "insufficient_margin":
            return _error(MARGIN_SHORT)
        try:
            if path in SIGNED or path in fake_exchange_fapi.FAPI_SIGNED:
                self._authenticate(params, headers, raw)
            self.engine.advance()
            self.futures.advance()
            if path.startswith("/fapi/"):
                body = fake_exchange_fapi.route(self, method, path, params)
            else:
                body = self._route(method, path, params)
        except FakeError as exc:
            return _error(exc)
        if fault == "timeout_after_accept":
            time.sleep(self.hang_seconds)
        if fault == "unknown_status":
            return 503, {"code": -1007, "msg": "Timeout waiting for response from backend server. "
                         "Send status unknown; execution status unknown."}, {}
        return 200, body, {}

    def _authenticate(self, params: dict[str, str], headers: Any, raw: str) -> None:
        if headers.get("X-MBX-APIKEY") != API_KEY:
            raise FakeError(401, -2014, "API-key format invalid.")
        payload, _, signature = raw.rpartition("&signature=")
        expected = hmac.new(API_SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            raise FakeError(400, -1022, "Signature for this request is not valid.")
        if self.check_timestamp:
            window = int(params.get("recvWindow", "5000"))
            offset = int(params.get("timestamp", "0")) - self.clock.now_ms()
            if offset > 1000 or -offset > window:
                raise FakeError(400, -1021, "Timestamp for this request is outside of the recvWindow.")

    def _route(self, method: str, path: str, p: dict[str, str]) -> Any:
        e = self.engine
        route = (method, path)
        if route == ("GET", "/api/v3/ping"):
            return {}
        if route == ("GET", "/api/v3/time"):
            return {"serverTime": self.clock.now_ms()}
        if route == ("GET", "/api/v3/exchangeInfo"):
            return self._exchange_info()
        if route == ("GET", "/api/v3/klines"):
            return self.klines(p)
        if route == ("GET", "/api/v3/ticker/24hr"):
            return self.ticker(p["symbol"])
        if route == ("GET", "/api/v3/account"):
            return self._account()
        if route == ("POST", "/api/v3/order"):
            return _order_json(e.new_order(p), full=True)
        if route == ("GET", "/api/v3/order"):
            if "origClientOrderId" in p and not self.client_id_lookup:
                raise FakeError(400, -1102, "Mandatory parameter 'orderId' was not sent, was empty/null, or malformed.")
            return _order_json(e.find(p["symbol"], p.get("orderId"), p.get("origClientOrderId")))
        if route == ("GET", "/api/v3/allOrders"):
            since = int(p.get("startTime", "0"))
            return [_order_json(o) for o in e.orders.values() if o.symbol == p["symbol"] and o.time >= since]
        if route == ("DELETE", "/api/v3/order"):
            return _order_json(e.cancel(p["symbol"], p.get("orderId"), p.get("origClientOrderId")))
        if route == ("GET", "/api/v3/openOrders"):
            return [_order_json(o) for o in e.orders.values() if o.is_open and o.symbol == p.get("symbol", o.symbol)]
        if route == ("GET", "/api/v3/myTrades"):
            return self._my_trades(p)
        if route == ("POST", "/api/v3/orderList/oco"):
            list_id, legs = e.new_oco(p)
            return {"orderListId": list_id, "contingencyType": "OCO", "listStatusType": "EXEC_STARTED",
                    "listOrderStatus": "EXECUTING", "listClientOrderId": p.get("listClientOrderId", ""),
                    "transactionTime": self.clock.now_ms(), "symbol": p["symbol"],
                    "orders": [{"symbol": o.symbol, "orderId": o.order_id, "clientOrderId": o.client_id} for o in legs],
                    "orderReports": [_order_json(o) for o in legs]}
        raise FakeError(404, -1000, f"unknown endpoint {method} {path}")

    # ------------------------------------------------------------------ answers
    def _exchange_info(self) -> dict[str, Any]:
        symbols = []
        for m in self.markets:
            types = ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT"]
            symbols.append({
                "symbol": m.symbol, "status": "TRADING", "baseAsset": m.base, "baseAssetPrecision": 8,
                "quoteAsset": m.quote, "quotePrecision": 8, "quoteAssetPrecision": 8, "orderTypes": types,
                "icebergAllowed": True, "ocoAllowed": m.oco, "otoAllowed": False, "quoteOrderQtyMarketAllowed": True,
                "allowTrailingStop": False, "cancelReplaceAllowed": True, "isSpotTradingAllowed": True,
                "isMarginTradingAllowed": False, "permissions": [], "permissionSets": [["SPOT"]],
                "defaultSelfTradePreventionMode": "EXPIRE_MAKER", "allowedSelfTradePreventionModes": ["NONE"],
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": m.tick_size, "maxPrice": "1000000.00",
                     "tickSize": m.tick_size},
                    {"filterType": "LOT_SIZE", "minQty": m.min_qty, "maxQty": "9000.0", "stepSize": m.step_size},
                    {"filterType": "NOTIONAL", "minNotional": m.min_notional, "applyMinToMarket": True,
                     "maxNotional": "9000000.0", "applyMaxToMarket": False, "avgPriceMins": 5},
                ],
            })
        return {"timezone": "UTC", "serverTime": self.clock.now_ms(), "rateLimits": [], "exchangeFilters": [],
                "symbols": symbols}

    def klines(self, p: dict[str, str]) -> list[list[Any]]:
        path = self.engine.paths[p["symbol"]]
        step = INTERVALS[p["interval"]]
        limit = min(int(p.get("limit", "500")), 1000)
        now = self.clock.now_ms()
        end = min(int(p.get("endTime", now)), now)
        if "startTime" in p:
            t = -(-int(p["startTime"]) // step) * step
        else:
            t = (end // step - limit + 1) * step
        t = max(t, -(-path.start_ms // step) * step)
        rows = []
        while t <= end and len(rows) < limit:
            o, h, low, c, v = path.candle(t, step, now)
            rows.append([t, str(o), str(h), str(low), str(c), str(v), t + step - 1, str(v * c), int(v),
                         "0", "0", "0"])
            t += step
        return rows

    def ticker(self, symbol: str) -> dict[str, Any]:
        now = self.clock.now_ms()
        last = self.engine.price(symbol)
        bid, ask = last - self.spread / 2, last + self.spread / 2
        return {"symbol": symbol, "lastPrice": str(last), "bidPrice": str(bid), "askPrice": str(ask),
                "openPrice": str(last), "highPrice": str(last), "lowPrice": str(last), "volume": "0",
                "quoteVolume": "0", "openTime": now - 86_400_000, "closeTime": now, "count": 0}

    def _account(self) -> dict[str, Any]:
        e = self.engine
        assets = sorted(set(e.free) | set(e.locked))
        return {"makerCommission": 10, "takerCommission": 10, "canTrade": True, "canWithdraw": True,
                "canDeposit": True, "updateTime": self.clock.now_ms(), "accountType": "SPOT",
                "balances": [{"asset": a, "free": str(e.free.get(a, 0)), "locked": str(e.locked.get(a, 0))}
                             for a in assets], "permissions": ["SPOT"]}

    def _my_trades(self, p: dict[str, str]) -> list[dict[str, Any]]:
        rows = [t for t in self.engine.trades if t["symbol"] == p["symbol"]]
        if "orderId" in p:
            rows = [t for t in rows if str(t["orderId"]) == p["orderId"]]
        if "startTime" in p:
            rows = [t for t in rows if t["time"] >= int(p["startTime"])]
        if "fromId" in p:
            rows = [t for t in rows if t["id"] >= int(p["fromId"])]
        return rows[: int(p.get("limit", "500"))]


def _order_json(o: FakeOrder, *, full: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "symbol": o.symbol, "orderId": o.order_id, "orderListId": o.list_id, "clientOrderId": o.client_id,
        "price": str(o.price), "origQty": str(o.qty), "executedQty": str(o.executed),
        "cummulativeQuoteQty": str(o.quote_executed), "status": o.status, "timeInForce": "GTC",
        "type": o.type, "side": o.side, "stopPrice": str(o.stop), "icebergQty": "0", "time": o.time,
        "updateTime": o.update_time, "isWorking": o.type in ("LIMIT", "LIMIT_MAKER", "MARKET") or o.triggered,
        "workingTime": o.time, "origQuoteOrderQty": "0", "selfTradePreventionMode": "NONE",
    }
    if full:
        body["transactTime"] = o.time
        body["fills"] = [{"price": f["price"], "qty": f["qty"], "commission": f["commission"],
                          "commissionAsset": f["commissionAsset"], "tradeId": f["id"]} for f in o.fills]
    return body


def _error(exc: FakeError) -> tuple[int, Any, dict]:
    return exc.status, {"code": exc.code, "msg": exc.msg}, {}


def _handler(fake: FakeExchange) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            raw = body if self.command == "POST" else parts.query
            params = dict(parse_qsl(parts.query)) | dict(parse_qsl(body))
            status, payload, headers = fake.handle(self.command, parts.path, params, self.headers, raw)
            data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if not isinstance(payload, str) else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout faults)

        do_GET = do_POST = do_DELETE = do_PUT = _serve

    return Handler
