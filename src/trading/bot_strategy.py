"""The strategy side of BaseTradingBot: BotStrategy and the controls it shares with the bot.

`SharedControls` is what the asyncio side (stop, emergency stop, operator commands) and the
strategy's worker thread share; `BotStrategy` applies it at each bar and writes the state
snapshot (open positions from the PositionManager, working orders from the OrderManager).

In a live run at a venue the emergency stop and the forced exits do not wait for the next
bar: the venue broker (`CcxtBroker`, `IBKRBroker`) calls `BotStrategy._between_bars` on every
pass of Cerebro's loop, which flattens through the same `_flatten` as the bar. Backtests,
replays and paper runs (the SimBroker has no such hook) apply them at the bar only.

A paper run with an audit trail (``persistence:``) takes the operator's requests through its
action log (`trading.action_log`, `SharedControls.journal`): at the start of a bar, logged
(fsynced) before they act, and re-run at the same bar by a restart's re-run; the cancels of
a ``--cancel-on-stop`` stop are logged in `stop` and re-run at the end of their bar.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import backtrader as bt

from strategy.base import BaseStrategy
from strategy.book import Book
from strategy.mixins.base import OpenTrade
from strategy.order_flow import LEG_REASONS
from strategy.risk_gate import bar_datetime
from trading.bt_orders import TradeLabels
from trading.bus import EventBus
from trading.events import Event, Halted, Resumed
from trading.live_run import in_warmup
from trading.orders import Order, OrderStatus
from trading.positions import Position

if TYPE_CHECKING:
    from trading.action_log import ActionLog

log = logging.getLogger(__name__)

EMERGENCY_STOP = "emergency_stop"
FORCE_EXIT = "force_exit"
ENTRIES_PAUSED = "ENTRIES_PAUSED"
RESUME_COMMAND = "RESUME_COMMAND"
CANCEL_ON_STOP = "cancel_on_stop"  # trading.action_log's kind


@dataclass
class SharedControls:
    """What the asyncio side and the strategy (worker thread) share."""

    bot: str
    bus: EventBus | None = None
    stop_requested: threading.Event = field(default_factory=threading.Event)
    emergency: threading.Event = field(default_factory=threading.Event)
    cancel_on_stop: bool = False
    flattening: bool = False
    halted: bool = False
    entries_paused: bool = False  # operator: no new entries until request_resume
    resume: threading.Event = field(default_factory=threading.Event)
    force_exits: deque[str | None] = field(default_factory=deque)  # symbols to close; None: all
    state: dict[str, Any] | None = None
    wake: Callable[[], None] | None = None  # a venue broker's: run a pass of Cerebro's loop now
    journal: ActionLog | None = None  # paper with persistence: operator actions logged, re-run on restart
    cancel_working: bool = False  # a re-run's logged --cancel-on-stop: cancel at the end of this bar

    def publish(self, event: Event) -> None:
        if self.bus is not None:
            self.bus.publish(event)  # never blocks: consumers run on their own queues

    def poke(self) -> None:
        """Have a live run take a request now, between bars (thread-safe; nothing elsewhere)."""
        wake = self.wake
        if wake is not None:
            wake()


class BotStrategy(BaseStrategy):
    """BaseStrategy plus the bot's controls: stop, emergency stop, pause, resume, forced exits."""

    params = (("control", None), ("labels", None))  # type: ignore[assignment]  # merged with the base's

    def __init__(self) -> None:
        super().__init__()
        self._paused = False  # the pause the events have told
        self._forced: set[str] = set()  # symbols closed by operator on this bar: no new entry
        self._hooked = False  # a venue broker calls `_between_bars` on every pass
        self._live_bar = False  # the last bar was a live one (not warm-up): orders may go out
        labels: TradeLabels | None = self.p.labels
        if labels is not None:
            labels.labeller = self._trade_labels
            self._venue.labels = labels

    def start(self) -> None:
        super().start()
        on_pass = getattr(self.broker, "on_pass", None)
        if callable(on_pass):  # a venue broker: a live run, whose loop passes between bars too
            on_pass(self._between_bars)
            self._hooked = True
            self.p.control.wake = getattr(self.broker, "wake", None)

    def next(self) -> None:
        ctl: SharedControls = self.p.control
        journal = ctl.journal
        if journal is not None:  # the operator's requests (or a restart's logged ones) for this bar
            journal.at_bar(len(self), self._bar_now())
        self._emergency(ctl)
        if ctl.force_exits or ctl.resume.is_set() or ctl.entries_paused != self._paused:
            self._operator_commands(ctl)
        super().next()
        self._forced.clear()
        if self._hooked:
            self._live_bar = not any(in_warmup(d) for d in self.datas)
        if journal is not None:
            journal.after_bar(len(self), self._bar_now())
            if ctl.cancel_working:  # a restart re-runs the cancels a --cancel-on-stop stop made here
                ctl.cancel_working = False
                self._drain_notifications()
                self._cancel_working()
        if ctl.flattening and all(b.trade is None for b in self.books):
            ctl.stop_requested.set()
        if ctl.stop_requested.is_set():
            self.env.runstop()  # cerebro ends after this bar; stop() runs next

    def _between_bars(self, settled: bool) -> bool:
        """Apply an emergency stop or forced exits now; the venue broker calls it on every pass.

        `settled` is False while the broker holds news the strategy has not been told yet:
        that goes first, and this acts on a later pass. Before the first live bar (warm-up,
        a restart's adoption) nothing acts here: the bar does it. Once an emergency stop has
        left no position and no working order, Cerebro ends after this pass. Return True
        while the venue's news is awaited (a broker that passes only on news then wakes).
        """
        ctl: SharedControls = self.p.control
        asked = (ctl.emergency.is_set() and not ctl.flattening) or bool(ctl.force_exits)
        if not (asked or ctl.flattening) or not self._live_bar:
            return False
        if not settled:
            return True
        self._emergency(ctl)
        while ctl.force_exits:
            self._force_exit(ctl.force_exits.popleft())  # `_forced` skips the symbol on the next bar
        if ctl.flattening and all(b.trade is None for b in self.books) and not self.order_manager.open_orders():
            ctl.stop_requested.set()
            self.env.runstop()  # the venue is flat with nothing working: end after this pass
            return False
        return ctl.flattening

    def _emergency(self, ctl: SharedControls) -> None:
        """Halt, cancel every working order and close every position, once per run."""
        if ctl.emergency.is_set() and not ctl.flattening:
            ctl.flattening = ctl.halted = True
            self.risk.halt("EMERGENCY_STOP", "emergency stop: orders cancelled, positions closed")
            self._flatten(self.books, EMERGENCY_STOP)

    def _may_enter(self) -> bool:
        ctl: SharedControls = self.p.control
        return not (ctl.halted or ctl.entries_paused)

    def _step(self, book: Book, i: int) -> None:
        if book.symbol not in self._forced:
            super()._step(book, i)

    def _operator_commands(self, ctl: SharedControls) -> None:
        """Apply the pause, resume and forced exits asked for since the last bar (bar thread)."""
        now = self._bar_now()
        resumed_halt = False
        if ctl.resume.is_set():
            ctl.resume.clear()
            if not ctl.halted and self.risk.halted not in (None, "MAX_DAILY_LOSS"):
                self.risk.resume(RESUME_COMMAND)  # a drawdown halt: measured afresh from now
                resumed_halt = True
        if ctl.entries_paused != self._paused:
            self._paused = ctl.entries_paused
            if self._paused:
                ctl.publish(Halted(ts=now, reason=ENTRIES_PAUSED, detail="operator: no new entries; exits keep working"))
            elif not resumed_halt:
                ctl.publish(Resumed(ts=now, reason=RESUME_COMMAND))
        while ctl.force_exits:
            self._force_exit(ctl.force_exits.popleft())

    def _force_exit(self, symbol: str | None) -> None:
        """Close `symbol` (None: every symbol) for the operator; no new entry of it on this bar."""
        books = [b for b in self.books if symbol is None or b.symbol == symbol]
        self._forced.update(b.symbol for b in books)
        self._flatten(books, FORCE_EXIT)

    def _flatten(self, books: list[Book], reason: str) -> None:
        """Cancel the books' working orders and close their positions by market orders."""
        for book in books:
            trade = book.trade
            if trade is None:
                continue
            if not trade.is_filled:
                self._cancel_protection(book, with_partial=True, reason=reason.upper())
                self._cancel_entry_rest(book, reason.upper())
                book.trade = None
            elif book.exit_ref is None:
                self.decisions.append((book.symbol, book.clock.lencount - 1, "exit", reason))
                self._exit_at_market(book, reason)

    def _trade_labels(self, order: bt.Order) -> tuple[str, str]:
        """Return the exit reason the fill of `order` closes with (as `notify_order` records it) and the entry tag."""
        book = self._book_of.get(id(order.data))
        trade = book.trade if book is not None else None
        if book is None or trade is None:
            return "", ""
        ref = order.ref
        if book.stop_order is not None and ref == book.stop_order.ref:
            reason = trade.stop_reason
        elif book.tp_order is not None and ref == book.tp_order.ref:
            reason = trade.take_profit_reason
        elif book.partial_order is not None and ref == book.partial_order.ref:
            reason = trade.partial_reason
        elif ref == book.exit_ref:
            reason = book.exit_reason or "exit"
        else:
            # a leg cancelled or replaced whose fill beat the cancel: the reason it had then
            reason = book.retired.get(ref) or LEG_REASONS.get(self._leg(order), "")
        return reason, trade.entry_tag

    def stop(self) -> None:
        ctl: SharedControls = self.p.control
        self._drain_notifications()
        working = self._working() if ctl.cancel_on_stop else []
        if working:
            journal = ctl.journal
            if journal is not None and (journal.replaying or journal.holding):
                # stopped before the resume point: cancelling would change the history recovery checks
                log.warning("stopped while re-running the recorded history: working orders kept")
                working = []
            else:
                if journal is not None:  # logged before the cancels, so a restart re-runs them here
                    journal.record(len(self), self._bar_now(), CANCEL_ON_STOP)
                self._cancel_working()
        self._settle_pending_cancels()
        om = self.order_manager
        cancelled = sum(om.get(o.client_order_id).status is OrderStatus.CANCELLED for o in working)
        ctl.state = {**self._snapshot(), "cancelled_on_stop": cancelled}
        super().stop()  # marks what is still open to the last close (end_of_data) in the result

    def _working(self) -> list[Order]:
        return [o for o in self.order_manager.open_orders() if o.status is not OrderStatus.PENDING_CANCEL]

    def _cancel_working(self) -> int:
        """Cancel every working order (reason STOP, as ``--cancel-on-stop``); return how many ended cancelled."""
        om = self.order_manager
        working = self._working()
        for order in working:
            held = self._venue.backtrader_order(order.client_order_id)
            if held is not None:
                self._venue.cancel(held, "STOP")
        self._drain_notifications()
        return sum(om.get(o.client_order_id).status is OrderStatus.CANCELLED for o in working)

    def _settle_pending_cancels(self, tries: int = 3) -> None:
        """At stop, get the venue's answer to the cancels still pending (a venue broker only).

        A cancel whose answer was lost (a timeout on a slow venue) is retried at the broker's
        next pass; at stop there is none, and the order would stay ``pending_cancel`` in the
        result and state.json though the venue may have cancelled it. `settle()` sends the
        cancels again and reads the venue (an order already cancelled answers with its state).
        """
        settle = getattr(self.broker, "settle", None)
        if not callable(settle):
            return
        for _ in range(tries):
            pending = [o for o in self.order_manager.open_orders() if o.status is OrderStatus.PENDING_CANCEL]
            if not pending:
                return
            try:
                settle()
            except Exception:  # the venue is gone: the state says what is known
                log.warning("the venue's answer to %d pending cancel(s) could not be read at stop", len(pending),
                            exc_info=True)
                return
            self._drain_notifications()
        left = [str(o.client_order_id) for o in self.order_manager.open_orders()
                if o.status is OrderStatus.PENDING_CANCEL]
        if left:
            log.warning("cancels still unanswered by the venue at stop: %s", ", ".join(left))

    def _snapshot(self) -> dict[str, Any]:
        """Return open positions and working orders (from the PositionManager and OrderManager)."""
        last = {}
        for book in self.books:
            n = book.clock.lencount
            if n:
                last[book.symbol] = bar_datetime(book.clock.array[n - 1]).isoformat()
        books = {b.symbol: b for b in self.books}
        positions = [_position_state(p, books[p.symbol].trade) for p in self.position_manager.open_positions()]
        orders = [_order_state(o) for o in self.order_manager.open_orders()]
        return {"last_bar_time": last, "positions": positions, "open_orders": orders}


def _num(x: Decimal | None) -> float | None:
    return None if x is None else float(x)


def _position_state(pos: Position, trade: OpenTrade | None) -> dict[str, Any]:
    """Describe an open position for state.json; the strategy adds its levels and entry tag."""
    return {
        "symbol": pos.symbol, "side": pos.side.value, "quantity": float(abs(pos.quantity)),
        "entry_price": _num(pos.avg_entry_price), "entry_time": pos.opened_ts.isoformat() if pos.opened_ts else None,
        "trade_id": pos.trade_id, "entries": pos.entries, "realised_pnl": float(pos.realised_pnl),
        "fees": float(pos.fees), "stop": trade.stop if trade else None,
        "take_profit": trade.take_profit if trade else None, "entry_tag": trade.entry_tag if trade else None,
    }


def _order_state(order: Order) -> dict[str, Any]:
    return {
        "client_order_id": str(order.client_order_id), "symbol": order.symbol, "side": order.side.value,
        "type": order.order_type.value, "status": order.status.value, "quantity": float(order.quantity),
        "filled": float(order.filled_qty), "price": _num(order.price), "stop_price": _num(order.stop_price),
        "tag": order.tag, "parent_id": str(order.parent_id) if order.parent_id else None,
        "oco_id": str(order.oco_id) if order.oco_id else None,
    }
