"""CcxtVenue: one ccxt exchange behind the adapter's rules.

What it adds to the bare ccxt client:

* construction from `CcxtSettings`: ``enableRateLimit``, the timeout, the sandbox for the
  testnet (`set_sandbox_mode(True)`; Binance futures: demo trading, `enable_demo_trading`),
  Binance options that keep start-up to the public endpoints the adapter needs (spot or
  USDⓈ-M markets only, no currency or margin calls), optional API URL overrides (which keep
  ccxt's per-market error table);
* markets by the bot's symbol (``BTCUSDT`` or ``BTC/USDT``), amounts truncated and prices
  rounded to the market's precision, and orders below the minimum amount or notional refused
  before anything is sent (`OrderRefused` with a reason code);
* every request through `Caller` (budget, retries, breaker, scrubbed errors) and the server
  clock synchronised (`load_time_difference`) at connect and on a -1021 drift;
* idempotent placement: an order is POSTed once; after an ambiguous failure (timeout, 5xx,
  429) it is looked up by its client order id and only sent again when the venue says it
  does not have it (`place`);
* USDⓈ-M futures: conditional orders live in Binance's Algo Service under their own ids; the
  venue remembers which ids are algo orders, reads them there and follows a triggered one to
  the order it placed, which holds the fills. Positions (`positions`) and the set-up of
  leverage and margin mode (`configure`, see `ccxt_futures`).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

from trading.brokers import ccxt_binance, ccxt_futures
from trading.brokers.ccxt_binance import TRIGGER
from trading.brokers.ccxt_config import CcxtSettings, Credentials, import_ccxt, import_ccxt_pro
from trading.brokers.ccxt_futures import VenuePosition
from trading.brokers.ccxt_orders import (
    CONDITIONAL_KINDS,
    OrderRefused,
    PlaceRequest,
    VenueOrder,
    VenueTrade,
    _opt,
    create_args,
    dec,
    parse_order,
    parse_trade,
)
from trading.brokers.ccxt_resilience import (
    Caller,
    CircuitBreaker,
    RequestBudget,
    Scrubber,
    ScrubFilter,
    VenueUnavailable,
)
from trading.brokers.ccxt_stream import OrderStream, order_stream
from trading.suggest import did_you_mean

log = logging.getLogger(__name__)
D = Decimal
ZERO = Decimal(0)
QUOTE_FRESH_S = 2.0  # a ticker read this recently (e.g. for the order just sent) is the quote at its fill
_SCRUB = Scrubber()  # one filter on ccxt's logger, fed the secrets of every venue built
logging.getLogger("ccxt.base.exchange").addFilter(ScrubFilter(_SCRUB))


__all__ = ["CcxtVenue", "OrderRefused", "PlaceRequest", "VenueOrder", "VenuePosition", "VenueTrade",
           "build_exchange", "unified_symbol"]


def _options(settings: CcxtSettings) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if settings.ccxt_id in ("binance", "binanceusdm"):
        kind = "linear" if settings.ccxt_id == "binanceusdm" else "spot"
        options = {"fetchMarkets": {"types": [kind]}, "fetchCurrencies": False, "fetchMargins": False}
    elif settings.futures:
        options = {"defaultType": "swap"}
    return {**options, **settings.options}


def unified_symbol(exchange: Any, name: str) -> str:
    """The unified symbol of a bot symbol (``BTCUSDT`` or ``BTC/USDT``) on an exchange with its markets loaded."""
    ex = exchange
    if name in ex.markets:
        return name
    by_id = ex.markets_by_id.get(name) if ex.markets_by_id else None
    if by_id:
        return str(by_id[0]["symbol"])
    if "/" in name and ":" not in name:  # a perpetual named without its settle currency
        candidate = f"{name}:{name.split('/')[1]}"
        if candidate in ex.markets:
            return candidate
    hint = did_you_mean(name, list(ex.markets) + list(ex.markets_by_id or {}))
    raise ValueError(f"{ex.id} has no market {name!r}" + (f"; did you mean {hint!r}?" if hint else ""))


def build_exchange(settings: CcxtSettings, credentials: Credentials | None = None, *,
                   asynchronous: bool = False, pro: bool = False) -> Any:
    """A ccxt exchange (``ccxt``, ``ccxt.async_support`` or ``ccxt.pro``) configured from the settings.

    The same keys, sandbox and URL overrides whichever the module; ``urls['ws']`` is merged
    into ccxt.pro's websocket URLs.
    """
    ccxt = import_ccxt()
    module: Any = import_ccxt_pro("websocket order updates") if pro else (
        importlib.import_module("ccxt.async_support") if asynchronous else ccxt)
    cls = getattr(module, settings.ccxt_id, None)
    if cls is None or settings.ccxt_id not in ccxt.exchanges:
        hint = did_you_mean(settings.ccxt_id, ccxt.exchanges)
        raise ValueError(f"unknown ccxt exchange {settings.ccxt_id!r}" + (f"; did you mean {hint!r}?" if hint else ""))
    config: dict[str, Any] = {"enableRateLimit": True, "timeout": settings.timeout_ms, "options": _options(settings)}
    if settings.rate_limit_ms is not None:
        config["rateLimit"] = settings.rate_limit_ms
    if credentials is not None:
        config["apiKey"] = credentials.api_key.get_secret_value()
        config["secret"] = credentials.secret.get_secret_value()
        if credentials.password is not None:
            config["password"] = credentials.password.get_secret_value()
    exchange = cls(config)
    if settings.testnet:
        _sandbox(exchange, settings, ccxt)
    if settings.urls:
        rest = {k: v for k, v in settings.urls.items() if isinstance(v, str)}
        api = exchange.urls.get("api")
        if isinstance(api, dict):
            exchange.urls["api"] = {**api, **rest}
            ws = settings.urls.get("ws")
            if pro and isinstance(ws, dict):
                exchange.urls["api"]["ws"] = _merged(api.get("ws") or {}, ws)
        else:
            exchange.urls["api"] = rest.get("api", api)
        if settings.ccxt_id.startswith("binance"):
            ccxt_binance.keep_market_exceptions(exchange, "linear" if settings.futures else "spot")
    return exchange


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merged(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def _sandbox(exchange: Any, settings: CcxtSettings, ccxt: Any) -> None:
    if settings.sandbox_kind == "demo":
        if not hasattr(exchange, "enable_demo_trading"):
            raise ValueError(f"{settings.exchange} has no demo trading in ccxt: set sandbox: testnet")
        exchange.enable_demo_trading(True)
        return
    try:
        exchange.set_sandbox_mode(True)
    except ccxt.NotSupported:
        raise ValueError(
            f"{settings.exchange} has no testnet in ccxt: set testnet: false and trading_mode: live"
        ) from None
    if settings.futures:  # the retired Binance futures testnet, for those who still have keys
        exchange.options["disableFuturesSandboxWarning"] = True


def _num(x: Decimal) -> str:
    return format(x.normalize(), "f")


class CcxtVenue:
    """A ccxt exchange with precision, limits, resilience and idempotent placement."""

    def __init__(
        self,
        settings: CcxtSettings,
        credentials: Credentials | None = None,
        *,
        on_halt: Callable[[str], None] | None = None,
        on_resume: Callable[[], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        ccxt = import_ccxt()
        self.ccxt, self.settings, self._sleep, self._clock = ccxt, settings, sleep, clock
        self._tickers: dict[str, tuple[float, dict[str, Any]]] = {}  # symbol -> (read at, ccxt ticker)
        self.exchange = build_exchange(settings, credentials)
        self.scrub = Scrubber(credentials.values() if credentials else ())
        _SCRUB.add(credentials.values() if credentials else ())
        self.breaker = CircuitBreaker(
            settings.circuit_breaker.failures, settings.circuit_breaker.cooldown,
            clock=clock, on_open=on_halt, on_close=on_resume,
        )
        self.budget = RequestBudget(settings.requests_per_minute, clock=clock, sleep=sleep)
        self.call = Caller(settings.retry, self.budget, self.breaker, self.scrub,
                           resync=self.sync_time, retry_after=self._retry_after, sleep=sleep)
        self.connected = False
        self._algo: dict[str, str | None] = {}  # algo order id -> the regular order it placed, once known
        # Order updates by websocket (None: polling only); started at connect, see ccxt_stream.
        self.stream: OrderStream | None = order_stream(settings, credentials, self)

    # ------------------------------------------------------------------ connection
    def connect(self) -> None:
        """Load the markets and synchronise with the server clock (retried); futures: one-way mode only."""
        self.call("load markets", self.exchange.load_markets, True)
        if self.exchange.has.get("fetchTime"):
            self.sync_time()
        if self.settings.futures:
            ccxt_futures.require_one_way(self)
        self.connected = True
        if self.stream is not None:
            self.stream.start(self.exchange)

    def close(self) -> None:
        """Stop the order stream (its thread and websocket); the REST client holds nothing open."""
        if self.stream is not None:
            self.stream.stop()

    def sync_time(self) -> None:
        """Measure the offset of the venue's clock; ccxt signs requests on the venue's time."""
        offset = self.call("sync time", self.exchange.load_time_difference)
        log.info("%s clock offset %d ms", self.exchange.id, offset)

    def server_time_ms(self) -> int:
        """The venue's time now (ms), as measured at the last sync."""
        return int(self.exchange.milliseconds() - int(self.exchange.options.get("timeDifference", 0) or 0))

    def _retry_after(self) -> float | None:
        headers = self.exchange.last_response_headers or {}
        value = headers.get("Retry-After") or headers.get("retry-after")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None

    # ------------------------------------------------------------------ markets
    def symbol(self, name: str) -> str:
        """The unified symbol of a bot symbol (``BTCUSDT`` or ``BTC/USDT``)."""
        return unified_symbol(self.exchange, name)

    def market(self, symbol: str) -> dict[str, Any]:
        return self.exchange.market(symbol)

    def is_contract(self, symbol: str) -> bool:
        return bool(self.market(symbol).get("contract"))

    def unsupported(self, symbol: str) -> str | None:
        """Why the adapter does not trade this market (None: it does)."""
        m = self.market(symbol)
        if m.get("option"):
            return f"{symbol} is an option; the ccxt broker trades spot and USDⓈ-M futures"
        if m.get("contract") and not m.get("linear"):
            return f"{symbol} is an inverse (COIN-M) contract; the ccxt broker trades USDⓈ-M (linear) futures"
        if m.get("contract") and not self.settings.futures:
            return f"{symbol} is a contract; set broker.ccxt.market: future to trade futures"
        return None

    def round_amount(self, symbol: str, amount: Decimal) -> Decimal:
        """Truncate to the amount step (0 when less than one step)."""
        try:
            return D(self.exchange.amount_to_precision(symbol, str(amount)))
        except self.ccxt.InvalidOrder:
            return ZERO

    def round_price(self, symbol: str, price: Decimal) -> Decimal:
        return D(self.exchange.price_to_precision(symbol, str(price)))

    def check(self, symbol: str, amount: Decimal, price: Decimal, *, reduce_only: bool = False) -> None:
        """Refuse an order the venue's limits would reject (amount after rounding, notional at `price`).

        A reduce-only order on a contract may be below the minimum notional (Binance exempts it:
        the last bit of a position must always be closable).
        """
        m = self.market(symbol)
        limits, quote = m.get("limits") or {}, m.get("quote", "")
        step = (m.get("precision") or {}).get("amount")
        if amount <= 0:
            raise OrderRefused("ZERO_AMOUNT", f"{symbol}: the quantity rounds to 0 at the step {step}")
        min_amount = (limits.get("amount") or {}).get("min")
        if min_amount is not None and amount < dec(min_amount):
            raise OrderRefused("MIN_AMOUNT", f"{symbol}: {amount} is below the venue minimum {min_amount}")
        min_cost = (limits.get("cost") or {}).get("min")
        notional = amount * price * dec(m.get("contractSize") or 1)
        if min_cost is not None and notional < dec(min_cost) and not (reduce_only and m.get("contract")):
            raise OrderRefused(
                "MIN_NOTIONAL",
                f"{symbol}: {_num(amount)} at {_num(price)} is {notional:.8f} {quote}, below the venue minimum {min_cost} {quote}",
            )

    def stop_limit_price(self, symbol: str, side: str, stop: Decimal) -> Decimal:
        """The limit of a stop-limit standing in for a stop: `stop_limit_offset` beyond the trigger."""
        offset = D(str(self.settings.stop_limit_offset))
        return self.round_price(symbol, stop * (1 - offset if side == "sell" else 1 + offset))

    def supports_stop(self, symbol: str) -> bool:
        has = self.exchange.has
        return bool(has.get("createStopLossOrder") or has.get("createStopOrder") or has.get("createTriggerOrder"))

    def supports_oco(self, symbol: str) -> bool:
        if self.settings.oco == "emulated":
            return False
        return ccxt_binance.supports_oco(self.exchange, self.market(symbol))

    # ------------------------------------------------------------------ orders
    def algo_market(self, symbol: str) -> bool:
        """True where conditional orders live in Binance's Algo Service (USDⓈ-M contracts)."""
        return self.exchange.id.startswith("binance") and self.is_contract(symbol)

    def place(self, req: PlaceRequest) -> VenueOrder:
        """Send one order; never twice (see the module docstring). Raise OrderRefused or VenueUnavailable."""
        algo = req.kind in CONDITIONAL_KINDS and self.algo_market(req.symbol)
        return self._once(req.symbol, req.client_id, lambda: [self._create(req)], algo=algo)[0]

    def place_oco(self, symbol: str, request: dict[str, str], client_ids: tuple[str, str]) -> list[VenueOrder]:
        """Send a Binance OCO list once; after an ambiguous failure look its legs up first."""
        market = self.market(symbol)
        return self._once(symbol, client_ids[0], lambda: ccxt_binance.place_oco(self.exchange, market, request),
                          extra=client_ids[1])

    def _once(self, symbol: str, client_id: str, send: Callable[[], list[dict[str, Any]]],
              extra: str | None = None, algo: bool = False) -> list[VenueOrder]:
        ccxt = self.ccxt
        attempts = self.settings.retry.attempts
        for attempt in range(1, attempts + 1):
            try:
                raws = self.call(f"place {client_id}", send, retry=False)
                return [self._order(r) for r in raws]
            except VenueUnavailable as exc:
                # Ambiguous: the request may have reached the venue. Ask before sending again.
                found = self.lookup(symbol, client_id, algo=algo)
                if found is not None:
                    log.warning("%s: placement failed (%s) but the venue has the order; not sent again",
                                client_id, exc)
                    others = [self.lookup(symbol, extra)] if extra else []
                    return [found, *(o for o in others if o is not None)]
                if attempt == attempts:
                    raise
                log.warning("%s: not on the venue after a failed placement (%s); sending again", client_id, exc)
                self._sleep(self.call.delay(attempt))
            except ccxt.InsufficientFunds as exc:
                code = "INSUFFICIENT_MARGIN" if self.is_contract(symbol) else "INSUFFICIENT_BALANCE"
                raise OrderRefused(code, str(exc)) from None
            except ccxt.ExchangeError as exc:
                if "uplicate" in str(exc) or isinstance(exc, ccxt.DuplicateOrderId):
                    found = self.lookup(symbol, client_id, algo=algo)
                    if found is not None:
                        return [found]
                raise OrderRefused(self._refusal(exc), str(exc)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _refusal(self, exc: Exception) -> str:
        text = str(exc)
        if isinstance(exc, self.ccxt.OrderImmediatelyFillable) or "immediately trigger" in text:
            return "WOULD_TRIGGER_NOW"
        if "ReduceOnly" in text or "-2022" in text:
            return "REDUCE_ONLY_REJECTED"  # nothing to reduce (any more)
        if "-4164" in text or "notional must be no smaller" in text:
            return "MIN_NOTIONAL"
        return "VENUE_REJECTED"

    def _create(self, req: PlaceRequest) -> dict[str, Any]:
        kind, side, amount, price, params = create_args(self, req, self.is_contract(req.symbol))
        return self.exchange.create_order(req.symbol, kind, side, amount, price, params)

    def lookup(self, symbol: str, client_id: str, *, algo: bool | None = None) -> VenueOrder | None:
        """Find an order by client order id; None only when the venue says it has none.

        `algo`: look among the conditional (Algo Service) orders, the regular ones, or (None,
        e.g. after a restart) both. Venues that cannot fetch by client order id are searched
        through their open and recent closed orders; when neither is possible the outcome
        stays unknown (VenueUnavailable), so the caller never sends the order again on a guess.
        """
        ccxt = self.ccxt
        if algo is None:
            kinds = [True, False] if self.algo_market(symbol) else [False]
        else:
            kinds = [algo and self.algo_market(symbol)]
        for conditional in kinds:
            params = {"clientOrderId": client_id, **(TRIGGER if conditional else {})}
            try:
                raw = self.call(f"look up {client_id}", self.exchange.fetch_order, None, symbol, params)
            except ccxt.OrderNotFound:
                continue
            except (ccxt.NotSupported, ccxt.ArgumentsRequired, ccxt.BadRequest):
                return self._scan(symbol, client_id)
            return self._order(raw)
        return None

    def _scan(self, symbol: str, client_id: str) -> VenueOrder | None:
        has = self.exchange.has
        if not (has.get("fetchOpenOrders") and (has.get("fetchClosedOrders") or has.get("fetchOrders"))):
            raise VenueUnavailable(f"{self.exchange.id} cannot look orders up by client order id ({client_id})")
        since = self.server_time_ms() - 86_400_000  # the venue's last day, on its own clock
        closed = self.exchange.fetch_closed_orders if has.get("fetchClosedOrders") else self.exchange.fetch_orders
        for fetch in (self.exchange.fetch_open_orders, closed):
            for raw in self.call(f"scan for {client_id}", fetch, symbol, since):
                if raw.get("clientOrderId") == client_id:
                    return self._order(raw)
        return None

    def fetch(self, symbol: str, venue_id: str) -> VenueOrder | None:
        params = TRIGGER if venue_id in self._algo else {}
        try:
            return self._order(self.call("fetch order", self.exchange.fetch_order, venue_id, symbol, params))
        except self.ccxt.OrderNotFound:
            return None

    def cancel(self, symbol: str, venue_id: str) -> VenueOrder | None:
        """Cancel; when the venue no longer has it open, return what it has (filled, expired...)."""
        algo = venue_id in self._algo
        try:
            raw = self.call("cancel order", self.exchange.cancel_order, venue_id, symbol, TRIGGER if algo else {})
        except (self.ccxt.OrderNotFound, self.ccxt.OperationRejected):
            return self.fetch(symbol, venue_id)
        return self.fetch(symbol, venue_id) if algo else self._order(raw)  # an algo cancel answers no state

    def open_orders(self, symbol: str) -> list[VenueOrder]:
        """The working orders of `symbol`, the conditional ones included."""
        raws = list(self.call("open orders", self.exchange.fetch_open_orders, symbol))
        if self.algo_market(symbol):
            raws += self.call("open algo orders", self.exchange.fetch_open_orders, symbol, None, None, TRIGGER)
        return [self._order(r) for r in raws]

    def trades(self, symbol: str, venue_id: str, since: int | None = None) -> list[VenueTrade]:
        """The executions of one order (of the order it placed, for a triggered algo order)."""
        order_id = self._algo.get(venue_id) or venue_id
        params = {"orderId": order_id} if self.exchange.id.startswith("binance") else {}
        raws = self.call("my trades", self.exchange.fetch_my_trades, symbol, since, None, params)
        return [parse_trade(self, t, symbol) for t in raws if str(t.get("order")) == order_id]

    def last_price(self, symbol: str) -> Decimal:
        return dec(self._ticker(symbol).get("last"))

    def _ticker(self, symbol: str, *, retry: bool = True) -> dict[str, Any]:
        ticker = self.call("ticker", self.exchange.fetch_ticker, symbol, retry=retry)
        self._tickers[symbol] = (self._clock(), ticker)
        return ticker

    def quote(self, symbol: str, *, fresh: float = QUOTE_FRESH_S) -> tuple[Decimal | None, Decimal | None]:
        """The best (bid, ask): of the ticker read in the last `fresh` seconds, else of one
        ``fetch_ticker`` (not retried: raises VenueUnavailable or a ccxt error at once).
        A side the venue does not quote is None."""
        cached = self._tickers.get(symbol)
        if cached is not None and self._clock() - cached[0] <= fresh:
            ticker = cached[1]
        else:
            ticker = self._ticker(symbol, retry=False)
        return _opt(ticker.get("bid")), _opt(ticker.get("ask"))

    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Asset -> (free, total); on futures: (available, margin balance = wallet + unrealised pnl)."""
        raw = self.call("balance", self.exchange.fetch_balance)
        return {a: (dec(raw["free"].get(a)), dec(raw["total"].get(a))) for a in raw.get("total", {})}

    # ------------------------------------------------------------------ futures
    def positions(self, symbols: list[str] | None = None) -> list[VenuePosition]:
        """The open positions (contracts), all or of `symbols` (unified)."""
        raws = self.call("positions", self.exchange.fetch_positions, symbols)
        out = [ccxt_futures.parse_position(r, self.market(r["symbol"])) for r in raws if r.get("symbol")]
        return [p for p in out if p.quantity != 0]

    def configure(self, symbol: str) -> None:
        """Set the configured margin mode and leverage on one contract (FuturesSetupError if refused)."""
        ccxt_futures.configure_symbol(self, symbol, self.settings.leverage, self.settings.margin_mode)

    # ------------------------------------------------------------------ parsing
    def parse(self, raw: dict[str, Any]) -> VenueOrder:
        """A ccxt order (e.g. one the order stream delivered) as a VenueOrder."""
        return self._order(raw)

    def _order(self, raw: dict[str, Any]) -> VenueOrder:
        info = ccxt_binance.algo_info(raw)
        if info is None:
            return parse_order(self, raw)
        algo_id = str(raw["id"])
        actual_id = ccxt_binance.actual_order_id(info) or self._algo.get(algo_id)
        self._algo[algo_id] = actual_id
        if actual_id is None:
            vo = parse_order(self, raw)  # waiting for its trigger, or ended before it
            return replace(vo, status="open") if vo.status == "closed" else vo
        try:
            actual = self.call("triggered order", self.exchange.fetch_order, actual_id, raw["symbol"])
        except self.ccxt.OrderNotFound:
            log.warning("%s: the order %s it placed is not found (yet); still working", algo_id, actual_id)
            return replace(parse_order(self, raw), status="open")
        return parse_order(self, raw, actual)
