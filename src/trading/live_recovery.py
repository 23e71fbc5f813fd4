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
3. what is still open then (a position and its working stop and target) is adopted
   (``live.on_restart: adopt``, the default): the result is an `Adoption` that the strategy
   takes over at its first live bar (`trading.live_adopt`). With ``live.on_restart: refuse``,
   or when something cannot be adopted (an entry or a partial target still working), the run
   is refused (`OpenFromEarlierRun`), naming them.

On a ccxt venue the view is `CcxtBrokerView` (working orders under the bot's client order ids).
Its prices and amounts are the venue's, rounded to the tick and the lot step; the database keeps
the strategy's, so a venue value that is the database's rounded counts as the same. On spot the
position of a symbol is the base asset the account holds (the venue has no positions there): a
spot account that holds more of it than the bot bought does not reconcile. At Interactive
Brokers (an `IBKRBroker`) the view is `IbkrBrokerView` (working orders under the bot's ``orderRef``
client order ids, positions in the bot's symbols): step 1 is skipped, step 2 is done, and
whatever IB still holds for the bot then refuses the run, since adopting IB's orders and
positions at a restart is not built. Without an IB adapter, a resumed IB bot whose database
still has open orders or positions is refused, and IB is not read.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from trading.exceptions import ATFError
from trading.positions import Position

if TYPE_CHECKING:
    from trading.brokers.ccxt_orders import VenueOrder
    from trading.persistence.recovery import OpenRoundTrip, StoredOrder

log = logging.getLogger(__name__)


class OpenFromEarlierRun(ATFError):
    """The venue still holds orders or positions of the bot's earlier run, which this run does not adopt."""


ADOPTABLE_LEGS = ("sl", "tp")


@dataclass(frozen=True)
class AdoptedLeg:
    """A protective order of the earlier run, working at the venue (`venue` None: held back locally)."""

    stored: StoredOrder
    venue: VenueOrder | None


@dataclass(frozen=True)
class AdoptedPosition:
    """One symbol's open position from the earlier run, its round trip and its working legs."""

    position: Position
    trip: OpenRoundTrip
    legs: tuple[AdoptedLeg, ...]


@dataclass(frozen=True)
class Adoption:
    """What a restarted live run takes over, by the bot's symbol name."""

    positions: dict[str, AdoptedPosition]


CATCH_UP_TRIES = 3


class FrozenView:
    """One read of a `BrokerView` (reconciliation reads it more than once; the venue moves between)."""

    def __init__(self, view: Any) -> None:
        self._orders, self._positions = list(view.open_orders()), list(view.positions())

    def open_orders(self) -> list[Any]:
        return self._orders

    def positions(self) -> list[Position]:
        return self._positions


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


def reconcile_at_start(audit: Any, broker: Any, symbols: Sequence[str], on_restart: str = "adopt") -> Adoption | None:
    """Bring a resumed live bot's database up to the venue and check it; return what to adopt.

    Raise `ReconciliationMismatch` or `OpenFromEarlierRun` when the bot may not trade.
    """
    if audit is None or not audit.info.resumed:
        return None
    from trading.live_catchup import catch_up
    from trading.persistence.recovery import load_open_orders, load_positions
    from trading.reconcile import reconcile, reconcile_with_broker

    engine, instance = audit.engine, audit.info.id
    db_orders, db_positions = load_open_orders(engine, instance), load_positions(engine, instance)
    execution = getattr(broker, "execution", None)
    if execution is None:  # Interactive Brokers
        adapter = getattr(broker, "adapter", None)
        if adapter is not None:
            _reconcile_ibkr(engine, instance, adapter, symbols, db_positions)
            return None
        if db_orders or db_positions:
            raise OpenFromEarlierRun(_describe(db_orders, db_positions, "the database",
                                               "reconciling Interactive Brokers at a restart is not built"))
        log.warning("resumed IB bot: its database is flat; IB's account is not reconciled at start")
        return None
    if not execution.venue.connected:
        execution.connect()
    live = SpotAwareView(execution.venue, symbols, db_orders, db_positions)
    for _ in range(CATCH_UP_TRIES):
        # The venue trades on meanwhile: compare the lookups with one read of its account taken
        # after them, and look again when something changed in between.
        caught = catch_up(engine, instance, execution.venue, db_orders, db_positions)
        view = FrozenView(live)
        if reconcile(db_orders, db_positions, view, unrecorded=caught.events).ok:
            break
    rec = reconcile_with_broker(engine, instance, view, unrecorded=caught.events)
    rec.raise_if_mismatched()
    if caught.events:
        log.info("resumed bot instance %d: %d events of the venue while it was down recorded",
                 instance, len(caught.events))
    left_orders, left_positions = view.open_orders(), [p for p in view.positions() if p.quantity != 0]
    if not (left_orders or left_positions):
        log.info("resumed bot instance %d reconciled with the venue: nothing open", instance)
        return None
    if on_restart == "refuse":
        raise OpenFromEarlierRun(_describe(left_orders, left_positions, "the venue",
                                           "live.on_restart is refuse: a new run starts flat"))
    return _adoption(engine, instance, caught.venue_orders)


def _reconcile_ibkr(engine: Any, instance: int, adapter: Any, symbols: Sequence[str],
                    db_positions: Sequence[Position]) -> None:
    """Reconcile with IB's account; refuse what IB still holds for the bot (no adoption at IB yet)."""
    from trading.brokers.ibkr_view import IbkrBrokerView
    from trading.reconcile import reconcile_with_broker

    view = FrozenView(IbkrBrokerView(adapter, symbols, db_positions=db_positions))
    rec = reconcile_with_broker(engine, instance, view)
    rec.raise_if_mismatched()
    left_orders, left_positions = view.open_orders(), [p for p in view.positions() if p.quantity != 0]
    if left_orders or left_positions:
        raise OpenFromEarlierRun(_describe(left_orders, left_positions, "Interactive Brokers",
                                           "adopting Interactive Brokers orders and positions at a restart "
                                           "is not built"))
    log.info("resumed bot instance %d reconciled with Interactive Brokers: nothing open", instance)


def _adoption(engine: Any, instance: int, venue_orders: dict[str, VenueOrder | None]) -> Adoption:
    """Describe the corrected database's open positions and legs; refuse what cannot be adopted."""
    from trading.persistence.recovery import load_open_orders, load_positions, load_round_trip

    orders, positions = load_open_orders(engine, instance), load_positions(engine, instance)
    held = {p.symbol: p for p in positions}
    odd = [o for o in orders if o.tag not in ADOPTABLE_LEGS or o.symbol not in held]
    odd_positions = [p for p in positions if p.trade_id is None]
    if odd or odd_positions:
        raise OpenFromEarlierRun(_describe(odd, odd_positions, "the venue",
                                           "a restart adopts a position with its stop and target only"))
    out = {}
    for symbol, pos in held.items():
        legs = tuple(AdoptedLeg(o, venue_orders.get(o.client_order_id)) for o in orders if o.symbol == symbol)
        assert pos.trade_id is not None
        out[symbol] = AdoptedPosition(pos, load_round_trip(engine, instance, pos.trade_id), legs)
        log.info("adopting %s %s @ %s with %s", symbol, pos.quantity, pos.avg_entry_price,
                 ", ".join(f"{leg.stored.tag} {leg.stored.client_order_id}" for leg in legs) or "no working legs")
    return Adoption(out)


def _describe(orders: Sequence[Any], positions: Sequence[Position], where: str, why: str) -> str:
    items = [f"order {o.client_order_id} ({o.symbol} {o.side.value} {o.order_type.value} {o.quantity})"
             for o in orders]
    items += [f"position {p.symbol} {p.quantity}" for p in positions]
    return (f"refusing to trade: {where} still holds what the earlier run left open ({why}): "
            + "; ".join(items)
            + ". Close them at the venue, or start a new bot instance (persistence.resume: false).")
