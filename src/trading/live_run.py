"""Live runs: `atf live`, and `atf paper` without --replay (docs/live.md, docs/live-ibkr.md).

A live run is the replay's Cerebro with two parts swapped (`LiveSession`):

* the feeds read closed bars from the venue (`trading.live_sources` says which), the last
  ``data.warmup_bars`` of history first: on a ccxt exchange `CcxtOHLCVProducer` (an asyncio
  task beside Cerebro) hands each closed candle to a `LiveGate` that one `CcxtLiveFeed` per
  symbol reads; at Interactive Brokers one `IBKRLiveFeed` per symbol shares the adapter's
  connection;
* in live mode the broker is the venue's (`BrokerFactory`: ``binance``, any ccxt exchange id,
  ``ibkr``); a paper run keeps the SimBroker and its fill model, on blocking feeds so the
  simulated broker sees the bar sequence a backtest would. A live bot resumed from its audit
  trail is reconciled with the venue before its first bar (`trading.live_recovery`), and
  takes over the trade its earlier run left open at its first live bar (`trading.live_adopt`).
  A paper bot on a ccxt exchange's candles with an audit trail logs the candles it is given
  (`trading.data.bar_log`); resumed, it re-runs them from its first one, crash recovery checks
  the re-run as for a paper replay (`trading.recovery`), and it trades on from there.

Configuration, credentials and the installed extras are checked when the session is made,
before the bot starts anything. `stop()` (thread-safe) ends the feeds after the bars already
delivered; Cerebro then ends, the strategy's stop runs (with ``--cancel-on-stop`` it cancels
the working orders at the venue), and the venue connection closes. The result is built from
the bars the strategy saw, warm-up included, with the same JSON contract as a backtest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import backtrader as bt
import numpy as np
import pandas as pd

from trading.config import BotConfig
from trading.engine import build_cerebro, collect_result
from trading.exceptions import ATFError
from trading.live_recovery import reconcile_at_start
from trading.live_sources import LiveSource, ModeUnavailable, is_venue, live_source

if TYPE_CHECKING:
    from strategy.base import BaseStrategy
    from trading.brokers.ccxt_config import CcxtSettings
    from trading.bus import EventBus
    from trading.live_recovery import Adoption
    from trading.order_logger import OrderLogger
    from trading.results import BacktestResult

log = logging.getLogger(__name__)
_EPOCH_NUM = 719163.0  # backtrader's day number of 1970-01-01


class LiveSession:
    """The feeds (and in live mode the venue's broker) of one run; see the module docstring."""

    def __init__(self, config: BotConfig, mode: str) -> None:
        self.config, self.mode = config, mode
        broker = config.broker
        if mode == "live" and not is_venue(broker):
            raise ModeUnavailable(
                "live trading needs a venue, and broker.type is paper (the simulator): set broker.type to "
                "binance, another ccxt exchange id or ibkr (docs/live.md, docs/live-ibkr.md)"
            )
        self.source: LiveSource = live_source(broker)
        self.at_venue = mode == "live"
        self.broker: Any = None
        self.feeds: dict[str, bt.feeds.DataBase] = {}
        self._producer: Any = None  # CcxtOHLCVProducer (ccxt)
        self._adapter: Any = None  # IBKRAdapter the feeds read from (ibkr)
        self._bus: EventBus | None = None  # the bot's bus: ConnectionLost / ConnectionRestored
        self._stopped = False
        self._check()

    # ------------------------------------------------------------------ checks
    def _check(self) -> None:
        """Fail now on a missing extra, a bad venue setting or missing credentials."""
        broker = self.config.broker
        try:
            if self.source.kind == "ccxt":
                from trading.brokers.ccxt_config import (
                    credentials_from_env,
                    import_ccxt,
                    settings_from_broker,
                )

                import_ccxt()
                self._ccxt_feed_settings()
                if self.at_venue:
                    from trading.brokers.factory import BrokerFactory

                    BrokerFactory.spec(broker.type)  # an unknown type: did-you-mean
                    credentials_from_env(settings_from_broker(self.source.exchange, broker))
            else:
                from trading.brokers.ibkr_config import IBKRSettings, require_ib_async

                require_ib_async()
                IBKRSettings.from_broker_config(broker)
        except ImportError as exc:
            raise ModeUnavailable(str(exc)) from None

    def _ccxt_feed_settings(self) -> CcxtSettings:
        from trading.brokers.ccxt_config import settings_from_broker

        broker = self.config.broker
        if self.at_venue:
            return settings_from_broker(self.source.exchange, broker)  # the broker's own venue
        # Paper: the real venue's public candles (its testnet only when asked), no credentials.
        plain = {**broker.model_dump(), "trading_mode": "live", "testnet": bool(broker.testnet)}
        return settings_from_broker(self.source.exchange, plain)

    # ------------------------------------------------------------------ building
    def _build_broker(self, order_logger: OrderLogger | None, bus: EventBus | None) -> None:
        cfg = self.config
        self._bus = bus
        if self.at_venue:
            from trading.brokers.factory import BrokerFactory

            self.broker = BrokerFactory(order_logger=order_logger).create_broker(cfg.broker.type, cfg.broker)
            if hasattr(self.broker, "bus"):
                self.broker.bus = bus  # Halted / Resumed (ccxt), ConnectionLost / ConnectionRestored

    def _build_feeds(self, audit: Any = None) -> None:
        if self.source.kind == "ccxt":
            self._build_ccxt_feeds(audit)
        else:
            self._build_ibkr_feeds()

    def _build_ccxt_feeds(self, audit: Any = None) -> None:
        from trading.brokers.ccxt_venue import build_exchange
        from trading.data.bar_log import BarLog, bar_log_path
        from trading.data.ccxt_feed import CcxtLiveFeed, CcxtOHLCVProducer, LiveGate
        from trading.data.timeframes import timeframe_seconds

        cfg = self.config
        settings = self._ccxt_feed_settings()
        gate = LiveGate()
        symbols = cfg.bot.symbols
        bar_log = None
        if not self.at_venue and audit is not None:  # paper with an audit trail: a restart re-runs the candles
            bar_log = BarLog(bar_log_path(audit.state_file.path), timeframe_seconds(cfg.bot.timeframe) * 1000,
                             fresh=not audit.info.resumed)
            if audit.info.resumed and not bar_log.anchored:
                log.warning("resumed paper bot: no bar log at %s, so its earlier candles cannot be re-run; crash "
                            "recovery refuses it if the earlier run traded", bar_log.path)
        self._producer = CcxtOHLCVProducer(
            build_exchange(settings, asynchronous=True), {s: s for s in symbols}, cfg.bot.timeframe, gate,
            warmup=cfg.data.warmup_bars, max_wait=cfg.data.poll_seconds,
            # Outages: ConnectionLost / Restored; at the venue its broker's breaker publishes them already.
            bus=None if self.at_venue else self._bus, failures=settings.circuit_breaker.failures,
            bar_log=bar_log,
        )
        # A live feed hands Cerebro's loop back this often: the venue broker polls then.
        qcheck = min(0.5, max(0.01, settings.poll_interval))
        self.feeds = {
            s: CcxtLiveFeed(gate=gate, symbol=s, timeframe_str=cfg.bot.timeframe, qcheck=qcheck,  # type: ignore[call-arg]
                            blocking=not self.at_venue)
            for s in symbols
        }

    def _build_ibkr_feeds(self) -> None:
        from trading.data.ibkr_feed import build_ibkr_feeds

        cfg = self.config
        if self.broker is not None:
            self._adapter = self.broker.adapter  # one connection for orders and bars
        else:
            from trading.brokers.ibkr import IBKRAdapter
            from trading.brokers.ibkr_config import IBKRSettings

            self._adapter = IBKRAdapter(IBKRSettings.from_broker_config(cfg.broker))
            self._adapter.bus = self._bus  # paper on IB's bars: the feeds' connection is the venue's
        self.feeds = dict(build_ibkr_feeds(self._adapter, cfg.bot.symbols, cfg.bot.timeframe,
                                           warmup_bars=cfg.data.warmup_bars))

    # ------------------------------------------------------------------ running
    async def run(self, strategy_cls: type[BaseStrategy], *, order_logger: OrderLogger | None = None,
                  bus: EventBus | None = None, audit: Any = None) -> BacktestResult:
        """Run until `stop()` (or the venue ends the feed); return the result of the bars seen.

        `audit` is the bot's AuditSession (its `persistence:` section): a resumed live bot is
        reconciled with the venue first (`trading.live_recovery`) and refused on a difference.
        """
        self._build_broker(order_logger, bus)
        adoption: Adoption | None = None
        if self.at_venue and audit is not None:
            try:
                adoption = await asyncio.to_thread(reconcile_at_start, audit, self.broker, self.config.bot.symbols,
                                                   self.config.live.on_restart)
            except BaseException:
                await asyncio.to_thread(self._close)
                raise
        self._build_feeds(audit)
        cerebro, _ = build_cerebro(self.config, None, strategy_cls=live_strategy(strategy_cls, adoption),
                                   feeds=self.feeds, order_logger=order_logger)
        if self.broker is not None:
            cerebro.broker = self.broker  # the venue instead of the SimBroker
            # The venue's news reaches the strategy when it comes, not at the next bar: a fill
            # between two candles is acted on at once (and is not left behind at a stop).
            cerebro.p.quicknotify = True
        name = self.config.bot.name
        producer = None
        if self._producer is not None:
            producer = asyncio.create_task(self._producer.run(), name=f"live-feed-{name}")
        if self._stopped:  # asked before the feeds existed
            self._end_feeds()
        failure: BaseException | None = None
        try:
            strat = (await asyncio.to_thread(cerebro.run))[0]
        finally:
            self._end_feeds()
            if producer is not None:
                if not producer.done():
                    producer.cancel()  # it may be sleeping until the next candle's close
                (failure,) = await asyncio.gather(producer, return_exceptions=True)
            await asyncio.to_thread(self._close)
        if isinstance(failure, Exception):
            raise failure
        return self._result(cerebro, strat)

    def stop(self) -> None:
        """End the feeds after the bars already delivered (thread-safe; the run then ends)."""
        self._stopped = True
        self._end_feeds()

    def _end_feeds(self) -> None:
        if self._producer is not None:
            self._producer.stop()  # finishes the gate: the ccxt feeds end
        for feed in self.feeds.values():
            finish = getattr(feed, "finish", None)
            if callable(finish):
                finish()  # IB feeds wait on their own queue

    def _close(self) -> None:
        """Disconnect from IB (the adapter belongs to the run); ccxt's REST client holds nothing open."""
        close = getattr(self.broker, "close", None) if self.broker is not None else None
        if callable(close):
            close()
        elif self._adapter is not None:
            self._adapter.close()

    # ------------------------------------------------------------------ result
    def _result(self, cerebro: bt.Cerebro, strat: BaseStrategy) -> BacktestResult:
        frames = delivered_frames(strat)
        if not frames:
            raise ATFError(f"bot '{self.config.bot.name}' stopped before its first bar")
        cfg = self.config
        if self.at_venue and strat.equity_values:
            # The venue's account value at the first bar is what the run started with.
            cfg = cfg.model_copy(update={"broker": cfg.broker.model_copy(update={"cash": strat.equity_values[0]})})
        result = collect_result(cfg, frames, cerebro, strat)
        warm = {s: int(getattr(f, "historical", 0)) for s, f in self.feeds.items()}  # warm-up + caught up
        result.diagnostics["live"] = {
            "source": f"{self.source.kind}:{self.source.exchange}",
            "broker": self.config.broker.type if self.at_venue else "paper",
            "history_bars": warm,
            "live_bars": {s: len(df) - warm.get(s, 0) for s, df in frames.items()},
        }
        return result


def live_strategy(strategy_cls: type[BaseStrategy], adoption: Adoption | None = None) -> type[BaseStrategy]:
    """Return `strategy_cls` that takes no entry on warm-up bars and reads the venue at stop.

    History is never traded: the venue brokers refuse orders made on warm-up bars too
    (``WARMUP``); deciding nothing there keeps a paper run on the SimBroker and a live run at
    the venue alike. At stop the broker is asked for the venue's news first (`settle`), so the
    fills that happened before the stop are in the result and the state. With `adoption` (a
    restart, `trading.live_recovery`), the earlier run's trade is taken over at the first bar
    after the warm-up (`trading.live_adopt`).
    """

    class LiveStrategy(strategy_cls):  # type: ignore[valid-type,misc]
        _adoption = adoption

        def next(self) -> None:
            if self._adoption is not None and not any(in_warmup(d) for d in self.datas):
                from trading.live_adopt import adopt_into

                taken, self._adoption = self._adoption, None
                adopt_into(self, taken)
            super().next()

        def _may_enter(self) -> bool:
            return not any(in_warmup(d) for d in self.datas) and super()._may_enter()

        def stop(self) -> None:
            settle = getattr(self.broker, "settle", None)  # the venue's last word before the books close
            if callable(settle):
                try:
                    settle()
                except Exception:
                    log.warning("the venue's state could not be read at stop", exc_info=True)
            super().stop()

    LiveStrategy.__name__ = LiveStrategy.__qualname__ = f"Live{strategy_cls.__name__}"
    return LiveStrategy


def in_warmup(data: Any) -> bool:
    """True while a live feed delivers history (ccxt: `backfilling`; IB: bars up to `warmup_end`)."""
    if getattr(data, "backfilling", False):
        return True
    end = getattr(data, "warmup_end", None)
    return end is not None and len(data) > 0 and data.datetime[0] <= end


def delivered_frames(strat: BaseStrategy) -> dict[str, pd.DataFrame]:
    """Return the bars each symbol's feed delivered and the strategy saw, as OHLCV frames."""
    out: dict[str, pd.DataFrame] = {}
    for book in strat.books:
        n = book.clock.lencount
        if not n:
            continue
        lines = book.data.lines
        nums = np.asarray(lines.datetime.array[:n], dtype=np.float64)
        ms = np.round((nums - _EPOCH_NUM) * 86_400_000).astype("int64")
        index = pd.DatetimeIndex(ms.astype("datetime64[ms]"), name="datetime").tz_localize("UTC").as_unit("ns")
        cols: Mapping[str, Any] = {c: np.asarray(getattr(lines, c).array[:n], dtype=np.float64)
                                   for c in ("open", "high", "low", "close", "volume")}
        out[book.symbol] = pd.DataFrame(cols, index=index)
    return out
