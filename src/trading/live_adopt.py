"""A restarted live strategy takes over the trade its earlier run left open (docs/live.md, "Restart").

`adopt_into(strategy, adoption)` runs once, at the first live bar (after the warm-up: orders
made on warm-up bars are refused at the venue, so the exits must not act before). Per symbol:

* the PositionManager is rebuilt from the round trip's recorded fills, and the OrderManager
  holds the working legs under their client order ids (nothing is submitted again);
* the broker adopts the legs as accepted orders and starts at the position (`ccxt_adopt`);
* the book gets an `OpenTrade` at the position's size and average entry, entered at the bar
  of the position's opening time, signalled at the bar its entry order was made on, with the
  legs as its stop and target orders;
* the exit mixins' state is recomputed, not loaded: `on_entry` at the signal bar, then
  `on_bar` on every bar after it (and from the entry bar) up to the last one, as the earlier
  run called them (a kill -9 saves no state, and the bars are the venue's: the same ones). So
  a trailing stop's best price, a breakeven already armed and a time exit's entry bar are
  what they were; the levels of the legs at the venue stay the trade's, and the first live
  bar moves them (cancel and replace) when the recomputed state says so.

A position opened before the warm-up bars cover its exits (before the first bar, or before
the indicators are ready) is anchored at the first bar they cover, with a warning: raise
``data.warmup_bars`` to cover the holding period.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from strategy.mixins.base import ExitPlan, OpenTrade, Side, combine
from trading.brokers.ccxt_adopt import adopt_leg, adopt_position
from trading.orders import ClientOrderId, OrderSide

if TYPE_CHECKING:
    from strategy.base import BaseStrategy
    from strategy.book import Book
    from trading.live_recovery import AdoptedPosition, Adoption

log = logging.getLogger(__name__)
ADOPTED = "adopted"


def adopt_into(strat: BaseStrategy, adoption: Adoption) -> None:
    """Give each book of `strat` the position, legs and exit state `adoption` names."""
    for book in strat.books:
        taken = adoption.positions.get(book.symbol)
        if taken is not None:
            _adopt(strat, book, taken)


def _adopt(strat: BaseStrategy, book: Book, taken: AdoptedPosition) -> None:
    n = book.clock.lencount
    if n > book.prepared:
        book.prepare(n)
    i = n - 1
    pos, trip = taken.position, taken.trip
    side = Side.LONG if pos.quantity > 0 else Side.SHORT
    strat.position_manager.restore(trip.fills)
    e = entry_bar(book, pos.opened_ts or trip.entry_time, i)
    # The signal bar is the one the entry order was made on; live, the fill is told before the
    # next bar, so the entry bar is the signal's too, and the exits see bars from the next one.
    s = min(entry_bar(book, trip.signal_time, i) if trip.signal_time is not None else max(e - 1, 0), e)
    first = max(e, s + 1)
    ready = min(book.warmup, i)
    if s < ready:  # before the indicators are ready (or the first bar): anchor where they are
        log.warning("%s: the position is older than the warm-up bars cover; its exits are anchored at bar %d "
                    "(raise data.warmup_bars)", book.symbol, ready)
        s, e = ready, max(e, ready)
    entry = float(pos.avg_entry_price or 0)
    trade = OpenTrade(symbol=book.symbol, side=side, signal_index=s, ref_price=book.close[s],
                      entry_tag=trip.entry_tag or ADOPTED, quantity=float(abs(pos.quantity)), entry_index=e,
                      entry_price=entry, best_price=entry, worst_price=entry)
    _extremes(trade, book, first, max(e, s + 1))  # bars skipped by an anchoring still count
    restore_exit_state(book, trade, s, max(e, s + 1), i)
    book.trade = trade
    book.entry_fee = _entry_fee(taken)
    strat._trade_id[book.symbol] = ClientOrderId(trip.trade_key)
    adopt_position(strat.broker, book.data, pos)
    if not taken.legs:
        if trade.stop is not None or trade.take_profit is not None:
            strat._place_exits(book, trade, with_partial=False)  # protect it as the earlier run meant to
    else:
        trade.stop = trade.take_profit = None
        for leg in taken.legs:
            stored = leg.stored
            strat.order_manager.restore(stored.to_order())
            order = adopt_leg(strat.broker, strat, book.data, leg)
            strat._venue.adopt(order, ClientOrderId(stored.client_order_id))
            if stored.tag == "sl":
                book.stop_order, trade.stop = order, float(stored.stop_price or 0)
            else:
                book.tp_order, trade.take_profit = order, float(stored.price or 0)
    strat.decisions.append((book.symbol, i, ADOPTED, f"{side.value}:{trade.entry_tag}"))
    log.info("%s: adopted %s %s @ %s (entered at bar %d of %d), stop %s, target %s", book.symbol, side.value,
             trade.quantity, entry, e, i, trade.stop, trade.take_profit)


def entry_bar(book: Book, opened: datetime | None, last: int) -> int:
    """Return the bar the position was opened in (the last bar starting at or before `opened`)."""
    if opened is None:
        return last
    ns = np.datetime64(opened.replace(tzinfo=None), "ns")
    found = int(np.searchsorted(book.times[: last + 1], ns, side="right")) - 1
    return min(max(found, 0), last)


def _extremes(trade: OpenTrade, book: Book, first: int, end: int) -> None:
    """Move the trade's best and worst prices over bars first..end-1."""
    for j in range(first, end):
        if trade.side is Side.LONG:
            trade.best_price = max(trade.best_price, book.high[j])
            trade.worst_price = min(trade.worst_price, book.low[j])
        else:
            trade.best_price = min(trade.best_price, book.low[j])
            trade.worst_price = max(trade.worst_price, book.high[j])


def restore_exit_state(book: Book, trade: OpenTrade, signal: int, first: int, last: int) -> None:
    """Call the exit mixins as the earlier run did: `on_entry` at `signal`, `on_bar` from `first` to before `last`."""
    _levels(trade, combine([x.on_entry(trade, signal) for x in book.exits], trade.side))
    for j in range(first, last):
        _extremes(trade, book, j, j + 1)
        _levels(trade, combine([x.on_bar(trade, j) for x in book.exits], trade.side))


def _levels(trade: OpenTrade, plan: ExitPlan) -> None:
    trade.stop, trade.stop_reason = plan.stop, plan.stop_reason
    trade.take_profit, trade.take_profit_reason = plan.take_profit, plan.take_profit_reason


def _entry_fee(taken: AdoptedPosition) -> float:
    """The entry fees of what is still held (the share of the opening fills' fees)."""
    opening = OrderSide.BUY if taken.position.quantity > 0 else OrderSide.SELL
    fills = [f for f in taken.trip.fills if f.side is opening]
    bought = sum(float(f.last_qty) for f in fills)
    fees = sum(float(f.fee) for f in fills)
    return fees * float(abs(taken.position.quantity)) / bought if bought else 0.0
