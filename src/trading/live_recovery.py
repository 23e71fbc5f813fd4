"""A resumed live bot checks its record against the venue before it trades (docs/live.md, "Restart").

The previous run of a bot with a `persistence:` section left its orders and positions in the
database. Before the strategy takes its first bar, `reconcile_at_start`:

1. looks up every order the database still has open at the venue by its client order id and
   records what the venue did while the bot was down (`trading.live_catchup`): fills with the
   venue's trade ids, fees and times, the round trip closed with the filled leg's exit reason,
   the other protective leg cancelled at the venue when one filled;
2. compares the corrected database's open orders and positions with the venue's account (a
   `trading.reconcile.BrokerView`): corrections and mismatches are written as
   ``reconciliation`` events (`reconcile_with_broker`), and an unexplained difference refuses
   the run (`ReconciliationMismatch`), e.g. a position the bot does not know;
3. the new run's strategy starts flat: when the database and the venue agree that some orders
   or positions are still open, the run is refused (`OpenFromEarlierRun`), naming them: close
   them at the venue, or start a new bot instance (``persistence.resume: false``).

On a ccxt venue the view is `CcxtBrokerView` (working orders under the bot's client order ids).
Its prices and amounts are the venue's, rounded to the tick and the lot step; the database keeps
the strategy's, so a venue value that is the database's rounded counts as the same. On spot the
position of a symbol is the base asset the account holds (the venue has no positions there): a
spot account that holds more of it than the bot bought does not reconcile. Interactive Brokers
is not reconciled yet: a resumed IB bot whose database still has open orders or positions is
refused.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from trading.exceptions import ATFError
from trading.positions import Position

log = logging.getLogger(__name__)


class OpenFromEarlierRun(ATFError):
    """The venue still holds orders or positions of the bot's earlier run, which a new run cannot adopt."""


class SpotAwareView:
    """`CcxtBrokerView` at the database's precision, with spot positions read from the balances."""

    def __init__(self, venue: Any, symbols: Sequence[str], db_orders: Sequence[Any],
                 db_positions: Sequence[Position]) -> None:
        from trading.brokers.ccxt_view import CcxtBrokerView

        self.venue, self.symbols = venue, list(symbols)
        self._view = CcxtBrokerView(venue, symbols)
        self._db_orders = {str(o.client_order_id): o for o in db_orders}
        self._db_positions = {p.symbol: p for p in db_positions}

    def open_orders(self) -> list[Any]:
        return [self._as_db(o) for o in self._view.open_orders()]

    def _as_db(self, o: Any) -> Any:
        """Report a venue value as the database's when it is the database's rounded by the venue."""
        d = self._db_orders.get(o.client_order_id)
        if d is None:
            return o
        unified = self.venue.symbol(o.symbol)
        change: dict[str, Any] = {}
        for key in ("price", "stop_price"):
            ours, theirs = getattr(d, key), getattr(o, key)
            if ours is not None and theirs is not None and self.venue.round_price(unified, ours) == theirs:
                change[key] = ours
        if self.venue.round_amount(unified, d.quantity) == o.quantity:
            change["quantity"] = d.quantity
        return dataclasses.replace(o, **change)

    def positions(self) -> list[Position]:
        if self.venue.settings.futures:
            return list(self._view.positions())
        balances = self.venue.balances()
        out = []
        for name in self.symbols:
            base = self.venue.market(self.venue.symbol(name))["base"]
            held = balances.get(base, (Decimal(0), Decimal(0)))[1]
            ours = self._db_positions.get(name)
            out.append(Position(name, held, ours.avg_entry_price if ours is not None else None))
        return out


def reconcile_at_start(audit: Any, broker: Any, symbols: Sequence[str]) -> None:
    """Bring a resumed live bot's database up to the venue and check it; raise when it may not trade."""
    if audit is None or not audit.info.resumed:
        return
    from trading.live_catchup import catch_up
    from trading.persistence.recovery import load_open_orders, load_positions
    from trading.reconcile import reconcile_with_broker

    engine, instance = audit.engine, audit.info.id
    db_orders, db_positions = load_open_orders(engine, instance), load_positions(engine, instance)
    execution = getattr(broker, "execution", None)
    if execution is None:  # Interactive Brokers: no venue view yet
        if db_orders or db_positions:
            raise OpenFromEarlierRun(_describe(db_orders, db_positions, "the database",
                                               "reconciling Interactive Brokers at a restart is not built"))
        log.warning("resumed IB bot: its database is flat; IB's account is not reconciled at start")
        return
    if not execution.venue.connected:
        execution.connect()
    caught = catch_up(engine, instance, execution.venue, db_orders, db_positions)
    view = SpotAwareView(execution.venue, symbols, db_orders, db_positions)
    rec = reconcile_with_broker(engine, instance, view, unrecorded=caught.events)
    rec.raise_if_mismatched()
    if caught.events:
        log.info("resumed bot instance %d: %d events of the venue while it was down recorded",
                 instance, len(caught.events))
    left_orders, left_positions = view.open_orders(), [p for p in view.positions() if p.quantity != 0]
    if left_orders or left_positions:
        raise OpenFromEarlierRun(_describe(left_orders, left_positions, "the venue",
                                           "a new run starts flat and cannot adopt them yet"))
    log.info("resumed bot instance %d reconciled with the venue: nothing open", instance)


def _describe(orders: Sequence[Any], positions: Sequence[Position], where: str, why: str) -> str:
    items = [f"order {o.client_order_id} ({o.symbol} {o.side.value} {o.order_type.value} {o.quantity})"
             for o in orders]
    items += [f"position {p.symbol} {p.quantity}" for p in positions]
    return (f"refusing to trade: {where} still holds what the earlier run left open ({why}): "
            + "; ".join(items)
            + ". Close them at the venue, or start a new bot instance (persistence.resume: false).")
