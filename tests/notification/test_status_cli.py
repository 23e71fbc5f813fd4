"""`atf status` and the Telegram commands answer from one query layer: same snapshot, same text."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from notification.commands import CommandRouter
from tests.notification.conftest import CHAT, T0, closed, opened
from tests.notification.test_never_blocks import BOT_YAML
from trading.analytics.output import write_outputs
from trading.bot import BaseTradingBot
from trading.cli import app
from trading.config import parse_config
from trading.data import generate_ohlcv
from trading.events import BotStarted, Halted
from trading.status import QUERIES, StatusTracker, read_status

runner = CliRunner()


def atf_status(*args: str) -> str:
    res = runner.invoke(app, ["status", *args])
    assert res.exit_code == 0, res.output
    return res.output.rstrip("\n")


def test_cli_and_telegram_give_the_same_answer_for_a_running_bot(tmp_path: Path) -> None:
    tracker = StatusTracker(initial_cash=5_000.0, path=tmp_path / "status.json")
    tracker.handle(BotStarted(ts=T0, bot="rsi_bot", mode="paper"))
    for i, (sym, exit_) in enumerate([("ETH", "2100"), ("BTC", "41000"), ("ETH", "1990")]):
        entry = "2000" if sym == "ETH" else "42000"
        tracker.handle(opened(sym, i=i * 20, price=entry, qty="0.5"))
        tracker.handle(closed(sym, i=i * 20, entry=entry, exit=exit_, qty="0.5", fees="1.5"))
    tracker.handle(opened("SOL", i=70, price="101.25", qty="3"))
    tracker.handle(Halted(ts=T0 + timedelta(hours=71), reason="MAX_DAILY_LOSS"))
    assert tracker.save()
    router = CommandRouter(status=tracker.snapshot, control=None, allowed=[CHAT], now=lambda: T0)
    for query in QUERIES:
        telegram = router.handle(CHAT, f"/{query}")
        assert atf_status(str(tmp_path), query) == telegram, query
    assert atf_status(str(tmp_path), "trades", "-n", "2") == router.handle(CHAT, "/trades 2")
    assert atf_status(str(tmp_path)).splitlines()[:2] == ["rsi_bot · paper · running", "🛑 halted: MAX_DAILY_LOSS"]
    assert atf_status(str(tmp_path), "positions") == "Open positions (1):\nSOL LONG 3 @ 101.25 · since 01-05 08:00"
    assert atf_status(str(tmp_path), "performance").splitlines()[1:] == [
        "1. ETH +42.00 (2 tr, 50% win)", "2. BTC -501.50 (1 tr, 0% win)"]


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    folder = tmp_path_factory.mktemp("paper")
    cfg = parse_config(BOT_YAML)
    frames = {"AAA": generate_ohlcv(500, seed=3, timeframe="1h", start="2023-01-02"),
              "BBB": generate_ohlcv(500, seed=4, timeframe="1h", start="2023-01-02", start_price=40.0)}
    bot = BaseTradingBot(cfg, mode="paper", frames=frames, speed="max", state_dir=folder)
    result = asyncio.run(bot.start_trading())
    write_outputs(result, folder)  # what `atf paper --output` writes
    return folder, result


def test_cli_reads_a_stopped_paper_run_from_its_output_folder(paper_run) -> None:  # type: ignore[no-untyped-def]
    folder, result = paper_run
    snap = read_status(folder)
    closed_trades = [t for t in result.trades if t.exit_reason != "end_of_data"]
    assert len(snap.trades) == len(closed_trades) >= 5
    assert snap.balance == pytest.approx(result.final_value)
    out = atf_status(str(folder), "trades", "-n", "3").splitlines()
    assert out[0] == "Last 3 trades:"
    for line, t in zip(out[1:], closed_trades[::-1][:3], strict=True):
        assert line.startswith(f"{t.symbol} LONG ") and f" · {t.exit_reason} · " in line
    assert atf_status(str(folder)).startswith("notify_bot · paper · stopped (end_of_data)")
    assert f"Profit: {result.metrics['total_pnl'] - sum(t.pnl for t in result.trades if t.exit_reason == 'end_of_data'):+,.2f}" \
        in atf_status(str(folder), "profit")


def test_cli_explains_a_folder_without_bot_output_and_an_unknown_query(tmp_path: Path) -> None:
    res = runner.invoke(app, ["status", str(tmp_path)])
    assert res.exit_code == 1 and "no status.json or result.json" in res.output
    res = runner.invoke(app, ["status", str(tmp_path), "profits"])
    assert res.exit_code == 2 and "unknown query 'profits'" in res.output
