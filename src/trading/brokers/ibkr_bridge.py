"""OrderManagerBridge: an OrderManager's orders go to IB, and IB's facts come back into it."""

from __future__ import annotations

import queue

from trading.brokers.ibkr import IBKRAdapter, PlaceResult
from trading.brokers.ibkr_orders import (
    OrderTicket,
    VenueFact,
    apply_fact,
    bracket_tickets,
    oco_tickets,
)
from trading.order_links import CancelRequest, ModifyRequest, Request
from trading.order_manager import OrderManager
from trading.orders import Order


class OrderManagerBridge:
    """Carry an OrderManager's orders to IB, and IB's facts back into it on the caller's thread.

    Facts arrive on the IB loop thread and wait in a queue until `pump` applies them, so the
    OrderManager is only ever touched by the thread that owns it. Its cancel and modify
    requests go to IB at once.
    """

    def __init__(self, adapter: IBKRAdapter, manager: OrderManager) -> None:
        self.adapter, self.manager = adapter, manager
        self._facts: queue.SimpleQueue[VenueFact] = queue.SimpleQueue()
        adapter.add_listener(self._facts.put)
        manager.add_request_callback(self._carry_out)

    def submit(self, order: Order) -> PlaceResult:
        self.manager.submit(order)
        return self.adapter.place([OrderTicket.from_order(order)])[0]

    def submit_bracket(self, entry: Order, stop_loss: Order | None, take_profit: Order | None) -> list[PlaceResult]:
        self.manager.submit_bracket(entry, stop_loss, take_profit)
        return self.adapter.place(bracket_tickets(entry, stop_loss, take_profit))

    def submit_oco(self, first: Order, second: Order) -> list[PlaceResult]:
        self.manager.submit_oco(first, second)
        return self.adapter.place(oco_tickets(first, second))

    def pump(self, timeout: float = 0.0) -> int:
        """Apply the facts received so far (waiting up to `timeout` s for the first); return how many."""
        n = 0
        block = timeout > 0
        while True:
            try:
                fact = self._facts.get(block=block, timeout=timeout if block else None)
            except queue.Empty:
                return n
            block = False
            apply_fact(self.manager, fact)
            n += 1

    def _carry_out(self, request: Request) -> None:
        if isinstance(request, CancelRequest):
            self.adapter.cancel(request.client_order_id)
        elif isinstance(request, ModifyRequest):
            self.adapter.modify(
                request.client_order_id, quantity=request.quantity, limit_price=request.price,
                stop_price=request.stop_price,
            )
