"""The market behind the fake TWS: instruments, price paths, the order book and the account.

Each instrument trades along a `PricePath`: every bar of a given OHLCV frame becomes four
ticks (open, then low and high in the order the bar moved, then close) at quarter-bar times,
so bars aggregated back at the frame's bar size are the frame itself. Orders are matched
against the last tick: market orders at once, a resting limit at its price when a tick
reaches it (a marketable one at the tick), stops at the tick that triggers them. Bracket
children wait for their parent's fill; the first fill in an OCA group cancels the others.
Commissions follow IB's fixed rates (stocks $0.005/share, min $1, max 1 % of value;
futures $0.85/contract; forex 0.2 bp, min $2).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd


@dataclass
class FakeInstrument:
    con_id: int
    symbol: str
    sec_type: str  # STK, CASH, FUT, CONTFUT
    exchange: str
    currency: str = "USD"
    expiry: str = ""
    multiplier: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    primary_exchange: str = ""
    min_tick: float = 0.01

    def matches(self, req: dict[str, str]) -> bool:
        """Does a contract-details request (field -> text, empty = any) describe this instrument?"""
        if req.get("conId") not in ("", "0", None):
            return int(req["conId"]) == self.con_id
        for key, mine in (("symbol", self.symbol), ("secType", self.sec_type), ("currency", self.currency)):
            if req.get(key) and req[key] != mine:
                return False
        exch = req.get("exchange", "")
        if exch and exch != "SMART" and exch != self.exchange:
            return False
        want = req.get("lastTradeDateOrContractMonth", "")
        return not want or self.expiry.startswith(want)

    def commission(self, shares: float, price: float) -> float:
        value = shares * price * float(self.multiplier or 1)
        if self.sec_type == "STK":
            return round(min(max(1.0, 0.005 * shares), 0.01 * value), 6)
        if self.sec_type in ("FUT", "CONTFUT"):
            return round(0.85 * shares, 6)
        return round(max(2.0, 0.00002 * value), 6)


Tick = tuple[int, float, float]  # epoch seconds, price, volume


class PricePath:
    """The ticks of one instrument, from an OHLCV frame (UTC index = bar start)."""

    def __init__(self, frame: pd.DataFrame, bar_seconds: int) -> None:
        self.bar_seconds = bar_seconds
        q = bar_seconds // 4
        ticks: list[Tick] = []
        for ts, row in frame.iterrows():
            t = int(pd.Timestamp(ts).timestamp())
            o, h, lo, c, v = (float(row[k]) for k in ("open", "high", "low", "close", "volume"))
            mid = (lo, h) if c >= o else (h, lo)
            ticks += [(t, o, v / 4), (t + q, mid[0], v / 4), (t + 2 * q, mid[1], v / 4), (t + 3 * q, c, v / 4)]
        self.ticks = ticks
        self.times = [t for t, _, _ in ticks]

    def upto(self, now: int) -> list[Tick]:
        """The ticks at or before `now`."""
        import bisect

        return self.ticks[: bisect.bisect_right(self.times, now)]

    def between(self, start: int, end: int) -> list[Tick]:
        """The ticks with start <= time < end."""
        import bisect

        return self.ticks[bisect.bisect_left(self.times, start) : bisect.bisect_left(self.times, end)]


def aggregate(ticks: Iterable[Tick], bar_seconds: int) -> list[tuple[int, float, float, float, float, float]]:
    """Bars (start, o, h, l, c, v) of the ticks, aligned to multiples of `bar_seconds`."""
    bars: dict[int, list[float]] = {}
    for t, p, v in ticks:
        start = t - t % bar_seconds
        bar = bars.get(start)
        if bar is None:
            bars[start] = [p, p, p, p, v]
        else:
            bar[1], bar[2], bar[3], bar[4] = max(bar[1], p), min(bar[2], p), p, bar[4] + v
    return [(t, *b) for t, b in sorted(bars.items())]  # type: ignore[misc]


@dataclass
class FakeOrder:
    order_id: int
    client_id: int
    perm_id: int
    con_id: int
    action: str
    quantity: float
    order_type: str
    lmt: float | None
    aux: float | None
    tif: str
    oca_group: str
    oca_type: int
    order_ref: str
    transmit: bool
    parent_id: int
    account: str
    status: str = "PendingSubmit"
    filled: float = 0.0
    avg_price: float = 0.0
    last_price: float = 0.0
    triggered: bool = False

    @property
    def open(self) -> bool:
        return self.status in ("PreSubmitted", "Submitted", "PendingSubmit")

    @property
    def buy(self) -> bool:
        return self.action == "BUY"


@dataclass
class FakeExecution:
    exec_id: str
    order: FakeOrder
    time: int
    shares: float
    price: float
    cum_qty: float
    avg_price: float
    commission: float
    realized: float = 0.0


@dataclass
class Account:
    name: str
    cash: float
    positions: dict[int, list[float]] = field(default_factory=dict)  # conId -> [qty, avg cost incl. multiplier]


Event = tuple  # ("order", FakeOrder) | ("exec", FakeExecution) | ("error", FakeOrder, code, message)


class Book:
    """Orders, executions and the account; every change returns the events to publish."""

    def __init__(self, account: Account, instruments: dict[int, FakeInstrument]) -> None:
        self.account = account
        self.instruments = instruments
        self.last: dict[int, float] = {}
        self.orders: list[FakeOrder] = []
        self.executions: list[FakeExecution] = []
        self.now = 0
        self._perm = itertools.count(9001)
        self._exec = itertools.count(1)
        self.reject_next: str | None = None
        self.max_fill: float | None = None  # fill at most this much per tick: partial fills

    def new_perm_id(self) -> int:
        return next(self._perm)

    def find(self, client_id: int, order_id: int) -> FakeOrder | None:
        return next((o for o in self.orders if o.client_id == client_id and o.order_id == order_id), None)

    # ------------------------------------------------------------------ intents

    def place(self, order: FakeOrder) -> list[Event]:
        if self.reject_next is not None:
            reason, self.reject_next = self.reject_next, None
            order.status = "Cancelled"
            self.orders.append(order)
            return [("error", order, 201, f"Order rejected - reason:{reason}")]
        self.orders.append(order)
        if not order.transmit:
            return []  # held in TWS until a later order of its family is transmitted
        root = order.parent_id or order.order_id
        family = [o for o in self.orders if o.status == "PendingSubmit" and o.client_id == order.client_id
                  and (o.order_id == root or o.parent_id == root)]
        events: list[Event] = []
        for o in sorted(family, key=lambda o: o.order_id):
            parent = self.find(o.client_id, o.parent_id) if o.parent_id else None
            o.status = "PreSubmitted" if parent is not None and parent.status != "Filled" else "Submitted"
            events.append(("order", o))
        for o in sorted(family, key=lambda o: o.order_id):
            events += self._match(o, initial=True)
        return events

    def modify(self, order: FakeOrder, quantity: float, lmt: float | None, aux: float | None) -> list[Event]:
        order.quantity, order.lmt, order.aux = quantity, lmt, aux
        return [("order", order), *self._match(order, initial=True)]

    def cancel(self, order: FakeOrder, *, reason: str = "") -> list[Event]:
        if not order.open:
            message = f"OrderId {order.order_id} that needs to be cancelled cannot be cancelled, state: {order.status}."
            return [("error", order, 10148, message)]
        order.status = "Cancelled"
        events: list[Event] = [("order", order), ("error", order, 202, f"Order Canceled - reason:{reason}")]
        for child in self._children(order):
            if child.open:
                events += self.cancel(child, reason="parent cancelled")
        return events

    # ------------------------------------------------------------------ market

    def tick(self, con_id: int, price: float) -> list[Event]:
        self.last[con_id] = price
        events: list[Event] = []
        for o in [o for o in self.orders if o.con_id == con_id and o.status == "Submitted"]:
            events += self._match(o, initial=False)
        return events

    def _children(self, order: FakeOrder) -> list[FakeOrder]:
        return [o for o in self.orders if o.parent_id == order.order_id and o.client_id == order.client_id]

    def _match(self, o: FakeOrder, *, initial: bool) -> list[Event]:
        price = self.last.get(o.con_id)
        if o.status != "Submitted" or price is None:
            return []
        at = self._fill_price(o, price, initial)
        if at is None:
            return []
        shares = o.quantity - o.filled
        return self._fill(o, shares if self.max_fill is None else min(shares, self.max_fill), at)

    @staticmethod
    def _fill_price(o: FakeOrder, price: float, initial: bool) -> float | None:
        kind = o.order_type
        if kind == "MKT":
            return price
        if kind in ("STP", "STP LMT") and not o.triggered:
            assert o.aux is not None
            if (price >= o.aux) if o.buy else (price <= o.aux):
                o.triggered = True
                if kind == "STP":
                    return price
            else:
                return None
        if kind in ("LMT", "STP LMT"):
            assert o.lmt is not None
            if (price <= o.lmt) if o.buy else (price >= o.lmt):
                return price if initial or kind == "STP LMT" else o.lmt
        return None

    def _fill(self, o: FakeOrder, shares: float, price: float) -> list[Event]:
        inst = self.instruments[o.con_id]
        prior = o.filled
        o.filled += shares
        o.avg_price = (o.avg_price * prior + price * shares) / o.filled
        o.last_price = price
        o.status = "Filled" if o.filled >= o.quantity - 1e-9 else "Submitted"
        commission = inst.commission(shares, price)
        realized = self._book_fill(inst, shares if o.buy else -shares, price, commission)
        e = FakeExecution(f"0000e{next(self._exec):04d}.01", o, self.now, shares, price, o.filled, o.avg_price,
                          commission, realized)
        self.executions.append(e)
        events: list[Event] = [("order", o), ("exec", e)]
        if o.oca_group:
            for other in self.orders:
                if other is not o and other.oca_group == o.oca_group and other.open:
                    events += self.cancel(other, reason="OCA")
        if o.status == "Filled":
            for child in self._children(o):
                if child.status == "PreSubmitted":
                    child.status = "Submitted"
                    events += [("order", child), *self._match(child, initial=True)]
        return events

    def _book_fill(self, inst: FakeInstrument, signed: float, price: float, commission: float) -> float:
        mult = float(inst.multiplier or 1)
        acct = self.account
        acct.cash -= signed * price * mult + commission
        qty, avg = acct.positions.get(inst.con_id, [0.0, 0.0])
        realized = 0.0
        new = qty + signed
        if qty and (qty > 0) != (signed > 0):
            closed = min(abs(signed), abs(qty)) * (1 if qty > 0 else -1)
            realized = closed * (price * mult - avg)
            if abs(new) > 1e-12 and (new > 0) != (qty > 0):
                avg = price * mult  # flipped: the rest opened at this price
        elif abs(new) > 1e-12:
            avg = (qty * avg + signed * price * mult) / new
        if abs(new) <= 1e-12:
            acct.positions.pop(inst.con_id, None)
        else:
            acct.positions[inst.con_id] = [new, avg]
        return realized - commission if realized else 0.0

    # ------------------------------------------------------------------ account values

    def values(self) -> dict[str, float]:
        gross = net = 0.0
        for con_id, (qty, _avg) in self.account.positions.items():
            inst = self.instruments[con_id]
            value = qty * self.last.get(con_id, 0.0) * float(inst.multiplier or 1)
            net += value
            gross += abs(value)
        netliq = self.account.cash + net
        available = netliq - 0.25 * gross
        return {"NetLiquidation": netliq, "TotalCashValue": self.account.cash, "AvailableFunds": available,
                "BuyingPower": 4 * available, "GrossPositionValue": gross, "EquityWithLoanValue": netliq}
