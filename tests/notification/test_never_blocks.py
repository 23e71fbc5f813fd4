"""A paper replay of BaseTradingBot with a Notifier on its bus: hanging or dead services never slow a
bar, and /stop from Telegram stops the real bot."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from notification.notifier import Notifier
from tests.fakes.smtp import SilentServer
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.notification.conftest import CHAT, settings
from trading.bot import BaseTradingBot
from trading.bus import EventBus
from trading.config import BotConfig, parse_config
from trading.data import generate_ohlcv
from trading.status import read_status

BOT_YAML = """
bot: {name: notify_bot, symbols: [AAA, BBB], timeframe: 1h}
strategy:
  name: t
  entry_mixins:
    - name: RSIOrBBEntryMixin
      parameters: {e_rsi_period: 14, e_rsi_oversold: 40, e_bb_period: 20, e_bb_dev: 1.5, e_cooldown_bars: 1}
  exit_mixins:
    - name: AdvancedATRExitMixin
      parameters: {x_atr_period: 14, x_sl_multiplier: 1.0, x_tp_multiplier: 1.0}
  position_size: 0.2
broker: {cash: 10000.0, commission_rate: 0.001}
"""


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {"AAA": generate_ohlcv(700, seed=3, timeframe="1h", start="2023-01-02"),
            "BBB": generate_ohlcv(700, seed=4, timeframe="1h", start="2023-01-02", start_price=40.0)}


def replay_seconds(cfg: BotConfig, frames: dict[str, pd.DataFrame], notifier: Notifier | None) -> tuple[float, int]:
    bus = EventBus()
    if notifier is not None:
        notifier.attach(bus)
    bot = BaseTradingBot(cfg, mode="paper", frames=frames, speed="max", bus=bus)
    t0 = time.perf_counter()
    result = asyncio.run(bot.start_trading())
    return time.perf_counter() - t0, len(result.trades)


def test_replay_time_is_unchanged_with_telegram_and_smtp_hanging(frames, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = parse_config(BOT_YAML)
    tg = FakeTelegramAPI(settings(None).telegram.bot_token.get_secret_value()).start()  # type: ignore[union-attr]
    smtp = SilentServer().start()
    tg.hang()
    email = {"enabled": True, "smtp_host": "127.0.0.1", "smtp_port": smtp.port, "username": "u@example.org",
             "password": "pw-123456", "to": ["t@example.org"], "timeout": 0.5, "max_attempts": 2,
             "backoff": 0.05, "min_interval": 0.0, "categories": ["position_closed", "system_status"]}
    s = settings(tg.base_url, timeout=0.5, attempts=2, email=email, order_filled="on")
    notifier = Notifier(s, bot="notify_bot", initial_cash=10_000.0, status_dir=tmp_path)
    notifier.start()
    try:
        baseline, with_notifier = [], []
        for _ in range(4):  # interleaved, best of four: the machine is shared
            secs, trades = replay_seconds(cfg, frames, None)
            baseline.append(secs)
            secs, trades_n = replay_seconds(cfg, frames, notifier)
            with_notifier.append(secs)
            assert trades_n == trades
        assert trades >= 15
        # Were a send to block a bar, each of the hundreds of events would cost its 0.5 s timeout.
        ratio = min(with_notifier) / min(baseline)
        assert ratio < 2.0, f"replay took {ratio:.2f}x as long with hanging notification servers: {baseline} vs {with_notifier}"
        # The notifier did see the run, and the servers really were hanging meanwhile.
        snap = notifier.status.snapshot()
        assert len(snap.trades) == trades and snap.stop_reason == "end_of_data"
        boxes = [*notifier.channels[0].outboxes.values(), notifier.channels[1].outbox]  # type: ignore[attr-defined]
        assert all(b.stats.sends == 0 for b in boxes) and tg.count("sendMessage") >= 1 and smtp.accepted >= 1
    finally:
        t0 = time.perf_counter()
        notifier.close(timeout=1.0)
        closing = time.perf_counter() - t0
        tg.stop()
        smtp.stop()
    assert closing < 6.0  # closing is bounded too, whatever the servers do
    assert read_status(tmp_path).trades == snap.trades  # status.json for `atf status`


def test_stop_from_telegram_stops_a_running_paper_replay(tg, frames) -> None:  # type: ignore[no-untyped-def]
    cfg = parse_config(BOT_YAML)
    bus = EventBus()
    # 200 bars of 1h at 36,000x real time: 0.1 s a bar, 20 s for all of them.
    bot = BaseTradingBot(cfg, mode="paper", frames={k: v.iloc[:200] for k, v in frames.items()}, speed=36_000, bus=bus)
    notifier = Notifier(settings(tg.base_url, position_opened="off", position_closed="off"), bot="notify_bot",
                        initial_cash=10_000.0, control=bot)
    notifier.attach(bus)
    notifier.start()
    out: dict[str, object] = {}
    runner = threading.Thread(target=lambda: out.update(result=asyncio.run(bot.start_trading())))
    try:
        t0 = time.perf_counter()
        runner.start()
        tg.wait_for(lambda sent: any("started (paper)" in s.text for s in sent))
        tg.push_command(CHAT, "/stop")
        runner.join(15)
        assert not runner.is_alive()
        elapsed = time.perf_counter() - t0
        result = out["result"]
        assert result.diagnostics["stop_reason"] == "telegram /stop"  # type: ignore[attr-defined]
        assert result.bars < 200 and elapsed < 15  # type: ignore[attr-defined]
        texts = [s.text for s in tg.wait_for(lambda sent: any("stopped" in s.text for s in sent))]
        assert any(t.startswith("⏹ Stopping after the current bar") for t in texts)
        assert any("⏹ notify_bot stopped: telegram /stop" in t for t in texts)
    finally:
        bot.request_stop()
        runner.join(15)
        notifier.close(timeout=2.0)
