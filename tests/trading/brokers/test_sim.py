"""SimBroker unit tests: orders placed at given bars of a tiny real Cerebro, fills derived by hand.

Every test runs a few hand-written candles (open, high, low, close) through NumpyFeed, the
real SimBroker configured by `configure_broker`, and `Scripted`, a minimal bt.Strategy that
places orders at the close of the bars named in its plan. An order placed at bar i can
fill from bar i + 1 on. Expected prices follow docs/backtesting.md:

* market: next open, slipped against the order, clipped to the bar's high-low range;
* stop: the stop price (the open when the bar opens beyond it), slipped and clipped alike;
* limit: the limit price (the open when the bar opens beyond it), never slipped;
* commission: rate x |size| x fill price on every fill; cash is checked at the fill.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import backtrader as bt
import pytest

from tests.strategy.conftest import Candle, make_frame
from trading.brokers.sim import SimBroker, configure_broker
from trading.data.feed import NumpyFeed

CASH = 10_000.0
QUIET: Candle = (100, 101, 99, 100)  # the signal bar of most cases: close 100

Action = Callable[["Scripted"], "dict[str, bt.Order] | None"]


@dataclass(frozen=True)
class Event:
    """One order notification, as the strategy saw it."""

    bar: int
    ref: int
    status: str
    price: float
    size: float
    comm: float


class Scripted(bt.Strategy):
    """Run `plan[i]` at the close of bar i; record every order notification."""

    params = (("plan", None),)

    def __init__(self) -> None:
        self.orders: dict[str, bt.Order] = {}
        self.events: list[Event] = []
        self.results: dict[str, Any] = {}  # return values of broker calls made by the plan
        self.positions_at: list[float] = []  # position size after each bar

    def next(self) -> None:
        bar = len(self) - 1
        self.positions_at.append(self.position.size)
        action = (self.p.plan or {}).get(bar)
        if action is not None:
            self.orders.update(action(self) or {})

    def notify_order(self, order: bt.Order) -> None:
        ex = order.executed
        self.events.append(
            Event(len(self) - 1, order.ref, order.getstatusname(), ex.price, ex.size, ex.comm)
        )

    # ------------------------------------------------------------ reading the record
    def statuses(self, name: str) -> list[str]:
        """Every status notified for the named order, in order."""
        ref = self.orders[name].ref
        return [e.status for e in self.events if e.ref == ref]

    def fill(self, name: str) -> Event:
        """The single Completed notification of the named order."""
        ref = self.orders[name].ref
        (done,) = [e for e in self.events if e.ref == ref and e.status == "Completed"]
        return done

    def final(self, name: str) -> Event:
        ref = self.orders[name].ref
        return [e for e in self.events if e.ref == ref][-1]


def run(
    candles: Sequence[Candle],
    plan: dict[int, Action],
    *,
    cash: float = CASH,
    commission: float = 0.0,
    model: str = "percent",
    slippage: float = 0.0,
) -> Scripted:
    """Backtest `plan` over `candles` with a SimBroker set up as the engine sets it up."""
    cerebro = bt.Cerebro(stdstats=False, preload=True, runonce=True)
    broker = SimBroker()
    configure_broker(
        broker, cash=cash, commission_rate=commission, slippage_model=model, base_slippage=slippage
    )
    cerebro.broker = broker
    cerebro.adddata(NumpyFeed(frame=make_frame(candles)), name="SYM")
    cerebro.addstrategy(Scripted, plan=plan)
    (strat,) = cerebro.run()
    return strat


def buy(size: float = 1.0, *, name: str = "entry", **kw: Any) -> Action:
    """Place a buy order (market unless `exectype` says otherwise) recorded as `name`."""
    return lambda s: {name: s.buy(size=size, **kw)}


def sell(size: float = 1.0, *, name: str = "entry", **kw: Any) -> Action:
    """Place a sell order recorded as `name`."""
    return lambda s: {name: s.sell(size=size, **kw)}


def long_bracket(size: float = 1.0, stop: float = 96.0, target: float = 106.0) -> Action:
    """A market entry with a stop child and a target child (backtrader's bracket)."""

    def act(s: Scripted) -> dict[str, bt.Order]:
        entry, st, tp = s.buy_bracket(
            size=size, exectype=bt.Order.Market, stopprice=stop, limitprice=target
        )
        return {"entry": entry, "stop": st, "target": tp}

    return act


def long_with_oco_exits(size: float = 1.0, stop: float = 96.0, target: float = 106.0) -> Action:
    """A market entry plus reduce-only stop and target linked by OCO (as BaseStrategy sends)."""

    def act(s: Scripted) -> dict[str, bt.Order]:
        entry = s.buy(size=size)
        st = s.sell(size=size, exectype=bt.Order.Stop, price=stop, reduce_only=True)
        tp = s.sell(size=size, exectype=bt.Order.Limit, price=target, oco=st, reduce_only=True)
        return {"entry": entry, "stop": st, "target": tp}

    return act


def clip(price: float, candle: Candle) -> float:
    return min(max(price, candle[2]), candle[1])


# --------------------------------------------------------------------------- market orders

MARKET_CASES = [
    # id, side, model, amount, fill bar, expected fill
    ("buy_percent_inside_range", "buy", "percent", 0.01, (102, 104, 101, 103), 102 * 1.01),
    ("sell_percent_inside_range", "sell", "percent", 0.01, (102, 103, 100, 101), 102 * 0.99),
    ("buy_percent_clipped_to_high", "buy", "percent", 0.01, (102, 102.5, 101, 102), 102.5),
    ("sell_percent_clipped_to_low", "sell", "percent", 0.01, (102, 103, 101.5, 102), 101.5),
    ("buy_fixed_inside_range", "buy", "fixed", 0.5, (102, 104, 101, 103), 102.5),
    ("sell_fixed_clipped_to_low", "sell", "fixed", 1.5, (102, 103, 101, 102), 101.0),
    ("no_slippage_fills_at_open", "buy", "percent", 0.0, (102, 104, 101, 103), 102.0),
]


@pytest.mark.parametrize(
    ("side", "model", "amount", "bar", "expected"),
    [pytest.param(*c[1:], id=c[0]) for c in MARKET_CASES],
)
def test_market_order_fills_at_next_open_slipped_against_it_within_the_bar(
    side: str, model: str, amount: float, bar: Candle, expected: float
) -> None:
    plan = {0: buy() if side == "buy" else sell()}
    strat = run([QUIET, bar, bar], plan, model=model, slippage=amount)

    fill = strat.fill("entry")
    assert fill.bar == 1
    assert fill.price == pytest.approx(expected, rel=1e-12)
    assert bar[2] <= fill.price <= bar[1]


# --------------------------------------------------------------------------- stop orders

STOP_CASES = [
    # id, side, stop, model, amount, fill bar, expected fill
    ("sell_traded_through_fills_at_stop_minus_slip", "sell", 96, "percent", 0.001, (100, 100.5, 95, 97), 96 * 0.999),
    ("sell_traded_through_slip_clipped_to_low", "sell", 96, "percent", 0.01, (100, 100.5, 95.95, 97), 95.95),
    ("sell_gap_fills_at_open_minus_slip", "sell", 96, "percent", 0.001, (94, 95, 93, 94.5), 94 * 0.999),
    ("sell_gap_slip_clipped_to_low", "sell", 96, "percent", 0.001, (94, 95, 93.99, 94.5), 93.99),
    ("sell_fixed_slip", "sell", 96, "fixed", 0.25, (100, 100.5, 95, 97), 95.75),
    ("buy_traded_through_fills_at_stop_plus_slip", "buy", 104, "percent", 0.001, (100, 105, 99.5, 103), 104 * 1.001),
    ("buy_gap_fills_at_open_plus_slip", "buy", 104, "percent", 0.001, (106, 107, 105, 106), 106 * 1.001),
    ("buy_fixed_slip_clipped_to_high", "buy", 104, "fixed", 0.5, (100, 104.2, 99.5, 103), 104.2),
]


@pytest.mark.parametrize(
    ("side", "stop", "model", "amount", "bar", "expected"),
    [pytest.param(*c[1:], id=c[0]) for c in STOP_CASES],
)
def test_stop_fills_at_stop_or_gapped_open_slipped_within_the_bar(
    side: str, stop: float, model: str, amount: float, bar: Candle, expected: float
) -> None:
    order = buy if side == "buy" else sell
    plan = {0: order(exectype=bt.Order.Stop, price=stop)}
    strat = run([QUIET, bar, bar], plan, model=model, slippage=amount)

    fill = strat.fill("entry")
    assert fill.bar == 1
    assert fill.price == pytest.approx(expected, rel=1e-12)
    assert bar[2] <= fill.price <= bar[1]


def test_stop_not_reached_stays_pending() -> None:
    bar = (100, 100.5, 96.01, 97)
    strat = run([QUIET, bar, bar], {0: sell(exectype=bt.Order.Stop, price=96)}, slippage=0.01)

    assert strat.statuses("entry") == ["Submitted", "Accepted"]


# --------------------------------------------------------------------------- limit orders

LIMIT_CASES = [
    # id, side, limit, fill bar, expected fill (slippage is set and must not apply)
    ("sell_touched_fills_at_limit", "sell", 106, (100, 107, 99, 105), 106.0),
    ("sell_gap_fills_at_open", "sell", 106, (108, 109, 107, 108), 108.0),
    ("sell_open_at_limit_fills_at_limit", "sell", 106, (106, 107, 105, 106), 106.0),
    ("buy_touched_fills_at_limit", "buy", 94, (100, 101, 93, 95), 94.0),
    ("buy_gap_fills_at_open", "buy", 94, (92, 93, 91, 92.5), 92.0),
]


@pytest.mark.parametrize("model", ["percent", "fixed"])
@pytest.mark.parametrize(
    ("side", "limit", "bar", "expected"),
    [pytest.param(*c[1:], id=c[0]) for c in LIMIT_CASES],
)
def test_limit_fills_at_its_price_or_better_open_without_slippage(
    side: str, limit: float, bar: Candle, expected: float, model: str
) -> None:
    order = buy if side == "buy" else sell
    amount = 0.01 if model == "percent" else 0.5
    plan = {0: order(exectype=bt.Order.Limit, price=limit)}
    strat = run([QUIET, bar, bar], plan, model=model, slippage=amount)

    fill = strat.fill("entry")
    assert (fill.bar, fill.price) == (1, expected)


def test_limit_not_touched_stays_pending() -> None:
    bar = (100, 105.99, 99, 105)
    strat = run([QUIET, bar, bar], {0: sell(exectype=bt.Order.Limit, price=106)})

    assert strat.statuses("entry") == ["Submitted", "Accepted"]


# --------------------------------------------------------------------------- commission


def test_commission_is_charged_on_every_fill_at_its_price() -> None:
    r, q, s = 0.002, 3.0, 0.001
    candles = [QUIET, (100, 101, 99, 100.5), (100.5, 107, 100, 105), (105, 105, 105, 105)]
    plan = {0: buy(q), 1: sell(q, exectype=bt.Order.Limit, price=106, name="exit")}

    strat = run(candles, plan, commission=r, slippage=s)

    entry, exit_ = strat.fill("entry"), strat.fill("exit")
    p_in, p_out = 100 * (1 + s), 106.0  # slipped market entry; limit exit without slippage
    assert (entry.price, exit_.price) == (pytest.approx(p_in, rel=1e-12), p_out)
    assert entry.comm == pytest.approx(r * q * p_in, rel=1e-12)
    assert exit_.comm == pytest.approx(r * q * p_out, rel=1e-12)
    expected_cash = CASH - q * p_in - r * q * p_in + q * p_out - r * q * p_out
    assert strat.broker.getcash() == pytest.approx(expected_cash, rel=1e-12)
    assert strat.broker.getvalue() == pytest.approx(expected_cash, rel=1e-12)  # flat


# --------------------------------------------------------------------------- brackets and OCO

EXITS = [
    pytest.param(long_bracket, id="bracket"),
    pytest.param(long_with_oco_exits, id="oco_reduce_only"),
]
Entry = Callable[..., Action]


@pytest.mark.parametrize("entry", EXITS)
def test_exits_are_live_on_the_entry_bar_stop_traded_through(entry: Entry) -> None:
    # The entry fills at the open 100; the same bar then trades down through the stop 96.
    candles = [QUIET, (100, 100.5, 95, 96.5), (96.5, 97, 96, 96.5)]

    strat = run(candles, {0: entry()})

    assert (strat.fill("entry").bar, strat.fill("entry").price) == (1, 100.0)
    assert (strat.fill("stop").bar, strat.fill("stop").price) == (1, 96.0)
    assert strat.final("target").status == "Canceled"
    assert strat.positions_at == [0, 0, 0]  # flat at every close


@pytest.mark.parametrize("entry", EXITS)
def test_exits_are_live_on_the_entry_bar_target_touched(entry: Entry) -> None:
    candles = [QUIET, (100, 107, 99.5, 105), (105, 105, 105, 105)]

    strat = run(candles, {0: entry()})

    assert (strat.fill("target").bar, strat.fill("target").price) == (1, 106.0)
    assert strat.final("stop").status == "Canceled"
    assert strat.positions_at[-1] == 0


@pytest.mark.parametrize("entry", EXITS)
def test_entry_bar_opening_beyond_the_stop_is_stopped_at_its_open(entry: Entry) -> None:
    candles = [QUIET, (95, 96, 94, 95), (95, 95, 95, 95)]

    strat = run(candles, {0: entry()})

    assert strat.fill("entry").price == 95.0
    assert (strat.fill("stop").bar, strat.fill("stop").price) == (1, 95.0)


@pytest.mark.parametrize("entry", EXITS)
def test_stop_and_target_in_one_bar_stop_wins_target_cancelled(entry: Entry) -> None:
    candles = [QUIET, (100, 101, 99, 100.5), (100, 107, 95, 100), (100, 107, 95, 100)]

    strat = run(candles, {0: entry()})

    assert strat.fill("entry").bar == 1
    assert (strat.fill("stop").bar, strat.fill("stop").price) == (2, 96.0)
    assert strat.statuses("target")[-1] == "Canceled"
    assert all(e.status != "Completed" for e in strat.events if e.ref == strat.orders["target"].ref)
    assert strat.positions_at == [0, 1, 0, 0]


# --------------------------------------------------------------------------- reduce-only


def test_reduce_only_order_is_shrunk_to_the_position() -> None:
    candles = [QUIET] * 4
    strat = run(candles, {0: buy(5), 1: sell(8, reduce_only=True, name="exit")})

    fill = strat.fill("exit")
    assert (fill.bar, fill.size) == (2, -5.0)
    assert strat.positions_at == [0, 5, 0, 0]


def test_reduce_only_order_is_cancelled_when_flat() -> None:
    strat = run([QUIET] * 3, {0: sell(3, reduce_only=True)})

    assert strat.statuses("entry") == ["Submitted", "Accepted", "Canceled"]
    assert strat.positions_at == [0, 0, 0]
    assert strat.broker.getcash() == CASH


def test_reduce_only_order_on_the_side_of_the_position_is_cancelled() -> None:
    strat = run([QUIET] * 4, {0: buy(2), 1: buy(2, reduce_only=True, name="more")})

    assert strat.final("more").status == "Canceled"
    assert strat.positions_at == [0, 2, 2, 2]


def test_second_reduce_only_exit_on_the_same_bar_is_cancelled_once_flat() -> None:
    # Two unlinked exits for the whole position both trade on bar 2: the stop (queued first)
    # closes it, the target would open a short and is cancelled instead.
    def exits(s: Scripted) -> dict[str, bt.Order]:
        return {
            "stop": s.sell(size=1, exectype=bt.Order.Stop, price=96, reduce_only=True),
            "target": s.sell(size=1, exectype=bt.Order.Limit, price=106, reduce_only=True),
        }

    candles = [QUIET, (100, 101, 99, 100.5), (100, 107, 95, 100), (100, 100, 100, 100)]
    strat = run(candles, {0: buy(1), 1: exits})

    assert strat.fill("stop").bar == 2
    assert strat.final("target").status == "Canceled"
    assert strat.positions_at[-1] == 0


# --------------------------------------------------------------------------- modify


def _modify(name: str, price: float) -> Action:
    def act(s: Scripted) -> None:
        s.results[f"modify_{name}"] = s.broker.modify(s.orders[name], price=price)

    return act


def test_modify_moves_a_pending_stop_in_place_and_keeps_its_oco_link() -> None:
    # The stop is raised from 96 to 98 after bar 1; bar 2 trades down to 97.5 (through 98,
    # not through 96) and up to 107 (through the target 106): the stop, queued first, wins.
    candles = [QUIET, (100, 101, 99, 100.5), (99.5, 107, 97.5, 98), (98, 98, 98, 98)]
    strat = run(candles, {0: long_with_oco_exits(), 1: _modify("stop", 98.0)})

    assert strat.results["modify_stop"] is True
    assert (strat.fill("stop").bar, strat.fill("stop").price) == (2, 98.0)
    assert strat.final("target").status == "Canceled"  # OCO kept
    # amended in place: the stop is the same order, and no other order was ever created
    placed = {o.ref for o in strat.orders.values()}
    assert {e.ref for e in strat.events} == placed
    assert strat.orders["stop"].created.price == 98.0


def test_modify_moves_a_pending_target_in_place() -> None:
    candles = [QUIET, (100, 101, 99, 100.5), (100.5, 103.5, 100, 103), (103, 103, 103, 103)]
    strat = run(candles, {0: long_with_oco_exits(), 1: _modify("target", 103.0)})

    assert strat.results["modify_target"] is True
    assert (strat.fill("target").bar, strat.fill("target").price) == (2, 103.0)
    assert strat.final("stop").status == "Canceled"


def test_modify_of_an_order_submitted_on_the_same_bar_applies_before_it_is_tried() -> None:
    # Bar 1's low 96.5 reaches the amended stop 97 but not the original 96.
    def place_and_amend(s: Scripted) -> dict[str, bt.Order]:
        order = s.sell(size=1, exectype=bt.Order.Stop, price=96)
        s.results["ok"] = s.broker.modify(order, price=97.0)
        return {"entry": order}

    bar = (100, 100.5, 96.5, 97)
    strat = run([QUIET, bar, bar], {0: place_and_amend})

    assert strat.results["ok"] is True
    assert (strat.fill("entry").bar, strat.fill("entry").price) == (1, 97.0)


def test_modify_of_a_filled_order_is_refused() -> None:
    strat = run([QUIET] * 3, {0: buy(1), 1: _modify("entry", 90.0)})

    assert strat.results["modify_entry"] is False
    assert strat.fill("entry").price == 100.0


# --------------------------------------------------------------------------- cancel


def test_cancel_of_a_just_submitted_order_prevents_its_fill() -> None:
    def place_and_cancel(s: Scripted) -> dict[str, bt.Order]:
        order = s.buy(size=1)
        s.results["ok"] = s.broker.cancel(order)
        return {"entry": order}

    strat = run([QUIET] * 3, {0: place_and_cancel})

    assert strat.results["ok"] is True
    assert strat.statuses("entry") == ["Submitted", "Canceled"]
    assert strat.positions_at == [0, 0, 0]
    assert strat.broker.getcash() == CASH


def test_cancel_of_a_just_submitted_oco_member_cancels_its_sibling() -> None:
    # Both legs were submitted on this bar; cancelling the stop must not leave the target alive.
    def place_and_cancel(s: Scripted) -> dict[str, bt.Order]:
        st = s.sell(size=1, exectype=bt.Order.Stop, price=96)
        tp = s.sell(size=1, exectype=bt.Order.Limit, price=106, oco=st)
        s.results["ok"] = s.broker.cancel(st)
        return {"stop": st, "target": tp}

    candles = [QUIET, (100, 107, 95, 100), (100, 100, 100, 100)]
    strat = run(candles, {0: place_and_cancel})

    assert strat.results["ok"] is True
    assert strat.final("stop").status == "Canceled"
    assert strat.final("target").status == "Canceled"
    assert all(e.status != "Completed" for e in strat.events)


def test_cancel_of_a_pending_order_returns_true_once() -> None:
    def cancel_twice(s: Scripted) -> None:
        s.results["first"] = s.broker.cancel(s.orders["entry"])
        s.results["second"] = s.broker.cancel(s.orders["entry"])

    strat = run([QUIET] * 3, {0: sell(exectype=bt.Order.Limit, price=200), 1: cancel_twice})

    assert (strat.results["first"], strat.results["second"]) == (True, False)
    assert strat.statuses("entry") == ["Submitted", "Accepted", "Canceled"]


# --------------------------------------------------------------------------- cash at the fill


def test_entry_affordable_at_the_fill_price_is_accepted_though_not_at_the_signal_close() -> None:
    # 101 units: 10 100 at the signal close 100 (over the cash), 9 595 at the fill open 95.
    q, bar = 101.0, (95, 96, 94.5, 95.5)
    assert q * QUIET[3] > CASH >= q * bar[0]

    strat = run([QUIET, bar, bar], {0: buy(q)})

    fill = strat.fill("entry")
    assert (fill.bar, fill.price, fill.size) == (1, 95.0, q)
    assert strat.broker.getcash() == pytest.approx(CASH - q * 95.0, rel=1e-12)


@pytest.mark.parametrize("entry", EXITS)
def test_entry_unaffordable_at_the_fill_price_is_rejected_with_its_exits(entry: Entry) -> None:
    # 99 units: 9 900 at the signal close 100 (affordable), 10 395 at the fill open 105. The
    # next bar crosses both the stop and the target: neither may fill.
    q = 99.0
    candles = [QUIET, (105, 106, 104.5, 105.5), (105.5, 110, 90, 100), (100, 100, 100, 100)]
    assert q * QUIET[3] <= CASH < q * candles[1][0]

    strat = run(candles, {0: entry(size=q)})

    assert strat.statuses("entry")[-1] == "Margin"
    assert strat.final("entry").bar == 1
    assert strat.final("stop").status == "Canceled"
    assert strat.final("target").status == "Canceled"
    assert all(e.status != "Completed" for e in strat.events)
    assert strat.positions_at == [0, 0, 0, 0]
    assert strat.broker.getcash() == CASH


@pytest.mark.parametrize(("q", "accepted"), [(99.85, True), (99.95, False)])
def test_commission_counts_in_the_cash_check(q: float, accepted: bool) -> None:
    # At the open 100 with 0.1 % commission: 99.85 -> 9 985 + 9.985 fits;
    # 99.95 -> 9 995 + 9.995 does not.
    r = 0.001
    assert (q * 100 * (1 + r) <= CASH) == accepted
    assert q * 100 <= CASH  # the cost alone always fits

    strat = run([QUIET] * 3, {0: buy(q)}, commission=r)

    assert strat.statuses("entry")[-1] == ("Completed" if accepted else "Margin")


def test_cash_at_the_fill_counts_earlier_fills_of_the_same_bar() -> None:
    # Two entries of 60 at the open 100: the first takes 6 000 of 10 000, the second no longer fits.
    def two(s: Scripted) -> dict[str, bt.Order]:
        return {"first": s.buy(size=60), "second": s.buy(size=60)}

    strat = run([QUIET] * 3, {0: two})

    assert strat.fill("first").price == 100.0
    assert strat.final("second").status == "Margin"
    assert strat.broker.getcash() == pytest.approx(CASH - 6_000.0, rel=1e-12)


def test_short_entry_needs_no_cash() -> None:
    # Selling 150 at 100 (15 000, more than the cash) is allowed: the proceeds are credited.
    strat = run([QUIET] * 3, {0: sell(150)})

    assert strat.fill("entry").size == -150.0
    assert strat.broker.getcash() == pytest.approx(CASH + 15_000.0, rel=1e-12)
