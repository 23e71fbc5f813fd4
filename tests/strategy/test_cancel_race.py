"""A fill that beats the cancel of its exit leg is booked as an exit by the leg's tag.

On a live venue a cancel is a request: the order can fill before the venue confirms it.
`SlowCancelVenue` makes that race deterministic: a cancel of a working order lands only
after the next bar's matching, so an order asked to cancel at a bar's close can still fill
on the next bar. It cannot amend (a moved level is a cancel and a new order) and, unless
`reduce_only` is set, it has no reduce-only flag: a second exit would open a position.

Candles: tests/trading/order_scenarios.py (bars 0..4 at 100, the entry signal at bar 4,
the entry at bar 5's open, 100). Shorts mirror the long cases around 100.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import backtrader as bt
import pytest
from pydantic import Field

from strategy.base import BaseStrategy
from strategy.mixins.base import ExitMixin, ExitParams, ExitPlan, OpenTrade
from tests.strategy.conftest import SYMBOL, Candle, make_frame
from tests.trading.order_scenarios import PRE, mirror, of, scenario_config, submitted
from trading.bot_strategy import BotStrategy, SharedControls
from trading.brokers.sim import SimBroker, configure_broker
from trading.bt_orders import TradeLabels
from trading.bus import EventBus
from trading.engine import build_cerebro
from trading.events import Event, OrderCancelled, OrderFilled, OrderPartiallyFilled, TradeClosed
from trading.orders import OrderStatus
from trading.positions import PositionManager

LEVELS = f"{__name__}:ScheduledLevels"


class ScheduledLevels(ExitMixin):
    """Test double: a stop and target from the entry on, moved at the bars of `x_moves`, exits at `x_exit_at`."""

    description = "test double: scheduled stop, target and exits"

    class Params(ExitParams):
        x_stop: float | None = None
        x_target: float | None = None
        x_moves: dict[int, tuple[float | None, float | None]] = Field(default_factory=dict)  # bar -> (stop, target)
        x_exit_at: tuple[int, ...] = ()

    def on_entry(self, trade: OpenTrade, i: int) -> ExitPlan:
        return ExitPlan(self.p.x_stop, "stop_loss", self.p.x_target, "take_profit")  # type: ignore[attr-defined]

    def on_bar(self, trade: OpenTrade, i: int) -> ExitPlan:
        p: Any = self.p
        if i in p.x_exit_at:
            return ExitPlan(trade.stop, trade.stop_reason, trade.take_profit, trade.take_profit_reason,
                            exit_now="signal_exit")
        if i in p.x_moves:
            stop, target = p.x_moves[i]
            return ExitPlan(stop, "moved_stop", target, "moved_target")
        return ExitPlan(trade.stop, trade.stop_reason, trade.take_profit, trade.take_profit_reason)


class SlowCancelVenue(SimBroker):
    """SimBroker whose cancels of working orders land after the next bar's matching; no amends."""

    reduce_only = False

    def __init__(self) -> None:
        super().__init__()
        self.in_flight: list[bt.Order] = []

    def cancel(self, order: bt.Order, bracket: bool = False) -> bool:
        if bracket or order not in self.pending:
            return super().cancel(order, bracket=bracket)  # not at the venue yet, or its own OCO/bracket
        if order not in self.in_flight:
            self.in_flight.append(order)
        return True

    def next(self) -> None:
        super().next()  # the orders whose cancel is on its way are still in the book: they may fill
        landing, self.in_flight = self.in_flight, []
        for order in landing:
            if order.alive():
                super().cancel(order)

    def modify(self, order: bt.Order, *, price: float | None = None, size: float | None = None) -> bool:
        return False

    def _fit_reduce_only(self, order: bt.Order) -> bool:
        return super()._fit_reduce_only(order) if self.reduce_only else True


class ReduceOnlyVenue(SlowCancelVenue):
    reduce_only = True


def m(side: str, price: float | None) -> float | None:
    """A long level, or its mirror around 100 for a short."""
    return price if side == "long" or price is None else 200.0 - price


def run_race(side: str, candles: Sequence[Candle], *, venue: type[SimBroker] = SlowCancelVenue,
             volumes: dict[int, float] | None = None, fire_at: Sequence[int] = (4,), quantity: float = 1.0,
             bot: bool = False, **levels: Any) -> tuple[BaseStrategy, list[Event]]:
    """Run a FireAtBars entry with ScheduledLevels exits on `venue`; return the strategy and its events."""
    sign = 1 if side == "long" else -1
    params = {
        "x_stop": m(side, levels.get("stop")), "x_target": m(side, levels.get("target")),
        "x_moves": {k: (m(side, s), m(side, t)) for k, (s, t) in levels.get("moves", {}).items()},
        "x_exit_at": list(levels.get("exit_at", ())),
    }
    cfg = scenario_config(side=side, fire_at=fire_at, exit_mixin=LEVELS, exit_params=params, quantity=quantity,
                          broker={"cash": 1_000_000.0, "paper_trading_config": {"max_volume_share": 0.1}})
    frame = make_frame(candles if sign > 0 else mirror(candles))
    for k, v in (volumes or {}).items():
        frame.iloc[k, frame.columns.get_loc("volume")] = v
    bus, events = EventBus(), []
    bus.subscribe(events.append, inline=True, name="all")
    if bot:  # the bot's strategy: TradeClosed carries the exit reason its labeller finds
        labels = TradeLabels(bus)
        params: tuple[tuple[str, Any], ...] = (
            ("bus", bus), ("control", SharedControls(bot="race", bus=bus)), ("labels", labels),
            ("positions", PositionManager(labels)))  # type: ignore[arg-type]
        cls = type("RaceBotStrategy", (BotStrategy,), {"params": params})
    else:
        cls = type("RaceStrategy", (BaseStrategy,), {"params": (("bus", bus),)})
    cerebro, _ = build_cerebro(cfg, {SYMBOL: frame}, strategy_cls=cls)
    sim, ptc = cerebro.broker, cfg.broker.paper_trading_config
    broker = venue()
    configure_broker(broker, cash=cfg.broker.cash, commission_rate=cfg.broker.commission_rate,
                     slippage_model=ptc.slippage_model, base_slippage=ptc.base_slippage, fill_model=sim.fill_model)
    cerebro.broker = broker
    (strat,) = cerebro.run()
    return strat, events


def assert_settled(strat: BaseStrategy, events: list[Event]) -> None:
    """Flat everywhere, no order left working, and the trades add up to what the fills did."""
    assert strat.position_manager.position(SYMBOL).quantity == 0
    assert strat.broker.getposition(strat.books[0].data).size == pytest.approx(0.0, abs=1e-9)
    assert strat.order_manager.open_orders() == []
    assert strat.books[0].trade is None and strat.books[0].retired == {}
    closed = of(events, TradeClosed)
    assert sum(float(c.realised_pnl) for c in closed) == pytest.approx(sum(t.gross_pnl for t in strat.trade_records))


@pytest.mark.parametrize("side", ["long", "short"])
def test_a_replaced_target_that_fills_before_its_cancel_closes_the_trade_and_cancels_the_replacements(side: str) -> None:
    # Bar 5's close raises the target 106 -> 110: the venue cannot amend, so the 96/106 legs
    # are cancelled and a 96/110 pair is sent. The cancel lands after bar 6, which reaches
    # 106 but not 110: the old target fills first and closes the trade.
    candles = PRE + [(100, 101, 99.5, 100.5), (100.5, 107, 100, 106.5), (106.5, 107, 105.5, 106),
                     (106, 106.5, 105.5, 106)]
    strat, events = run_race(side, candles, stop=96, target=106, moves={5: (96, 110)})

    old_tp, new_tp = submitted(events, "tp")
    new_sl = submitted(events, "sl")[1]
    assert (float(new_tp.price), float(new_sl.stop_price)) == (m(side, 110), m(side, 96))
    (fill,) = of(events, OrderFilled, old_tp.client_order_id)  # after its cancel was asked for
    assert float(fill.last_price) == m(side, 106)
    (trade,) = strat.trade_records
    assert (trade.exit_reason, trade.exit_price, trade.quantity) == ("take_profit", m(side, 106), 1)
    assert trade.gross_pnl == pytest.approx(6.0)
    # The replacements are cancelled by the strategy (a venue without reduce-only would fill them).
    for leg in (new_sl, new_tp):
        assert [c.reason for c in of(events, OrderCancelled, leg.client_order_id)] == ["POSITION_CLOSED"]
        assert of(events, OrderFilled, leg.client_order_id) == []
    assert submitted(events, "exit") == []
    (closed,) = of(events, TradeClosed)
    assert float(closed.exit_price) == m(side, 106)
    assert_settled(strat, events)


@pytest.mark.parametrize("side", ["long", "short"])
def test_a_stop_that_fills_before_its_cancel_closes_the_trade_and_the_market_exit_never_fills(side: str) -> None:
    # Bar 6's close asks for an exit at the next open: the stop 96 and target 106 are
    # cancelled and a market exit goes out. Bar 7 gaps to 95, through the stop whose cancel
    # has not landed: the stop fills at the open first and the exit has nothing to close.
    # A new signal at bar 9 then enters again: the book is free.
    candles = PRE + [(100, 101, 99.5, 100.5), (100.5, 101, 99, 99.5), (95, 95.5, 94, 94.5),
                     (94.5, 95, 94, 94.5), (94.5, 95, 94, 94.5), (94.5, 95, 94, 94.5)]
    strat, events = run_race(side, candles, venue=ReduceOnlyVenue, fire_at=(4, 9), stop=96, target=106,
                             exit_at=(6,))

    first_sl = submitted(events, "sl")[0]
    (exit_order,) = submitted(events, "exit")
    assert float(of(events, OrderFilled, first_sl.client_order_id)[0].last_price) == m(side, 95)
    assert of(events, OrderFilled, exit_order.client_order_id) == []
    assert strat.order_manager.get(exit_order.client_order_id).status is OrderStatus.CANCELLED
    first, second = strat.trade_records
    assert (first.exit_reason, first.exit_price, first.quantity) == ("stop_loss", m(side, 95), 1)
    assert second.exit_reason == "end_of_data" and second.entry_price == m(side, 94.5)  # entered again at bar 10
    assert len(submitted(events, "entry")) == 2


@pytest.mark.parametrize("side", ["long", "short"])
def test_an_exit_that_fills_after_the_position_closed_is_closed_at_the_next_open(side: str) -> None:
    # No reduce-only: bar 7 gaps through the stop (95) and both the stop, whose cancel has
    # not landed, and the market exit fill at its open. The second fill opened a position
    # the other way; the strategy books it and closes it at bar 8's open.
    candles = PRE + [(100, 101, 99.5, 100.5), (100.5, 101, 99, 99.5), (95, 95.5, 94, 94.5),
                     (94, 94.5, 93.5, 94), (94, 94.5, 93.5, 94)]
    strat, events = run_race(side, candles, stop=96, target=106, exit_at=(6,))

    first, orphan = strat.trade_records
    assert (first.exit_reason, first.exit_price) == ("stop_loss", m(side, 95))
    assert orphan.side == ("short" if side == "long" else "long")
    assert (orphan.entry_price, orphan.exit_price, orphan.quantity) == (m(side, 95), m(side, 94), 1)
    assert orphan.exit_reason == "stop_loss"  # as an orphan add: the reason that closed the position
    exits = submitted(events, "exit")
    assert len(exits) == 2 and exits[1].side != exits[0].side
    assert_settled(strat, events)


@pytest.mark.parametrize("side", ["long", "short"])
def test_a_replaced_target_that_fills_in_part_before_its_cancel_leaves_the_rest_protected(side: str) -> None:
    # 150 units; the target moves 106 -> 110 at bar 5's close. Bar 6 reaches 106 but its
    # volume lets only 100 (10 % of 1 000) fill of the old target before its cancel lands.
    # The 100 are a leg of their own; the rest (50) gets a stop and target of 50, which bar
    # 8 fills at 110.
    candles = PRE + [(100, 101, 99.5, 100.5), (100.5, 107, 100, 106.5), (105, 105.5, 104, 105),
                     (105, 110.5, 104.5, 110), (110, 110, 110, 110)]
    strat, events = run_race(side, candles, volumes={5: 100_000.0}, quantity=150, stop=96, target=106,
                             moves={5: (96, 110)})

    old_tp = submitted(events, "tp")[0]
    assert [float(e.last_qty) for e in of(events, OrderPartiallyFilled, old_tp.client_order_id)] == [100]
    assert [c.reason for c in of(events, OrderCancelled, old_tp.client_order_id)] == ["REPLACED"]
    last_tp = submitted(events, "tp")[-1]
    assert float(last_tp.quantity) == 50 and float(last_tp.price) == m(side, 110)
    assert [float(e.last_qty) for e in of(events, OrderFilled, last_tp.client_order_id)] == [50]
    assert [(t.quantity, t.exit_price, t.exit_reason) for t in strat.trade_records] == [
        (100, m(side, 106), "take_profit"), (50, m(side, 110), "moved_target")]
    assert_settled(strat, events)


@pytest.mark.parametrize("side", ["long", "short"])
def test_the_bot_labels_a_raced_fill_with_the_reason_its_leg_had_when_cancelled(side: str) -> None:
    # As the first case, through the bot's strategy: the TradeClosed the notifier and the
    # order log read says why the trade closed, though the target was no longer current.
    candles = PRE + [(100, 101, 99.5, 100.5), (100.5, 107, 100, 106.5), (106.5, 107, 105.5, 106),
                     (106, 106.5, 105.5, 106)]
    strat, events = run_race(side, candles, bot=True, stop=96, target=106, moves={5: (96, 110)})
    (closed,) = of(events, TradeClosed)
    assert (closed.exit_reason, float(closed.exit_price)) == ("take_profit", m(side, 106))
    assert_settled(strat, events)
