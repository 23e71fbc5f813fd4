"""The fill model inside SimBroker and the engine: a few hand-written candles, fills derived by hand.

Broker cases place orders with `Scripted` (see test_sim.py) at the close of bar 0, so they
can fill from bar 1 on. Engine cases run the real `run_backtest` with `FireAt` entries:
bars 0..4 are quiet (100, 101, 99, 100), so with ``x_atr_period: 3`` the ATR at the signal
bar 4 is 2 and its close 100: the long stop is 96 and the target 106. Bars are one hour.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import backtrader as bt
import pytest

from strategy.mixins.base import EntryMixin, EntryParams, Side
from tests.strategy.conftest import SYMBOL, Candle, flat_candles, make_config, make_frame
from tests.trading.brokers.test_sim import QUIET, Action, Scripted, buy, long_with_oco_exits, sell
from trading.brokers.fill_model import FillModel
from trading.brokers.sim import SimBroker, configure_broker
from trading.data.feed import NumpyFeed
from trading.engine import build_cerebro, run_backtest

HOUR_MS = 3_600_000.0


def run(
    candles: Sequence[Candle], plan: dict[int, Action], model: FillModel, *, volume: float | Sequence[float] = 1000.0
) -> Scripted:
    """Backtest `plan` over `candles` with a SimBroker using `model`."""
    cerebro = bt.Cerebro(stdstats=False, preload=True, runonce=True)
    broker = SimBroker()
    configure_broker(broker, cash=1_000_000.0, commission_rate=model.commission_rate,
                     slippage_model=model.slippage_model, base_slippage=model.base_slippage, fill_model=model)
    cerebro.broker = broker
    frame = make_frame(candles)
    frame["volume"] = volume
    cerebro.adddata(NumpyFeed(frame=frame), name="SYM")
    cerebro.addstrategy(Scripted, plan=plan)
    (strat,) = cerebro.run()
    return strat


def fills(strat: Scripted, name: str) -> list[tuple[int, str, float, float]]:
    """(bar, status, cumulative size, average price) of every fill of the named order."""
    ref = strat.orders[name].ref
    return [(e.bar, e.status, e.size, e.price) for e in strat.events if e.ref == ref and e.status in ("Partial", "Completed")]


# --------------------------------------------------------------------------- latency

RISING: list[Candle] = [QUIET, (100, 111, 99, 110), (110, 121, 109, 120), (120, 131, 119, 130)]

LATENCY_CASES = [
    # id, latency ms, fill bar, fill price on the straight open->close path of that bar
    ("no_latency_fills_at_the_open", None, 1, 100.0),
    ("half_a_bar_fills_half_way", 0.5 * HOUR_MS, 1, 105.0),  # 100 + (110 - 100) * 0.5
    ("quarter_bar", 0.25 * HOUR_MS, 1, 102.5),
    ("longer_than_the_bar_moves_to_the_next", 1.5 * HOUR_MS, 2, 115.0),  # bar 2, 30 min in
    ("two_and_a_quarter_bars", 2.25 * HOUR_MS, 3, 122.5),
]


@pytest.mark.parametrize(("latency", "bar", "price"), [pytest.param(*c[1:], id=c[0]) for c in LATENCY_CASES])
def test_latency_moves_a_market_fill_later_along_the_bar(latency: float | None, bar: int, price: float) -> None:
    model = FillModel(latency_simulation=latency is not None, min_latency_ms=latency or 0, max_latency_ms=latency or 0)
    strat = run(RISING, {0: buy(2)}, model)
    assert fills(strat, "entry") == [(bar, "Completed", 2, pytest.approx(price))]


def test_latency_stop_arriving_below_its_level_fills_at_the_arrival_price() -> None:
    # A sell stop at 96 reaches the market half-way through bar 1 (100 -> 90): the price is
    # then 95, already through the stop, so it fills there as on a gap.
    model = FillModel(latency_simulation=True, min_latency_ms=0.5 * HOUR_MS, max_latency_ms=0.5 * HOUR_MS)
    strat = run([QUIET, (100, 100.5, 89, 90), (90, 91, 89, 90)], {0: sell(exectype=bt.Order.Stop, price=96)}, model)
    assert fills(strat, "entry") == [(1, "Completed", -1, pytest.approx(95.0))]


# --------------------------------------------------------------------------- volume cap and partial fills

STEPS: list[Candle] = [QUIET, (100, 101, 99, 101), (102, 103, 101, 103), (104, 105, 103, 105), (105, 106, 104, 105)]


def test_volume_cap_spreads_a_market_order_over_bars_at_each_open() -> None:
    strat = run(STEPS, {0: buy(250)}, FillModel(max_volume_share=0.1))  # 100 per bar of volume 1000

    avg2, avg3 = (100 * 100 + 100 * 102) / 200, (100 * 100 + 100 * 102 + 50 * 104) / 250  # 101, 101.6
    assert fills(strat, "entry") == [
        (1, "Partial", 100, 100.0),
        (2, "Partial", 200, pytest.approx(avg2)),
        (3, "Completed", 250, pytest.approx(avg3)),
    ]
    assert strat.positions_at[1:4] == [100, 200, 250]


def test_volume_cap_applies_to_a_limit_without_slipping_it() -> None:
    model = FillModel(max_volume_share=0.1, base_slippage=0.01, market_impact_enabled=True, market_impact_factor=1.0)
    candles = [QUIET, (100, 101, 97, 98), (98, 99, 96, 97), (97, 98, 96, 97)]
    strat = run(candles, {0: buy(150, exectype=bt.Order.Limit, price=98.5)}, model)
    # bar 1 touches 98.5 from above: the limit price; bar 2 opens below it: the open
    assert fills(strat, "entry") == [(1, "Partial", 100, 98.5), (2, "Completed", 150, pytest.approx((100 * 98.5 + 50 * 98) / 150))]


def random_partials(seed: int) -> list[tuple[int, str, float, float]]:
    model = FillModel(partial_fill_probability=0.6, seed=seed)
    return fills(run([QUIET] * 30, {0: buy(10)}, model), "entry")


def test_random_partial_fills_sum_to_the_order_and_repeat_with_the_seed() -> None:
    got = random_partials(seed=2)
    assert got[-1][1:3] == ("Completed", 10)
    assert [s for _, s, _, _ in got[:-1]] == ["Partial"] * (len(got) - 1) and len(got) >= 2
    sizes = [size for _, _, size, _ in got]
    assert sizes == sorted(sizes) and all(0 < a < 10 for a in sizes[:-1])
    assert random_partials(seed=2) == got
    assert random_partials(seed=5) != got


# --------------------------------------------------------------------------- impact, slippage, rejections, commission

IMPACT_CASES = [
    # id, side, exectype, price, bar, expected: 100 of volume 1000 -> x = 0.1
    ("market_buy_impact", "buy", None, None, (100, 102, 99, 101), 101.0),  # 100 * (1 + 0.1 * 0.1)
    ("market_sell_impact", "sell", None, None, (100, 101, 98, 99), 99.0),
    ("market_buy_impact_clipped_to_high", "buy", None, None, (100, 100.4, 99, 100), 100.4),
    ("stop_sell_impact_at_the_stop", "sell", bt.Order.Stop, 96.0, (100, 100.5, 95, 97), 95.04),  # 96 * 0.99
    ("limit_sell_never_slips", "sell", bt.Order.Limit, 106.0, (100, 107, 99, 105), 106.0),
]


@pytest.mark.parametrize(
    ("side", "exectype", "price", "bar", "expected"), [pytest.param(*c[1:], id=c[0]) for c in IMPACT_CASES]
)
def test_market_impact_on_market_and_stop_fills_not_limits(
    side: str, exectype: int | None, price: float | None, bar: Candle, expected: float
) -> None:
    order = buy if side == "buy" else sell
    kw: dict[str, Any] = {} if exectype is None else {"exectype": exectype, "price": price}
    model = FillModel(market_impact_enabled=True, market_impact_factor=0.1)
    strat = run([QUIET, bar, bar], {0: order(100, **kw)}, model)
    sign = 1 if side == "buy" else -1
    assert fills(strat, "entry") == [(1, "Completed", sign * 100, pytest.approx(expected))]


@pytest.mark.parametrize(("seed", "rejected"), [(3, True), (0, False)])  # first draws 0.086 and 0.637
def test_rejection_refuses_the_entry_never_its_reduce_only_exits(seed: int, rejected: bool) -> None:
    model = FillModel(reject_probability=0.5, seed=seed)
    strat = run([QUIET, QUIET, QUIET], {0: long_with_oco_exits()}, model)
    if rejected:
        assert strat.statuses("entry") == ["Submitted", "Rejected"]
        assert strat.orders["entry"].info["reject_reason"] == "VENUE_REJECTED"
        assert strat.statuses("stop") == ["Submitted", "Accepted", "Canceled"]  # flat: nothing to reduce
    else:
        assert strat.statuses("entry") == ["Submitted", "Accepted", "Completed"]
        assert strat.statuses("stop") == ["Submitted", "Accepted"]


@pytest.mark.parametrize(("minimum", "fee"), [(0.0, 1.5), (2.0, 2.0)])  # 300 x 0.005 = 1.5
def test_per_share_commission_on_every_fill(minimum: float, fee: float) -> None:
    model = FillModel(commission_per_share=0.005, commission_minimum=minimum)
    candles = [QUIET, (100, 101, 99, 100.5), (100.5, 107, 100, 105), (105, 105, 105, 105)]
    strat = run(candles, {0: buy(300), 1: sell(300, exectype=bt.Order.Limit, price=106, name="exit")}, model)
    assert (strat.fill("entry").comm, strat.fill("exit").comm) == (pytest.approx(fee), pytest.approx(fee))


# --------------------------------------------------------------------------- through the engine


class FireAt(EntryMixin):
    """Fires long at the listed bars."""

    description = "test double: fire at fixed bars"

    class Params(EntryParams):
        e_fire_at: tuple[int, ...] = ()

    def signal(self, i: int, side: Side) -> bool:
        return i in self.p.e_fire_at and side is Side.LONG  # type: ignore[attr-defined]


PRE: list[Candle] = flat_candles(5)  # signal at bar 4: stop 96, target 106


def engine(candles: Sequence[Candle], volumes: dict[int, float], ptc: dict[str, Any],
           *, quantity: float = 250, broker: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """Build the bot on `candles` (volume 1000 unless `volumes` says otherwise); return (config, frame)."""
    cfg = make_config({
        "strategy": {
            "entry_mixins": [{"name": f"{__name__}:FireAt", "parameters": {"e_fire_at": [4]}}],
            "exit_mixins": [{"name": "AdvancedATRExitMixin", "parameters": {
                "x_atr_period": 3, "x_sl_multiplier": 2.0, "x_tp_multiplier": 3.0,
                "x_trailing_enabled": False, "x_breakeven_enabled": False}}],
            "sizing": {"method": "fixed", "quantity": quantity},
        },
        "broker": {"cash": 1_000_000.0, "paper_trading_config": ptc, **(broker or {})},
    })
    frame = make_frame(candles)
    for i, v in volumes.items():
        frame.iloc[i, frame.columns.get_loc("volume")] = v
    return cfg, frame


def test_entry_filled_over_three_bars_is_one_trade_with_the_whole_quantity() -> None:
    candles = PRE + [(100, 101, 99.5, 101), (101, 102, 100.5, 102), (102, 103, 101.5, 103), (103, 107, 102.5, 106),
                     (106, 106, 106, 106)]
    cfg, frame = engine(candles, {8: 100_000}, {"max_volume_share": 0.1})  # 100 a bar, bar 8 unlimited
    result = run_backtest(cfg, {SYMBOL: frame})

    (t,) = result.trades
    entry = (100 * 100 + 100 * 101 + 50 * 102) / 250  # 100.8
    assert (t.quantity, t.exit_price, t.exit_reason) == (250, 106.0, "take_profit")
    assert t.entry_price == pytest.approx(entry)
    assert (t.entry_time, t.exit_time) == (frame.index[5], frame.index[8])
    assert t.pnl == pytest.approx((106 - entry) * 250)
    assert result.final_value - 1_000_000.0 == pytest.approx(t.pnl)


def test_entry_still_partly_filled_at_the_end_is_a_trade_of_what_filled() -> None:
    candles = PRE + [(100, 101, 99.5, 101), (101, 102.5, 100.5, 102)]
    cfg, frame = engine(candles, {}, {"max_volume_share": 0.1})
    result = run_backtest(cfg, {SYMBOL: frame})

    (t,) = result.trades
    assert (t.quantity, t.exit_reason, t.exit_price) == (200, "end_of_data", 102.0)
    assert t.entry_price == pytest.approx(100.5)  # 100 at 100 and 100 at 101
    assert t.pnl == pytest.approx((102 - 100.5) * 200)
    assert result.final_value - 1_000_000.0 == pytest.approx(t.pnl)


def test_stop_capped_by_volume_closes_in_legs_that_sum_to_the_position() -> None:
    # Entry of 250 fills at once on bar 5 (large volume); the stop at 96 then takes 100 a bar.
    candles = PRE + [(100, 101, 99.5, 100), (97, 97.5, 95, 95.5), (95, 95.5, 94, 94.5), (94, 94.5, 93, 93.5),
                     (93, 93, 93, 93)]
    cfg, frame = engine(candles, {5: 100_000}, {"max_volume_share": 0.1})
    result = run_backtest(cfg, {SYMBOL: frame})

    legs = [(t.quantity, t.exit_price, t.exit_reason, t.exit_time) for t in result.trades]
    assert legs == [
        (100, 96.0, "stop_loss", frame.index[6]),  # traded through the stop
        (100, 95.0, "stop_loss", frame.index[7]),  # re-sent stop, bar opens below it
        (50, 94.0, "stop_loss", frame.index[8]),
    ]
    assert sum(t.pnl for t in result.trades) == pytest.approx(result.final_value - 1_000_000.0)


def test_rejected_entry_is_refused_and_its_stop_and_target_cancelled() -> None:
    candles = PRE + [(100, 101, 99, 100)] * 3
    cfg, frame = engine(candles, {}, {"reject_probability": 0.5, "seed": 3})  # first draw 0.086: rejected
    cerebro, _ = build_cerebro(cfg, {SYMBOL: frame})
    (strat,) = cerebro.run()

    assert strat.refusals == {"ENTRY_REJECTED": 1}
    assert strat.trade_records == []
    assert cerebro.broker.get_orders_open() == []
    assert cerebro.broker.getvalue() == 1_000_000.0


def test_per_share_commission_through_the_engine_including_the_end_of_data_exit() -> None:
    candles = PRE + [(100, 101, 99.5, 101), (101, 102, 100.5, 102)]
    cfg, frame = engine(candles, {}, {}, quantity=300, broker={"commission_per_share": 0.005})
    result = run_backtest(cfg, {SYMBOL: frame})

    (t,) = result.trades
    assert t.fees == pytest.approx(2 * 300 * 0.005)
    assert t.pnl == pytest.approx((102 - 100) * 300 - 3.0)
    assert result.final_value - 1_000_000.0 == pytest.approx(t.pnl)


def test_same_seed_same_backtest_in_advanced_mode() -> None:
    candles = PRE + [(100 + k % 3, 102 + k % 3, 99 + k % 3, 101) for k in range(12)]

    def once(seed: int) -> list[tuple[Any, ...]]:
        cfg, frame = engine(candles, {}, {"mode": "advanced", "seed": seed, "max_volume_share": 0.1})
        result = run_backtest(cfg, {SYMBOL: frame})
        return [(t.quantity, t.entry_price, t.exit_price, t.exit_time) for t in result.trades]

    assert once(1) == once(1)
    assert once(1) != once(2)

