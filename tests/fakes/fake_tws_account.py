"""What happens to an IB account outside the bot, on the fake TWS: manual orders, positions set by hand.

A position is set as TWS would show it (avgCost per contract: times the multiplier for a future,
commissions folded in when the test says so) and pushed to every client subscribed to positions
and account updates. A manual order is one typed in TWS (client id 0, no orderRef unless given);
clients see it in the answer to reqAllOpenOrders, so place it before the adapter connects.
"""

from __future__ import annotations

from tests.fakes import fake_tws_wire as wire
from tests.fakes.fake_tws import FakeTWS
from tests.fakes.fake_tws_market import FakeInstrument, FakeOrder


def set_position(tws: FakeTWS, inst: FakeInstrument, quantity: float, avg_cost: float) -> None:
    """Make the account hold `quantity` of `inst` at `avg_cost` (per contract), and tell the clients."""

    def run() -> None:
        book = tws.book
        if quantity:
            book.account.positions[inst.con_id] = [quantity, avg_cost]
        else:
            book.account.positions.pop(inst.con_id, None)
        for s in tws.sessions:
            if s.positions_sub:
                s.send(wire.position(book.account.name, inst, quantity, avg_cost))
            if s.account_sub:
                s.send(wire.portfolio(book.account.name, inst, quantity, book.last.get(inst.con_id, 0.0), avg_cost))

    tws.call(run)


def manual_order(tws: FakeTWS, inst: FakeInstrument, action: str, quantity: float, order_type: str, *,
                 lmt: float | None = None, aux: float | None = None, order_ref: str = "",
                 client_id: int = 0) -> FakeOrder:
    """Put a working order at the fake as if typed in TWS (or placed by another program)."""

    def run() -> FakeOrder:
        book = tws.book
        order_id = max([o.order_id for o in book.orders if o.client_id == client_id] + [0]) + 1
        order = FakeOrder(order_id=order_id, client_id=client_id, perm_id=book.new_perm_id(), con_id=inst.con_id,
                          action=action, quantity=quantity, order_type=order_type, lmt=lmt, aux=aux, tif="GTC",
                          oca_group="", oca_type=0, order_ref=order_ref, transmit=True, parent_id=0,
                          account=book.account.name, status="Submitted")
        book.orders.append(order)
        return order

    return tws.call(run)


def cancel_in_tws(tws: FakeTWS, order: FakeOrder) -> None:
    """Cancel a working order as a user in TWS would; its client is told as for its own cancel."""
    tws.call(lambda: tws._publish(tws.book.cancel(order, reason="cancelled in TWS")))
