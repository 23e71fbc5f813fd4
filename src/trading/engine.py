"""The backtest engine: bars + BotConfig -> one backtrader Cerebro -> BacktestResult."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import backtrader as bt
import numpy as np
import pandas as pd

from strategy.base import BaseStrategy, StrategySpec
from trading.brokers.factory import BrokerFactory
from trading.brokers.sim import SimBroker
from trading.config import BotConfig
from trading.data.feed import NumpyFeed
from trading.exceptions import ConfigError, DataValidationError
from trading.results import BacktestResult, trades_frame

if TYPE_CHECKING:
    from trading.order_logger import OrderLogger

Progress = Callable[[int, int], None]


def load_bars(
    cfg: BotConfig,
    *,
    data_file: str | Path | None = None,
    start: str | None = None,
    end: str | None = None,
) -> dict[str, pd.DataFrame]:
    """Return the canonical OHLCV frame of every symbol, cut to [start, end].

    `data_file` (the CLI's --data) overrides the config for a single-symbol bot. CSV data
    finer than the bot's timeframe is resampled; coarser data is an error.
    """
    from trading.data import generate_ohlcv, load_csv, resample_ohlcv
    from trading.data.timeframes import timeframe_seconds

    symbols = cfg.bot.symbols
    frames: dict[str, pd.DataFrame] = {}
    paths: Mapping[str, str] | None = None
    if data_file is not None:
        if len(symbols) != 1:
            raise ConfigError("--data", [f"--data gives one file but the bot trades {len(symbols)} symbols"])
        paths = {symbols[0]: str(data_file)}
    elif cfg.data.source == "csv":
        paths = cfg.data.paths or {symbols[0]: cfg.data.path}  # type: ignore[dict-item]
        missing = [s for s in symbols if s not in paths]
        if missing:
            raise ConfigError("data.paths", [f"no CSV file given for symbol(s): {', '.join(missing)}"])

    for sym in symbols:
        if paths is not None:
            df = load_csv(paths[sym], tz=cfg.data.tz)
            df = _to_timeframe(df, cfg.bot.timeframe, paths[sym], timeframe_seconds, resample_ohlcv)
        else:
            df = generate_ohlcv(
                cfg.data.bars,
                seed=cfg.data.seed,
                timeframe=cfg.bot.timeframe,
                start=cfg.data.start or "2020-01-01",
                symbol=sym,
            )
        lo, hi = start or (cfg.data.start if paths is not None else None), end or cfg.data.end
        cut = _cut(df, lo, hi)
        if len(cut) < 2:
            covers = f"{df.index[0]:%Y-%m-%d %H:%M} .. {df.index[-1]:%Y-%m-%d %H:%M}" if len(df) else "nothing"
            raise DataValidationError(
                sym, [f"fewer than 2 bars from {lo or 'the first bar'} to {hi or 'the last bar'}; the data covers {covers}"]
            )
        frames[sym] = cut
    return frames


def _to_timeframe(df, timeframe, source, timeframe_seconds, resample_ohlcv) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    if len(df) < 2:
        return df
    spacing = pd.Series(df.index).diff().dropna().dt.total_seconds()
    step = float(spacing.mode().iloc[0])
    want = timeframe_seconds(timeframe)
    if step == want or (want >= 86_400 and step >= 86_400 and step <= want):
        return df
    if step > want:
        raise DataValidationError(
            str(source), [f"bars are {int(step)} s apart, coarser than the bot timeframe {timeframe}"]
        )
    return resample_ohlcv(df, timeframe)


def _cut(df: pd.DataFrame, start: str | None, end: str | None) -> pd.DataFrame:
    if start:
        df = df[df.index >= _ts(start)]
    if end:
        e = _ts(end)
        # A bare date means the whole day.
        if len(end) <= 10:
            e = e + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
        df = df[df.index <= e]
    return df


def _ts(value: str) -> pd.Timestamp:
    t = pd.Timestamp(value)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def run_backtest(
    cfg: BotConfig,
    frames: Mapping[str, pd.DataFrame] | None = None,
    *,
    progress: Progress | None = None,
) -> BacktestResult:
    """Run the bot over historical bars and return trades, equity and metrics."""
    frames = dict(frames) if frames is not None else load_bars(cfg)
    cerebro, _ = build_cerebro(cfg, frames, progress=progress)
    strat: BaseStrategy = cerebro.run()[0]
    return collect_result(cfg, frames, cerebro, strat)


def collect_result(
    cfg: BotConfig, frames: Mapping[str, pd.DataFrame], cerebro: bt.Cerebro, strat: BaseStrategy
) -> BacktestResult:
    """Build the result of a finished run over `frames` (every mode: one JSON contract)."""
    from trading.analytics.metrics import compute_metrics

    times = _nums_to_times(strat.equity_times)
    equity = pd.Series(strat.equity_values, index=times, name="equity", dtype="float64")
    final_value = float(cerebro.broker.getvalue()) + strat.end_adjustment
    if len(equity):
        equity.iloc[-1] = final_value
    trades = sorted(strat.trade_records, key=lambda t: (t.exit_time, t.symbol, t.trade_id))
    for n, t in enumerate(trades, start=1):
        t.trade_id = n
    metrics = compute_metrics(
        trades_frame(trades), equity, cfg.broker.cash, periods_per_year=cfg.analytics.periods_per_year
    )
    first = min(df.index[0] for df in frames.values())
    last = max(df.index[-1] for df in frames.values())
    return BacktestResult(
        name=cfg.bot.name,
        symbols=list(frames),
        timeframe=cfg.bot.timeframe,
        start=first.to_pydatetime(),
        end=last.to_pydatetime(),
        initial_cash=cfg.broker.cash,
        final_value=final_value,
        trades=trades,
        equity=equity,
        metrics=metrics,
        config=cfg.redacted(),
        bars=int(sum(len(df) for df in frames.values())),
        prices=frames,
        diagnostics={
            "refusals": dict(sorted(strat.refusals.items())),
            "decisions": len(strat.decisions),
            "run_at": datetime.now(UTC).isoformat(),
            **_mixin_diagnostics(strat),
        },
    )


def _mixin_diagnostics(strat: BaseStrategy) -> dict[str, dict[str, dict[str, object]]]:
    """Collect the mixins' own summaries as {"mixins": {symbol: {mixin name: ...}}}, if any."""
    out: dict[str, dict[str, object]] = {}
    for book in strat.books:
        for m in (*book.entries, *book.exits):
            d = m.diagnostics()
            if d is not None:
                out.setdefault(book.symbol, {})[m.name] = d
    return {"mixins": out} if out else {}


def _nums_to_times(nums: list[float]) -> pd.DatetimeIndex:
    """Convert backtrader day numbers to a UTC DatetimeIndex (millisecond precision)."""
    ms = np.round((np.asarray(nums, dtype=np.float64) - 719163.0) * 86_400_000).astype("int64")
    return pd.DatetimeIndex(ms.astype("datetime64[ms]")).tz_localize("UTC")


def build_cerebro(
    cfg: BotConfig,
    frames: Mapping[str, pd.DataFrame] | None,
    *,
    progress: Progress | None = None,
    strategy_cls: type[BaseStrategy] = BaseStrategy,
    feeds: Mapping[str, bt.feeds.DataBase] | None = None,
    order_logger: OrderLogger | None = None,
) -> tuple[bt.Cerebro, type[BaseStrategy]]:
    """Assemble feeds, the SimBroker and the composed strategy into a Cerebro.

    `feeds` (symbol -> feed) replaces the historical feeds built from `frames`, e.g. the
    streamed feeds of a paper replay or the live feeds (`frames` may then be None): bars are
    then not preloaded. `order_logger` is given to the broker (`BrokerFactory`); the bot feeds
    it from its event bus. A live run replaces the SimBroker with the venue's broker afterwards
    (`cerebro.broker = ...`); the SimBroker's fill model still costs the end-of-data mark.
    """
    streamed = feeds is not None
    cerebro = bt.Cerebro(stdstats=False, preload=not streamed, runonce=not streamed)
    ptc = cfg.broker.paper_trading_config
    # Every mode simulates the venue: the paper broker, from a factory of this run's own (a
    # SimBroker belongs to one Cerebro). Its fill model, seeded from the config, also costs
    # the end-of-data exit.
    broker: SimBroker = BrokerFactory(order_logger=order_logger).create_broker("paper", cfg.broker)
    fill_model = broker.fill_model
    cerebro.broker = broker
    if feeds is not None:
        for sym, feed in feeds.items():
            cerebro.adddata(feed, name=sym)
    else:
        if frames is None:
            raise ValueError("build_cerebro needs frames (historical bars) or feeds")
        for sym, df in frames.items():
            cerebro.adddata(NumpyFeed(frame=df), name=sym)
    cerebro.addstrategy(
        strategy_cls,
        spec=StrategySpec.from_config(cfg),
        progress=progress,
        slippage=(ptc.slippage_model, ptc.base_slippage),
        commission_rate=cfg.broker.commission_rate,
        fill_model=fill_model,
    )
    return cerebro, strategy_cls
