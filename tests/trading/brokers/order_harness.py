"""Run order-type cases long and short through a real Cerebro with the SimBroker.

A case is written once, for the long side, on hand-made candles around 100. The short side
is its mirror image about `PIVOT` (every price p becomes 200 - p; a bar's high and low swap),
with each buy turned into a sell and the reverse. Distances (trail amounts, fixed slippage)
are unchanged by the mirror; everything proportional to a price (percent slippage, trail
percent) is computed for the side's own prices, so the expected fills are derived, not
mirrored blindly.

`Scripted` (tests/trading/brokers/test_sim.py) places the plan at the close of the named
bars and records every notification; an order placed at bar i can fill from bar i + 1 on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import backtrader as bt
import pytest

from tests.strategy.conftest import Candle, make_frame
from tests.trading.brokers.test_sim import Event, Scripted
from trading.brokers.fill_model import FillModel
from trading.brokers.sim import SimBroker, configure_broker
from trading.data.feed import NumpyFeed

PIVOT = 200.0  # the short side's prices are PIVOT - p
CASH = 1_000_000.0  # ample: these tests are about prices, not the cash check
QUIET: Candle = (100, 101, 99, 100)  # the signal bar of most cases: close 100
Q = 2.0  # default order size
B = 0.002  # percent slippage of the "slipped" runs
SLIPS = [pytest.param(0.0, id="basic"), pytest.param(B, id="slipped")]
MKT, LMT, STP = bt.Order.Market, bt.Order.Limit, bt.Order.Stop
STPLMT, TRAIL = bt.Order.StopLimit, bt.Order.StopTrail

Plan = Mapping[int, Callable[[Scripted], Any]]  # bar -> action at its close


@dataclass(frozen=True)
class Side:
    """Long or short: which way an opening order goes and how the long table's prices map."""

    name: str

    @property
    def long(self) -> bool:
        return self.name == "long"

    def px(self, price: float) -> float:
        """Map a price of the long table to this side."""
        return price if self.long else PIVOT - price

    def bar(self, candle: Candle) -> Candle:
        """Map a long-table candle (open, high, low, close) to this side."""
        if self.long:
            return candle
        o, h, lo, c = candle
        return (PIVOT - o, PIVOT - lo, PIVOT - h, PIVOT - c)

    def bars(self, candles: Sequence[Candle]) -> list[Candle]:
        return [self.bar(c) for c in candles]

    def order(self, s: Scripted, opening: bool, size: float, **kw: Any) -> bt.Order:
        """Place an opening (buy if long) or closing (sell if long) order; map its prices."""
        for key in ("price", "plimit"):
            if kw.get(key) is not None:
                kw[key] = self.px(kw[key])
        send = s.buy if opening == self.long else s.sell
        return send(size=size, **kw)

    def is_buy(self, opening: bool) -> bool:
        return opening == self.long

    def signed(self, size: float, opening: bool) -> float:
        """The signed size backtrader reports for an opening or closing order of `size`."""
        return size if self.is_buy(opening) else -size

    def bracket(self, s: Scripted, size: float, **kw: Any) -> list[bt.Order]:
        """buy_bracket if long, sell_bracket if short; `price`, `stopprice`, `limitprice` mapped."""
        for key in ("price", "stopprice", "limitprice"):
            if kw.get(key) is not None:
                kw[key] = self.px(kw[key])
        send = s.buy_bracket if self.long else s.sell_bracket
        return list(send(size=size, **kw))


SIDES = [pytest.param(Side("long"), id="long"), pytest.param(Side("short"), id="short")]


def slipped(
    price: float, is_buy: bool, b: float, candle: Candle, *, model: str = "percent"
) -> float:
    """docs/fill-model.md, percent or fixed, no impact: move `price` against the order, clip to the bar."""
    s = b * price if model == "percent" else b
    p = price + s if is_buy else price - s
    return min(p, candle[1]) if is_buy else max(p, candle[2])


def run(
    candles: Sequence[Candle],
    plan: Plan,
    *,
    model: FillModel | None = None,
    slippage: float = 0.0,
    slippage_model: str = "percent",
    volume: float | Sequence[float] = 1000.0,
) -> Scripted:
    """Backtest `plan` over `candles` with a SimBroker set up as the engine sets it up."""
    cerebro = bt.Cerebro(stdstats=False, preload=True, runonce=True)
    broker = SimBroker()
    if model is not None:
        slippage, slippage_model = model.base_slippage, model.slippage_model
    configure_broker(
        broker,
        cash=CASH,
        commission_rate=0.0,
        slippage_model=slippage_model,
        base_slippage=slippage,
        fill_model=model,
    )
    cerebro.broker = broker
    frame = make_frame(candles)
    frame["volume"] = volume
    cerebro.adddata(NumpyFeed(frame=frame), name="SYM")
    cerebro.addstrategy(Scripted, plan=plan)
    (strat,) = cerebro.run()
    return strat


def fills(strat: Scripted, name: str) -> list[Event]:
    """Every Partial and Completed notification of the named order, in order."""
    ref = strat.orders[name].ref
    return [e for e in strat.events if e.ref == ref and e.status in ("Partial", "Completed")]


def one_fill(strat: Scripted, name: str) -> tuple[int, float, float]:
    """(bar, signed size, price) of the named order's single, complete fill."""
    (done,) = fills(strat, name)
    assert done.status == "Completed"
    return done.bar, done.size, done.price
