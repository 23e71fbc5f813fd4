"""Live runs through BaseTradingBot (trading.live_run): paper on live candles from the fake Binance,
the checks made before anything starts, and the lazily registered venue brokers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.e2e.live_configs import MINUTE_MS, WARMUP, bot_config, bot_yaml, fast_exchange
from tests.fakes.fake_exchange import FakeExchange
from trading.bot import BaseTradingBot, ModeUnavailable
from trading.brokers.factory import BrokerFactory, MissingExtra
from trading.config import parse_config
from trading.exceptions import ConfigError
from trading.results import BacktestResult


@pytest.fixture
def fake() -> Iterator[FakeExchange]:
    with fast_exchange() as fx:
        yield fx


def _run_for(bot: BaseTradingBot, fake: FakeExchange, live_bars: int) -> tuple[BacktestResult, int, float]:
    """Run until the feed has fetched `live_bars` candles after the warm-up; stop; return the
    result, the exchange time of the stop request and how long the stop took (s)."""

    async def main() -> tuple[BacktestResult, int, float]:
        task = asyncio.create_task(bot.start_trading())
        deadline = time.monotonic() + 60
        while len(fake.calls("GET", "/api/v3/klines")) <= live_bars and not task.done():
            assert time.monotonic() < deadline, "the live feed stalled"
            await asyncio.sleep(0.02)
        asked, t0 = fake.now_ms(), time.monotonic()
        await bot.stop("operator")
        took = time.monotonic() - t0
        return await task, asked, took

    return asyncio.run(main())


def test_paper_without_replay_trades_closed_candles_of_the_venue_and_stops_on_request(fake: FakeExchange) -> None:
    bot = BaseTradingBot(parse_config(bot_yaml(fake, mode="paper")), mode="paper")
    result, asked, took = _run_for(bot, fake, live_bars=40)

    assert took < 3.0  # the feed ended at once, not at the next candle
    assert result.diagnostics["mode"] == "paper" and result.diagnostics["stop_reason"] == "operator"
    live = result.diagnostics["live"]
    assert live["source"] == "ccxt:binance" and live["broker"] == "paper"
    history, fresh = live["history_bars"]["BTCUSDT"], live["live_bars"]["BTCUSDT"]
    assert history >= WARMUP and fresh >= 25  # (a candle fetched late under load counts as history)

    # Every bar is a closed candle: one per minute, closed before the stop, and equal to the
    # venue's final candle of that minute (a forming candle has fewer ticks, volume < 4).
    bars = result.prices["BTCUSDT"]
    assert len(bars) == result.bars == history + fresh
    opens = bars.index.as_unit("ms").asi8
    assert (np.diff(opens) == MINUTE_MS).all()
    assert opens[-1] + MINUTE_MS <= asked
    path = fake.engine.paths["BTCUSDT"]
    final = pd.DataFrame([[float(x) for x in path.candle(int(t), MINUTE_MS, 2**62)] for t in opens],
                         columns=["open", "high", "low", "close", "volume"], index=bars.index)
    pd.testing.assert_frame_equal(bars[final.columns], final)
    assert (bars["volume"] == 4).all()

    # The SimBroker traded them like a backtest: nothing went to the venue.
    assert result.trades and not fake.calls("POST", "/api/v3/order")
    assert all(t.entry_time >= bars.index[WARMUP] for t in result.trades)  # warm-up bars are not traded


def test_a_paper_run_without_replay_names_the_venue_it_needs() -> None:
    cfg = parse_config(_plain_paper_yaml())
    with pytest.raises(ModeUnavailable, match=r"broker\.ccxt\.exchange.*broker\.ibkr.*--replay"):
        asyncio.run(BaseTradingBot(cfg, mode="paper").start_trading())


def _plain_paper_yaml() -> str:
    from tests.e2e.live_configs import CONFIG

    return CONFIG.read_text()


def test_live_needs_a_venue_and_its_credentials_before_anything_starts(
    fake: FakeExchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BINANCE_API_KEY", raising=False)
    monkeypatch.delenv("BINANCE_API_SECRET", raising=False)
    paper_broker = parse_config(_plain_paper_yaml().replace("trading_mode: paper", "trading_mode: live"))
    with pytest.raises(ModeUnavailable, match="broker.type is paper"):
        asyncio.run(BaseTradingBot(paper_broker, mode="live", confirm_live=True).start_trading())

    bot = BaseTradingBot(parse_config(bot_yaml(fake)), mode="live", confirm_live=True)
    with pytest.raises(ValueError, match=r"api_key and secret .*BINANCE_API_KEY, BINANCE_API_SECRET") as err:
        asyncio.run(bot.start_trading())
    assert "never in the YAML" in str(err.value)
    assert not fake.requests  # refused before connecting

    typo = bot_config(fake)
    typo["broker"]["type"] = "binanse"
    bot = BaseTradingBot(parse_config(yaml.safe_dump(typo)), mode="live", confirm_live=True)
    with pytest.raises(ValueError, match="did you mean 'binance'"):
        asyncio.run(bot.start_trading())


def test_broker_sections_are_checked_when_the_config_loads(fake: FakeExchange) -> None:
    raw = bot_config(fake)
    raw["broker"]["ccxt"]["poll_intervall"] = 1
    with pytest.raises(ConfigError, match=r"broker\.ccxt\.poll_intervall: unknown key.*did you mean 'poll_interval'"):
        parse_config(yaml.safe_dump(raw))
    raw = bot_config(fake)
    raw["broker"] = {"type": "ibkr", "trading_mode": "live", "ibkr": {"port": 4002}}
    with pytest.raises(ConfigError, match="port 4002 is a paper trading port but trading_mode is live"):
        parse_config(yaml.safe_dump(raw))
    raw["broker"] = {"type": "ibkr", "ibkr": {"warmup_bars": 10}}
    with pytest.raises(ConfigError, match=r"ibkr\.warmup_bars: .*data\.warmup_bars"):
        parse_config(yaml.safe_dump(raw))
    raw["broker"] = {"type": "paper", "ccxt": {"poll_interval": 1}}
    with pytest.raises(ConfigError, match=r"ccxt\.exchange: with type paper"):
        parse_config(yaml.safe_dump(raw))
    raw = bot_config(fake)
    raw["data"]["warmup_bars"] = -1
    with pytest.raises(ConfigError, match="warmup_bars"):
        parse_config(yaml.safe_dump(raw))


def test_ibkr_is_registered_without_importing_ib_async() -> None:
    code = ("import sys; from trading.brokers.factory import BrokerFactory; "
            "spec = BrokerFactory.spec('ibkr'); assert spec.name == 'ibkr'; "
            "assert 'ib_async' not in sys.modules and 'ccxt' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    assert {"binance", "ibkr", "paper"} <= set(BrokerFactory.types())


def test_a_venue_without_its_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("ib_async", "ccxt") else real(name, *a))
    with pytest.raises(MissingExtra, match=r"'ibkr' needs ib_async: pip install 'atf\[live\]'"):
        BrokerFactory.spec("ibkr")
    with pytest.raises(MissingExtra, match=r"'binance' needs ccxt: pip install 'atf\[live\]'"):
        BrokerFactory().create_broker("binance", {})
