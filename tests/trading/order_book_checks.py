"""Consistency of the bot's order and position records with the strategy and the broker.

`check_books(strategy)` asserts, for a running BaseStrategy, that

* the PositionManager holds the broker's position per symbol (quantity equal but for the
  float residue of a closed position, average entry price to 1e-9), and the strategy's own
  trade agrees;
* the OrderManager's working orders are exactly the broker's open orders, with the same
  quantity and price (stop trigger or limit), and an order whose cancel was requested is no
  longer open on the broker.

`Checked` adds the check to a strategy class at the start of every bar (before it acts) and
at the end of the run.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from strategy.base import BaseStrategy
from trading.orders import OrderStatus, OrderType


def _dec(x: float) -> Decimal:
    return Decimal(repr(float(x)))


def check_books(strat: BaseStrategy) -> None:
    pm, om, venue, broker = strat.position_manager, strat.order_manager, strat._venue, strat.broker
    for book in strat.books:
        held = broker.getposition(book.data)
        pos = pm.position(book.symbol)
        where = f"{book.symbol} at bar {book.clock.lencount - 1}"
        # Equal but for the float residue the broker may keep of a closed position.
        assert float(pos.quantity) == pytest.approx(held.size, rel=1e-12, abs=1e-9), where
        trade = book.trade
        if abs(held.size) > 1e-9:
            assert float(pos.avg_entry_price) == pytest.approx(held.price, rel=1e-9), where
            assert trade is not None and trade.is_filled, where
            assert trade.side.sign * trade.quantity == pytest.approx(held.size, rel=1e-9), where
            assert trade.entry_price == pytest.approx(held.price, rel=1e-9), where
        else:
            assert trade is None or not trade.is_filled, where
    # Open on the broker: accepted (pending) or sent during this bar and not yet accepted.
    alive = {venue.id_of(o) for o in (*broker.pending, *broker.submitted) if o is not None and o.alive()}
    assert None not in alive, "a broker order the OrderManager does not know"
    working = {o.client_order_id for o in om.open_orders() if o.status is not OrderStatus.PENDING_CANCEL}
    assert alive == working
    for rec in om.open_orders():
        order = venue.backtrader_order(rec.client_order_id)
        assert order is not None
        if rec.status is OrderStatus.PENDING_CANCEL:
            assert not order.alive(), rec.client_order_id
            continue
        assert rec.quantity == _dec(abs(order.created.size)), rec.client_order_id
        level = rec.stop_price if rec.order_type is OrderType.STOP else rec.price
        if rec.order_type is not OrderType.MARKET:
            assert level == _dec(order.created.price), rec.client_order_id


class CheckMixin:
    """Run `check_books` before every bar's decisions and once more at the end of the run."""

    checks = 0

    def next(self) -> None:
        check_books(self)  # type: ignore[arg-type]
        type(self).checks += 1
        super().next()  # type: ignore[misc]

    def stop(self) -> None:
        self._drain_notifications()  # type: ignore[attr-defined]
        check_books(self)  # type: ignore[arg-type]
        super().stop()  # type: ignore[misc]


def checked(cls: type[Any]) -> type[Any]:
    """Return `cls` with `CheckMixin` in front (a fresh class, so `checks` counts one run)."""
    return type(f"Checked{cls.__name__}", (CheckMixin, cls), {"checks": 0})


def run_checked(cfg: Any, frames: dict[str, Any], *, bus: Any = None, cls: type[Any] = BaseStrategy) -> BaseStrategy:
    """Run `cfg` on `frames` (a backtest) with the check at every bar; return the strategy.

    With `bus`, the strategy's order, trade and risk events are published on it.
    """
    from trading.engine import build_cerebro

    strategy_cls = checked(cls)
    if bus is not None:
        strategy_cls = type(strategy_cls.__name__, (strategy_cls,), {"params": (("bus", bus),), "checks": 0})
    cerebro, _ = build_cerebro(cfg, frames, strategy_cls=strategy_cls)
    (strat,) = cerebro.run()
    assert type(strat).checks == len(strat.equity_values) > 0  # every bar the strategy saw was checked
    return strat
