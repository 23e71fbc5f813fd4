"""Scale-in (`strategy.scale_in`): a repeated entry signal adds to the open position.

Hand-written candles (layout in tests/trading/order_scenarios.py): an entry signalled at bar
4 fills at bar 5's open (100), the stop is 96 and the target 106 (long). A second signal at
bar 6 adds at bar 7's open.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.strategy.conftest import SYMBOL, make_config
from tests.trading.order_scenarios import (
    NO_PROTECTION,
    PRE,
    history,
    mirror,
    of,
    run_scenario,
    scenario_config,
    submitted,
)
from trading.bot import BaseTradingBot
from trading.bus import EventBus
from trading.config import ScaleInConfig
from trading.data import generate_ohlcv
from trading.events import (
    OrderFilled,
    OrderModified,
    RiskDenied,
    TradeClosed,
    TradeOpened,
    encode_event,
)
from trading.exceptions import ConfigError
from trading.positions import PositionManager

# Entry at 100 (bar 5), add at 101.5 (bar 7), target 106 on bar 8.
CANDLES = PRE + [(100, 101, 99.5, 100.5), (100.5, 101.5, 100, 101), (101.5, 102, 101, 101.8),
                 (101.8, 106.5, 101.5, 106), (106, 106, 106, 106)]


def candles_for(side: str) -> list:
    return CANDLES if side == "long" else mirror(CANDLES)


@pytest.mark.parametrize("side", ["long", "short"])
def test_an_add_averages_the_entry_and_resizes_stop_and_target_by_amending_them(side: str) -> None:
    sign = 1 if side == "long" else -1
    cfg = scenario_config(side=side, fire_at=(4, 6), strategy={"scale_in": {"max_entries": 2}})

    strat, events, frame = run_scenario(cfg, candles_for(side))

    (entry,), (add,) = submitted(events, "entry"), submitted(events, "add")
    assert add.parent_id == entry.client_order_id and add.ts == frame.index[6] and add.quantity == 1
    avg = 100 + sign * 0.75  # (100 + 101.5) / 2, mirrored for the short
    (trade,) = strat.trade_records
    assert (trade.quantity, trade.entry_time, trade.exit_reason) == (2, frame.index[5], "take_profit")
    assert trade.entry_price == pytest.approx(avg)
    assert trade.gross_pnl == pytest.approx(2 * sign * (trade.exit_price - avg)) == pytest.approx(10.5)
    for leg in (*submitted(events, "sl"), *submitted(events, "tp")):
        (mod,) = of(events, OrderModified, leg.client_order_id)  # one amend: the size, at the add signal
        assert (mod.quantity, mod.ts) == (2, frame.index[6])
        assert (mod.price, mod.stop_price) == (leg.price, leg.stop_price)
    (opened,), (closed,) = of(events, TradeOpened), of(events, TradeClosed)
    assert opened.trade_id == closed.trade_id == str(entry.client_order_id)
    assert (closed.quantity, float(closed.entry_price), closed.realised_pnl) == (2, pytest.approx(avg), 10.5)


def test_a_partial_target_is_resized_to_its_fraction_of_the_position_once_the_add_fills() -> None:
    # Two units, half at the partial target 103 (1.5 ATR); the add of two fills at bar 7.
    cfg = scenario_config(fire_at=(4, 6), quantity=2, strategy={"scale_in": {"max_entries": 2}},
                          exit_params={"x_partial_tp_multiplier": 1.5, "x_partial_fraction": 0.5})

    strat, events, frame = run_scenario(cfg, CANDLES)

    (ptp,) = submitted(events, "ptp")
    assert [(m.quantity, m.ts) for m in of(events, OrderModified, ptp.client_order_id)] == [(2, frame.index[7])]
    legs = [(t.quantity, t.exit_price, t.exit_reason) for t in strat.trade_records]
    assert legs == [(2, 103.0, "partial_take_profit"), (2, 106.0, "take_profit")]
    assert all(t.entry_price == pytest.approx(100.75) for t in strat.trade_records)


def test_without_scale_in_the_second_signal_does_not_add() -> None:
    strat, events, _ = run_scenario(scenario_config(fire_at=(4, 6)), CANDLES)

    assert submitted(events, "add") == [] and [d[2] for d in strat.decisions] == ["entry"]
    assert strat.refusals == {}  # the rule is not even asked while the position is open
    (trade,) = strat.trade_records
    assert (trade.quantity, trade.entry_price, trade.gross_pnl) == (1, 100.0, 6.0)


def test_an_add_beyond_max_entries_is_refused_with_the_position_managers_reason() -> None:
    # Signals at 6 (the add) and 7 (a third entry, over max_entries: 2).
    cfg = scenario_config(fire_at=(4, 6, 7), strategy={"scale_in": {"max_entries": 2}})

    strat, events, _ = run_scenario(cfg, CANDLES)

    assert strat.refusals == {"MAX_ENTRIES": 1}
    assert len(submitted(events, "add")) == 1 and strat.trade_records[0].quantity == 2
    # What the PositionManager answers after the entry and after the add (its fills replayed).
    replay = PositionManager()
    answers = []
    for f in of(events, OrderFilled)[:2]:
        replay.apply_fill(f.symbol, f.side, f.last_qty, f.last_price, ts=f.ts, order_id=str(f.client_order_id))
        answers.append(replay.can_enter(SYMBOL, f.side, scale_in=True, max_entries=2).reason)
    assert answers == [None, "MAX_ENTRIES"] and replay.position(SYMBOL).entries == 2
    assert replay.can_enter(SYMBOL, of(events, OrderFilled)[0].side).reason == "DUPLICATE_ENTRY"


def test_min_bars_between_spaces_the_adds() -> None:
    cfg = scenario_config(fire_at=(4, 5, 6), strategy={"scale_in": {"max_entries": 3, "min_bars_between": 2}})

    _, events, frame = run_scenario(cfg, CANDLES)

    # Bar 5 is one bar after the entry signal: too soon; bar 6 is two: the add goes out.
    assert [e.ts for e in submitted(events, "add")] == [frame.index[6]]


def test_an_add_that_would_exceed_max_position_size_is_denied_with_a_risk_event() -> None:
    # One unit at ~100 is 1 % of 10 000; two would be 2 %, over the 1.5 % cap.
    cfg = scenario_config(fire_at=(4, 6), strategy={"scale_in": {"max_entries": 2}},
                          risk_management={"max_position_size": 0.015})

    strat, events, _ = run_scenario(cfg, CANDLES)

    assert strat.refusals == {"MAX_POSITION_SIZE": 1} and submitted(events, "add") == []
    (denied,) = of(events, RiskDenied)
    assert (denied.reason, denied.quantity) == ("MAX_POSITION_SIZE", 1)
    assert strat.trade_records[0].quantity == 1


def test_risk_per_trade_sizes_the_add_from_the_distance_to_the_current_stop() -> None:
    # Entry risk 1 x (100 - 96) = 4 is within 0.045 % of 10 000 (4.5); the add at the bar-6
    # close 101 risks 5 per unit, so it is cut to equity x 0.00045 / 5.
    cfg = scenario_config(fire_at=(4, 6), strategy={"scale_in": {"max_entries": 2}},
                          risk_management={"risk_per_trade": 0.00045})

    strat, events, _ = run_scenario(cfg, CANDLES)

    (add,) = submitted(events, "add")
    equity = 10_000 - 100 + 101  # cash after the entry + the unit marked at bar 6's close
    assert float(add.quantity) == pytest.approx(equity * 0.00045 / (101 - 96))
    assert strat.trade_records[0].quantity == pytest.approx(1 + float(add.quantity))


def test_an_entry_without_a_stop_is_refused_under_risk_per_trade() -> None:
    cfg = scenario_config(exit_mixin=NO_PROTECTION, risk_management={"risk_per_trade": 0.01})

    strat, events, _ = run_scenario(cfg, CANDLES)

    assert strat.refusals == {"RISK_PER_TRADE": 1} and strat.trade_records == []
    assert [e.reason for e in of(events, RiskDenied)] == ["RISK_PER_TRADE"]


def test_an_add_filled_after_the_stop_on_a_gap_is_closed_at_the_next_open() -> None:
    # The add is sent at bar 6; bar 7 opens at 95, below the stop 96. The broker tries the
    # resting stop first: it closes the one unit held, then the add opens a unit of its own,
    # which the strategy closes at bar 8's open (94.8) for the reason that closed the trade.
    candles = PRE + [(100, 101, 99.5, 100.5), (100.5, 101.5, 100, 101), (95, 95.5, 94, 94.5),
                     (94.8, 95, 94, 94.5), (94.5, 94.5, 94.5, 94.5)]
    cfg = scenario_config(fire_at=(4, 6), strategy={"scale_in": {"max_entries": 2}})

    strat, events, frame = run_scenario(cfg, candles)

    (sl,), (add,) = submitted(events, "sl"), submitted(events, "add")
    # The stop was resized to 2 for the add, then cut to the one unit it could close.
    assert [m.quantity for m in of(events, OrderModified, sl.client_order_id)] == [2, 1]
    assert history(events, add.client_order_id)[-1] == "OrderFilled"
    legs = [(t.entry_price, t.exit_price, t.quantity, t.exit_reason, t.exit_time) for t in strat.trade_records]
    assert legs == [(100.0, 95.0, 1, "stop_loss", frame.index[7]), (95.0, 94.8, 1, "stop_loss", frame.index[8])]
    assert [c.quantity for c in of(events, TradeClosed)] == [1, 1]
    assert strat.position_manager.open_positions() == []


def test_scale_in_config_errors_name_the_value() -> None:
    def bad(scale_in: dict) -> str:
        with pytest.raises(ConfigError) as err:
            make_config({"strategy": {"scale_in": scale_in}})
        return str(err.value)

    assert "max_entries must be at least 2" in bad({"max_entries": 1}) and "got 1" in bad({"max_entries": 1})
    assert "size_fraction" in bad({"max_entries": 2, "size_fraction": 1.5}) and "1.5" in bad(
        {"max_entries": 2, "size_fraction": 1.5})
    assert "did you mean 'min_bars_between'" in bad({"max_entries": 2, "min_bars": 2})
    assert "max_entries" in bad({})
    assert ScaleInConfig(max_entries=3).size_fraction == 1.0


def test_backtest_and_paper_replay_scale_in_the_same_way(tmp_path: Path) -> None:
    cfg = make_config({
        "bot": {"symbols": ["AAA"]},
        "strategy": {"direction": "both", "entry_mixins": [{"name": "RSIOrBBEntryMixin", "parameters": {
            "e_rsi_oversold": 40, "e_rsi_overbought": 60, "e_bb_dev": 1.5}}],
            "exit_mixins": [{"name": "AdvancedATRExitMixin", "parameters": {"x_sl_multiplier": 2.0}}],
            "sizing": {"method": "percent_equity", "percent": 0.1}, "scale_in": {"max_entries": 3}},
        "broker": {"commission_rate": 0.001, "paper_trading_config": {
            "mode": "advanced", "base_slippage": 0.0005, "partial_fill_probability": 0.2, "seed": 9}},
    })
    bars = generate_ohlcv(600, seed=21, timeframe="1h", start="2022-01-01")
    csv = tmp_path / "aaa.csv"
    bars.rename_axis("datetime").to_csv(csv)

    def run(**kw):  # type: ignore[no-untyped-def]
        bus, events = EventBus(), []
        bus.subscribe(events.append, inline=True, name="all")
        bot = BaseTradingBot(cfg, bus=bus, **kw)
        return bot, asyncio.run(bot.start_trading()), events

    bot_b, backtest, ev_b = run(frames={"AAA": bars}, mode="backtest")
    bot_p, paper, ev_p = run(mode="paper", replay=csv, speed="max")

    adds = [o for o in bot_b.order_manager.orders() if o.tag == "add" and o.filled_qty > 0]
    assert len(adds) >= 3
    assert [t.to_dict() for t in paper.trades] == [t.to_dict() for t in backtest.trades]
    assert paper.final_value == backtest.final_value
    # The same orders under the same ids, and the same event stream (bot start/stop aside),
    # up to the last bar: only the backtest knows it is the last and sends nothing on it.
    last = bars.index[-1]

    def before_last(events: list) -> list:
        # venue_order_id is the broker's own order number: it counts across runs in a process.
        return [{**encode_event(e), "venue_order_id": None} for e in events[1:-1] if e.ts < last]

    assert before_last(ev_p) == before_last(ev_b)
    ids = [o.client_order_id for o in bot_p.order_manager.orders() if o.created_ts < last]
    assert ids == [o.client_order_id for o in bot_b.order_manager.orders()]


def test_the_book_spec_carries_the_scale_in_rule_and_base_exports_the_same_class() -> None:
    from strategy import base, book

    assert base.StrategySpec is book.StrategySpec
    on = book.StrategySpec.from_config(scenario_config(strategy={"scale_in": {"max_entries": 3}}))
    off = book.StrategySpec.from_config(scenario_config())
    assert on.scale_in == ScaleInConfig(max_entries=3) and off.scale_in is None
