"""Orders and fills of a ccxt venue in the adapter's terms, both ways.

* `PlaceRequest` -> ccxt ``create_order`` arguments (`create_args`). Spot holds a stop as a
  stop-limit (Binance STOP_LOSS_LIMIT, the limit `stop_limit_offset` beyond the trigger);
  contracts hold it as a stop-market (``stopLossPrice`` on a market order: Binance
  STOP_MARKET) and a protective target as a take-profit-market (``takeProfitPrice``:
  TAKE_PROFIT_MARKET), with ``reduceOnly`` or, when configured, ``closePosition``.
* ccxt order / trade dicts -> `VenueOrder` / `VenueTrade` (`parse_order`, `parse_trade`), with
  every fee converted to the quote currency.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from trading.exceptions import ATFError

log = logging.getLogger(__name__)
D = Decimal
ZERO = Decimal(0)
CONDITIONAL_KINDS = ("stop", "stop_limit", "take_profit")


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
    """One order for the venue; `symbol` is the unified ccxt symbol, amounts already rounded.

    `kind`: market | limit | stop | stop_limit | take_profit (a trigger at `stop_price` that
    executes at market: contracts only). `close_position`: close whatever is open when it
    triggers (contracts; the amount is then only the adapter's expectation).
    """

    symbol: str
    side: str  # buy | sell
    kind: str
    amount: Decimal
    client_id: str
    price: Decimal | None = None
    stop_price: Decimal | None = None
    reduce_only: bool = False
    close_position: bool = False


@dataclass(frozen=True)
class VenueTrade:
    """One execution; `fee` is in the market's quote currency.

    `fee_currency` names that currency when the venue reported a fee (a fee it charged in
    another asset, e.g. BNB, is converted: see `fee_in_quote`); None when it reported none.
    """

    trade_id: str
    order_id: str
    amount: Decimal
    price: Decimal
    fee: Decimal
    ts: datetime
    fee_currency: str | None = None


@dataclass(frozen=True)
class VenueOrder:
    """The venue's view of one order (ccxt statuses: open, closed, canceled, expired, rejected).

    `venue_type` is the venue's own order type (LIMIT, STOP_LOSS_LIMIT, STOP_MARKET,
    TAKE_PROFIT_MARKET...); `stop_price` its trigger.
    """

    venue_id: str
    client_id: str | None
    symbol: str
    status: str
    amount: Decimal
    filled: Decimal
    average: Decimal | None
    trades: tuple[VenueTrade, ...] = ()
    side: str = ""
    venue_type: str = ""
    price: Decimal | None = None
    stop_price: Decimal | None = None
    reduce_only: bool = False


def dec(value: Any) -> Decimal:
    return ZERO if value is None else D(str(value))


def _opt(value: Any) -> Decimal | None:
    return D(str(value)) if value not in (None, "", 0, "0") and D(str(value)) != 0 else None


def create_args(venue: Any, req: PlaceRequest, contract: bool) -> tuple[str, str, float, float | None, dict]:
    """The (type, side, amount, price, params) of ccxt ``create_order`` for `req`."""
    params: dict[str, Any] = {"clientOrderId": req.client_id}
    kind, price = "limit", req.price
    if req.kind == "market":
        kind, price = "market", None
    elif req.kind == "stop":
        assert req.stop_price is not None
        params["stopLossPrice"] = float(req.stop_price)
        if contract:
            kind, price = "market", None  # STOP_MARKET
        else:  # spot venues hold a stop as a stop-limit (Binance: STOP_LOSS_LIMIT)
            price = venue.stop_limit_price(req.symbol, req.side, req.stop_price)
    elif req.kind == "stop_limit":
        params["stopLossPrice"] = float(req.stop_price)  # type: ignore[arg-type]
    elif req.kind == "take_profit":
        if not contract:
            raise OrderRefused("UNSUPPORTED_ORDER_TYPE", f"{req.symbol}: take-profit-market orders are for contracts")
        params["takeProfitPrice"] = float(req.stop_price)  # type: ignore[arg-type]
        kind, price = "market", None  # TAKE_PROFIT_MARKET
    if contract and req.close_position and req.kind in CONDITIONAL_KINDS:
        params["closePosition"] = True
    elif contract and req.reduce_only:
        params["reduceOnly"] = True
    return kind, req.side, float(req.amount), None if price is None else float(price), params


def parse_order(venue: Any, raw: dict[str, Any], actual: dict[str, Any] | None = None) -> VenueOrder:
    """A ccxt order as a VenueOrder; `actual`: the regular order a triggered algo order placed.

    The algo order keeps its id, client id and trigger; the fills, status and average come
    from the order it placed.
    """
    info = raw.get("info") or {}
    symbol = raw["symbol"]
    src = actual if actual is not None else raw
    trades = tuple(parse_trade(venue, t, symbol) for t in src.get("trades") or [] if t.get("id") is not None)
    filled, cost = dec(src.get("filled")), dec(src.get("cost"))
    average = src.get("average")
    avg = dec(average) if average else (cost / filled if filled and cost else None)
    status = str(src.get("status") or "open")
    amount = dec(raw.get("amount")) or dec(src.get("amount"))
    venue_type = str(info.get("type") or info.get("orderType") or info.get("strategyType") or raw.get("type") or "")
    return VenueOrder(
        str(raw["id"]), raw.get("clientOrderId"), symbol, status, amount, filled, avg, trades,
        side=str(raw.get("side") or ""), venue_type=venue_type.upper(), price=_opt(raw.get("price")),
        stop_price=_opt(raw.get("triggerPrice") or raw.get("stopPrice")),
        reduce_only=bool(raw.get("reduceOnly") or info.get("closePosition")),
    )


def parse_trade(venue: Any, raw: dict[str, Any], symbol: str) -> VenueTrade:
    price = dec(raw.get("price"))
    fees = raw.get("fees") or ([raw["fee"]] if raw.get("fee") else [])
    fee = sum((fee_in_quote(venue, f, symbol, price) for f in fees), ZERO)
    ts = datetime.fromtimestamp((raw.get("timestamp") or 0) / 1000, UTC)
    currency = venue.market(symbol)["quote"] if fees else None
    return VenueTrade(str(raw["id"]), str(raw.get("order")), dec(raw.get("amount")), price, fee, ts, currency)


def fee_in_quote(venue: Any, fee: dict[str, Any], symbol: str, price: Decimal) -> Decimal:
    """A fee in the quote currency: base fees at the fill price, others at their last price."""
    cost, currency = dec(fee.get("cost")), fee.get("currency")
    m = venue.market(symbol)
    if not cost or currency in (None, m["quote"]):
        return cost
    if currency == m["base"]:
        return cost * price
    markets = venue.exchange.markets
    for pair in (f"{currency}/{m['quote']}", f"{currency}/{m['quote']}:{m.get('settle') or m['quote']}"):
        if pair in markets:
            return cost * venue.last_price(pair)
    log.warning("fee of %s %s on %s not converted to %s", cost, currency, symbol, m["quote"])
    return ZERO
