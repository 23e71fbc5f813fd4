"""The TWS API wire format for the fake TWS: framing and the messages the fake sends.

Every message is a 4-byte big-endian length and NUL-terminated text fields; the first field
is the message id. The layouts follow ib_async's decoder for server version `SERVER_VERSION`
(no version field where the decoder expects none).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Iterator
from typing import Any

SERVER_VERSION = 176
UNSET_DOUBLE = 1.7976931348623157e308


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return "" if value >= UNSET_DOUBLE else repr(value)
    return str(value)


def frame(fields: Iterable[Any]) -> bytes:
    payload = "".join(_text(f) + "\0" for f in fields).encode()
    return struct.pack(">I", len(payload)) + payload


class Reader:
    """Split the client's byte stream into messages (the "API\\0" greeting first)."""

    def __init__(self) -> None:
        self.buf = b""
        self.greeted = False

    def feed(self, data: bytes) -> Iterator[list[str]]:
        self.buf += data
        if not self.greeted:
            if len(self.buf) < 4:
                return
            if not self.buf.startswith(b"API\0"):
                raise ValueError("client did not start with API\\0")
            self.buf = self.buf[4:]
            self.greeted = True
        while len(self.buf) >= 4:
            n = struct.unpack(">I", self.buf[:4])[0]
            if len(self.buf) < 4 + n:
                return
            text, self.buf = self.buf[4 : 4 + n].decode(), self.buf[4 + n :]
            fields = text.split("\0")
            if fields and fields[-1] == "":
                fields.pop()
            yield fields


def num(text: str, default: float = 0.0) -> float:
    return float(text) if text not in ("", None) else default


def ib_time(epoch: int) -> str:
    return time.strftime("%Y%m%d %H:%M:%S UTC", time.gmtime(epoch))


# --------------------------------------------------------------------------- contracts


def contract11(c: Any, *, primary: bool = False) -> list[Any]:
    """conId .. tradingClass as position, execDetails and openOrder carry them (portfolio: primary exchange)."""
    return [c.con_id, c.symbol, c.sec_type, c.expiry, 0.0, "", c.multiplier,
            c.primary_exchange if primary else c.exchange, c.currency, c.local_symbol, c.trading_class]


def contract_details(req_id: int, c: Any) -> list[Any]:
    return [10, req_id, c.symbol, c.sec_type, c.expiry, 0.0, "", c.exchange, c.currency, c.local_symbol,
            c.symbol, c.trading_class, c.con_id, c.min_tick, c.multiplier, "LMT,MKT,STP,STP LMT",
            c.exchange, 1, 0, f"{c.symbol} (fake)", c.primary_exchange, c.expiry[:6], "", "", "", "UTC",
            "", "", "", "", 0, 1, "", "", "26", c.expiry, "COMMON" if c.sec_type == "STK" else "",
            "1", "1", "1"]


# --------------------------------------------------------------------------- orders

_OPEN_ORDER = (
    "orderId", *(f"c{i}" for i in range(11)), "action", "totalQuantity", "orderType", "lmtPrice", "auxPrice",
    "tif", "ocaGroup", "account", "openClose", "origin", "orderRef", "clientId", "permId", "outsideRth", "hidden",
    "discretionaryAmt", "goodAfterTime", "_", "faGroup", "faMethod", "faPercentage", "faProfile", "modelCode",
    "goodTillDate", "rule80A", "percentOffset", "settlingFirm", "shortSaleSlot", "designatedLocation",
    "exemptCode", "auctionStrategy", "startingPrice", "stockRefPrice", "delta", "stockRangeLower",
    "stockRangeUpper", "displaySize", "blockOrder", "sweepToFill", "allOrNone", "minQty", "ocaType",
    "eTradeOnly", "firmQuoteOnly", "nbboPriceCap", "parentId", "triggerMethod", "volatility",
    "volatilityType", "deltaNeutralOrderType", "deltaNeutralAuxPrice", "continuousUpdate",
    "referencePriceType", "trailStopPrice", "trailingPercent", "basisPoints", "basisPointsType",
    "comboLegsDescrip", "numLegs", "numOrderLegs", "numParams", "scaleInitLevelSize", "scaleSubsLevelSize",
    "scalePriceIncrement", "hedgeType", "optOutSmartRouting", "clearingAccount", "clearingIntent", "notHeld",
    "dncPresent", "algoStrategy", "solicited", "whatIf", "status", *(f"m{i}" for i in range(9)), "commission",
    "minCommission", "maxCommission", "commissionCurrency", "warningText", "randomizeSize", "randomizePrice",
    "numConditions", "adjustedOrderType", "triggerPrice", "trailStopPrice2", "lmtPriceOffset",
    "adjustedStopPrice", "adjustedStopLimitPrice", "adjustedTrailingAmount", "adjustableTrailingUnit",
    "sdtName", "sdtVal", "sdtDisplay", "cashQty", "dontUseAutoPriceForHedge", "isOmsContainer",
    "discretionaryUpToLimitPrice", "usePriceMgmtAlgo", "duration", "postToAts", "autoCancelParent",
    "minTradeQty", "minCompeteSize", "competeAgainstBestOffset", "midOffsetAtWhole", "midOffsetAtHalf",
)


def open_order(o: Any, c: Any) -> list[Any]:
    values: dict[str, Any] = {f"c{i}": v for i, v in enumerate(contract11(c))}
    values.update(
        orderId=o.order_id, action=o.action, totalQuantity=o.quantity, orderType=o.order_type,
        lmtPrice=o.lmt, auxPrice=o.aux, tif=o.tif, ocaGroup=o.oca_group, account=o.account, orderRef=o.order_ref,
        clientId=o.client_id, permId=o.perm_id, ocaType=o.oca_type, parentId=o.parent_id, status=o.status,
        numLegs=0, numOrderLegs=0, numParams=0, dncPresent=0, numConditions=0, whatIf=False, openClose="O",
    )
    return [5, *(values.get(name, "") for name in _OPEN_ORDER)]


def order_status(o: Any) -> list[Any]:
    return [3, o.order_id, o.status, o.filled, o.quantity - o.filled, o.avg_price, o.perm_id, o.parent_id,
            o.last_price, o.client_id, "", 0.0]


def exec_details(req_id: int, e: Any, c: Any) -> list[Any]:
    o = e.order
    return [11, req_id, o.order_id, *contract11(c), e.exec_id, ib_time(e.time), o.account, c.exchange,
            "BOT" if o.action == "BUY" else "SLD", e.shares, e.price, o.perm_id, o.client_id, 0, e.cum_qty,
            e.avg_price, o.order_ref, "", "", "", 1]


def commission_report(e: Any, currency: str) -> list[Any]:
    return [59, 1, e.exec_id, e.commission, currency, e.realized if e.realized else UNSET_DOUBLE, "", ""]


def error(req_id: int, code: int, message: str) -> list[Any]:
    return [4, 2, req_id, code, message, ""]


# --------------------------------------------------------------------------- account


def position(account: str, c: Any, qty: float, avg_cost: float) -> list[Any]:
    return [61, 3, account, *contract11(c), qty, avg_cost]


def portfolio(account: str, c: Any, qty: float, price: float, avg_cost: float) -> list[Any]:
    mult = float(c.multiplier or 1)
    value = qty * price * mult
    return [7, 8, *contract11(c, primary=True), qty, price, value, avg_cost, value - qty * avg_cost, 0.0, account]


# --------------------------------------------------------------------------- bars


def bar_date(epoch: int, bar_seconds: int, format_date: int) -> str:
    if bar_seconds >= 86_400:
        return time.strftime("%Y%m%d", time.gmtime(epoch))
    if format_date == 2:
        return str(epoch)
    return time.strftime("%Y%m%d %H:%M:%S", time.gmtime(epoch)) + " UTC"


def historical_data(req_id: int, bars: list[tuple], bar_seconds: int, format_date: int, start: int, end: int) -> list[Any]:
    fields: list[Any] = [17, req_id, ib_time(start), ib_time(end), len(bars)]
    for t, o, h, lo, c, v in bars:
        fields += [bar_date(t, bar_seconds, format_date), o, h, lo, c, v, (h + lo + c) / 3, 1]
    return fields


def historical_update(req_id: int, bar: tuple, bar_seconds: int, format_date: int) -> list[Any]:
    t, o, h, lo, c, v = bar
    return [90, req_id, -1, bar_date(t, bar_seconds, format_date), o, c, h, lo, (h + lo + c) / 3, v]


def realtime_bar(req_id: int, bar: tuple) -> list[Any]:
    t, o, h, lo, c, v = bar
    return [50, 3, req_id, t, o, h, lo, c, v, (h + lo + c) / 3, 1]
