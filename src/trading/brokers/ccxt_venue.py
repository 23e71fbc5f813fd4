"""CcxtVenue: one ccxt exchange behind the adapter's rules.

What it adds to the bare ccxt client:

* construction from `CcxtSettings`: ``enableRateLimit``, the timeout, the sandbox for the
  testnet (`set_sandbox_mode(True)`), Binance options that keep start-up to the public
  endpoints the adapter needs (spot or USDⓈ-M markets only, no currency or margin calls),
  optional API URL overrides;
* markets by the bot's symbol (``BTCUSDT`` or ``BTC/USDT``), amounts truncated and prices
  rounded to the market's precision, and orders below the minimum amount or notional refused
  before anything is sent (`OrderRefused` with a reason code);
* every request through `Caller` (budget, retries, breaker, scrubbed errors) and the server
  clock synchronised (`load_time_difference`) at connect and on a -1021 drift;
* idempotent placement: an order is POSTed once; after an ambiguous failure (timeout, 5xx,
  429) it is looked up by its client order id and only sent again when the venue says it
  does not have it (`place`).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from trading.brokers import ccxt_binance
from trading.brokers.ccxt_config import CcxtSettings, Credentials, import_ccxt
from trading.brokers.ccxt_resilience import (
    Caller,
    CircuitBreaker,
    RequestBudget,
    Scrubber,
    ScrubFilter,
    VenueUnavailable,
)
from trading.exceptions import ATFError
from trading.suggest import did_you_mean

log = logging.getLogger(__name__)
D = Decimal
ZERO = Decimal(0)
_SCRUB = Scrubber()  # one filter on ccxt's logger, fed the secrets of every venue built
logging.getLogger("ccxt.base.exchange").addFilter(ScrubFilter(_SCRUB))


class OrderRefused(ATFError):
    """An order the venue will not (or did not) take; `code` is UPPER_SNAKE, `detail` says why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code, self.detail = code, detail

    @property
    def reason(self) -> str:
        return str(self)


@dataclass(frozen=True)
class PlaceRequest:
    """One order for the venue; `symbol` is the unified ccxt symbol, amounts already rounded."""

    symbol: str
    side: str  # buy | sell
    kind: str  # market | limit | stop | stop_limit
    amount: Decimal
    client_id: str
    price: Decimal | None = None
    stop_price: Decimal | None = None
    reduce_only: bool = False


@dataclass(frozen=True)
class VenueTrade:
    """One execution; `fee` is in the market's quote currency."""

    trade_id: str
    order_id: str
    amount: Decimal
    price: Decimal
    fee: Decimal
    ts: datetime


@dataclass(frozen=True)
class VenueOrder:
    """The venue's view of one order (ccxt statuses: open, closed, canceled, expired, rejected)."""

    venue_id: str
    client_id: str | None
    symbol: str
    status: str
    amount: Decimal
    filled: Decimal
    average: Decimal | None
    trades: tuple[VenueTrade, ...] = ()


def _dec(value: Any) -> Decimal:
    return ZERO if value is None else D(str(value))


def _options(settings: CcxtSettings) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if settings.ccxt_id in ("binance", "binanceusdm"):
        kind = "linear" if settings.ccxt_id == "binanceusdm" else "spot"
        options = {"fetchMarkets": {"types": [kind]}, "fetchCurrencies": False, "fetchMargins": False}
    return {**options, **settings.options}


def build_exchange(settings: CcxtSettings, credentials: Credentials | None = None, *,
                   asynchronous: bool = False) -> Any:
    """A ccxt exchange (``ccxt`` or ``ccxt.async_support``) configured from the settings."""
    ccxt = import_ccxt()
    module: Any = importlib.import_module("ccxt.async_support") if asynchronous else ccxt
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
        try:
            exchange.set_sandbox_mode(True)
        except ccxt.NotSupported:
            raise ValueError(
                f"{settings.exchange} has no testnet in ccxt: set testnet: false and trading_mode: live"
            ) from None
    if settings.urls:
        api = exchange.urls.get("api")
        if isinstance(api, dict):
            exchange.urls["api"] = {**api, **settings.urls}
        else:
            exchange.urls["api"] = settings.urls.get("api", api)
    return exchange


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
        self.ccxt, self.settings, self._sleep = ccxt, settings, sleep
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

    # ------------------------------------------------------------------ connection
    def connect(self) -> None:
        """Load the markets and synchronise with the server clock (retried)."""
        self.call("load markets", self.exchange.load_markets, True)
        if self.exchange.has.get("fetchTime"):
            self.sync_time()
        self.connected = True

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
        ex = self.exchange
        if name in ex.markets:
            return name
        by_id = ex.markets_by_id.get(name) if ex.markets_by_id else None
        if by_id:
            return by_id[0]["symbol"]
        if "/" in name and ":" not in name:  # a perpetual named without its settle currency
            candidate = f"{name}:{name.split('/')[1]}"
            if candidate in ex.markets:
                return candidate
        hint = did_you_mean(name, list(ex.markets) + list(ex.markets_by_id or {}))
        raise ValueError(f"{ex.id} has no market {name!r}" + (f"; did you mean {hint!r}?" if hint else ""))

    def market(self, symbol: str) -> dict[str, Any]:
        return self.exchange.market(symbol)

    def round_amount(self, symbol: str, amount: Decimal) -> Decimal:
        """Truncate to the amount step (0 when less than one step)."""
        try:
            return D(self.exchange.amount_to_precision(symbol, str(amount)))
        except self.ccxt.InvalidOrder:
            return ZERO

    def round_price(self, symbol: str, price: Decimal) -> Decimal:
        return D(self.exchange.price_to_precision(symbol, str(price)))

    def check(self, symbol: str, amount: Decimal, price: Decimal) -> None:
        """Refuse an order the venue's limits would reject (amount after rounding, notional at `price`)."""
        m = self.market(symbol)
        limits, quote = m.get("limits") or {}, m.get("quote", "")
        step = (m.get("precision") or {}).get("amount")
        if amount <= 0:
            raise OrderRefused("ZERO_AMOUNT", f"{symbol}: the quantity rounds to 0 at the step {step}")
        min_amount = (limits.get("amount") or {}).get("min")
        if min_amount is not None and amount < _dec(min_amount):
            raise OrderRefused("MIN_AMOUNT", f"{symbol}: {amount} is below the venue minimum {min_amount}")
        min_cost = (limits.get("cost") or {}).get("min")
        notional = amount * price * _dec(m.get("contractSize") or 1)
        if min_cost is not None and notional < _dec(min_cost):
            raise OrderRefused(
                "MIN_NOTIONAL",
                f"{symbol}: {amount} at {price} is {notional:.8f} {quote}, below the venue minimum {min_cost} {quote}",
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
    def place(self, req: PlaceRequest) -> VenueOrder:
        """Send one order; never twice (see the module docstring). Raise OrderRefused or VenueUnavailable."""
        return self._once(req.symbol, req.client_id, lambda: [self._create(req)])[0]

    def place_oco(self, symbol: str, request: dict[str, str], client_ids: tuple[str, str]) -> list[VenueOrder]:
        """Send a Binance OCO list once; after an ambiguous failure look its legs up first."""
        market = self.market(symbol)
        return self._once(symbol, client_ids[0], lambda: ccxt_binance.place_oco(self.exchange, market, request),
                          extra=client_ids[1])

    def _once(self, symbol: str, client_id: str, send: Callable[[], list[dict[str, Any]]],
              extra: str | None = None) -> list[VenueOrder]:
        ccxt = self.ccxt
        attempts = self.settings.retry.attempts
        for attempt in range(1, attempts + 1):
            try:
                raws = self.call(f"place {client_id}", send, retry=False)
                return [self._order(r) for r in raws]
            except VenueUnavailable as exc:
                # Ambiguous: the request may have reached the venue. Ask before sending again.
                found = self.lookup(symbol, client_id)
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
                raise OrderRefused("INSUFFICIENT_BALANCE", str(exc)) from None
            except ccxt.InvalidOrder as exc:
                if "uplicate" in str(exc) or isinstance(exc, ccxt.DuplicateOrderId):
                    found = self.lookup(symbol, client_id)
                    if found is not None:
                        return [found]
                code = "WOULD_TRIGGER_NOW" if isinstance(exc, ccxt.OrderImmediatelyFillable) else "VENUE_REJECTED"
                raise OrderRefused(code, str(exc)) from None
            except ccxt.ExchangeError as exc:
                raise OrderRefused("VENUE_REJECTED", str(exc)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _create(self, req: PlaceRequest) -> dict[str, Any]:
        params: dict[str, Any] = {"clientOrderId": req.client_id}
        kind, price = "limit", req.price
        if req.kind == "market":
            kind, price = "market", None
        elif req.kind == "stop":  # spot venues hold a stop as a stop-limit (Binance: STOP_LOSS_LIMIT)
            params["stopLossPrice"] = float(req.stop_price)  # type: ignore[arg-type]
            price = self.stop_limit_price(req.symbol, req.side, req.stop_price)  # type: ignore[arg-type]
        elif req.kind == "stop_limit":
            params["stopLossPrice"] = float(req.stop_price)  # type: ignore[arg-type]
        return self.exchange.create_order(
            req.symbol, kind, req.side, float(req.amount), None if price is None else float(price), params
        )

    def lookup(self, symbol: str, client_id: str) -> VenueOrder | None:
        """Find an order by client order id; None only when the venue says it has none.

        Venues that cannot fetch by client order id are searched through their open and
        recent closed orders; when neither is possible the outcome stays unknown
        (VenueUnavailable), so the caller never sends the order again on a guess.
        """
        ccxt = self.ccxt
        try:
            raw = self.call(f"look up {client_id}", self.exchange.fetch_order, None, symbol,
                            {"clientOrderId": client_id})
        except ccxt.OrderNotFound:
            return None
        except (ccxt.NotSupported, ccxt.ArgumentsRequired, ccxt.BadRequest):
            return self._scan(symbol, client_id)
        return self._order(raw)

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
        try:
            return self._order(self.call("fetch order", self.exchange.fetch_order, venue_id, symbol))
        except self.ccxt.OrderNotFound:
            return None

    def cancel(self, symbol: str, venue_id: str) -> VenueOrder | None:
        """Cancel; when the venue no longer has it open, return what it has (filled, expired...)."""
        try:
            return self._order(self.call("cancel order", self.exchange.cancel_order, venue_id, symbol))
        except (self.ccxt.OrderNotFound, self.ccxt.OperationRejected):
            return self.fetch(symbol, venue_id)

    def open_orders(self, symbol: str) -> list[VenueOrder]:
        return [self._order(r) for r in self.call("open orders", self.exchange.fetch_open_orders, symbol)]

    def trades(self, symbol: str, venue_id: str, since: int | None = None) -> list[VenueTrade]:
        """The executions of one order (fees converted to the quote currency)."""
        params = {"orderId": venue_id} if self.exchange.id.startswith("binance") else {}
        raws = self.call("my trades", self.exchange.fetch_my_trades, symbol, since, None, params)
        return [self._trade(t, symbol) for t in raws if str(t.get("order")) == venue_id]

    def last_price(self, symbol: str) -> Decimal:
        return _dec(self.call("ticker", self.exchange.fetch_ticker, symbol).get("last"))

    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Asset -> (free, total)."""
        raw = self.call("balance", self.exchange.fetch_balance)
        return {a: (_dec(raw["free"].get(a)), _dec(raw["total"].get(a))) for a in raw.get("total", {})}

    # ------------------------------------------------------------------ parsing
    def _order(self, raw: dict[str, Any]) -> VenueOrder:
        symbol = raw["symbol"]
        trades = tuple(self._trade(t, symbol) for t in raw.get("trades") or [] if t.get("id") is not None)
        filled, cost = _dec(raw.get("filled")), _dec(raw.get("cost"))
        average = raw.get("average")
        avg = _dec(average) if average else (cost / filled if filled and cost else None)
        return VenueOrder(str(raw["id"]), raw.get("clientOrderId"), symbol, str(raw.get("status") or "open"),
                          _dec(raw.get("amount")), filled, avg, trades)

    def _trade(self, raw: dict[str, Any], symbol: str) -> VenueTrade:
        price = _dec(raw.get("price"))
        fees = raw.get("fees") or ([raw["fee"]] if raw.get("fee") else [])
        fee = sum((self.fee_in_quote(f, symbol, price) for f in fees), ZERO)
        ts = datetime.fromtimestamp((raw.get("timestamp") or 0) / 1000, UTC)
        return VenueTrade(str(raw["id"]), str(raw.get("order")), _dec(raw.get("amount")), price, fee, ts)

    def fee_in_quote(self, fee: dict[str, Any], symbol: str, price: Decimal) -> Decimal:
        """A fee in the quote currency: base fees at the fill price, others at their last price."""
        cost, currency = _dec(fee.get("cost")), fee.get("currency")
        m = self.market(symbol)
        if not cost or currency in (None, m["quote"]):
            return cost
        if currency == m["base"]:
            return cost * price
        pair = f"{currency}/{m['quote']}"
        if pair in self.exchange.markets:
            return cost * self.last_price(pair)
        log.warning("fee of %s %s on %s not converted to %s", cost, currency, symbol, m["quote"])
        return ZERO
