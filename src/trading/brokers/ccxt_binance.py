"""Binance quirks: the spot OCO order list (``POST /api/v3/orderList/oco``).

ccxt has no unified OCO, so the list is sent through ccxt's implicit API method
`privatePostOrderListOco`, signed and rate limited like every other call. A sell list protects
a long: the take-profit is the LIMIT_MAKER above the market, the stop the STOP_LOSS_LIMIT below;
a buy list is the mirror image. When one leg fills, Binance expires the other.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any


def supports_oco(exchange: Any, market: dict[str, Any]) -> bool:
    """True on Binance spot markets whose exchangeInfo allows OCO lists."""
    return exchange.id == "binance" and bool(market.get("spot")) and bool(market["info"].get("ocoAllowed"))


def oco_request(
    exchange: Any,
    market: dict[str, Any],
    *,
    side: str,
    amount: Decimal,
    take_profit: Decimal,
    stop: Decimal,
    stop_limit: Decimal,
    tp_client_id: str,
    sl_client_id: str,
) -> dict[str, str]:
    """Build the orderList/oco request for a protective pair (amounts and prices already rounded)."""
    symbol = market["symbol"]
    tp = {"Type": "LIMIT_MAKER", "Price": exchange.price_to_precision(symbol, take_profit),
          "ClientOrderId": tp_client_id}
    sl = {"Type": "STOP_LOSS_LIMIT", "StopPrice": exchange.price_to_precision(symbol, stop),
          "Price": exchange.price_to_precision(symbol, stop_limit), "TimeInForce": "GTC",
          "ClientOrderId": sl_client_id}
    above, below = (tp, sl) if side == "sell" else (sl, tp)
    request = {"symbol": market["id"], "side": side.upper(), "quantity": exchange.amount_to_precision(symbol, amount),
               "newOrderRespType": "FULL"}
    for name, leg in (("above", above), ("below", below)):
        for key, value in leg.items():
            request[f"{name}{key}"] = value
    return request


def place_oco(exchange: Any, market: dict[str, Any], request: dict[str, str]) -> list[dict[str, Any]]:
    """Send the list; return its two legs as ccxt orders."""
    response = exchange.privatePostOrderListOco(request)
    return [exchange.parse_order(report, market) for report in response.get("orderReports", [])]


# --------------------------------------------------------------------------- USDⓈ-M futures
#
# Binance moved conditional futures orders (STOP_MARKET, TAKE_PROFIT_MARKET, STOP, TAKE_PROFIT)
# to its Algo Service: ccxt sends them to ``/fapi/v1/algoOrder`` (``clientAlgoId``, an
# ``algoId``) and reads, fetches and cancels them there when the call carries ``trigger: True``.
# An algo order ends TRIGGERED/FINISHED with ``actualOrderId``: the regular order it placed,
# which holds the fills. Its status alone says nothing about them.

TRIGGER = {"trigger": True}
ALGO_OPEN = ("NEW", "TRIGGERING")


def algo_info(raw: dict[str, Any]) -> dict[str, Any] | None:
    """The exchange's algo order behind a ccxt order, or None for a regular order."""
    info = raw.get("info") or {}
    return info if "algoId" in info and ("algoStatus" in info or "algoType" in info) else None


def actual_order_id(info: dict[str, Any]) -> str | None:
    """The regular order a triggered algo order placed (None before it triggered)."""
    actual = str(info.get("actualOrderId") or "")
    return actual if actual not in ("", "0") else None


def keep_market_exceptions(exchange: Any, kind: str) -> None:
    """Apply ccxt's error table of `kind` (spot, linear) whatever the API URL.

    ccxt picks Binance's per-market error table by the URL's host (``fapi.binance.com``...);
    behind a proxy or another base URL it falls back to the shared table, where e.g. -2019
    ``Margin is insufficient.`` is a bare ExchangeError instead of InsufficientFunds.
    """
    table = (exchange.exceptions or {}).get(kind) or {}
    for scope in ("exact", "broad"):
        if table.get(scope):
            exchange.exceptions[scope] = {**exchange.exceptions.get(scope, {}), **table[scope]}
