"""Scale-in for BaseStrategy (a mixin): a repeated entry signal adds to the open position.

With `strategy.scale_in` set, at the close of every bar in a position (no entry, add or exit
working) the entry rule is asked again for the position's side. When it fires, the add is
refused with the PositionManager's reason when the position has `max_entries` already
(MAX_ENTRIES), waits for `min_bars_between` bars after the last entry signal, and is sized
and risk-checked like an entry against the current stop (`_entry_quantity`). It goes out
as a market order (leg `add`) that fills at the next open; the stop and target are resized
to cover it at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import backtrader as bt

from strategy.mixins.base import OpenTrade, Side
from strategy.order_flow import order_side

if TYPE_CHECKING:
    from strategy.book import Book
    from trading.bt_orders import Fill


class ScaleIn:
    """Adds to open positions, and the add that fills after its position closed."""

    # Set by BaseStrategy; declared for readers and type checkers.
    scale_in: Any
    position_manager: Any
    trade_records: list[Any]
    decisions: list[tuple[str, int, str, str]]
    _last_entry_bar: dict[str, int]
    _trade_id: dict[str, Any]
    _venue: Any
    _fired: Callable[[Book, int, Side], str | None]
    _refuse: Callable[[str], None]
    _entry_quantity: Callable[[Book, Side, float, float | None, float], tuple[float, str | None]]
    _send_add: Callable[[Book, OpenTrade, float], None]
    _exit_at_market: Callable[[Book, str], None]

    def _maybe_add(self, book: Book, i: int) -> None:
        """Scale in: add to the open position when the entry rule fires again in its direction."""
        trade, cfg = book.trade, self.scale_in
        assert trade is not None and cfg is not None
        if book.total and i >= book.total - 1:
            return  # no next bar to fill on
        tag = self._fired(book, i, trade.side)
        if tag is None or i - self._last_entry_bar.get(book.symbol, i) < cfg.min_bars_between:
            return
        allowed = self.position_manager.can_enter(
            book.symbol, order_side(trade.side), scale_in=True, max_entries=cfg.max_entries
        )
        if not allowed:
            self._refuse(allowed.reason or "POSITION_OPEN")
            return
        qty, reason = self._entry_quantity(book, trade.side, book.close[i], trade.stop, cfg.size_fraction)
        if reason:
            self._refuse(reason)
            return
        self._last_entry_bar[book.symbol] = i
        self.decisions.append((book.symbol, i, "add", f"{trade.side.value}:{tag}"))
        self._send_add(book, trade, qty)

    def _on_orphan_fill(self, book: Book, order: bt.Order, fill: Fill) -> None:
        """An add filled on the bar its position was closed: close what it opened at the next open.

        The broker tried the position's stop (or target) before the add on that bar; the add
        then opened a position nothing protects. It is booked as a trade of its own, closed
        for the reason that closed the position it was meant for.
        """
        i = book.clock.lencount - 1
        last = next((t for t in reversed(self.trade_records) if t.symbol == book.symbol), None)
        side = Side.LONG if order.isbuy() else Side.SHORT
        book.trade = OpenTrade(
            symbol=book.symbol, side=side, signal_index=i, ref_price=fill.price,
            entry_tag=last.entry_tag if last else "", quantity=fill.quantity, entry_index=i,
            entry_price=fill.price, best_price=fill.price, worst_price=fill.price,
        )
        book.entry_fee = fill.fee
        rec = self._venue.order_of(order)
        if rec is not None:
            self._trade_id[book.symbol] = rec.client_order_id
        reason = last.exit_reason if last else "exit"
        self.decisions.append((book.symbol, i, "exit", reason))
        self._exit_at_market(book, reason)
