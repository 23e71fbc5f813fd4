"""A fake TWS / IB Gateway on 127.0.0.1 for the real ib_async client (tests only).

It speaks the TWS socket protocol (length-prefixed, NUL-separated fields; the ``API\\0``
greeting with a version range, answered with the server version and connection time; then
startApi, managedAccounts, nextValidId) and the subset of requests the IB adapter uses:

* contract details (stocks, forex, futures, continuous futures: the front future);
* positions, account updates (values, portfolio), account summary, executions with their
  commission reports, open orders (own client or all), completed orders (none);
* placeOrder (new, or a modification of an open order), cancelOrder; answers are openOrder,
  orderStatus, execDetails and commissionReport, and error 201/202/10148 as TWS sends them;
  brackets (parent, children held until the parent fills, transmit flags) and OCA groups;
* historical bars (any bar size, keepUpToDate updates) and 5-second real-time bars.

Time is virtual: `step()` moves the clock to the next tick of the price paths (see
`fake_tws_market`), fills what the tick reaches and sends the bar updates. Faults:
`drop_clients()`, `refuse_connections(n)`, `reject_next(reason)`, `drop_after_next_place()`.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any, Self

from tests.fakes import fake_tws_wire as wire
from tests.fakes.fake_tws_market import (
    Account,
    Book,
    FakeInstrument,
    FakeOrder,
    PricePath,
    aggregate,
)
from tests.fakes.fake_tws_wire import num

_CONTRACT_KEYS = ("conId", "symbol", "secType", "lastTradeDateOrContractMonth", "strike", "right", "multiplier",
                  "exchange", "primaryExchange", "currency", "localSymbol", "tradingClass")
_UNITS = {"S": 1, "D": 86_400, "W": 604_800, "M": 2_592_000, "Y": 31_536_000}


def bar_size_seconds(text: str) -> int:
    n, unit = text.split()
    mult = {"sec": 1, "secs": 1, "min": 60, "mins": 60, "hour": 3600, "hours": 3600, "day": 86_400,
            "days": 86_400, "week": 604_800, "month": 2_592_000}[unit]
    return int(n) * mult


def _contract(fields: list[str]) -> dict[str, str]:
    return dict(zip(_CONTRACT_KEYS, fields))


class _Session(asyncio.Protocol):
    def __init__(self, server: FakeTWS) -> None:
        self.server = server
        self.reader = wire.Reader()
        self.transport: asyncio.Transport | None = None
        self.client_id: int | None = None
        self.handshaken = False
        self.account_sub = self.positions_sub = False
        self.history: dict[int, tuple[int, int, int]] = {}  # reqId -> (conId, bar seconds, formatDate)
        self.realtime: dict[int, list[int]] = {}  # reqId -> [conId, next bucket start]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.server.refuse > 0:
            self.server.refuse -= 1
            transport.close()
            return
        self.server.sessions.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.server.sessions:
            self.server.sessions.remove(self)

    def data_received(self, data: bytes) -> None:
        for fields in self.reader.feed(data):
            self.server.handle(self, fields)

    def send(self, fields: list[Any]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(wire.frame(fields))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class FakeTWS:
    """The fake server; run it with `with FakeTWS(...) as tws:` and connect to `tws.port`."""

    def __init__(self, instruments: list[FakeInstrument], paths: dict[int, PricePath], *, start: int,
                 accounts: tuple[str, ...] = ("DU1234567",), cash: float = 100_000.0) -> None:
        self.instruments = {i.con_id: i for i in instruments}
        self.paths = paths
        self.accounts = accounts
        self.book = Book(Account(accounts[0], cash), self.instruments)
        self.book.now = start
        for con_id, path in paths.items():
            past = path.upto(start)
            if past:
                self.book.last[con_id] = past[-1][1]
        self.sessions: list[_Session] = []
        self.received: Counter[int] = Counter()
        self.refuse = 0
        self._drop_after_place = False
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fake-tws", daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Self:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            self.loop.create_server(lambda: _Session(self), "127.0.0.1", 0), self.loop
        ).result(5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        def stop() -> None:
            assert self._server is not None
            self._server.close()
            for s in list(self.sessions):
                s.close()

        self.call(stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` on the server's loop and return its result."""

        async def main() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(main(), self.loop).result(10)

    # ------------------------------------------------------------------ controls

    @property
    def now(self) -> int:
        return self.book.now

    def step(self, n: int = 1) -> int:
        """Move the clock to each of the next `n` tick times; return the new time."""
        return self.call(self._step, n)

    def next_tick_time(self) -> int | None:
        times = [t for p in self.paths.values() for t in p.times if t > self.book.now]
        return min(times) if times else None

    def drop_clients(self) -> None:
        self.call(lambda: [s.close() for s in list(self.sessions)])

    def refuse_connections(self, n: int) -> None:
        self.refuse = n

    def reject_next(self, reason: str) -> None:
        self.book.reject_next = reason

    def drop_after_next_place(self) -> None:
        """Process the next placeOrder, then close its connection before answering."""
        self._drop_after_place = True

    def orders(self, order_ref: str | None = None) -> list[FakeOrder]:
        return self.call(lambda: [o for o in self.book.orders if order_ref is None or o.order_ref == order_ref])

    def position(self, con_id: int) -> float:
        return self.call(lambda: self.book.account.positions.get(con_id, [0.0, 0.0])[0])

    def values(self) -> dict[str, float]:
        return self.call(self.book.values)

    def bars(self, con_id: int, bar_seconds: int, start: int, end: int) -> list[tuple]:
        """The bars the fake serves for [start, end) (for comparisons in tests)."""
        return aggregate(self.paths[con_id].between(start, end), bar_seconds)

    # ------------------------------------------------------------------ requests

    def handle(self, s: _Session, f: list[str]) -> None:
        if not s.handshaken:
            s.handshaken = True
            s.send([wire.SERVER_VERSION, wire.ib_time(self.book.now)])
            return
        msg = int(f[0])
        self.received[msg] += 1
        handler = self._handlers().get(msg)
        if handler is not None:
            handler(s, f)

    def _handlers(self) -> dict[int, Callable[[_Session, list[str]], None]]:
        return {71: self._start_api, 61: self._positions, 5: self._open_orders, 16: self._open_orders,
                99: lambda s, f: s.send([102]), 6: self._account_updates, 76: self._account_multi,
                62: self._account_summary, 7: self._executions, 9: self._contract_details, 3: self._place,
                4: self._cancel, 20: self._history, 25: lambda s, f: s.history.pop(int(f[2]), None),
                50: self._realtime, 51: lambda s, f: s.realtime.pop(int(f[2]), None),
                49: lambda s, f: s.send([49, 1, self.book.now]), 8: lambda s, f: s.send([9, 1, self._next_id(s)]),
                17: lambda s, f: s.send([15, 1, ",".join(self.accounts)])}

    def _start_api(self, s: _Session, f: list[str]) -> None:
        client_id = int(f[2])
        if any(o is not s and o.client_id == client_id for o in self.sessions):
            s.send(wire.error(-1, 326, "Unable to connect as the client id is already in use. "
                                       "Retry with a unique client id."))
            s.close()
            return
        s.client_id = client_id
        s.send([15, 1, ",".join(self.accounts)])
        s.send([9, 1, self._next_id(s)])
        s.send(wire.error(-1, 2104, "Market data farm connection is OK:usfarm"))

    def _next_id(self, s: _Session) -> int:
        return max([o.order_id for o in self.book.orders if o.client_id == s.client_id] + [0]) + 1

    def _positions(self, s: _Session, f: list[str]) -> None:
        s.positions_sub = True
        for con_id, (qty, avg) in self.book.account.positions.items():
            s.send(wire.position(self.book.account.name, self.instruments[con_id], qty, avg))
        s.send([62, 1])

    def _open_orders(self, s: _Session, f: list[str]) -> None:
        for o in self.book.orders:
            if o.open and o.transmit and (f[0] == "16" or o.client_id == s.client_id):
                s.send(wire.open_order(o, self.instruments[o.con_id]))
                s.send(wire.order_status(o))
        s.send([53, 1])

    def _account_updates(self, s: _Session, f: list[str]) -> None:
        s.account_sub = f[2] == "1"
        if s.account_sub:
            self._send_account(s)
            s.send([8, 1, "12:00"])
            s.send([54, 1, self.book.account.name])

    def _send_account(self, s: _Session) -> None:
        acct = self.book.account.name
        for tag, value in self.book.values().items():
            s.send([6, 2, tag, f"{value:.2f}", "USD", acct])
        for con_id, (qty, avg) in self.book.account.positions.items():
            s.send(wire.portfolio(acct, self.instruments[con_id], qty, self.book.last.get(con_id, 0.0), avg))

    def _account_multi(self, s: _Session, f: list[str]) -> None:
        req = int(f[2])
        for tag, value in self.book.values().items():
            s.send([73, 1, req, self.book.account.name, "", tag, f"{value:.2f}", "USD"])
        s.send([74, 1, req])

    def _account_summary(self, s: _Session, f: list[str]) -> None:
        req, tags = int(f[2]), set(f[4].split(","))
        for tag, value in self.book.values().items():
            if tag in tags:
                s.send([63, 1, req, self.book.account.name, tag, f"{value:.2f}", "USD"])
        s.send([64, 1, req])

    def _executions(self, s: _Session, f: list[str]) -> None:
        req, client = int(f[2]), int(f[3] or 0)
        for e in self.book.executions:
            if client in (0, e.order.client_id):
                inst = self.instruments[e.order.con_id]
                s.send(wire.exec_details(req, e, inst))
                s.send(wire.commission_report(e, inst.currency))
        s.send([55, 1, req])

    def _contract_details(self, s: _Session, f: list[str]) -> None:
        req, want = int(f[2]), _contract(f[3:15])
        if want["secType"] == "CONTFUT":
            futures = sorted((i for i in self.instruments.values() if i.sec_type == "FUT"
                              and i.matches({**want, "secType": "FUT"})), key=lambda i: i.expiry)
            found = [FakeInstrument(**{**futures[0].__dict__, "sec_type": "CONTFUT"})] if futures else []
        else:
            found = [i for i in self.instruments.values() if i.matches(want)]
        if not found:
            s.send(wire.error(req, 200, "No security definition has been found for the request"))
            return
        for inst in found:
            s.send(wire.contract_details(req, inst))
        s.send([52, 1, req])

    def _place(self, s: _Session, f: list[str]) -> None:
        order_id, c = int(f[1]), _contract(f[2:14])
        assert s.client_id is not None
        existing = self.book.find(s.client_id, order_id)
        qty, lmt, aux = num(f[17]), (num(f[19]) if f[19] else None), (num(f[20]) if f[20] else None)
        if existing is not None:
            if not existing.open:
                s.send(wire.error(order_id, 10147, f"OrderId {order_id} that needs to be modified is not open"))
                return
            self._publish(self.book.modify(existing, qty, lmt, aux))
            return
        order = FakeOrder(
            order_id=order_id, client_id=s.client_id, perm_id=self.book.new_perm_id(), con_id=int(c["conId"] or 0),
            action=f[16], quantity=qty, order_type=f[18], lmt=lmt, aux=aux, tif=f[21], oca_group=f[22],
            oca_type=int(f[47] or 0), order_ref=f[26], transmit=f[27] == "1", parent_id=int(f[28] or 0),
            account=f[23] or self.book.account.name,
        )
        if order.con_id not in self.instruments or order.order_type not in ("MKT", "LMT", "STP", "STP LMT"):
            s.send(wire.error(order_id, 201, f"Order rejected - reason:fake TWS cannot trade {order.order_type} "
                                             f"on conId {order.con_id}"))
            return
        events = self.book.place(order)
        if self._drop_after_place:
            self._drop_after_place = False
            s.close()
            events = [e for e in events if e[0] == "exec"]  # only the account side effects go out
        self._publish(events)

    def _cancel(self, s: _Session, f: list[str]) -> None:
        assert s.client_id is not None
        order = self.book.find(s.client_id, int(f[2]))
        if order is None:
            s.send(wire.error(int(f[2]), 10147, f"OrderId {f[2]} that needs to be cancelled is not found."))
            return
        self._publish(self.book.cancel(order))

    def _history(self, s: _Session, f: list[str]) -> None:
        req, c = int(f[1]), _contract(f[2:14])
        con_id = int(c["conId"] or 0)
        bar_seconds = bar_size_seconds(f[16])
        n, unit = f[17].split()
        start = self.book.now - int(n) * _UNITS[unit]
        fmt, keep = int(f[20] or 1), f[21] == "1"
        path = self.paths.get(con_id)
        if path is None:
            s.send(wire.error(req, 162, "Historical Market Data Service error message:No data"))
            return
        ticks = [t for t in path.upto(self.book.now) if t[0] >= start - start % bar_seconds]
        bars = aggregate(ticks, bar_seconds)
        s.send(wire.historical_data(req, bars, bar_seconds, fmt, start, self.book.now))
        if keep:
            s.history[req] = (con_id, bar_seconds, fmt)

    def _realtime(self, s: _Session, f: list[str]) -> None:
        req, c = int(f[2]), _contract(f[3:15])
        s.realtime[req] = [int(c["conId"] or 0), 5 * math.ceil(self.book.now / 5)]

    # ------------------------------------------------------------------ publishing

    def _session(self, client_id: int) -> _Session | None:
        return next((s for s in self.sessions if s.client_id == client_id), None)

    def _publish(self, events: list[tuple]) -> None:
        touched = False
        for event in events:
            kind, obj = event[0], event[1]
            s = self._session(obj.client_id if kind != "exec" else obj.order.client_id)
            if kind == "order" and s is not None:
                s.send(wire.open_order(obj, self.instruments[obj.con_id]))
                s.send(wire.order_status(obj))
            elif kind == "error" and s is not None:
                s.send(wire.error(obj.order_id, event[2], event[3]))
            elif kind == "exec":
                touched = True
                inst = self.instruments[obj.order.con_id]
                if s is not None:
                    s.send(wire.exec_details(-1, obj, inst))
                    s.send(wire.commission_report(obj, inst.currency))
                self._send_position(inst)
        if touched:
            for s in self.sessions:
                if s.account_sub:
                    self._send_account(s)

    def _send_position(self, inst: FakeInstrument) -> None:
        qty, avg = self.book.account.positions.get(inst.con_id, [0.0, 0.0])
        for s in self.sessions:
            if s.positions_sub:
                s.send(wire.position(self.book.account.name, inst, qty, avg))

    def _step(self, n: int) -> int:
        for _ in range(n):
            t = self.next_tick_time()
            if t is None:
                break
            self.book.now = t
            for con_id, path in self.paths.items():
                for tick_time, price, _v in path.between(t, t + 1):
                    self._publish(self.book.tick(con_id, price))
                    self._bar_updates(con_id, tick_time)
            self._realtime_bars()
            if self.book.account.positions:  # marked to the new prices, as TWS streams them
                for s in self.sessions:
                    if s.account_sub:
                        self._send_account(s)
        return self.book.now

    def _bar_updates(self, con_id: int, t: int) -> None:
        for s in self.sessions:
            for req, (cid, secs, fmt) in s.history.items():
                if cid == con_id:
                    start = t - t % secs
                    [bar] = aggregate(self.paths[con_id].between(start, t + 1), secs)
                    s.send(wire.historical_update(req, bar, secs, fmt))

    def _realtime_bars(self) -> None:
        now = self.book.now
        for s in self.sessions:
            for req, sub in s.realtime.items():
                con_id, nxt = sub
                while nxt + 5 <= now:
                    ticks = self.paths[con_id].between(nxt, nxt + 5)
                    if ticks:
                        [bar] = aggregate(ticks, 5)
                    else:
                        last = self.paths[con_id].upto(nxt - 1)
                        p = last[-1][1] if last else 0.0
                        bar = (nxt, p, p, p, p, 0.0)
                    s.send(wire.realtime_bar(req, bar))
                    nxt += 5
                sub[1] = nxt
