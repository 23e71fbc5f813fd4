"""End to end: `atf paper` with Telegram, the order log and the trade ledger switched on in the YAML.

The bot runs as its own process against the fake Telegram Bot API on 127.0.0.1; the token
comes from a `.env` file next to the config and the chat id from the environment.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e.test_cli_paper import CONFIG, _cmd
from tests.fakes.telegram_api import FakeTelegramAPI
from trading.data import generate_ohlcv
from trading.ledger import TradeLedger
from trading.order_logger import read_records
from trading.persistence import upgrade_database

TOKEN = "987654321:AAE2eTokenNeverToBeLogged_qrstuvwxyz"
CHAT = 4242

SERVICES = """
telegram:
  enabled: true
  bot_token: "${TELEGRAM_BOT_TOKEN}"
  chat_id: "${TELEGRAM_CHAT_ID}"
  base_url: "${TELEGRAM_BASE_URL}"
  rate_per_second: 30
  poll_timeout: 1
notifications:
  performance_reports: off
logging:
  order_log: {enabled: true, dir: logs, max_bytes: 0}
ledger:
  enabled: true
  export_url: ledgers
  attribution: {"*": {RSI_BB_ATR: 1}}
"""


@pytest.fixture
def tg() -> Iterator[FakeTelegramAPI]:
    server = FakeTelegramAPI(TOKEN).start()
    yield server
    server.stop()


def test_paper_run_notifies_telegram_writes_the_order_log_and_exports_the_ledger(
    tmp_path: Path, tg: FakeTelegramAPI
) -> None:
    generate_ohlcv(600, seed=5, timeframe="1h", start="2022-06-01").rename_axis("datetime").to_csv(tmp_path / "bars.csv")
    (tmp_path / "bot.yaml").write_text(CONFIG.read_text() + SERVICES)
    (tmp_path / ".env").write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEGRAM_")}
    env.update(TELEGRAM_CHAT_ID=str(CHAT), TELEGRAM_BASE_URL=tg.base_url, COLUMNS="200")
    proc = subprocess.run(
        [*_cmd(), "paper", "bot.yaml", "--replay", "bars.csv", "--speed", "max", "--output", "out"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    result = json.loads((out / "result.json").read_text())
    closed_trades = [t for t in result["trades"] if t["exit_reason"] != "end_of_data"]
    assert len(closed_trades) >= 3

    # Telegram got the start, the trades (with their exit reasons) and the stop, before the process ended.
    texts = "\n".join(s.text for s in tg.to(CHAT))
    assert "🚀 rsi_bb_atr started (paper)" in texts
    assert texts.count("opened LONG") == len(result["trades"])
    assert texts.count("closed LONG") == len(closed_trades)
    assert {f"· {t['exit_reason']} ·" for t in closed_trades} <= {
        f"· {line.split(' · ')[1]} ·" for line in texts.splitlines() if "closed LONG" in line}
    assert "⏹ rsi_bb_atr stopped: end_of_data" in texts

    # The order log: every order event and one closed record per trade closed by a fill.
    records = list(read_records(out / "logs"))
    assert (out / "logs" / "trading_orders.log").stat().st_size > 0
    assert len([r for r in records if r["status"] == "closed"]) == len(closed_trades)
    fills = [r for r in records if r["status"] in ("filled", "partially_filled")]
    assert len(fills) >= 2 * len(closed_trades)

    # The ledger file holds exactly the run's fills, attributed as configured.
    url = result["diagnostics"]["ledger"]["url"]
    [path] = list((out / "ledgers" / "trade-ledgers").rglob("*.json"))
    assert Path(url) == path
    ledger = TradeLedger.load(str(path))
    assert [(e.order_id, e.filled_qty, e.fill_price, e.fee) for e in ledger.get_ledger()] == [
        (r["order_id"], Decimal(r["quantity"]), Decimal(r["price"]), Decimal(r["fee"])) for r in fills]
    assert all(e.strategy_names == ("RSI_BB_ATR",) for e in ledger.get_ledger())

    # The token came from .env and appears nowhere the run wrote.
    written = proc.stdout + proc.stderr + "".join(p.read_text(errors="replace") for p in out.rglob("*")
                                                   if p.is_file() and p.suffix in (".json", ".log", ".jsonl"))
    assert TOKEN not in written and TOKEN.split(":")[1] not in written


def test_a_restarted_paper_bot_does_not_tell_telegram_again_what_its_first_run_told(
    tmp_path: Path, tg: FakeTelegramAPI
) -> None:
    """A restart re-runs the recorded bars (crash recovery): the trades it re-produces were
    sent by the first run, so Telegram gets the new run's start and stop, not the trades again."""
    generate_ohlcv(600, seed=5, timeframe="1h", start="2022-06-01").rename_axis("datetime").to_csv(tmp_path / "bars.csv")
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade_database(url)
    persistence = f"persistence:\n  url: {url}\n"
    (tmp_path / "bot.yaml").write_text(CONFIG.read_text() + SERVICES + persistence)
    (tmp_path / ".env").write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEGRAM_")}
    env.update(TELEGRAM_CHAT_ID=str(CHAT), TELEGRAM_BASE_URL=tg.base_url, COLUMNS="200")

    def run(output: str) -> tuple[dict, str]:
        before = len(tg.to(CHAT))
        proc = subprocess.run(
            [*_cmd(), "paper", "bot.yaml", "--replay", "bars.csv", "--speed", "max", "--output", output],
            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300, check=False,
        )
        assert proc.returncode == 0, proc.stderr
        result = json.loads((tmp_path / output / "result.json").read_text())
        return result, "\n".join(s.text for s in tg.to(CHAT)[before:])

    first, told = run("run-1")
    assert told.count("opened LONG") == len(first["trades"]) >= 3

    second, told_again = run("run-2")
    audit = second["diagnostics"]["audit"]
    assert audit["resumed"] and audit["refused"] is None and audit["all_written"]
    assert len(second["trades"]) == len(first["trades"])  # the same trades, re-run
    assert "🚀 rsi_bb_atr started (paper)" in told_again and "⏹ rsi_bb_atr stopped" in told_again
    assert "opened LONG" not in told_again and "closed LONG" not in told_again, told_again
