"""The matching engine of the fake exchange: a clock, a price path, balances, orders and fills.

Prices move in ticks (`PricePath`): tick k happens at ``start_ms + k * tick_ms`` at price
``prices[k]``. Candles are aggregated from the ticks, and resting orders are matched against
every tick between two requests (`Engine.advance`), so what the klines show and what fills
always agree. Behaviour follows Binance spot: LOT_SIZE/PRICE_FILTER/NOTIONAL filters, balances
locked by resting orders, STOP_LOSS(_LIMIT) triggers, OCO lists whose other leg EXPIRES when one
fills, duplicate open client order ids refused (-2010), unknown orders -2013 / -2011.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal

import numpy as np

D = Decimal
ZERO = D(0)


class FakeError(Exception):
    """A Binance error answer: HTTP status, error code and message."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


INSUFFICIENT = FakeError(400, -2010, "Account has insufficient balance for requested action.")


class FakeClock:
    """Exchange time in ms: `start_ms` plus real time elapsed times `speed` (0: frozen) plus `advance`s."""

    def __init__(self, start_ms: int, speed: float = 0.0) -> None:
        self.start_ms, self.speed = start_ms, speed
        self._t0 = time.monotonic()
        self._extra = 0
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            return int(self.start_ms + self._extra + (time.monotonic() - self._t0) * 1000 * self.speed)

    def advance(self, ms: int) -> None:
        with self._lock:
            self._extra += ms

    def set_speed(self, speed: float) -> None:
        """Run at `speed` from now on (0: freeze), without a jump in time."""
        with self._lock:
            now = time.monotonic()
            self._extra += int((now - self._t0) * 1000 * self.speed)
            self._t0, self.speed = now, speed


class PricePath:
    """Tick prices of one symbol: a seeded random walk, or the scripted `prices` then flat."""

    def __init__(
        self, start_ms: int, tick_ms: int, *, start_price: float = 100.0, vol: float = 0.0003,
        seed: int = 1, prices: list[float] | None = None,
    ) -> None:
        self.start_ms, self.tick_ms = start_ms, tick_ms
        if prices is not None:
            self._prices = [round(p, 2) for p in prices]
        else:
            rng = np.random.default_rng(seed)
            walk = start_price * np.exp(np.cumsum(rng.normal(0.0, vol, 200_000)))
            self._prices = np.round(walk, 2).tolist()

    def script(self, from_k: int, prices: list[float]) -> None:
        """Make ticks from `from_k` on follow `prices`, then stay at the last one."""
        self._prices = self._prices[:from_k] + [round(p, 2) for p in prices]

    def index_at(self, ms: int) -> int:
        """Index of the last tick at or before `ms` (-1 before the first)."""
        return (ms - self.start_ms) // self.tick_ms

    def price(self, k: int) -> Decimal:
        k = max(0, min(k, len(self._prices) - 1))
        return D(str(self._prices[k]))

    def price_at(self, ms: int) -> Decimal:
        return self.price(self.index_at(ms))

    def candle(
        self, open_ms: int, interval_ms: int, until_ms: int
    ) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal]:
        """OHLCV of the ticks in [open_ms, open_ms + interval_ms) that happened by `until_ms`."""
        first = -(-(open_ms - self.start_ms) // self.tick_ms)
        last = (min(open_ms + interval_ms - 1, until_ms) - self.start_ms) // self.tick_ms
        ps = [self.price(k) for k in range(max(first, 0), last + 1)] or [self.price(first - 1)]
        return ps[0], max(ps), min(ps), ps[-1], D(len(ps))


@dataclass
class FakeMarket:
    symbol: str = "BTCUSDT"
    base: str = "BTC"
    quote: str = "USDT"
    tick_size: str = "0.01"
    step_size: str = "0.001"
    min_qty: str = "0.001"
    min_notional: str = "10"
    oco: bool = True


@dataclass
class FakeOrder:
    order_id: int
    client_id: str
    symbol: str
    side: str  # BUY / SELL
    type: str  # MARKET LIMIT LIMIT_MAKER STOP_LOSS STOP_LOSS_LIMIT
    qty: Decimal
    price: Decimal = ZERO
    stop: Decimal = ZERO
    time: int = 0
    list_id: int = -1
    status: str = "NEW"
    executed: Decimal = ZERO
    quote_executed: Decimal = ZERO
    triggered: bool = False
    update_time: int = 0
    locked: Decimal = ZERO  # what this order still holds locked (in the asset it spends)
    fills: list[dict] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")


class Engine:
    """Balances, orders and fills of one account on the fake venue (thread-safe)."""

    def __init__(
        self, clock: FakeClock, markets: list[FakeMarket], paths: dict[str, PricePath],
        balances: dict[str, str], *, fee_rate: str = "0.001",
    ) -> None:
        self.clock, self.paths = clock, paths
        self.markets = {m.symbol: m for m in markets}
        self.free = {a: D(v) for a, v in balances.items()}
        self.locked: dict[str, Decimal] = {a: ZERO for a in balances}
        self.fee_rate = D(fee_rate)
        self.orders: dict[int, FakeOrder] = {}
        self.trades: list[dict] = []
        self.lock = threading.RLock()
        self._ids = itertools.count(1001)
        self._trade_ids = itertools.count(5001)
        self._lists = itertools.count(1)
        self._tick: dict[str, int] = {s: p.index_at(clock.now_ms()) for s, p in paths.items()}
        # Called (under the lock) at every change of an order: (order, execution type, trade or None);
        # the execution types of Binance's executionReport: NEW, TRADE, CANCELED, EXPIRED.
        self.listeners: list[Callable[[FakeOrder, str, dict | None], None]] = []

    # ------------------------------------------------------------------ queries
    def price(self, symbol: str) -> Decimal:
        return self.paths[symbol].price_at(self.clock.now_ms())

    def by_client_id(self, symbol: str, client_id: str) -> FakeOrder | None:
        found = [o for o in self.orders.values() if o.symbol == symbol and o.client_id == client_id]
        return found[-1] if found else None

    def find(self, symbol: str, order_id: str | None, client_id: str | None) -> FakeOrder:
        order = None
        if order_id is not None:
            order = self.orders.get(int(order_id))
        elif client_id is not None:
            order = self.by_client_id(symbol, client_id)
        if order is None or order.symbol != symbol:
            raise FakeError(400, -2013, "Order does not exist.")
        return order

    # ------------------------------------------------------------------ matching
    def advance(self) -> None:
        """Match resting orders against every tick since the last call."""
        with self.lock:
            now = self.clock.now_ms()
            for symbol, path in self.paths.items():
                last, self._tick[symbol] = self._tick[symbol], path.index_at(now)
                for k in range(last + 1, self._tick[symbol] + 1):
                    p = path.price(k)
                    t = path.start_ms + k * path.tick_ms
                    for order in [o for o in self.orders.values() if o.symbol == symbol and o.is_open]:
                        if order.is_open:
                            self._match(order, p, t)

    def _match(self, o: FakeOrder, p: Decimal, t: int) -> None:
        buy = o.side == "BUY"
        if o.type in ("STOP_LOSS", "STOP_LOSS_LIMIT") and not o.triggered:
            if (p >= o.stop) if buy else (p <= o.stop):
                o.triggered = True
                if o.type == "STOP_LOSS":
                    self._fill(o, o.qty - o.executed, p, t, maker=False)
                    return
            else:
                return
        reached = (p <= o.price) if buy else (p >= o.price)
        if o.type in ("LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT") and reached:
            # A triggered stop-limit takes the market; a resting limit fills at its price.
            taker = o.type == "STOP_LOSS_LIMIT"
            self._fill(o, o.qty - o.executed, p if taker else o.price, t, maker=not taker)

    # ------------------------------------------------------------------ orders
    def new_order(self, p: dict[str, str]) -> FakeOrder:
        """Validate and place one order (NEW), filling what crosses at once."""
        with self.lock:
            self.advance()
            m = self._market(p.get("symbol", ""))
            cid = p.get("newClientOrderId") or f"fake-{next(self._ids)}"
            if any(o.client_id == cid and o.is_open for o in self.orders.values()):
                raise FakeError(400, -2010, "Duplicate order sent.")
            order = self._build(m, p, cid)
            self._lock_funds(m, order)
            self.orders[order.order_id] = order
            self._notify(order, "NEW")
            self._on_arrival(order)
            return order

    def fill_part(self, order: FakeOrder, qty: Decimal, price: Decimal | None = None) -> None:
        """Execute `qty` of an open order now (a partial fill, as a thin book would), as a maker at its price."""
        with self.lock:
            self._fill(order, qty, price or order.price or self.price(order.symbol), self.clock.now_ms(), maker=True)

    def new_oco(self, p: dict[str, str]) -> tuple[int, list[FakeOrder]]:
        """POST /api/v3/orderList/oco: LIMIT_MAKER above and STOP_LOSS(_LIMIT) below, one quantity."""
        with self.lock:
            self.advance()
            m = self._market(p.get("symbol", ""))
            if not m.oco:
                raise FakeError(400, -1013, "OCO orders are not supported for this symbol.")
            side, qty = p["side"], self._qty(m, p["quantity"])
            last = self.price(m.symbol)
            legs = {}
            for pos in ("above", "below"):
                kind = p[f"{pos}Type"]
                leg = {"symbol": m.symbol, "side": side, "type": kind, "quantity": p["quantity"]}
                if f"{pos}Price" in p:
                    leg["price"] = p[f"{pos}Price"]
                if f"{pos}StopPrice" in p:
                    leg["stopPrice"] = p[f"{pos}StopPrice"]
                legs[pos] = self._build(m, leg, p.get(f"{pos}ClientOrderId") or f"fake-{next(self._ids)}")
            above, below = legs["above"], legs["below"]
            trigger_above = above.stop if above.type.startswith("STOP") else above.price
            trigger_below = below.stop if below.type.startswith("STOP") else below.price
            if not trigger_below < last < trigger_above:
                raise FakeError(400, -2010, "The relationship of the prices for the orders is not correct.")
            list_id = next(self._lists)
            lock_asset = m.base if side == "SELL" else m.quote
            need = qty if side == "SELL" else qty * max(above.price, below.price)
            self._take(lock_asset, need)
            for leg in (above, below):
                leg.list_id = list_id
                self.orders[leg.order_id] = leg
            for placed in (above, below):
                self._notify(placed, "NEW")
            above.locked = need  # the list holds one lock
            return list_id, [above, below]

    def cancel(self, symbol: str, order_id: str | None, client_id: str | None) -> FakeOrder:
        with self.lock:
            self.advance()
            try:
                order = self.find(symbol, order_id, client_id)
            except FakeError:
                raise FakeError(400, -2011, "Unknown order sent.") from None
            if not order.is_open:
                raise FakeError(400, -2011, "Unknown order sent.")
            for o in self._list_of(order):
                if o.is_open:
                    self._close(o, "CANCELED")
            return order

    # ------------------------------------------------------------------ internals
    def _market(self, symbol: str) -> FakeMarket:
        if symbol not in self.markets:
            raise FakeError(400, -1121, "Invalid symbol.")
        return self.markets[symbol]

    def _qty(self, m: FakeMarket, text: str) -> Decimal:
        qty = D(text)
        if qty < D(m.min_qty) or (qty % D(m.step_size)) != 0:
            raise FakeError(400, -1013, "Filter failure: LOT_SIZE")
        return qty

    def _px(self, m: FakeMarket, text: str) -> Decimal:
        px = D(text)
        if px <= 0 or (px % D(m.tick_size)) != 0:
            raise FakeError(400, -1013, "Filter failure: PRICE_FILTER")
        return px

    def _build(self, m: FakeMarket, p: dict[str, str], cid: str) -> FakeOrder:
        kind, side = p.get("type", ""), p.get("side", "")
        if kind not in ("MARKET", "LIMIT", "LIMIT_MAKER", "STOP_LOSS", "STOP_LOSS_LIMIT") or side not in ("BUY", "SELL"):
            raise FakeError(400, -1116, "Invalid orderType.")
        qty = self._qty(m, p.get("quantity", "0"))
        now = self.clock.now_ms()
        order = FakeOrder(next(self._ids), cid, m.symbol, side, kind, qty, time=now, update_time=now)
        if kind != "MARKET" and kind != "STOP_LOSS":
            order.price = self._px(m, p.get("price", "0"))
        if kind.startswith("STOP"):
            order.stop = self._px(m, p.get("stopPrice", "0"))
        ref = order.price if order.price else self.price(m.symbol)
        if qty * ref < D(m.min_notional):
            raise FakeError(400, -1013, "Filter failure: NOTIONAL")
        last = self.price(m.symbol)
        if kind.startswith("STOP") and ((last >= order.stop) if side == "BUY" else (last <= order.stop)):
            raise FakeError(400, -2010, "Stop price would trigger immediately.")
        if kind == "LIMIT_MAKER" and ((last <= order.price) if side == "BUY" else (last >= order.price)):
            raise FakeError(400, -2010, "Order would immediately match and take.")
        return order

    def _lock_funds(self, m: FakeMarket, o: FakeOrder) -> None:
        if o.side == "SELL":
            self._take(m.base, o.qty)
            o.locked = o.qty
        else:
            price = o.price if o.price else self.price(m.symbol)
            cost = o.qty * price * (1 + self.fee_rate)
            self._take(m.quote, cost)
            o.locked = cost

    def _take(self, asset: str, amount: Decimal) -> None:
        if self.free.get(asset, ZERO) < amount:
            raise INSUFFICIENT
        self.free[asset] -= amount
        self.locked[asset] = self.locked.get(asset, ZERO) + amount

    def _on_arrival(self, o: FakeOrder) -> None:
        p, now = self.price(o.symbol), self.clock.now_ms()
        if o.type == "MARKET":
            self._fill(o, o.qty, p, now, maker=False)
        elif o.type == "LIMIT" and ((p <= o.price) if o.side == "BUY" else (p >= o.price)):
            self._fill(o, o.qty, p, now, maker=False)  # crosses: taker at the market price

    def _list_of(self, o: FakeOrder) -> list[FakeOrder]:
        if o.list_id < 0:
            return [o]
        return [x for x in self.orders.values() if x.list_id == o.list_id]

    def _owner_of_lock(self, o: FakeOrder) -> FakeOrder:
        return next((x for x in self._list_of(o) if x.locked), o)

    def _fill(self, o: FakeOrder, qty: Decimal, price: Decimal, t: int, *, maker: bool) -> None:
        m = self.markets[o.symbol]
        holder = self._owner_of_lock(o)
        quote = qty * price
        fee = (quote * self.fee_rate).quantize(D("0.00000001"), rounding=ROUND_DOWN)
        if o.side == "BUY":
            spend = quote + fee
            self._release(m.quote, holder, spend)
            self.free[m.base] = self.free.get(m.base, ZERO) + qty
        else:
            self._release(m.base, holder, qty)
            self.free[m.quote] = self.free.get(m.quote, ZERO) + quote - fee
        trade = {
            "symbol": o.symbol, "id": next(self._trade_ids), "orderId": o.order_id, "orderListId": o.list_id,
            "price": str(price), "qty": str(qty), "quoteQty": str(quote), "commission": str(fee),
            "commissionAsset": m.quote, "time": t, "isBuyer": o.side == "BUY", "isMaker": maker, "isBestMatch": True,
        }
        self.trades.append(trade)
        o.fills.append(trade)
        o.executed += qty
        o.quote_executed += quote
        o.update_time = t
        o.status = "FILLED" if o.executed == o.qty else "PARTIALLY_FILLED"
        self._notify(o, "TRADE", trade)
        if o.status == "FILLED":
            self._unlock(holder if holder is o else o)
            for other in self._list_of(o):
                if other is not o and other.is_open:
                    self._close(other, "EXPIRED")

    def _release(self, asset: str, holder: FakeOrder, amount: Decimal) -> None:
        take = min(amount, holder.locked)
        holder.locked -= take
        self.locked[asset] -= take
        if amount > take:  # a buy that filled dearer than it locked: the rest from free cash
            self.free[asset] -= amount - take

    def _unlock(self, o: FakeOrder) -> None:
        if not o.locked:
            return
        m = self.markets[o.symbol]
        asset = m.base if o.side == "SELL" else m.quote
        self.locked[asset] -= o.locked
        self.free[asset] += o.locked
        o.locked = ZERO

    def _notify(self, o: FakeOrder, execution: str, trade: dict | None = None) -> None:
        for listener in self.listeners:
            listener(o, execution, trade)

    def _close(self, o: FakeOrder, status: str) -> None:
        o.status = status
        o.update_time = self.clock.now_ms()
        self._notify(o, status)
        holder = self._owner_of_lock(o)
        if holder is o or all(not x.is_open for x in self._list_of(o)):
            self._unlock(holder)
