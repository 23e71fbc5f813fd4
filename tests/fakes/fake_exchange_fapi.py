"""The ``/fapi`` (USDⓈ-M futures) endpoints of the fake exchange, over its `FuturesEngine`.

What ccxt's ``binanceusdm`` calls for the adapter: ``ping``, ``time``, ``exchangeInfo``,
``klines``, ``ticker/24hr`` (public) and the signed ``v3/account``, ``v3/positionRisk``,
``leverageBracket``, ``leverage``, ``marginType``, ``positionSide/dual``, ``order``
(POST/GET/DELETE), ``openOrders``, ``allOrders``, ``userTrades`` and the Algo Service's
``algoOrder`` (POST/GET/DELETE), ``openAlgoOrders``, ``allAlgoOrders``; with the fake's websocket,
``listenKey`` (POST: a key for the user data stream; PUT, DELETE: accepted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.fakes.fake_exchange_engine import FakeError
from tests.fakes.fake_exchange_futures import AlgoOrder, FuturesOrder

if TYPE_CHECKING:
    from tests.fakes.fake_exchange import FakeExchange

FAPI_SIGNED = {
    "/fapi/v3/account", "/fapi/v2/account", "/fapi/v3/positionRisk", "/fapi/v2/positionRisk",
    "/fapi/v1/leverageBracket", "/fapi/v1/leverage", "/fapi/v1/marginType", "/fapi/v1/positionSide/dual",
    "/fapi/v1/order", "/fapi/v1/openOrders", "/fapi/v1/allOrders", "/fapi/v1/userTrades",
    "/fapi/v1/algoOrder", "/fapi/v1/openAlgoOrders", "/fapi/v1/allAlgoOrders",
}


def route(fake: FakeExchange, method: str, path: str, p: dict[str, str]) -> Any:
    """Answer one /fapi request (the caller authenticated it and advanced the engines)."""
    e = fake.futures
    key = (method, path)
    if path == "/fapi/v1/listenKey" and fake.ws is not None:  # the user data stream (fake_exchange_ws)
        return {"listenKey": fake.ws.new_listen_key()} if method == "POST" else {}
    if key == ("GET", "/fapi/v1/ping"):
        return {}
    if key == ("GET", "/fapi/v1/time"):
        return {"serverTime": fake.clock.now_ms()}
    if key == ("GET", "/fapi/v1/exchangeInfo"):
        return _exchange_info(fake)
    if key == ("GET", "/fapi/v1/klines"):
        return fake.klines(p)
    if key == ("GET", "/fapi/v1/ticker/24hr"):
        return fake.ticker(p["symbol"])
    if key in (("GET", "/fapi/v3/account"), ("GET", "/fapi/v2/account")):
        return _account(fake)
    if key in (("GET", "/fapi/v3/positionRisk"), ("GET", "/fapi/v2/positionRisk")):
        return [_position(fake, s) for s in e.markets if e.positions[s].qty or _has_orders(fake, s)
                if p.get("symbol", s) == s]
    if key == ("GET", "/fapi/v1/leverageBracket"):
        return [{"symbol": s, "notionalCoef": 1.0, "brackets": [
            {"bracket": 1, "initialLeverage": 125, "notionalCap": 50_000, "notionalFloor": 0,
             "maintMarginRatio": 0.004, "cum": 0.0}]} for s in e.markets]
    if key == ("POST", "/fapi/v1/leverage"):
        e.set_leverage(p.get("symbol", ""), int(p.get("leverage", "0")))
        return {"leverage": e.leverage[p["symbol"]], "maxNotionalValue": "50000", "symbol": p["symbol"]}
    if key == ("POST", "/fapi/v1/marginType"):
        e.set_margin_type(p.get("symbol", ""), p.get("marginType", ""))
        return {"code": 200, "msg": "success"}
    if key == ("GET", "/fapi/v1/positionSide/dual"):
        return {"dualSidePosition": e.dual_side}
    if key == ("POST", "/fapi/v1/order"):
        return order_json(e.new_order(p))
    if key == ("GET", "/fapi/v1/order"):
        o = e.find(p.get("orderId"), p.get("origClientOrderId"))
        if o.symbol != p.get("symbol"):
            raise FakeError(400, -2013, "Order does not exist.")
        return order_json(o)
    if key == ("DELETE", "/fapi/v1/order"):
        return order_json(e.cancel(p.get("orderId"), p.get("origClientOrderId")))
    if key == ("GET", "/fapi/v1/openOrders"):
        return [order_json(o) for o in e.orders.values() if o.is_open and o.symbol == p.get("symbol", o.symbol)]
    if key == ("GET", "/fapi/v1/allOrders"):
        since = int(p.get("startTime", "0"))
        return [order_json(o) for o in e.orders.values() if o.symbol == p["symbol"] and o.time >= since]
    if key == ("GET", "/fapi/v1/userTrades"):
        return _user_trades(fake, p)
    if key == ("POST", "/fapi/v1/algoOrder"):
        return algo_json(e.new_algo(p))
    if key == ("GET", "/fapi/v1/algoOrder"):
        return algo_json(e.find_algo(p.get("algoId"), p.get("clientAlgoId")))
    if key == ("DELETE", "/fapi/v1/algoOrder"):
        algo = e.cancel_algo(p.get("algoId"), p.get("clientAlgoId"))
        return {"algoId": algo.algo_id, "clientAlgoId": algo.client_id, "code": "200", "msg": "success"}
    if key == ("GET", "/fapi/v1/openAlgoOrders"):
        return [algo_json(a) for a in e.algos.values() if a.is_open and a.symbol == p.get("symbol", a.symbol)]
    if key == ("GET", "/fapi/v1/allAlgoOrders"):
        return [algo_json(a) for a in e.algos.values() if a.symbol == p["symbol"]]
    raise FakeError(404, -1000, f"unknown endpoint {method} {path}")


def _has_orders(fake: FakeExchange, symbol: str) -> bool:
    e = fake.futures
    return any(o.is_open and o.symbol == symbol for o in e.orders.values()) or any(
        a.is_open and a.symbol == symbol for a in e.algos.values())


def _exchange_info(fake: FakeExchange) -> dict[str, Any]:
    symbols = []
    for m in fake.futures.markets.values():
        symbols.append({
            "symbol": m.symbol, "pair": m.symbol, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
            "onboardDate": 1569398400000, "status": "TRADING", "baseAsset": m.base, "quoteAsset": m.quote,
            "marginAsset": m.quote, "pricePrecision": 2, "quantityPrecision": 3, "baseAssetPrecision": 8,
            "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": [], "triggerProtect": "0.0500",
            "liquidationFee": "0.012500", "marketTakeBound": "0.05", "maxMoveOrderLimit": 10000,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": m.tick_size, "maxPrice": "4529764", "tickSize": m.tick_size},
                {"filterType": "LOT_SIZE", "minQty": m.min_qty, "maxQty": "1000", "stepSize": m.step_size},
                {"filterType": "MARKET_LOT_SIZE", "minQty": m.min_qty, "maxQty": "120", "stepSize": m.step_size},
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                {"filterType": "MIN_NOTIONAL", "notional": m.min_notional},
                {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
                 "multiplierDecimal": "4"},
            ],
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                           "TRAILING_STOP_MARKET"],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        })
    return {"timezone": "UTC", "serverTime": fake.clock.now_ms(), "futuresType": "U_MARGINED", "rateLimits": [],
            "exchangeFilters": [], "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": symbols}


def _account(fake: FakeExchange) -> dict[str, Any]:
    e = fake.futures
    upnl = sum((e.unrealised(s) for s in e.markets), start=e.wallet * 0)
    pos_im = sum((e.position_margin(s) for s in e.markets), start=e.wallet * 0)
    ord_im = e.order_margin()
    avail = e.available()
    now = fake.clock.now_ms()
    asset = {"asset": "USDT", "walletBalance": str(e.wallet), "unrealizedProfit": str(upnl),
             "marginBalance": str(e.wallet + upnl), "maintMargin": "0", "initialMargin": str(pos_im + ord_im),
             "positionInitialMargin": str(pos_im), "openOrderInitialMargin": str(ord_im),
             "crossWalletBalance": str(e.wallet), "crossUnPnl": str(upnl), "availableBalance": str(avail),
             "maxWithdrawAmount": str(avail), "updateTime": now}
    return {"totalInitialMargin": str(pos_im + ord_im), "totalMaintMargin": "0", "totalWalletBalance": str(e.wallet),
            "totalUnrealizedProfit": str(upnl), "totalMarginBalance": str(e.wallet + upnl),
            "totalPositionInitialMargin": str(pos_im), "totalOpenOrderInitialMargin": str(ord_im),
            "totalCrossWalletBalance": str(e.wallet), "totalCrossUnPnl": str(upnl), "availableBalance": str(avail),
            "maxWithdrawAmount": str(avail), "assets": [asset],
            "positions": [{"symbol": s, "positionSide": "BOTH", "positionAmt": str(e.positions[s].qty),
                           "unrealizedProfit": str(e.unrealised(s)), "isolatedMargin": "0",
                           "notional": str(e.positions[s].qty * e.price(s)), "isolatedWallet": "0",
                           "initialMargin": str(e.position_margin(s)), "maintMargin": "0",
                           "updateTime": e.positions[s].update_time} for s in e.markets if e.positions[s].qty]}


def _position(fake: FakeExchange, symbol: str) -> dict[str, Any]:
    e = fake.futures
    pos, mark = e.positions[symbol], e.price(symbol)
    im = e.position_margin(symbol)
    isolated = e.margin_type[symbol] == "ISOLATED" and pos.qty != 0
    return {"symbol": symbol, "positionSide": "BOTH", "positionAmt": str(pos.qty), "entryPrice": str(pos.entry),
            "breakEvenPrice": str(pos.entry), "markPrice": str(mark), "unRealizedProfit": str(e.unrealised(symbol)),
            "liquidationPrice": "0", "isolatedMargin": str(im if isolated else 0), "notional": str(pos.qty * mark),
            "marginAsset": e.markets[symbol].quote, "isolatedWallet": str(im if isolated else 0),
            "initialMargin": str(im + e.order_margin(symbol)), "maintMargin": str(abs(pos.qty) * mark * 4 / 1000),
            "positionInitialMargin": str(im), "openOrderInitialMargin": str(e.order_margin(symbol)), "adl": 1,
            "bidNotional": "0", "askNotional": "0", "updateTime": pos.update_time}


def _user_trades(fake: FakeExchange, p: dict[str, str]) -> list[dict[str, Any]]:
    rows = [t for t in fake.futures.trades if t["symbol"] == p["symbol"]]
    if "orderId" in p:
        rows = [t for t in rows if str(t["orderId"]) == p["orderId"]]
    if "startTime" in p:
        rows = [t for t in rows if t["time"] >= int(p["startTime"])]
    if "fromId" in p:
        rows = [t for t in rows if t["id"] >= int(p["fromId"])]
    return rows[: int(p.get("limit", "500"))]


def order_json(o: FuturesOrder) -> dict[str, Any]:
    avg = o.cum_quote / o.executed if o.executed else 0
    return {"orderId": o.order_id, "symbol": o.symbol, "status": o.status, "clientOrderId": o.client_id,
            "price": str(o.price), "avgPrice": str(avg), "origQty": str(o.qty), "executedQty": str(o.executed),
            "cumQty": str(o.executed), "cumQuote": str(o.cum_quote), "timeInForce": "GTC", "type": o.type,
            "reduceOnly": o.reduce_only, "closePosition": o.close_position, "side": o.side, "positionSide": "BOTH",
            "stopPrice": str(o.stop), "workingType": "CONTRACT_PRICE", "priceProtect": False,
            "origType": o.orig_type or o.type, "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER",
            "goodTillDate": 0, "time": o.time, "updateTime": o.update_time}


def algo_json(a: AlgoOrder) -> dict[str, Any]:
    return {"algoId": a.algo_id, "clientAlgoId": a.client_id, "algoType": "CONDITIONAL", "orderType": a.type,
            "symbol": a.symbol, "side": a.side, "positionSide": "BOTH", "timeInForce": "GTC", "quantity": str(a.qty),
            "algoStatus": a.status, "actualOrderId": a.actual_order_id, "actualPrice": str(a.actual_price),
            "triggerPrice": str(a.trigger), "price": str(a.price), "icebergQuantity": None,
            "selfTradePreventionMode": "EXPIRE_MAKER", "workingType": "CONTRACT_PRICE", "priceMatch": "NONE",
            "closePosition": a.close_position, "priceProtect": False, "reduceOnly": a.reduce_only,
            "createTime": a.create_time, "updateTime": a.update_time, "triggerTime": a.trigger_time, "goodTillDate": 0}
