"""SimBroker: backtrader's BackBroker with the fill model of docs/backtesting.md.

Departures from stock BackBroker: bracket children live from the entry bar, limit orders
fill without slippage, the cash check happens at the fill (not at the signal close),
reduce-only orders, and cancel/amend of orders submitted on the current bar.
"""

from __future__ import annotations

import backtrader as bt


class SimBroker(bt.brokers.BackBroker):
    """BackBroker whose bracket stop/target protect the position on the bar the entry fills.

    Stock backtrader activates the children of a filled bracket parent only on the next
    bar, leaving the entry bar unprotected: a bar that opens at the entry and then trades
    through the stop would not stop out. Here the children are activated at once; they sit
    behind the parent in the pending queue, so the same pass over the queue tries them
    against the rest of that bar (stop before target, as they were submitted).
    """

    def _bracketize(self, order: bt.Order, cancel: bool = False) -> None:
        pref = getattr(order.parent, "ref", order.ref)
        if cancel or order.ref != pref:
            super()._bracketize(order, cancel=cancel)
            return
        children = self._pchildren[pref]
        children.popleft()  # the parent itself
        for child in children:
            child.activate()

    def next(self) -> None:
        """Process one bar; skip the interest and futures passes when nothing needs them."""
        if self._userhist or not self._plain_instruments():
            super().next()
            return
        while self._toactivate:
            self._toactivate.popleft().activate()
        if self.p.checksubmit:
            self.check_submitted()
        pending = self.pending
        if pending:
            # One pass over the orders queued before this bar; orders that stay alive go to
            # the back. The marker (not a count) keeps the pass right when OCO cancels
            # remove orders from the queue mid-pass.
            pending.append(None)
            while (order := pending.popleft()) is not None:
                if order.expire():
                    self.notify(order)
                    self._ococheck(order)
                    self._bracketize(order, cancel=True)
                elif not order.active():
                    pending.append(order)
                else:
                    self._try_exec(order)
                    if order.alive():
                        pending.append(order)
                    elif order.status == bt.Order.Completed:
                        self._bracketize(order)
        self._get_value()

    def _plain_instruments(self) -> bool:
        """True when every instrument is stock-like and charges no interest (no per-bar cash moves)."""
        cached = getattr(self, "_plain_cache", None)
        if cached is None or cached[0] != len(self.comminfo):
            plain = all(ci.stocklike and not ci.p.interest for ci in self.comminfo.values())
            self._plain_cache = cached = (len(self.comminfo), plain)
        return cached[1]

    def check_submitted(self) -> None:
        """Accept the orders submitted since the last bar; their cash is checked at the fill.

        Stock backtrader pseudo-executes each new order at ``order.created.price`` (the
        signal close for a market order) and rejects it if the cash would go negative. The
        documented rule is the cash *at the fill*: a market entry fills at the next open,
        so a gap can make an order affordable that the close refused, or the reverse.
        `_execute` already refuses the opening part of a real fill that the cash cannot pay
        (status Margin, OCO siblings and bracket children cancelled); that is the check.
        """
        while self.submitted:
            order = self.submitted.popleft()
            if self._take_children(order) is not None:  # None: orphan child, rejected
                self.submit_accept(order)

    def _try_exec_limit(
        self, order: bt.Order, popen: float, phigh: float, plow: float, plimit: float
    ) -> None:
        """Fill a limit at its price, or at the open when the bar opens beyond it; never slip.

        Stock backtrader slips a gap fill (open plus slippage, capped at the limit) when
        ``slip_open`` is set, which market orders and stops need.
        """
        if order.isbuy():
            if popen <= plimit:
                self._execute(order, ago=0, price=popen)
            elif plow <= plimit:
                self._execute(order, ago=0, price=plimit)
        elif popen >= plimit:
            self._execute(order, ago=0, price=popen)
        elif phigh >= plimit:
            self._execute(order, ago=0, price=plimit)

    def _try_exec(self, order: bt.Order) -> None:
        if order.info.get("reduce_only") and not self._fit_reduce_only(order):
            return
        super()._try_exec(order)

    def _fit_reduce_only(self, order: bt.Order) -> bool:
        """Shrink a reduce-only order to the open position; cancel it if nothing is left to reduce.

        Exchanges offer the same flag: a closing order can never open or flip a position,
        whatever else filled before it on the same bar.
        """
        pos = self.positions[order.data].size
        want = order.executed.remsize  # signed: > 0 buys, < 0 sells
        if pos == 0 or (want > 0) == (pos > 0):
            order.cancel()
            self.notify(order)
            self._ococheck(order)
            self._bracketize(order, cancel=True)
            return False
        if abs(want) > abs(pos):
            order.executed.remsize = -pos
        return True

    def cancel(self, order: bt.Order, bracket: bool = False) -> bool:
        """Cancel a pending order, including one submitted on this bar and not yet accepted."""
        if order in self.submitted and order.alive():
            self.submitted.remove(order)
            order.cancel()
            self.notify(order)
            self._ococheck(order)
            if not bracket:
                self._bracketize(order, cancel=True)
            return True
        return super().cancel(order, bracket=bracket)

    def _ococheck(self, order: bt.Order) -> None:
        """Cancel the other members of the order's OCO group, pending or submitted on this bar.

        Stock backtrader looks only in the pending queue, so cancelling an OCO member in the
        bar it was submitted (see `cancel`) would leave its siblings to be accepted and fill.
        """
        group = self._ocol.pop(self._ocos.get(self._ocos[order.ref]), None)
        if not group:
            return
        for queue in (self.pending, self.submitted):
            for other in [o for o in queue if o is not None and o.ref in group and o is not order]:
                queue.remove(other)
                other.cancel()
                self.notify(other)

    def modify(self, order: bt.Order, *, price: float) -> bool:
        """Move the trigger (stop) or limit price of a pending order in place.

        This is an exchange "amend": the order keeps its ref, its OCO/bracket links and its
        place in the queue. Return False when the order is no longer pending.
        """
        if not order.alive() or (order not in self.pending and order not in self.submitted):
            return False
        order.created.price = price
        order.price = price
        return True


def configure_broker(
    broker: bt.brokers.BackBroker,
    *,
    cash: float,
    commission_rate: float,
    slippage_model: str,
    base_slippage: float,
) -> None:
    """Apply cash, percentage commission and slippage the way docs/backtesting.md states."""
    broker.setcash(cash)
    broker.setcommission(commission=commission_rate)
    if base_slippage > 0:
        # slip_open: market fills at the open and stops gapped through slip too.
        # slip_match without slip_out: a slipped price is clipped to the bar's range.
        # Limits never slip (SimBroker._try_exec_limit).
        kwargs = dict(slip_open=True, slip_limit=False, slip_match=True, slip_out=False)
        if slippage_model == "fixed":
            broker.set_slippage_fixed(base_slippage, **kwargs)
        else:
            broker.set_slippage_perc(base_slippage, **kwargs)
