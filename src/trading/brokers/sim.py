"""SimBroker: backtrader's BackBroker with the fill model of docs/backtesting.md.

Departures from stock BackBroker: bracket children live from the entry bar, limit orders
(and triggered stop-limits) fill without slippage, orders the open reaches fill before stops
and stops before limits on one bar, the rest of a partly filled triggered stop fills as a
market order at the next opens, the cash check happens at the fill (not at the signal
close), reduce-only orders, cancel/amend of orders submitted on the current bar, and the
FillModel (docs/fill-model.md): size-dependent slippage and market impact, a per-bar volume
cap, order latency, partial fills, venue rejections and per-share commission, for every
order type but Close.
"""

from __future__ import annotations

import backtrader as bt

from trading.brokers.fill_model import MS_PER_DAY, REJECT_REASON, FillModel, path_price
from trading.bt_orders import FillDetails, attach_fill_details

_STOPS = (bt.Order.Stop, bt.Order.StopTrail)
_STOP_LIMITS = (bt.Order.StopLimit, bt.Order.StopTrailLimit)
_TRAILING = (bt.Order.StopTrail, bt.Order.StopTrailLimit)
_MODELLED = (bt.Order.Market, bt.Order.Limit, *_STOPS, *_STOP_LIMITS)
# Where an order goes in one bar's pass (docs/fill-model.md, "Order types"): what the open
# reaches fills first, at the open; then stops, then limits (the worst case for a position
# whose stop and target are both inside the bar).
AT_OPEN, STOP, LIMIT = 0, 1, 2


class SimBroker(bt.brokers.BackBroker):
    """BackBroker whose bracket stop/target protect the position on the bar the entry fills.

    Stock backtrader activates the children of a filled bracket parent only on the next
    bar, leaving the entry bar unprotected: a bar that opens at the entry and then trades
    through the stop would not stop out. Here the children are activated at once; they sit
    behind the parent in the pending queue, so the same pass over the queue tries them
    against the rest of that bar.

    Each bar's pass takes the orders in time order within the bar (`_pass_rank`): those the
    open already reaches, then stops, then limits; queue order within each group.

    With a `fill_model` (see `set_fill_model`) market, limit, stop, stop-limit and trailing
    orders are filled by `_try_exec_modelled`; Close orders keep backtrader's own rules.
    """

    fill_model: FillModel | None = None
    #: The account currency (``broker.currency``): cash and commissions of symbols that do
    #: not name their quote currency (``BTCUSDT``); None: unknown.
    currency: str | None = None

    def notify(self, order: bt.Order) -> None:
        """Queue the notification with the fee currency of its fills (no bid/ask: bars have none)."""
        super().notify(order)
        if order.executed.size:
            symbol = getattr(order.data, "_name", "") or ""
            attach_fill_details(self.notifs[-1], FillDetails(fee_currency=fee_currency(symbol, self.currency)))

    def set_fill_model(self, model: FillModel) -> None:
        """Fill market, stop and limit orders with `model` from now on."""
        self.fill_model = model
        self._arrivals: dict[int, float] = {}  # order ref -> arrival time (day number)
        self._next_qty: float | None = None
        self.p.filler = self._fill_size
        info = model.comminfo()
        if info is not None:
            self.addcommissioninfo(info)

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
            ranked = sorted(pending, key=self._pass_rank)  # stable: queue order within a rank
            pending.clear()
            pending.extend(ranked)
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

    def _pass_rank(self, order: bt.Order) -> int:
        """Rank an order in this bar's pass: AT_OPEN if the open reaches it, else STOP or LIMIT.

        Bar data cannot order two prices touched inside a bar, so a stop goes before a limit
        (the worst case for a position's stop and target). But a price the bar opens at comes
        first: a target the bar gaps over fills at the open even if the bar later trades
        through the stop. Inactive bracket children are ranked too, as they may be activated
        during the pass.
        """
        kind = order.exectype
        if kind == bt.Order.Market or (kind in _STOPS and order.triggered):
            return AT_OPEN  # a stop that triggered on an earlier bar is a market order now
        data = order.data
        popen = data.open[0]
        arrival = getattr(self, "_arrivals", {}).get(order.ref)
        in_flight = arrival is not None and arrival > data.datetime[0]  # reaches the market later
        buy = order.isbuy()
        limit_like = kind == bt.Order.Limit or (kind in _STOP_LIMITS and order.triggered)
        limit = order.created.pricelimit if kind in _STOP_LIMITS else order.created.price
        if not in_flight:
            limit_ok = (popen <= limit) if buy else (popen >= limit)
            stop_hit = (popen >= order.created.price) if buy else (popen <= order.created.price)
            if (limit_like and limit_ok) or (kind in _STOPS and stop_hit) or (
                kind in _STOP_LIMITS and stop_hit and limit_ok
            ):
                return AT_OPEN
        return LIMIT if limit_like else STOP

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
        fm = self.fill_model
        while self.submitted:
            order = self.submitted.popleft()
            if self._take_children(order) is None:  # orphan child, rejected
                continue
            if fm is None:
                self.submit_accept(order)
                continue
            # Only orders that add exposure can be refused: a refused stop would leave the
            # position unprotected, and the strategy has no rule to send it again.
            if not (order.info.get("reduce_only") or order.parent is not None) and fm.rejects():
                order.reject(self)
                order.addinfo(reject_reason=REJECT_REASON)
                self.notify(order)
                self._ococheck(order)
                self._bracketize(order, cancel=True)
                continue
            self.submit_accept(order)
            if fm.latency_simulation:
                # Sent at the close of the signal bar = the open of this bar.
                self._arrivals[order.ref] = order.data.datetime[0] + fm.latency_ms() / MS_PER_DAY

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
        if self.fill_model is None or order.exectype not in _MODELLED:
            super()._try_exec(order)
            return
        self._try_exec_modelled(order)

    def _try_exec_modelled(self, order: bt.Order) -> None:
        """Fill an order of any type but Close by the fill model's rules (docs/fill-model.md)."""
        data = order.data
        popen, phigh, plow, pclose = data.open[0], data.high[0], data.low[0], data.close[0]
        if order.ref in self._arrivals:
            arrival = self._arrival_price(order, popen, phigh, plow, pclose)
            if arrival is None:
                return  # still on its way to the market
            popen = arrival
        kind = order.exectype
        if kind == bt.Order.Market:
            if data.datetime[0] <= order.created.dt:
                return  # never on the bar it was created
            self._fill(order, popen, plow, phigh, slip=True)
        elif kind in _STOPS:
            stop = order.created.price
            if order.triggered:
                # Triggered on an earlier bar and only partly filled (volume cap, partial fill):
                # a triggered stop is a market order, so the rest fills at this bar's open.
                self._fill(order, popen, plow, phigh, slip=True)
            elif (popen >= stop) if order.isbuy() else (popen <= stop):
                order.triggered = True
                self._fill(order, popen, plow, phigh, slip=True)  # gapped through: the open
            elif (phigh >= stop) if order.isbuy() else (plow <= stop):
                order.triggered = True
                self._fill(order, stop, plow, phigh, slip=True)
        elif kind == bt.Order.Limit:
            self._fill_limit(order, order.created.price, popen, phigh, plow)
        elif order.triggered:
            self._fill_limit(order, order.created.pricelimit, popen, phigh, plow)
        else:
            self._try_stop_limit(order, popen, phigh, plow, pclose)
        if kind in _TRAILING and order.alive() and not order.triggered:
            order.trailadjust(pclose)  # after the bar's test: the trail follows the closes

    def _fill_limit(self, order: bt.Order, limit: float, popen: float, phigh: float, plow: float) -> None:
        """Fill at the open if it is at or better than `limit`, else at `limit` if the bar reaches it."""
        buy = order.isbuy()
        if (popen <= limit) if buy else (popen >= limit):
            self._fill(order, popen, plow, phigh, slip=False)
        elif (plow <= limit) if buy else (phigh >= limit):
            self._fill(order, limit, plow, phigh, slip=False)

    def _try_stop_limit(self, order: bt.Order, popen: float, phigh: float, plow: float, pclose: float) -> None:
        """Trigger a stop-limit at its stop, then fill it as a limit; never slipped.

        backtrader's rules for the trigger bar, except that the fill is not slipped (stock
        backtrader slips the fill at the stop, which can put a buy above its limit) and is
        symmetric for buys and sells: a limit beyond the stop fills at the stop; a limit
        short of the stop fills only on a bar that turns back past it (a buy on a bar that
        closes down at or below the limit, a sell on one that closes up at or above it).
        """
        buy = order.isbuy()
        stop, limit = order.created.price, order.created.pricelimit
        if (popen >= stop) if buy else (popen <= stop):
            order.triggered = True  # gapped through the stop: a limit from the open on
            self._fill_limit(order, limit, popen, phigh, plow)
        elif (phigh >= stop) if buy else (plow <= stop):
            order.triggered = True
            if (limit >= stop) if buy else (limit <= stop):
                self._fill(order, stop, plow, phigh, slip=False)
            elif (popen > pclose and limit >= pclose) if buy else (popen < pclose and limit <= pclose):
                self._fill(order, limit, plow, phigh, slip=False)

    def _arrival_price(self, order: bt.Order, popen: float, phigh: float, plow: float, pclose: float) -> float | None:
        """Return the price when the order reaches the market on this bar, None if it arrives later.

        Within the bar the price is taken to move in a straight line from the open to the
        close; the bar lasts as long as the spacing from the previous bar.
        """
        data = order.data
        now = data.datetime[0]
        arrival = self._arrivals[order.ref]
        span = now - data.datetime[-1] if len(data) > 1 else 0.0
        if span > 0 and arrival >= now + span:
            return None
        del self._arrivals[order.ref]
        frac = (arrival - now) / span if span > 0 else 0.0
        return path_price(popen, phigh, plow, pclose, frac)

    def _fill(self, order: bt.Order, price: float, low: float, high: float, *, slip: bool) -> None:
        """Execute what the bar allows of the order at `price`, slipped (not for limits) inside the bar."""
        fm = self.fill_model
        assert fm is not None
        volume = order.data.volume[0]
        qty = fm.fill_quantity(abs(order.executed.remsize), volume)
        if not qty > 0:
            return
        if slip:
            price = fm.slipped(price, order.isbuy(), qty, volume, low, high)
        self._next_qty = qty
        try:
            self._execute(order, ago=0, price=price)
        finally:
            self._next_qty = None

    def _fill_size(self, order: bt.Order, price: float, ago: int) -> float:
        """backtrader's `filler` hook: the unsigned quantity `_fill` decided for this execution."""
        return abs(order.executed.remsize) if self._next_qty is None else self._next_qty

    def _fit_reduce_only(self, order: bt.Order) -> bool:
        """Shrink a reduce-only order to the open position; cancel it if nothing is left to reduce.

        Exchanges offer the same flag: a closing order can never open or flip a position,
        whatever else filled before it on the same bar.
        """
        pos = self.positions[order.data].size
        # Signed (> 0 buys); measured from the order's own size, so an order shrunk while an
        # entry was partly filled covers the position again once more of the entry fills.
        want = order.size - order.executed.size
        if pos == 0 or (want > 0) == (pos > 0):
            order.cancel()
            self.notify(order)
            self._ococheck(order)
            self._bracketize(order, cancel=True)
            return False
        order.executed.remsize = -pos if abs(want) > abs(pos) else want
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

    def modify(self, order: bt.Order, *, price: float | None = None, size: float | None = None) -> bool:
        """Amend a pending order in place: its trigger (stop) or limit `price`, its `size`, or both.

        This is an exchange "amend": the order keeps its ref, its OCO/bracket links and its
        place in the queue; what has executed stays executed. `size` is the new unsigned
        quantity of the whole order. Return False, changing nothing, when the order is no
        longer pending, `size` is not above what has executed already, or `price` would move
        a stop that has triggered already (the rest of it is a market order).
        """
        if not order.alive() or (order not in self.pending and order not in self.submitted):
            return False
        if size is not None and abs(size) <= abs(order.executed.size):
            return False
        if price is not None and order.exectype in _STOPS and order.triggered:
            return False  # a triggered stop is a market order: it has no trigger left to move
        if price is not None:
            order.created.price = price
            order.price = price
        if size is not None:
            signed = abs(size) if order.isbuy() else -abs(size)
            order.size = order.created.size = signed
            order.executed.remsize = signed - order.executed.size
        return True


def fee_currency(symbol: str, account_currency: str | None) -> str | None:
    """The currency the simulated broker charges a fill's commission in.

    The commission is a share of the notional, in price units: the quote currency of a
    symbol that names it (``BTC/USDT``, ``BTC/USDT:USDT``), else the account currency
    (``broker.currency``), else None (unknown).
    """
    if "/" in symbol:
        quote = symbol.split("/", 1)[1].split(":", 1)[0].strip()
        if quote:
            return quote
    return account_currency or None


def configure_broker(
    broker: SimBroker,
    *,
    cash: float,
    commission_rate: float,
    slippage_model: str,
    base_slippage: float,
    fill_model: FillModel | None = None,
    currency: str | None = None,
) -> None:
    """Apply cash, commission and the fill model the way docs/backtesting.md states.

    Without `fill_model`, a plain one is built from the slippage and commission arguments.
    `currency` is the account currency (see `fee_currency`).
    """
    broker.currency = currency
    broker.setcash(cash)
    broker.setcommission(commission=commission_rate)
    if base_slippage > 0:
        # For the order types the fill model leaves to backtrader (stop-limit, trailing, close).
        # slip_open: fills at the open slip too; slip_match without slip_out: a slipped price
        # is clipped to the bar's range.
        kwargs = {"slip_open": True, "slip_limit": False, "slip_match": True, "slip_out": False}
        if slippage_model == "fixed":
            broker.set_slippage_fixed(base_slippage, **kwargs)
        else:
            broker.set_slippage_perc(base_slippage, **kwargs)
    if fill_model is None:
        fill_model = FillModel(
            slippage_model=slippage_model, base_slippage=base_slippage, commission_rate=commission_rate
        )
    broker.set_fill_model(fill_model)
