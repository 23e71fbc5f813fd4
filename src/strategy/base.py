"""BaseStrategy: a backtrader Strategy composed of entry and exit mixins.

Per symbol and per bar (at the close of bar i):

* flat: each entry mixin is asked `should_enter`; they combine with ``any``/``all``. On a
  signal the exit mixins give the initial stop and target (anchored at bar i's close), the
  size follows from the sizing rule, and one bracket goes out: a market entry that fills at
  the next bar's open, with the stop and the target live from that same bar.
* in a position: the exit mixins see the bar and may tighten the stop, move the target, or
  ask for an exit at the next open. Changed levels amend the resting orders. With
  `strategy.scale_in`, a new entry signal in the position's direction adds to it.

Orders are recorded in an OrderManager and fills build a PositionManager (both given by the
bot, or made here): see `strategy.order_flow`. Fills arrive through `notify_order`; each
closing fill produces a `TradeRecord` with the reason of the order that closed it. The
strategy never learns the mode it runs in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import backtrader as bt
import pandas as pd

from strategy.book import Book, StrategySpec
from strategy.mixins.base import OpenTrade, Side, combine
from strategy.order_flow import EXIT_LEGS, OrderFlow, order_side
from strategy.risk_gate import bar_datetime, check_entry, dec
from strategy.scale_in import ScaleIn
from trading.bt_orders import BacktraderOrders, Fill
from trading.order_manager import OrderManager
from trading.positions import PositionManager
from trading.results import TradeRecord
from trading.risk import RiskController
from trading.sizing import position_quantity

__all__ = ["BaseStrategy", "Book", "StrategySpec"]


class BaseStrategy(ScaleIn, OrderFlow, bt.Strategy):
    """Compose entry and exit mixins; record trades, equity and decisions."""

    params = (
        ("spec", None),
        ("progress", None),  # callable(done_bars, total_bars)
        ("progress_every", 2000),
        ("slippage", None),  # (model, amount): for the end-of-data mark-to-market exit
        ("commission_rate", 0.0),
        ("fill_model", None),  # trading.brokers.fill_model.FillModel: costs of the end-of-data exit
        ("bus", None),  # trading.bus.EventBus for the risk, order and trade events
        ("orders", None),  # trading.order_manager.OrderManager; a new one if None
        ("positions", None),  # trading.positions.PositionManager fed by its fills; a new one if None
        ("bot_name", None),  # first part of the client order ids; the strategy name if None
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
        # The record of every order and position (public: the bot persists and reconciles them).
        orders, positions = self.p.orders, self.p.positions
        self.order_manager: OrderManager = orders if orders is not None else OrderManager(self.p.bus)
        self.position_manager: PositionManager = positions if positions is not None else PositionManager(self.p.bus)
        self.order_manager.clock = self._bar_now
        self._venue = BacktraderOrders(self.p.bot_name or spec.name, self.order_manager, lambda: self.broker)
        self._venue.feed(self.position_manager)
        self._trade_id: dict[str, Any] = {}  # symbol -> client order id of the open trade's entry
        self._last_entry_bar: dict[str, int] = {}  # symbol -> bar of the last entry or add signal
        self.scale_in = spec.scale_in

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
        self._drain_notifications()
        for book in self.books:
            if book.trade is not None and book.trade.is_filled:
                self._close_at_end(book)
        if self._progress is not None and self.books:
            self._progress(len(self), self.books[0].total)

    # ----------------------------------------------------------------- per bar
    def _step(self, book: Book, i: int) -> None:
        trade = book.trade
        if trade is None:
            if self._may_enter():
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
        if plan.exit_now:
            self.decisions.append((book.symbol, i, "exit", plan.exit_now))
            self._exit_at_market(book, plan.exit_now)
            return
        if book.resize_exits:
            # A partial fill on this bar changed the position: fit the exits to what is left.
            book.resize_exits = False
            trade.stop, trade.stop_reason = plan.stop, plan.stop_reason
            trade.take_profit, trade.take_profit_reason = plan.take_profit, plan.take_profit_reason
            self._resize_exits(book)
        elif plan.stop != trade.stop or plan.take_profit != trade.take_profit:
            self._replace_protection(book, plan)
        else:
            trade.stop_reason, trade.take_profit_reason = plan.stop_reason, plan.take_profit_reason
        if self.scale_in is not None and book.entry_ref is None and self._may_enter():
            self._maybe_add(book, i)

    def _may_enter(self) -> bool:
        """Return whether new entries (and adds) may be considered at all on this bar."""
        return True

    def _fired(self, book: Book, i: int, side: Side) -> str | None:
        """Return the tag of the entry mixins that fire for `side` at bar i, or None."""
        cand = book.candidates[side]
        if cand is not None and not cand[i]:
            return None
        fired = [m.name for m in book.entries if m.should_enter(i, side, i - book.last_exit)]
        if not fired or (self.spec.entry_logic == "all" and len(fired) < len(book.entries)):
            return None
        return "+".join(fired)

    def _maybe_enter(self, book: Book, i: int) -> None:
        if i < book.warmup or (book.total and i >= book.total - 1):
            return  # indicators not ready, or no next bar to fill on
        chosen: tuple[Side, str] | None = None
        for side in self._sides:
            tag = self._fired(book, i, side)
            if tag is None:
                continue
            if chosen is not None:
                self._refuse("CONFLICTING_SIGNALS")
                return  # long and short fired together: stay out
            chosen = (side, tag)
        if chosen is None:
            return
        side, tag = chosen
        allowed = self.position_manager.can_enter(book.symbol, order_side(side))
        if not allowed:
            self._refuse(allowed.reason or "POSITION_OPEN")
            return
        ref = book.close[i]
        trade = OpenTrade(symbol=book.symbol, side=side, signal_index=i, ref_price=ref, entry_tag=tag)
        plan = combine([x.on_entry(trade, i) for x in book.exits], side)
        if plan.stop is not None and not (math.isfinite(plan.stop) and side.sign * (ref - plan.stop) > 0):
            plan.stop = None  # a stop on the wrong side of the price would fill at once
        if plan.take_profit is not None and not (
            math.isfinite(plan.take_profit) and side.sign * (plan.take_profit - ref) > 0
        ):
            plan.take_profit = None
        qty, reason = self._entry_quantity(book, side, ref, plan.stop, 1.0)
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
        self._last_entry_bar[book.symbol] = i
        self.decisions.append((book.symbol, i, "entry", f"{side.value}:{tag}"))
        self._send_bracket(book, trade)

    def _entry_quantity(
        self, book: Book, side: Side, ref: float, stop: float | None, fraction: float
    ) -> tuple[float, str | None]:
        """Size an entry or add at `ref` and pass it through the risk checks: (quantity, refusal)."""
        if stop is None and self.spec.risk.stop_loss_required:
            return 0.0, "STOP_LOSS_REQUIRED"
        equity = self.broker.getvalue()
        sizing = self.spec.sizing
        qty, reason = position_quantity(sizing, self.spec.risk, equity=equity, price=ref, stop=stop)
        if reason:
            return 0.0, reason
        if fraction != 1.0:
            qty *= fraction
            if sizing.lot_size:
                qty = math.floor(qty / sizing.lot_size + 1e-9) * sizing.lot_size
            if qty <= 0:
                return 0.0, "QUANTITY_BELOW_LOT"
        reason = check_entry(
            self.risk, self.books, symbol=book.symbol, sign=side.sign, quantity=qty, price=ref, stop=stop,
            equity=equity,
        )
        return qty, reason

    # ----------------------------------------------------------------- fills
    def notify_order(self, order: bt.Order) -> None:
        book = self._book_of.get(id(order.data))
        if book is None:
            return
        fill = self._venue.on_notification(order, self._bar_now())  # the OrderManager first
        if order.status in (order.Submitted, order.Accepted):
            return
        if book.clock.lencount > book.prepared:
            # Streamed bars: fills come before next() on the new bar, which is not prepared yet.
            book.prepare(book.clock.lencount)
        ref = order.ref
        stop_ref = book.stop_order.ref if book.stop_order is not None else None
        tp_ref = book.tp_order.ref if book.tp_order is not None else None
        partial_ref = book.partial_order.ref if book.partial_order is not None else None
        leg = self._leg(order)
        if order.status in (order.Completed, order.Partial):
            # Partial: part of the order filled on this bar (fill model: volume cap or a
            # random partial fill); the rest keeps working.
            done = order.status == order.Completed
            if fill is None:
                return
            if leg in ("entry", "add"):
                if book.trade is not None:
                    self._on_entry_fill(book, order, done, fill)
                else:
                    self._on_orphan_fill(book, order, fill)
            elif ref == partial_ref:
                self._on_partial_fill(book, done, fill)
            elif ref == stop_ref:
                self._on_exit_fill(book, book.trade.stop_reason if book.trade else "stop_loss", done, fill, ref=ref)
            elif ref == tp_ref:
                reason = book.trade.take_profit_reason if book.trade else "take_profit"
                self._on_exit_fill(book, reason, done, fill, ref=ref)
            elif ref == book.exit_ref:
                self._on_exit_fill(book, book.exit_reason or "exit", done, fill, ref=ref)
            elif leg in EXIT_LEGS:  # cancelled or replaced, but the fill beat the cancel
                self._on_retired_fill(book, order, leg, done, fill)
            return
        # Canceled / Margin / Rejected / Expired
        book.retired.pop(ref, None)
        if ref == book.entry_ref:
            book.entry_ref = None
            status = order.getstatusname().upper()
            if book.trade is not None and book.trade.is_filled:
                # The rest of a partly filled entry (or an add) will not fill: the trade is what did.
                self._refuse(("ADD_" if leg == "add" else "ENTRY_REST_") + status)
                book.resize_exits = True
                return
            self._refuse("ENTRY_" + status)
            self._cancel_protection(book, with_partial=True, reason="ENTRY_" + status)
            book.trade = None
        elif ref in (stop_ref, tp_ref, partial_ref, book.exit_ref) and order.status != order.Canceled:
            self._refuse("EXIT_" + order.getstatusname().upper())

    def _on_entry_fill(self, book: Book, order: bt.Order, done: bool, fill: Fill) -> None:
        """Open the trade on the entry's first fill; later fills of it, and adds, add to the trade."""
        trade = book.trade
        assert trade is not None
        if trade.entry_price is None:
            trade.entry_index = book.clock.lencount - 1
            trade.entry_price = fill.price
            trade.quantity = fill.quantity
            trade.best_price = trade.worst_price = fill.price
            book.entry_fee = fill.fee
        else:
            # Average entry price of what is held, as the broker's position keeps it.
            held, prev = trade.quantity, trade.entry_price
            trade.entry_price = (prev * held + fill.price * fill.quantity) / (held + fill.quantity)
            trade.quantity = held + fill.quantity
            book.entry_fee += fill.fee
        if order.ref == book.entry_ref:
            book.entry_filled += fill.quantity
            if done:
                book.entry_ref = None
        if trade.partial_target is not None and not trade.partial_done and self._is_add(order):
            book.resize_exits = True  # the partial target is a fraction of what is held

    def _leg(self, order: bt.Order) -> str | None:
        """Return the order's leg (`entry`, `add`, `sl`, `ptp`, `tp`, `exit`), None if not ours."""
        rec = self._venue.order_of(order)
        return rec.tag if rec is not None else None

    def _is_add(self, order: bt.Order) -> bool:
        return self._leg(order) == "add"

    def _flat(self, book: Book) -> bool:
        """Return whether the symbol's position is closed (the PositionManager has the fill already)."""
        return self.position_manager.position(book.symbol).quantity == 0

    def _record_leg(self, book: Book, qty: float, price: float, fee: float, reason: str) -> None:
        """Record `qty` closed at `price` as its own trade leg, with its share of the entry fee."""
        trade = book.trade
        assert trade is not None
        fee_share = book.entry_fee * (qty / trade.quantity)
        self._record(book, book.clock.lencount - 1, price, fee, reason, quantity=qty, entry_fee=fee_share)
        book.entry_fee -= fee_share
        trade.quantity -= qty

    def _on_partial_fill(self, book: Book, done: bool, fill: Fill) -> None:
        """Record the closed part as its own trade leg; re-size the remaining exits."""
        trade = book.trade
        assert trade is not None and trade.entry_price is not None
        if self._flat(book):  # other exits of the bar closed the rest before it
            self._on_exit_fill(book, trade.partial_reason, done, fill)
            return
        self._cancel_entry_rest(book)
        self._record_leg(book, fill.quantity, fill.price, fill.fee, trade.partial_reason)
        if not done:
            return  # the rest of the partial target keeps working; stop and target still cover all
        book.partial_order = None
        trade.partial_done = True
        # Re-size the stop and target at this bar's close, once every fill of the bar is
        # known (the target may have filled right after the partial, on the same bar).
        book.resize_exits = True

    def _on_exit_fill(self, book: Book, reason: str, done: bool, fill: Fill, *, ref: int | None = None) -> None:
        trade = book.trade
        assert trade is not None and trade.entry_price is not None
        self._cancel_entry_rest(book)
        if self._flat(book):
            # The position is closed (this fill, maybe with others of the bar). The sibling of
            # a filled stop/target is cancelled by OCO; make sure no leg, and no market exit
            # sent meanwhile, survives.
            self._cancel_protection(book, with_partial=True, reason="POSITION_CLOSED")
            if book.exit_ref is not None and book.exit_ref != ref:
                self._cancel_exit(book)
            self._record(book, book.clock.lencount - 1, fill.price, fill.fee, reason)
            return
        # Part of the position closed (volume cap or partial fill): a leg of its own.
        self._record_leg(book, fill.quantity, fill.price, fill.fee, reason)
        stop = book.stop_order
        if stop is not None and ref == stop.ref and stop.alive():
            # The stop triggered: its rest is a market order that fills at the next opens.
            # It is the trade's exit now; the target and the partial target go.
            book.stop_order = None
            self._cancel_protection(book, with_partial=True, reason="EXIT")
            book.exit_ref, book.exit_reason = ref, reason
            return
        # The exits are sent again for what is left at this bar's close.
        book.resize_exits = True
        if book.exit_ref is not None and book.exit_ref != ref:
            # Another leg beat the market exit to part of the position: the exit closes the rest.
            exit_order = self._venue.by_ref(book.exit_ref)
            if exit_order is not None and exit_order.alive():
                self._venue.amend(exit_order, quantity=trade.quantity)

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
        book.last_exit = i
        self._trade_id.pop(book.symbol, None)

    def _bar_now(self) -> datetime:
        """Return the current bar's time (the risk controller's clock)."""
        clock = self._clock
        return bar_datetime(clock.array[clock.idx]) if len(clock.array) else datetime.now(UTC)

    def _refuse(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1

