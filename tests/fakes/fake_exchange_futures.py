"""The USDⓈ-M futures account of the fake exchange: wallet, positions, orders, algo orders, fills.

One-way mode (positionSide BOTH), linear contracts of size 1, margin and pnl in the quote
asset. It follows Binance USDⓈ-M where the adapter depends on it:

* regular orders (``/fapi/v1/order``): MARKET fills at the last price, a LIMIT that crosses
  fills at the market (taker), a resting LIMIT fills at its price (maker); ``reduceOnly``
  orders need a position to reduce (-2022) and are cut to its size when they fill;
* conditional orders live in the Algo Service (``/fapi/v1/algoOrder``, ``algoType
  CONDITIONAL``): STOP_MARKET / TAKE_PROFIT_MARKET (and STOP / TAKE_PROFIT with a limit) wait
  for their ``triggerPrice`` (-2021 when the market is already there), then place a regular
  order (``actualOrderId``) and end FINISHED; ``closePosition`` closes whatever is open; a
  reduce-only one with nothing left to reduce EXPIRES;
* a new position needs initial margin (notional / leverage) from the available balance
  (-2019 ``Margin is insufficient.``), and a notional of at least the market's minimum unless
  reduce-only (-4164); duplicate open client ids are refused (-4116 / -20132);
* fees (taker 0.04 %, maker 0.02 %) and realised pnl settle in the wallet at each fill; each
  fill is a userTrade with its commission in the quote asset.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from tests.fakes.fake_exchange_engine import FakeClock, FakeError, FakeMarket, PricePath

D = Decimal
ZERO = D(0)
CONDITIONAL = ("STOP_MARKET", "TAKE_PROFIT_MARKET", "STOP", "TAKE_PROFIT")
MARGIN_SHORT = FakeError(400, -2019, "Margin is insufficient.")
REDUCE_ONLY_REJECTED = FakeError(400, -2022, "ReduceOnly Order is rejected.")


@dataclass
class FuturesOrder:
    order_id: int
    client_id: str
    symbol: str
    side: str  # BUY / SELL
    type: str  # MARKET / LIMIT
    qty: Decimal
    price: Decimal = ZERO
    reduce_only: bool = False
    close_position: bool = False
    orig_type: str = ""
    stop: Decimal = ZERO
    status: str = "NEW"
    executed: Decimal = ZERO
    cum_quote: Decimal = ZERO
    time: int = 0
    update_time: int = 0

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    @property
    def sign(self) -> int:
        return 1 if self.side == "BUY" else -1


@dataclass
class AlgoOrder:
    algo_id: int
    client_id: str
    symbol: str
    side: str
    type: str  # STOP_MARKET TAKE_PROFIT_MARKET STOP TAKE_PROFIT
    qty: Decimal
    trigger: Decimal
    price: Decimal = ZERO
    reduce_only: bool = False
    close_position: bool = False
    status: str = "NEW"  # NEW TRIGGERED FINISHED CANCELED EXPIRED
    actual_order_id: str = ""
    actual_price: Decimal = ZERO
    create_time: int = 0
    update_time: int = 0
    trigger_time: int = 0

    @property
    def is_open(self) -> bool:
        return self.status == "NEW"

    def hit(self, p: Decimal) -> bool:
        """Whether price `p` triggers it: stops on the way against, targets on the way for the position."""
        stop = self.type.startswith("STOP")
        rising = (self.side == "BUY") == stop
        return p >= self.trigger if rising else p <= self.trigger


@dataclass
class FakePosition:
    qty: Decimal = ZERO  # signed: > 0 long, < 0 short
    entry: Decimal = ZERO
    update_time: int = 0


class FuturesEngine:
    """One USDⓈ-M futures account on the fake venue (thread-safe)."""

    def __init__(
        self, clock: FakeClock, markets: list[FakeMarket], paths: dict[str, PricePath], wallet: str = "10000",
        *, taker: str = "0.0004", maker: str = "0.0002", leverage: int = 20,
    ) -> None:
        self.clock, self.paths = clock, paths
        self.markets = {m.symbol: m for m in markets}
        self.wallet = D(wallet)
        self.taker, self.maker = D(taker), D(maker)
        self.leverage = {m.symbol: leverage for m in markets}
        self.margin_type = {m.symbol: "CROSSED" for m in markets}
        self.dual_side = False  # hedge mode
        self.max_leverage = 125
        self.positions: dict[str, FakePosition] = {m.symbol: FakePosition() for m in markets}
        self.orders: dict[int, FuturesOrder] = {}
        self.algos: dict[int, AlgoOrder] = {}
        self.trades: list[dict] = []
        self.lock = threading.RLock()
        self._ids = itertools.count(8_000_001)
        self._algo_ids = itertools.count(3_000_001)
        self._trade_ids = itertools.count(70_001)
        self._tick = {s: p.index_at(clock.now_ms()) for s, p in paths.items() if s in self.markets}
        # Called (under the lock) at every change of an order or algo order: (order, execution type or
        # algo status, trade or None), for the user data stream (fake_exchange_ws).
        self.listeners: list[Callable[[FuturesOrder | AlgoOrder, str, dict | None], None]] = []

    # ------------------------------------------------------------------ queries
    def price(self, symbol: str) -> Decimal:
        return self.paths[symbol].price_at(self.clock.now_ms())

    def unrealised(self, symbol: str) -> Decimal:
        pos = self.positions[symbol]
        return pos.qty * (self.price(symbol) - pos.entry) if pos.qty else ZERO

    def position_margin(self, symbol: str) -> Decimal:
        return abs(self.positions[symbol].qty) * self.price(symbol) / self.leverage[symbol]

    def order_margin(self, symbol: str | None = None) -> Decimal:
        working = [o for o in self.orders.values()
                   if o.is_open and not o.reduce_only and (symbol is None or o.symbol == symbol)]
        return sum(((o.qty - o.executed) * o.price / self.leverage[o.symbol] for o in working), ZERO)

    def available(self) -> Decimal:
        upnl = sum((self.unrealised(s) for s in self.markets), ZERO)
        used = sum((self.position_margin(s) for s in self.markets), ZERO) + self.order_margin()
        return self.wallet + upnl - used

    def find(self, order_id: str | None, client_id: str | None) -> FuturesOrder:
        found = None
        if order_id is not None:
            found = self.orders.get(int(order_id))
        elif client_id is not None:
            found = next((o for o in reversed(self.orders.values()) if o.client_id == client_id), None)
        if found is None:
            raise FakeError(400, -2013, "Order does not exist.")
        return found

    def find_algo(self, algo_id: str | None, client_id: str | None) -> AlgoOrder:
        found = None
        if algo_id is not None:
            found = self.algos.get(int(algo_id))
        elif client_id is not None:
            found = next((a for a in reversed(self.algos.values()) if a.client_id == client_id), None)
        if found is None:
            raise FakeError(400, -2013, "Order does not exist.")
        return found

    # ------------------------------------------------------------------ settings
    def set_leverage(self, symbol: str, leverage: int) -> None:
        self._market(symbol)
        if not 1 <= leverage <= self.max_leverage:
            raise FakeError(400, -4028, f"Leverage {leverage} is not valid")
        self.leverage[symbol] = leverage

    def set_margin_type(self, symbol: str, kind: str) -> None:
        self._market(symbol)
        if kind not in ("ISOLATED", "CROSSED"):
            raise FakeError(400, -1116, "Invalid marginType.")
        if self.margin_type[symbol] == kind:
            raise FakeError(400, -4046, "No need to change margin type.")
        if self.positions[symbol].qty:
            raise FakeError(400, -4048, "Margin type cannot be changed if there exists position.")
        self.margin_type[symbol] = kind

    # ------------------------------------------------------------------ matching
    def advance(self) -> None:
        """Trigger algo orders and match resting limits against every tick since the last call."""
        with self.lock:
            now = self.clock.now_ms()
            for symbol in self.markets:
                path = self.paths[symbol]
                last, self._tick[symbol] = self._tick[symbol], path.index_at(now)
                for k in range(last + 1, self._tick[symbol] + 1):
                    p, t = path.price(k), path.start_ms + k * path.tick_ms
                    for algo in [a for a in self.algos.values() if a.symbol == symbol and a.is_open]:
                        if algo.hit(p):
                            self._trigger(algo, p, t)
                    for o in [o for o in self.orders.values() if o.symbol == symbol and o.is_open]:
                        if o.type == "LIMIT" and ((p <= o.price) if o.side == "BUY" else (p >= o.price)):
                            self._fill(o, o.price, t, maker=True)

    # ------------------------------------------------------------------ orders
    def new_order(self, p: dict[str, str]) -> FuturesOrder:
        with self.lock:
            self.advance()
            m = self._market(p.get("symbol", ""))
            kind, side = p.get("type", ""), p.get("side", "")
            if kind not in ("MARKET", "LIMIT") or side not in ("BUY", "SELL"):
                raise FakeError(400, -1116, "Invalid orderType.")
            cid = p.get("newClientOrderId") or f"fake-{next(self._ids)}"
            if any(o.client_id == cid and o.is_open for o in self.orders.values()):
                raise FakeError(400, -4116, "ClientOrderId is duplicated.")
            now = self.clock.now_ms()
            order = FuturesOrder(next(self._ids), cid, m.symbol, side, kind, self._qty(m, p.get("quantity", "0")),
                                 reduce_only=p.get("reduceOnly") == "true", orig_type=kind, time=now, update_time=now)
            if kind == "LIMIT":
                order.price = self._px(m, p.get("price", "0"))
            self._admit(m, order.side, order.qty, order.price or self.price(m.symbol), order.reduce_only)
            self.orders[order.order_id] = order
            self._notify(order, "NEW")
            self._on_arrival(order, now)
            return order

    def new_algo(self, p: dict[str, str]) -> AlgoOrder:
        with self.lock:
            self.advance()
            m = self._market(p.get("symbol", ""))
            kind, side = p.get("type", ""), p.get("side", "")
            if p.get("algoType") != "CONDITIONAL" or kind not in CONDITIONAL or side not in ("BUY", "SELL"):
                raise FakeError(400, -1116, "Invalid orderType.")
            cid = p.get("clientAlgoId") or f"fake-algo-{next(self._algo_ids)}"
            if any(a.client_id == cid and a.is_open for a in self.algos.values()):
                raise FakeError(400, -20132, "The client algo id is duplicated")
            close = p.get("closePosition") == "true"
            if close and p.get("reduceOnly") == "true":
                raise FakeError(400, -1106, "Parameter 'reduceOnly' sent when not required.")
            qty = ZERO if close else self._qty(m, p.get("quantity", "0"))
            now = self.clock.now_ms()
            trigger = self._px(m, p.get("triggerPrice", "0"))
            algo = AlgoOrder(next(self._algo_ids), cid, m.symbol, side, kind, qty, trigger,
                             reduce_only=p.get("reduceOnly") == "true", close_position=close,
                             create_time=now, update_time=now)
            if not kind.endswith("_MARKET"):
                algo.price = self._px(m, p.get("price", "0"))
            if algo.hit(self.price(m.symbol)):
                raise FakeError(400, -2021, "Order would immediately trigger.")
            if not close:
                self._admit(m, side, qty, algo.price or algo.trigger, algo.reduce_only, margin=False)
            self.algos[algo.algo_id] = algo
            self._notify(algo, "NEW")
            return algo

    def cancel(self, order_id: str | None, client_id: str | None) -> FuturesOrder:
        with self.lock:
            self.advance()
            try:
                order = self.find(order_id, client_id)
            except FakeError:
                raise FakeError(400, -2011, "Unknown order sent.") from None
            if not order.is_open:
                raise FakeError(400, -2011, "Unknown order sent.")
            order.status, order.update_time = "CANCELED", self.clock.now_ms()
            self._notify(order, "CANCELED")
            return order

    def cancel_algo(self, algo_id: str | None, client_id: str | None) -> AlgoOrder:
        with self.lock:
            self.advance()
            try:
                algo = self.find_algo(algo_id, client_id)
            except FakeError:
                raise FakeError(400, -2011, "Unknown order sent.") from None
            if not algo.is_open:
                raise FakeError(400, -2011, "Unknown order sent.")
            algo.status, algo.update_time = "CANCELED", self.clock.now_ms()
            self._notify(algo, "CANCELED")
            return algo

    def _notify(self, o: FuturesOrder | AlgoOrder, execution: str, trade: dict | None = None) -> None:
        for listener in self.listeners:
            listener(o, execution, trade)

    # ------------------------------------------------------------------ internals
    def _market(self, symbol: str) -> FakeMarket:
        if symbol not in self.markets:
            raise FakeError(400, -1121, "Invalid symbol.")
        return self.markets[symbol]

    def _qty(self, m: FakeMarket, text: str) -> Decimal:
        qty = D(text)
        if qty < D(m.min_qty) or qty % D(m.step_size) != 0:
            raise FakeError(400, -1111, "Precision is over the maximum defined for this asset.")
        return qty

    def _px(self, m: FakeMarket, text: str) -> Decimal:
        px = D(text)
        if px <= 0 or px % D(m.tick_size) != 0:
            raise FakeError(400, -4014, "Price not increased by tick size.")
        return px

    def _admit(self, m: FakeMarket, side: str, qty: Decimal, price: Decimal, reduce_only: bool,
               *, margin: bool = True) -> None:
        """Refuse what Binance refuses at placement: reduce-only without a position, small or unfunded orders."""
        pos = self.positions[m.symbol].qty
        sign = 1 if side == "BUY" else -1
        if reduce_only:
            if pos == 0 or (pos > 0) == (sign > 0):
                raise REDUCE_ONLY_REJECTED
            return
        if qty * price < D(m.min_notional):
            raise FakeError(400, -4164, f"Order's notional must be no smaller than {m.min_notional} "
                                        "(unless you choose reduce only).")
        opening = qty if pos == 0 or (pos > 0) == (sign > 0) else max(ZERO, qty - abs(pos))
        if margin and opening * price / self.leverage[m.symbol] > self.available():
            raise MARGIN_SHORT

    def _on_arrival(self, o: FuturesOrder, now: int) -> None:
        p = self.price(o.symbol)
        if o.type == "MARKET" or ((p <= o.price) if o.side == "BUY" else (p >= o.price)):
            self._fill(o, p, now, maker=False)

    def _trigger(self, algo: AlgoOrder, p: Decimal, t: int) -> None:
        pos = self.positions[algo.symbol].qty
        sign = 1 if algo.side == "BUY" else -1
        algo.trigger_time = algo.update_time = t
        reducing = pos != 0 and (pos > 0) != (sign > 0)
        if (algo.close_position or algo.reduce_only) and not reducing:
            algo.status = "EXPIRED"  # nothing left to close
            self._notify(algo, "EXPIRED")
            return
        qty = abs(pos) if algo.close_position else algo.qty
        limit = not algo.type.endswith("_MARKET")
        order = FuturesOrder(next(self._ids), algo.client_id, algo.symbol, algo.side, "LIMIT" if limit else "MARKET",
                             qty, price=algo.price, reduce_only=algo.reduce_only or algo.close_position,
                             close_position=algo.close_position, orig_type=algo.type, stop=algo.trigger,
                             time=t, update_time=t)
        self.orders[order.order_id] = order
        algo.status, algo.actual_order_id = "TRIGGERED", str(order.order_id)
        self._notify(algo, "TRIGGERED")
        self._notify(order, "NEW")
        if not limit or ((p <= order.price) if order.side == "BUY" else (p >= order.price)):
            self._fill(order, p, t, maker=False)
        if not order.is_open:
            algo.status = "FINISHED"
            algo.actual_price = order.cum_quote / order.executed if order.executed else ZERO
            self._notify(algo, "FINISHED")

    def _fill(self, o: FuturesOrder, price: Decimal, t: int, *, maker: bool) -> None:
        pos = self.positions[o.symbol]
        qty = o.qty - o.executed
        if o.reduce_only:
            reducible = abs(pos.qty) if pos.qty and (pos.qty > 0) != (o.sign > 0) else ZERO
            qty = min(qty, reducible)
            if qty == 0:
                o.status, o.update_time = "EXPIRED", t
                self._notify(o, "EXPIRED")
                return
        quote = qty * price
        fee = quote * (self.maker if maker else self.taker)
        closing = min(qty, abs(pos.qty)) if pos.qty and (pos.qty > 0) != (o.sign > 0) else ZERO
        realised = closing * (price - pos.entry) * (1 if pos.qty > 0 else -1) if closing else ZERO
        opening = qty - closing
        if closing:
            pos.qty += o.sign * closing
            if pos.qty == 0:
                pos.entry = ZERO
        if opening:
            new_qty = pos.qty + o.sign * opening
            pos.entry = (abs(pos.qty) * pos.entry + opening * price) / abs(new_qty)
            pos.qty = new_qty
        pos.update_time = t
        self.wallet += realised - fee
        trade = {
            "symbol": o.symbol, "id": next(self._trade_ids), "orderId": o.order_id, "side": o.side,
            "price": str(price), "qty": str(qty), "realizedPnl": str(realised), "quoteQty": str(quote),
            "commission": str(fee), "commissionAsset": self.markets[o.symbol].quote, "time": t,
            "positionSide": "BOTH", "buyer": o.side == "BUY", "maker": maker,
        }
        self.trades.append(trade)
        o.executed += qty
        o.cum_quote += quote
        o.update_time = t
        o.status = "FILLED" if o.executed == o.qty or o.reduce_only else "PARTIALLY_FILLED"
        if o.reduce_only and o.executed < o.qty:
            o.qty = o.executed  # Binance cuts a reduce-only order to the position it closed
        self._notify(o, "TRADE", trade)
