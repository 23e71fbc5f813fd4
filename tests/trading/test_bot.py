"""BaseTradingBot: paper replay trades exactly as the backtest, pacing, stop, emergency stop, live guard."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import pandas as pd
import pytest

from trading.bot import BaseTradingBot, LiveTradingRefused, ModeUnavailable, check_live_allowed
from trading.bus import EventBus
from trading.config import BotConfig, parse_config
from trading.data import generate_ohlcv
from trading.data.replay import ReplayFeed, ReplayProducer
from trading.engine import load_bars, run_backtest
from trading.events import (
    BotStarted,
    BotStopped,
    Event,
    Halted,
    OrderCancelled,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderSubmitted,
    Resumed,
    TradeClosed,
    TradeOpened,
)


def bot_yaml(symbols: list[str], *, risk: str = "", trading_mode: str = "paper") -> str:
    return f"""
bot: {{name: replay_test, symbols: [{", ".join(symbols)}], timeframe: 1h}}
data: {{source: synthetic, bars: 400, seed: 7}}
strategy:
  name: t
  entry_mixins:
    - name: RSIOrBBEntryMixin
      parameters: {{e_rsi_period: 14, e_rsi_oversold: 35, e_bb_period: 20, e_bb_dev: 1.8, e_cooldown_bars: 2}}
  exit_mixins:
    - name: AdvancedATRExitMixin
      parameters: {{x_atr_period: 14, x_sl_multiplier: 1.5, x_tp_multiplier: 2.0, x_trailing_enabled: true}}
  position_size: 0.2
broker:
  trading_mode: {trading_mode}
  cash: 10000.0
  commission_rate: 0.001
  paper_trading_config: {{slippage_model: percent, base_slippage: 0.0005}}
risk_management: {{stop_loss_required: true{risk}}}
"""


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    df.rename_axis("datetime").to_csv(path)
    return path


def trade_rows(result) -> list[dict]:  # type: ignore[no-untyped-def]
    return [t.to_dict() for t in result.trades]


def replay(cfg: BotConfig, **kw) -> tuple[BaseTradingBot, object]:  # type: ignore[no-untyped-def]
    bot = BaseTradingBot(cfg, mode="paper", **kw)
    return bot, asyncio.run(bot.start_trading())


@pytest.fixture(scope="module")
def csvs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bars")
    a = generate_ohlcv(400, seed=11, timeframe="1h", start="2021-03-01")
    # The second symbol starts 30 bars later and has a gap: replay must align them by time.
    b = generate_ohlcv(400, seed=12, timeframe="1h", start="2021-03-01", start_price=40.0).iloc[30:]
    b = b.drop(b.index[100:104])
    return {"AAA": write_csv(a, folder / "aaa.csv"), "BBB": write_csv(b, folder / "bbb.csv")}


def test_paper_replay_at_max_speed_gives_the_backtest_trades_and_final_value(csvs, tmp_path: Path) -> None:
    cfg = parse_config(bot_yaml(["AAA"]))
    backtest = run_backtest(cfg, load_bars(cfg, data_file=csvs["AAA"]))
    _, paper = replay(cfg, replay=csvs["AAA"], speed="max", state_dir=tmp_path)
    assert len(backtest.trades) >= 5
    assert trade_rows(paper) == trade_rows(backtest)
    assert paper.final_value == backtest.final_value
    assert paper.equity.equals(backtest.equity)
    assert paper.to_dict().keys() == backtest.to_dict().keys()
    assert paper.diagnostics["mode"] == "paper"


def test_multi_symbol_paper_replay_gives_the_backtest_trades(csvs, tmp_path: Path) -> None:
    cfg = parse_config(bot_yaml(["AAA", "BBB"]))
    backtest = run_backtest(cfg, load_bars(cfg.model_copy(update={"data": _csv_data(csvs)})))
    _, paper = replay(cfg, replay=csvs, speed=None, state_dir=tmp_path)
    assert {t.symbol for t in backtest.trades} == {"AAA", "BBB"}
    assert trade_rows(paper) == trade_rows(backtest)
    assert paper.final_value == backtest.final_value


def test_multi_symbol_replay_with_max_positions_refuses_the_second_symbol(csvs, tmp_path: Path) -> None:
    cfg = parse_config(bot_yaml(["AAA", "BBB"], risk=", max_positions: 1"))
    free = run_backtest(parse_config(bot_yaml(["AAA", "BBB"])), load_bars(cfg.model_copy(update={"data": _csv_data(csvs)})))
    bus = EventBus()
    denied: list[Event] = []
    bus.subscribe(denied.append, inline=True, name="denials")
    _, paper = replay(cfg, replay=csvs, speed="max", bus=bus, state_dir=tmp_path)
    refused = paper.diagnostics["refusals"].get("MAX_POSITIONS", 0)
    assert refused > 0
    assert len(paper.trades) < len(free.trades)
    assert sum(type(e).__name__ == "RiskDenied" and e.reason == "MAX_POSITIONS" for e in denied) == refused  # type: ignore[attr-defined]
    # Never two positions at once: the trades of the two symbols do not overlap in time.
    spans = sorted((t.entry_time, t.exit_time) for t in paper.trades)
    for (_, exit_a), (entry_b, _) in itertools.pairwise(spans):
        assert entry_b > exit_a
    # The same limit gives the same trades in a backtest: risk runs in every mode.
    backtest = run_backtest(cfg, load_bars(cfg.model_copy(update={"data": _csv_data(csvs)})))
    assert trade_rows(paper) == trade_rows(backtest)


def _csv_data(csvs: dict[str, Path]):  # type: ignore[no-untyped-def]
    from trading.config import DataSection

    return DataSection(source="csv", paths={s: str(p) for s, p in csvs.items()})


class _FakeTime:
    """A test clock: `sleep` advances it instead of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _timed_feeds(fake: _FakeTime, symbols: list[str], log: list[tuple[str, float]]) -> dict[str, ReplayFeed]:
    class TimedFeed(ReplayFeed):
        def put(self, bar):  # type: ignore[no-untyped-def]
            log.append((self._name, fake.now - 1000.0))
            super().put(bar)

    feeds = {}
    for s in symbols:
        feeds[s] = TimedFeed()
        feeds[s]._name = s
    return feeds


@pytest.mark.parametrize("speed", [60.0, 3600.0, 7.5])
def test_producer_delivers_bar_k_at_k_bar_seconds_over_speed(speed: float) -> None:
    fake, log = _FakeTime(), []
    frames = {
        "AAA": generate_ohlcv(50, seed=1, timeframe="1h", start="2022-01-01"),
        "BBB": generate_ohlcv(50, seed=2, timeframe="1h", start="2022-01-01"),
    }
    feeds = _timed_feeds(fake, list(frames), log)
    producer = ReplayProducer(frames, feeds, speed=speed, clock=fake.clock, sleep=fake.sleep)
    asyncio.run(producer.run())
    for sym in frames:
        times = [t for s, t in log if s == sym]
        assert times == pytest.approx([k * 3600.0 / speed for k in range(50)])
    assert all(f.bars.qsize() == 51 for f in feeds.values())  # 50 bars and the end marker


def test_producer_follows_the_bar_times_across_a_gap_and_at_max_speed_never_waits() -> None:
    fake, log = _FakeTime(), []
    df = generate_ohlcv(10, seed=3, timeframe="30m", start="2022-01-01")
    df = df.drop(df.index[[2, 3]])
    feeds = _timed_feeds(fake, ["AAA"], log)
    asyncio.run(ReplayProducer({"AAA": df}, feeds, speed=2.0, clock=fake.clock, sleep=fake.sleep).run())
    assert [t for _, t in log] == pytest.approx([0, 900, 3600, 4500, 5400, 6300, 7200, 8100])
    fake2, log2 = _FakeTime(), []
    asyncio.run(ReplayProducer({"AAA": df}, _timed_feeds(fake2, ["AAA"], log2), speed=None,
                               clock=fake2.clock, sleep=fake2.sleep).run())
    assert len(log2) == len(df) and fake2.now == 1000.0


def test_stop_mid_replay_saves_state_and_returns_the_bars_seen(csvs, tmp_path: Path) -> None:
    cfg = parse_config(bot_yaml(["AAA"]))
    bus = EventBus()
    bot = BaseTradingBot(cfg, mode="paper", replay=csvs["AAA"], speed="max", bus=bus, state_dir=tmp_path)
    closed: list[TradeClosed] = []

    def on_closed(event: Event) -> None:
        closed.append(event)  # type: ignore[arg-type]
        if len(closed) == 3:
            bot.request_stop("operator")  # from the strategy's thread, in the middle of a bar

    bus.subscribe(on_closed, TradeClosed, inline=True, name="stopper")
    result = asyncio.run(bot.start_trading())
    full = load_bars(cfg, data_file=csvs["AAA"])["AAA"]
    assert 0 < result.bars < len(full)
    assert len(result.equity) == result.bars
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["stop_reason"] == "operator" == result.diagnostics["stop_reason"]
    assert state["last_bar_time"] == {"AAA": pd.Timestamp(result.end).isoformat()}
    # The bars seen are exactly a backtest over the same bars, trade for trade.
    backtest = run_backtest(cfg, {"AAA": full.iloc[: result.bars]})
    assert trade_rows(result) == trade_rows(backtest)
    assert result.final_value == backtest.final_value


@pytest.mark.parametrize("cancel", [False, True])
def test_stop_with_a_position_open_keeps_or_cancels_its_orders_as_configured(csvs, tmp_path: Path, cancel: bool) -> None:
    cfg = parse_config(bot_yaml(["AAA"]))
    bus = EventBus()
    bot = BaseTradingBot(cfg, mode="paper", replay=csvs["AAA"], speed="max", bus=bus, state_dir=tmp_path,
                         cancel_on_stop=cancel)
    bus.subscribe(lambda e: bot.request_stop(), TradeOpened, inline=True, name="stopper")
    result = asyncio.run(bot.start_trading())
    state = json.loads((tmp_path / "state.json").read_text())
    [position] = state["positions"]
    assert position["symbol"] == "AAA" and position["quantity"] > 0
    # The result still values the open position at the last close, as a backtest does.
    [trade] = result.trades
    assert trade.exit_reason == "end_of_data" and trade.quantity == position["quantity"]
    if cancel:
        assert state["open_orders"] == [] and state["cancelled_on_stop"] == 2
    else:
        assert state["cancelled_on_stop"] == 0
        # From the OrderManager: a stop's trigger is its stop_price, a limit's its price; both
        # legs protect the whole position, belong to its entry and cancel each other.
        sl, tp = sorted(state["open_orders"], key=lambda o: o["type"] != "stop")
        assert (sl["type"], sl["stop_price"], tp["type"], tp["price"]) == (
            "stop", position["stop"], "limit", position["take_profit"])
        assert sl["quantity"] == tp["quantity"] == position["quantity"]
        assert sl["parent_id"] == tp["parent_id"] == position["trade_id"]
        assert (sl["oco_id"], tp["oco_id"]) == (tp["client_order_id"], sl["client_order_id"])


def test_emergency_stop_cancels_orders_and_flattens_with_reason_emergency_stop(csvs, tmp_path: Path) -> None:
    cfg = parse_config(bot_yaml(["AAA"]))
    bus = EventBus()
    bot = BaseTradingBot(cfg, mode="paper", replay=csvs["AAA"], speed="max", bus=bus, state_dir=tmp_path)
    events: list[Event] = []

    def on_event(event: Event) -> None:
        events.append(event)
        if isinstance(event, TradeOpened):
            bot.request_emergency_stop()

    bus.subscribe(on_event, inline=True, name="watcher")
    result = asyncio.run(bot.start_trading())
    [trade] = result.trades  # the one position was closed and nothing opened after it
    assert trade.exit_reason == "emergency_stop"
    assert trade.bars_held == 1  # market exit at the open after the bar the entry filled on
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["positions"] == [] and state["open_orders"] == []
    assert state["halted"] is True and state["stop_reason"] == "emergency_stop"
    assert pd.Timestamp(state["last_bar_time"]["AAA"]) == pd.Timestamp(trade.exit_time)
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "BotStarted" and kinds[-1] == "BotStopped"
    assert "Halted" in kinds and kinds.count("TradeClosed") == 1


def test_bot_publishes_started_trades_and_stopped_and_backtest_mode_is_the_backtest(csvs) -> None:
    cfg = parse_config(bot_yaml(["AAA"]))
    frames = load_bars(cfg, data_file=csvs["AAA"])
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe(seen.append, BotStarted, BotStopped, TradeOpened, TradeClosed, inline=True, name="all")
    bot = BaseTradingBot(cfg, frames=frames, bus=bus)
    result = asyncio.run(bot.start_trading())
    assert trade_rows(result) == trade_rows(run_backtest(cfg, frames))
    assert isinstance(seen[0], BotStarted) and seen[0].mode == "backtest"
    assert isinstance(seen[-1], BotStopped) and seen[-1].reason == "end_of_data"
    # Trade events come from the bot's PositionManager: one TradeClosed per position closed by
    # a fill (this config closes each in one leg); a position marked at the last close
    # (end_of_data) is still open, so it has a TradeOpened and no TradeClosed.
    closed = [e for e in seen if isinstance(e, TradeClosed)]
    assert [float(e.exit_price) for e in closed] == [t.exit_price for t in sorted(
        result.trades, key=lambda t: (t.exit_time, t.entry_time)) if t.exit_reason != "end_of_data"]
    still_open = len(bot.position_manager.open_positions())
    assert sum(isinstance(e, TradeOpened) for e in seen) == len(closed) + still_open


def test_live_refuses_unless_the_config_says_live_and_the_user_confirms() -> None:
    paper_cfg = parse_config(bot_yaml(["AAA"]))
    with pytest.raises(LiveTradingRefused, match="broker.trading_mode: live"):
        check_live_allowed(paper_cfg, confirm_live=True)
    live_cfg = parse_config(bot_yaml(["AAA"], trading_mode="live"))
    with pytest.raises(LiveTradingRefused, match="--confirm-live"):
        check_live_allowed(live_cfg, confirm_live=False)
    with pytest.raises(LiveTradingRefused, match="--confirm-live"):
        asyncio.run(BaseTradingBot(live_cfg, mode="live").start_trading())
    # Confirmed, but broker.type paper is the simulator: live trading needs a venue.
    with pytest.raises(ModeUnavailable, match="broker.type is paper"):
        asyncio.run(BaseTradingBot(live_cfg, mode="live", confirm_live=True).start_trading())


def test_paper_without_replay_names_what_is_missing() -> None:
    cfg = parse_config(bot_yaml(["AAA"]))
    with pytest.raises(ModeUnavailable, match=r"broker\.ccxt\.exchange .*--replay"):
        asyncio.run(BaseTradingBot(cfg, mode="paper").start_trading())


def test_mode_comes_from_the_config_unless_overridden() -> None:
    cfg = parse_config(bot_yaml(["AAA"]).replace("timeframe: 1h}", "timeframe: 1h, mode: paper}"))
    assert BaseTradingBot(cfg).mode == "paper"
    assert BaseTradingBot(cfg, mode="backtest").mode == "backtest"
    assert BaseTradingBot(parse_config(bot_yaml(["AAA"]))).mode == "backtest"


def test_order_events_follow_every_order_from_submission_to_fill_with_stable_ids(csvs) -> None:
    cfg = parse_config(bot_yaml(["AAA"]))

    def run() -> tuple[list[Event], object]:
        bus, seen = EventBus(), []
        bus.subscribe(seen.append, inline=True, name="all")
        result = asyncio.run(BaseTradingBot(cfg, mode="paper", replay=csvs["AAA"], speed="max", bus=bus).start_trading())
        return seen, result

    events, result = run()
    submitted = {e.client_order_id: e for e in events if isinstance(e, OrderSubmitted)}
    fills = [e for e in events if isinstance(e, (OrderFilled, OrderPartiallyFilled))]
    assert fills and all(f.client_order_id in submitted for f in fills)
    done = [e for e in events if isinstance(e, (OrderFilled, OrderCancelled, OrderRejected))]
    assert len({e.client_order_id for e in done}) == len(done)  # one final event per order
    entries = [f for f in fills if submitted[f.client_order_id].tag == "entry"]
    assert [float(f.last_price) for f in entries] == [t.entry_price for t in result.trades][: len(entries)]
    exits = {float(f.last_price) for f in fills if submitted[f.client_order_id].tag != "entry"}
    assert {t.exit_price for t in result.trades if t.exit_reason != "end_of_data"} <= exits
    # A replay of the same bars gives the same client order ids.
    again, _ = run()
    assert [e.client_order_id for e in again if isinstance(e, OrderSubmitted)] == list(submitted)


def test_a_drawdown_halt_on_the_bar_clock_refuses_later_entries_in_backtest_and_replay(csvs) -> None:
    cfg = parse_config(bot_yaml(["AAA"], risk=", max_drawdown: 0.002"))
    free = run_backtest(parse_config(bot_yaml(["AAA"])), load_bars(cfg, data_file=csvs["AAA"]))
    halted = run_backtest(cfg, load_bars(cfg, data_file=csvs["AAA"]))
    assert halted.diagnostics["refusals"].get("MAX_DRAWDOWN", 0) > 0
    # Trades up to the halt are the same; none opens after the equity fell 0.2 % from its peak.
    n = len(halted.trades)
    assert 0 < n < len(free.trades)
    assert trade_rows(halted)[: n - 1] == trade_rows(free)[: n - 1]
    peak = halted.equity.cummax()
    breach = halted.equity.index[((peak - halted.equity) / peak >= 0.002).to_numpy()][0]
    # The halt applies from the decisions of the bar after the breach: a fill one bar later at most.
    assert all(t.entry_time <= breach + pd.Timedelta(hours=1) for t in halted.trades)
    _, paper = replay(cfg, replay=csvs["AAA"], speed="max")
    assert trade_rows(paper) == trade_rows(halted)


def test_trade_closed_carries_the_reason_of_the_order_that_flattened_the_position(csvs) -> None:
    # Partial fills close some positions in several legs (several result rows, one TradeClosed).
    yaml = bot_yaml(["AAA"]).replace(
        "paper_trading_config: {slippage_model: percent, base_slippage: 0.0005}",
        "paper_trading_config: {mode: advanced, partial_fill_probability: 0.3, reject_probability: 0.0, seed: 5}")
    cfg = parse_config(yaml)
    bus, closed = EventBus(), []
    bus.subscribe(closed.append, TradeClosed, inline=True, name="closed")
    result = asyncio.run(BaseTradingBot(cfg, mode="paper", replay=csvs["AAA"], speed="max", bus=bus).start_trading())
    trips: dict[object, list] = {}
    for t in result.trades:
        trips.setdefault(t.entry_time, []).append(t)
    done = [legs for legs in trips.values() if legs[-1].exit_reason != "end_of_data"]
    assert any(len(legs) > 1 for legs in done) and len({legs[-1].exit_reason for legs in done}) >= 3
    assert [(e.ts, e.exit_reason, e.entry_tag) for e in closed] == [
        (legs[-1].exit_time, legs[-1].exit_reason, legs[0].entry_tag) for legs in done]


# --------------------------------------------------------------------------- operator controls


def _events_of_a_replay(cfg: BotConfig, csvs, hook=None) -> tuple[BaseTradingBot, object, list[Event]]:  # type: ignore[no-untyped-def]
    """Replay AAA and BBB at max speed; `hook(bot, event)` runs on the strategy thread for every event."""
    bus, seen = EventBus(), []
    bot = BaseTradingBot(cfg, mode="paper", replay=csvs, speed="max", bus=bus)

    def on_event(event: Event) -> None:
        seen.append(event)
        if hook is not None:
            hook(bot, event)

    bus.subscribe(on_event, inline=True, name="watch")
    result = asyncio.run(bot.start_trading())
    return bot, result, seen


def test_stop_entries_refuses_every_new_entry_until_resume_and_exits_keep_working(csvs) -> None:
    cfg = parse_config(bot_yaml(["AAA", "BBB"]))
    _, free, free_events = _events_of_a_replay(cfg, csvs)

    def opened(evs: list[Event]) -> list[TradeOpened]:
        return [e for e in evs if isinstance(e, TradeOpened)]

    # The first AAA position during which the free run opened a BBB position.
    closes = {e.trade_id: e.ts for e in free_events if isinstance(e, TradeClosed)}
    window = next((a.ts, closes[a.trade_id]) for a in opened(free_events) if a.symbol == "AAA"
                  and a.trade_id in closes
                  and any(b.symbol == "BBB" and a.ts < b.ts <= closes[a.trade_id] for b in opened(free_events)))
    p, r = window

    def operator(bot: BaseTradingBot, event: Event) -> None:
        # Pause when that AAA position opens, resume when it closes (both on the strategy thread).
        if isinstance(event, TradeOpened) and event.symbol == "AAA" and event.ts == p:
            bot.request_stop_entries()
        elif isinstance(event, TradeClosed) and event.symbol == "AAA" and event.ts == r:
            bot.request_resume()

    bot, paused, events = _events_of_a_replay(cfg, csvs, operator)
    # Up to the pause both runs are one; while paused no entry opened, the open AAA position
    # still closed by its own exit, and entries came back after the resume.
    assert [e for e in events if isinstance(e, TradeOpened) and e.ts <= p] == [
        e for e in opened(free_events) if e.ts <= p]
    assert not [e for e in opened(events) if p < e.ts <= r]
    assert any(isinstance(e, TradeClosed) and e.symbol == "AAA" and e.ts == r for e in events)
    assert any(e.ts > r for e in opened(events))
    told = [(type(e).__name__, e.reason, e.ts) for e in events if isinstance(e, (Halted, Resumed))]  # type: ignore[attr-defined]
    # Told at the next bar's decisions, on the bar clock.
    assert told == [("Halted", "ENTRIES_PAUSED", p), ("Resumed", "RESUME_COMMAND", r)]
    assert paused.diagnostics["refusals"] == free.diagnostics["refusals"]  # a pause is not a refusal
    assert not bot._control.entries_paused


def test_resume_lifts_a_drawdown_halt_and_entries_continue(csvs) -> None:
    cfg = parse_config(bot_yaml(["AAA"], risk=", max_drawdown: 0.002"))
    halted = run_backtest(cfg, load_bars(cfg, data_file=csvs["AAA"]))
    bus, seen = EventBus(), []
    bot = BaseTradingBot(cfg, mode="paper", replay=csvs["AAA"], speed="max", bus=bus)

    def on_event(event: Event) -> None:
        seen.append(event)
        if isinstance(event, Halted):
            bot.request_resume()  # the operator answers every halt with /start

    bus.subscribe(on_event, inline=True, name="operator")
    resumed = asyncio.run(bot.start_trading())
    halts = [e for e in seen if isinstance(e, Halted)]
    resumes = [e for e in seen if isinstance(e, Resumed)]
    assert halts and all(h.reason == "MAX_DRAWDOWN" for h in halts)
    # Each halt is lifted at the next bar, through the RiskController's resume command.
    assert [r.reason for r in resumes] == ["RESUME_COMMAND"] * len(halts)
    assert all(r.ts - h.ts == pd.Timedelta(hours=1) for h, r in zip(halts, resumes, strict=True))
    assert resumed.diagnostics["refusals"].get("MAX_DRAWDOWN", 0) == 0
    assert len(resumed.trades) > len(halted.trades)
    assert trade_rows(resumed)[: len(halted.trades) - 1] == trade_rows(halted)[: len(halted.trades) - 1]


def test_force_exit_closes_exactly_that_symbol_at_the_next_open_and_keeps_trading(csvs) -> None:
    cfg = parse_config(bot_yaml(["AAA", "BBB"]))
    asked: list[tuple[TradeOpened, str]] = []
    open_now: dict[str, str] = {}  # symbol -> trade id

    def operator(bot: BaseTradingBot, event: Event) -> None:
        # Close AAA as soon as a position is open in both symbols.
        if isinstance(event, TradeOpened):
            open_now[event.symbol] = event.trade_id
        elif isinstance(event, TradeClosed):
            open_now.pop(event.symbol, None)
        if not asked and isinstance(event, TradeOpened) and len(open_now) == 2:
            asked.append((event, open_now["AAA"]))
            bot.request_force_exit("AAA")

    _, result, events = _events_of_a_replay(cfg, csvs, operator)
    [(ask, aaa_trade)] = asked
    forced = [t for t in result.trades if t.exit_reason == "force_exit"]
    [trade] = forced
    assert trade.symbol == "AAA"
    # Asked on the bar the position opened: a market exit from that bar's close, filled at the next open.
    assert pd.Timestamp(trade.exit_time) == pd.Timestamp(ask.ts) + pd.Timedelta(hours=1)
    bbb_open = [t for t in result.trades if t.symbol == "BBB" and t.entry_time <= ask.ts < t.exit_time]
    assert bbb_open and bbb_open[0].exit_reason != "force_exit"  # BBB's position was left alone
    closed = [e for e in events if isinstance(e, TradeClosed) and e.exit_reason == "force_exit"]
    assert [(e.symbol, e.trade_id, e.ts) for e in closed] == [("AAA", aaa_trade, trade.exit_time)]
    # Nothing halted: AAA traded again after the forced exit, and no entry was refused for it.
    assert any(t.symbol == "AAA" and t.entry_time > trade.exit_time for t in result.trades)
    assert not any(isinstance(e, Halted) for e in events)


def test_force_exit_of_every_symbol_and_of_an_unknown_one(csvs) -> None:
    cfg = parse_config(bot_yaml(["AAA", "BBB"]))
    asked: list[Event] = []

    def operator(bot: BaseTradingBot, event: Event) -> None:
        if not asked and isinstance(event, TradeOpened):
            asked.append(event)
            bot.request_force_exit(None)

    bot, result, _ = _events_of_a_replay(cfg, csvs, operator)
    forced = [t for t in result.trades if t.exit_reason == "force_exit"]
    assert [t.symbol for t in forced] == [asked[0].symbol]  # the only position open then
    assert len(result.trades) > 1
    with pytest.raises(ValueError, match="does not trade 'CCC'"):
        bot.request_force_exit("CCC")


def test_telegram_commands_reach_the_bot_controls() -> None:
    from datetime import UTC, datetime

    from notification.commands import CommandRouter
    from notification.control import BotControl, EntryControl, ForceExitControl
    from trading.status import StatusSnapshot

    bot = BaseTradingBot(parse_config(bot_yaml(["AAA", "BBB"])), mode="paper")
    assert isinstance(bot, BotControl) and isinstance(bot, EntryControl) and isinstance(bot, ForceExitControl)
    router = CommandRouter(status=lambda: StatusSnapshot(bot="b"), control=bot, allowed=[1],
                           now=lambda: datetime.now(UTC))
    assert "No new entries" in (router.handle(1, "/stopentry") or "")
    assert bot._control.entries_paused
    assert "allowed again" in (router.handle(1, "/start") or "")
    assert not bot._control.entries_paused and bot._control.resume.is_set()
    assert router.handle(1, "/forceexit all") == "Closing every position at the next bar."
    assert list(bot._control.force_exits) == [None] and not bot._control.emergency.is_set()
    # A live bot at a venue acts between bars (BotStrategy._between_bars), and says so.
    live = BaseTradingBot(parse_config(bot_yaml(["AAA", "BBB"])), mode="live")
    assert (bot.exits_act, live.exits_act) == ("at the next bar", "now")
    live_router = CommandRouter(status=lambda: StatusSnapshot(bot="b"), control=live, allowed=[1],
                                now=lambda: datetime.now(UTC))
    assert live_router.handle(1, "/forceexit all") == "Closing every position now."
