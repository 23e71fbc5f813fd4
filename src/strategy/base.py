"""BaseStrategy: a backtrader Strategy composed of entry and exit mixins.

Per symbol and per bar (at the close of bar i):

* flat: each entry mixin is asked `should_enter`; they combine with ``any``/``all``. On a
  signal the exit mixins give the initial stop and target (anchored at bar i's close), the
  size follows from the sizing rule, and one bracket goes out: a market entry that fills at
  the next bar's open, with the stop and the target live from that same bar.
* in a position: the exit mixins see the bar and may tighten the stop, move the target, or
  ask for an exit at the next open. Changed levels replace the resting orders.

Fills arrive through `notify_order`; each closing fill produces a `TradeRecord` with the
reason of the order that closed it. The strategy never learns the mode it runs in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timezone

import backtrader as bt
import pandas as pd

from strategy.book import Book, StrategySpec
from strategy.mixins.base import ExitPlan, OpenTrade, Side, combine
from strategy.risk_gate import bar_datetime, check_entry, dec
from trading.results import TradeRecord
from trading.risk import RiskController
from trading.sizing import position_quantity

__all__ = ["BaseStrategy", "Book", "StrategySpec"]


class BaseStrategy(bt.Strategy):
    """Compose entry and exit mixins; record trades, equity and decisions."""

    params = (
        ("spec", None),
        ("progress", None),  # callable(done_bars, total_bars)
        ("progress_every", 2000),
        ("slippage", None),  # (model, amount): for the end-of-data mark-to-market exit
        ("commission_rate", 0.0),
        ("fill_model", None),  # trading.brokers.fill_model.FillModel: costs of the end-of-data exit
        ("bus", None),  # trading.bus.EventBus for the risk events (RiskDenied, Halted, ...)
    )

    def __init__(self) -> None:
        spec: StrategySpec = self.p.spec
        if spec is None:
            raise ValueError("BaseStrategy needs spec=StrategySpec")
        self.spec = spec
        self._sides = spec.sides
        self.books = [Book(d, spec) for d in self.datas]
        self._book_of = {id(b.data): b for b in self.books}
        self._clock = self.datas[0].lines.datetime
        self.trade_records: list[TradeRecord] = []
        self.decisions: list[tuple[str, int, str, str]] = []  # (symbol, bar, kind, detail)
        self.refusals: dict[str, int] = {}
        self.equity_values: list[float] = []
        self.equity_times: list[float] = []
        self.end_adjustment = 0.0
        self._progress: Callable[[int, int], None] | None = self.p.progress
        # Every entry passes the RiskController, on the bar clock, in every mode.
        self.risk = RiskController(spec.risk, clock=self._bar_now, bus=self.p.bus)
        self._watch_equity = spec.risk.max_daily_loss is not None or spec.risk.max_drawdown is not None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._can_amend = hasattr(self.broker, "modify")
        for book in self.books:
            book.total = book.data.buflen() if len(book.data.lines.close.array) else 0
            if book.total:
                book.prepare(book.total)

    def next(self) -> None:
        for book in self.books:
            i = book.clock.lencount - 1
            if i < 0:
                continue
            if i >= book.prepared:
                book.prepare(i + 1)  # streaming: recompute over the bars seen so far
            self._step(book, i)
        value = self.broker.getvalue()
        self.equity_values.append(value)
        clock = self._clock
        self.equity_times.append(clock.array[clock.idx])
        if self._watch_equity:
            self.risk.on_equity(self._bar_now(), dec(value))
        if self._progress is not None:
            n = len(self)
            if n % self.p.progress_every == 0:
                self._progress(n, self.books[0].total)

    def stop(self) -> None:
        for book in self.books:
            if book.trade is not None and book.trade.is_filled:
                self._close_at_end(book)
        if self._progress is not None and self.books:
            self._progress(len(self), self.books[0].total)

    # ----------------------------------------------------------------- per bar
    def _step(self, book: Book, i: int) -> None:
        trade = book.trade
        if trade is None:
            self._maybe_enter(book, i)
            return
        if not trade.is_filled or book.exit_ref is not None:
            return  # waiting for an entry or a market exit to fill
        if trade.side is Side.LONG:
            trade.best_price = max(trade.best_price, book.high[i])
            trade.worst_price = min(trade.worst_price, book.low[i])
        else:
            trade.best_price = min(trade.best_price, book.low[i])
            trade.worst_price = max(trade.worst_price, book.high[i])
        plan = combine([x.on_bar(trade, i) for x in book.exits], trade.side)
        if book.resize_exits and not plan.exit_now:
            # A partial target filled on this bar: re-send the exits for what is left.
            book.resize_exits = False
            trade.stop, trade.stop_reason = plan.stop, plan.stop_reason
            trade.take_profit, trade.take_profit_reason = plan.take_profit, plan.take_profit_reason
            self._cancel_protection(book, with_partial=True)
            self._place_exits(book, trade, with_partial=True)
            return
        if plan.exit_now:
            self.decisions.append((book.symbol, i, "exit", plan.exit_now))
            self._exit_at_market(book, plan.exit_now)
        elif plan.stop != trade.stop or plan.take_profit != trade.take_profit:
            self._replace_protection(book, plan)
        else:
            trade.stop_reason, trade.take_profit_reason = plan.stop_reason, plan.take_profit_reason

    def _maybe_enter(self, book: Book, i: int) -> None:
        if i < book.warmup or (book.total and i >= book.total - 1):
            return  # indicators not ready, or no next bar to fill on
        chosen: tuple[Side, str] | None = None
        for side in self._sides:
            cand = book.candidates[side]
            if cand is not None and not cand[i]:
                continue
            fired = [m.name for m in book.entries if m.should_enter(i, side, i - book.last_exit)]
            if not fired:
                continue
            if self.spec.entry_logic == "all" and len(fired) < len(book.entries):
                continue
            if chosen is not None:
                self._refuse("CONFLICTING_SIGNALS")
                return  # long and short fired together: stay out
            chosen = (side, "+".join(fired))
        if chosen is None:
            return
        side, tag = chosen
        ref = book.close[i]
        trade = OpenTrade(symbol=book.symbol, side=side, signal_index=i, ref_price=ref, entry_tag=tag)
        plan = combine([x.on_entry(trade, i) for x in book.exits], side)
        if plan.stop is not None and not (math.isfinite(plan.stop) and side.sign * (ref - plan.stop) > 0):
            plan.stop = None  # a stop on the wrong side of the price would fill at once
        if plan.take_profit is not None and not (
            math.isfinite(plan.take_profit) and side.sign * (plan.take_profit - ref) > 0
        ):
            plan.take_profit = None
        if plan.stop is None and self.spec.risk.stop_loss_required:
            self._refuse("STOP_LOSS_REQUIRED")
            return
        equity = self.broker.getvalue()
        qty, reason = position_quantity(self.spec.sizing, self.spec.risk, equity=equity, price=ref, stop=plan.stop)
        reason = reason or check_entry(
            self.risk, self.books, symbol=book.symbol, sign=side.sign, quantity=qty, price=ref, stop=plan.stop,
            equity=equity,
        )
        if reason:
            self._refuse(reason)
            return
        trade.quantity = qty
        trade.stop, trade.stop_reason = plan.stop, plan.stop_reason
        trade.take_profit, trade.take_profit_reason = plan.take_profit, plan.take_profit_reason
        if plan.partial_target is not None and math.isfinite(plan.partial_target) and (
            side.sign * (plan.partial_target - ref) > 0 and 0 < plan.partial_fraction < 1
        ):
            trade.partial_target, trade.partial_fraction = plan.partial_target, plan.partial_fraction
            trade.partial_reason = plan.partial_reason
        book.trade = trade
        self.decisions.append((book.symbol, i, "entry", f"{side.value}:{tag}"))
        self._send_bracket(book, trade)

    # ----------------------------------------------------------------- orders
    def _send_bracket(self, book: Book, trade: OpenTrade) -> None:
        """Send the market entry and its reduce-only exits (live from the fill bar on).

        The exits queue behind the entry, so on the bar the entry fills they are tried
        against the rest of that bar: stop first (worst case), then the partial target,
        then the target. Reduce-only means none can open a position if the entry fails.
        """
        entry = self.buy if trade.side is Side.LONG else self.sell
        book.entry_ordered, book.entry_filled = trade.quantity, 0.0
        book.entry_ref = entry(data=book.data, size=trade.quantity).ref
        self._place_exits(book, trade, with_partial=True)

    def _place_exits(self, book: Book, trade: OpenTrade, *, with_partial: bool) -> None:
        d, q = book.data, trade.quantity
        if trade.is_filled and book.entry_ref is not None:
            # The entry is partly filled and still working: cover what it may still add
            # (reduce-only keeps each exit to the position actually held).
            q += book.entry_ordered - book.entry_filled
        close_side = self.sell if trade.side is Side.LONG else self.buy
        stop = None
        if trade.stop is not None:
            stop = close_side(data=d, size=q, exectype=bt.Order.Stop, price=trade.stop, reduce_only=True)
        book.stop_order = stop
        if with_partial and trade.partial_target is not None and not trade.partial_done:
            part = self._partial_quantity(trade)
            if part > 0:
                book.partial_order = close_side(
                    data=d, size=part, exectype=bt.Order.Limit, price=trade.partial_target, reduce_only=True
                )
        book.tp_order = None
        if trade.take_profit is not None:
            book.tp_order = close_side(
                data=d, size=q, exectype=bt.Order.Limit, price=trade.take_profit, oco=stop, reduce_only=True
            )

    def _partial_quantity(self, trade: OpenTrade) -> float:
        qty = trade.quantity * trade.partial_fraction
        lot = getattr(self.spec.sizing, "lot_size", None)
        if lot:
            qty = math.floor(qty / lot + 1e-9) * lot
        return qty if 0 < qty < trade.quantity else 0.0

    def _cancel_protection(self, book: Book, *, with_partial: bool = False) -> None:
        # Cancelling one leg cancels its OCO sibling too; clear the references first so
        # the Canceled notifications are recognised as ours.
        legs = [book.stop_order, book.tp_order] + ([book.partial_order] if with_partial else [])
        book.stop_order = book.tp_order = None
        if with_partial:
            book.partial_order = None
        for order in legs:
            if order is not None and order.alive():
                self.broker.cancel(order)

    def _replace_protection(self, book: Book, plan: ExitPlan) -> None:
        trade = book.trade
        assert trade is not None
        same_legs = (plan.stop is None) == (book.stop_order is None) and (plan.take_profit is None) == (
            book.tp_order is None
        )
        amended = same_legs and self._can_amend
        if amended:
            # Amend in place (no new orders, links kept) when the broker supports it.
            for order, price in ((book.stop_order, plan.stop), (book.tp_order, plan.take_profit)):
                if order is not None and order.created.price != price and not self.broker.modify(order, price=price):
                    amended = False
        trade.stop, trade.stop_reason = plan.stop, plan.stop_reason
        trade.take_profit, trade.take_profit_reason = plan.take_profit, plan.take_profit_reason
        if not amended:
            # Re-send every leg so the queue keeps its order: stop, partial target, target.
            self._cancel_protection(book, with_partial=True)
            self._place_exits(book, trade, with_partial=True)

    def _exit_at_market(self, book: Book, reason: str) -> None:
        trade = book.trade
        assert trade is not None
        self._cancel_protection(book, with_partial=True)
        self._cancel_entry_rest(book)
        close_side = self.sell if trade.side is Side.LONG else self.buy
        book.exit_ref = close_side(data=book.data, size=trade.quantity, reduce_only=True).ref
        book.exit_reason = reason

    def notify_order(self, order: bt.Order) -> None:
        book = self._book_of.get(id(order.data))
        if book is None or order.status in (order.Submitted, order.Accepted):
            return
        if book.clock.lencount > book.prepared:
            # Streamed bars: fills come before next() on the new bar, which is not prepared yet.
            book.prepare(book.clock.lencount)
        ref = order.ref
        stop_ref = book.stop_order.ref if book.stop_order is not None else None
        tp_ref = book.tp_order.ref if book.tp_order is not None else None
        partial_ref = book.partial_order.ref if book.partial_order is not None else None
        if order.status in (order.Completed, order.Partial):
            # Partial: part of the order filled on this bar (fill model: volume cap or a
            # random partial fill); the rest keeps working.
            done = order.status == order.Completed
            if ref == book.entry_ref:
                self._on_entry_fill(book, order, done)
            elif ref == partial_ref:
                self._on_partial_fill(book, order, done)
            elif ref == stop_ref:
                self._on_exit_fill(book, order, book.trade.stop_reason if book.trade else "stop_loss", done)
            elif ref == tp_ref:
                self._on_exit_fill(book, order, book.trade.take_profit_reason if book.trade else "take_profit", done)
            elif ref == book.exit_ref:
                self._on_exit_fill(book, order, book.exit_reason or "exit", done)
            return
        # Canceled / Margin / Rejected / Expired
        if ref == book.entry_ref:
            book.entry_ref = None
            if book.trade is not None and book.trade.is_filled:
                # The rest of a partly filled entry will not fill: the trade is what did.
                self._refuse("ENTRY_REST_" + order.getstatusname().upper())
                book.resize_exits = True
                return
            self._refuse("ENTRY_" + order.getstatusname().upper())
            self._cancel_protection(book, with_partial=True)
            book.trade = None
        elif ref in (stop_ref, tp_ref, partial_ref, book.exit_ref) and order.status != order.Canceled:
            self._refuse("EXIT_" + order.getstatusname().upper())

    def _on_entry_fill(self, book: Book, order: bt.Order, done: bool = True) -> None:
        """Open the trade on the entry's first fill; later fills of it add to the trade."""
        trade = book.trade
        assert trade is not None
        total = abs(order.executed.size)
        qty = total - book.entry_filled
        if qty > 0:
            price, fee = self._new_fill(order, first=book.entry_filled == 0)
            if trade.entry_price is None:
                trade.entry_index = book.clock.lencount - 1
                trade.entry_price = price
                trade.quantity = qty
                trade.best_price = trade.worst_price = price
                book.entry_fee = fee
            else:
                # Average entry price of what is held, as the broker's position keeps it.
                held, prev = trade.quantity, trade.entry_price
                trade.entry_price = (prev * held + price * qty) / (held + qty)
                trade.quantity = held + qty
                book.entry_fee += fee
            book.entry_filled = total
        if done:
            book.entry_ref = None

    @staticmethod
    def _new_fill(order: bt.Order, *, first: bool) -> tuple[float, float]:
        """Return (average price, commission) of the fills this notification reports."""
        ex = order.executed
        if first:
            return ex.price, ex.comm
        bits = list(ex.iterpending())
        qty = sum(abs(b.size) for b in bits)
        return sum(abs(b.size) * b.price for b in bits) / qty, sum(b.comm for b in bits)

    def _exit_part(self, book: Book, order: bt.Order) -> tuple[float, float, float]:
        """Return (quantity, price, commission) of the exit order's fills not yet recorded."""
        seen = book.exit_seen.get(order.ref, 0.0)
        total = abs(order.executed.size)
        price, fee = self._new_fill(order, first=seen == 0)
        book.exit_seen[order.ref] = total
        return total - seen, price, fee

    def _cancel_entry_rest(self, book: Book) -> None:
        """Cancel what is left of a partly filled entry: the trade is being closed."""
        if book.entry_ref is None:
            return
        ref, book.entry_ref = book.entry_ref, None  # its Canceled notice is then not a refusal
        for order in self.broker.get_orders_open():
            if order.ref == ref:
                self.broker.cancel(order)

    def _record_leg(self, book: Book, qty: float, price: float, fee: float, reason: str) -> None:
        """Record `qty` closed at `price` as its own trade leg, with its share of the entry fee."""
        trade = book.trade
        assert trade is not None
        fee_share = book.entry_fee * (qty / trade.quantity)
        self._record(book, book.clock.lencount - 1, price, fee, reason, quantity=qty, entry_fee=fee_share)
        book.entry_fee -= fee_share
        trade.quantity -= qty

    def _on_partial_fill(self, book: Book, order: bt.Order, done: bool = True) -> None:
        """Record the closed part as its own trade leg; re-size the remaining exits."""
        trade = book.trade
        assert trade is not None and trade.entry_price is not None
        self._cancel_entry_rest(book)
        qty, price, fee = self._exit_part(book, order)
        self._record_leg(book, qty, price, fee, trade.partial_reason)
        if not done:
            return  # the rest of the partial target keeps working; stop and target still cover all
        book.partial_order = None
        trade.partial_done = True
        # Re-size the stop and target at this bar's close, once every fill of the bar is
        # known (the target may have filled right after the partial, on the same bar).
        book.resize_exits = True

    def _on_exit_fill(self, book: Book, order: bt.Order, reason: str, done: bool = True) -> None:
        trade = book.trade
        assert trade is not None and trade.entry_price is not None
        self._cancel_entry_rest(book)
        qty, price, fee = self._exit_part(book, order)
        if done and qty >= trade.quantity * (1 - 1e-9):
            # The sibling of a filled stop/target is cancelled by OCO; make sure no leg survives.
            self._cancel_protection(book, with_partial=True)
            self._record(book, book.clock.lencount - 1, price, fee, reason)
            return
        # Part of the position closed (volume cap or partial fill): a leg of its own; the
        # exits are sent again for what is left at this bar's close.
        self._record_leg(book, qty, price, fee, reason)
        book.resize_exits = True

    def _close_at_end(self, book: Book) -> None:
        """Mark the position to the last close, net of slippage and commission (end_of_data)."""
        trade = book.trade
        assert trade is not None
        i = book.clock.lencount - 1
        close = book.close[i]
        fm = self.p.fill_model
        if fm is not None:
            slip = fm.slippage(close, trade.quantity, book.data.volume[0])
        else:
            model, amount = self.p.slippage or ("percent", 0.0)
            slip = amount if model == "fixed" else close * amount
        # As for a market fill: the slipped price stays inside the last bar's range.
        price = min(max(close - trade.side.sign * slip, book.low[i]), book.high[i])
        if fm is not None:
            fee = fm.commission(trade.quantity, price)
        else:
            fee = abs(trade.quantity) * price * self.p.commission_rate
        self.end_adjustment += -trade.side.sign * trade.quantity * (close - price) - fee
        self._record(book, i, price, fee, "end_of_data")

    def _record(
        self,
        book: Book,
        i: int,
        price: float,
        exit_fee: float,
        reason: str,
        *,
        quantity: float | None = None,
        entry_fee: float | None = None,
    ) -> None:
        """Append a TradeRecord; a full close (no `quantity`) also resets the book."""
        trade = book.trade
        assert trade is not None and trade.entry_price is not None and trade.entry_index is not None
        leg = quantity is not None
        sign, entry = trade.side.sign, trade.entry_price
        qty = quantity if quantity is not None else trade.quantity
        if sign > 0:
            best, worst = max(trade.best_price, price), min(trade.worst_price, price)
        else:
            best, worst = min(trade.best_price, price), max(trade.worst_price, price)
        gross = sign * (price - entry) * qty
        fees = (book.entry_fee if entry_fee is None else entry_fee) + exit_fee
        times = book.times
        self.trade_records.append(
            TradeRecord(
                trade_id=len(self.trade_records) + 1,
                symbol=book.symbol,
                side=trade.side.value,
                entry_time=pd.Timestamp(times[trade.entry_index], tz="UTC").to_pydatetime(),
                exit_time=pd.Timestamp(times[i], tz="UTC").to_pydatetime(),
                entry_price=entry,
                exit_price=price,
                quantity=qty,
                gross_pnl=gross,
                fees=fees,
                pnl=gross - fees,
                pnl_pct=(gross - fees) / (entry * qty) * 100.0,
                exit_reason=reason,
                entry_tag=trade.entry_tag,
                bars_held=i - trade.entry_index,
                mae_pct=sign * (worst - entry) / entry * 100.0,
                mfe_pct=sign * (best - entry) / entry * 100.0,
            )
        )
        if leg:
            return
        book.trade = None
        book.exit_ref = book.exit_reason = None
        book.stop_order = book.tp_order = book.partial_order = None
        book.resize_exits = False
        book.exit_seen.clear()
        book.last_exit = i

    def _bar_now(self) -> datetime:
        """Return the current bar's time (the risk controller's clock)."""
        clock = self._clock
        return bar_datetime(clock.array[clock.idx]) if len(clock.array) else datetime.now(timezone.utc)

    def _refuse(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1
