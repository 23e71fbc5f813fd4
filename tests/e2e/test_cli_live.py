"""End to end: `atf live CONFIG --confirm-live` and `atf paper CONFIG` (live bars) as their own processes.

The bot (rsi_bb_atr on 1m candles) trades at the fake Binance on 127.0.0.1 through the real ccxt
client; the fake's clock runs 600x faster than real time so a candle closes every 0.1 s. The
first order's POST is accepted and then left unanswered until the client times out: the adapter
must find it by its client order id instead of sending it twice. Telegram is the fake Bot API.
Ctrl-C (SIGINT) ends each run after the current bar, with the result written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.live_configs import VENUE_ENV, WARMUP, bot_config, bot_yaml, fast_exchange
from tests.e2e.test_cli_paper import _cmd
from tests.fakes.fake_exchange import FakeExchange
from tests.fakes.telegram_api import FakeTelegramAPI
from trading.order_logger import read_records

TOKEN = "987654321:AAE2eTokenNeverToBeLogged_qrstuvwxyz"
CHAT = 4242
TELEGRAM = {"enabled": True, "bot_token": "${TELEGRAM_BOT_TOKEN}", "chat_id": "${TELEGRAM_CHAT_ID}",
            "base_url": "${TELEGRAM_BASE_URL}", "rate_per_second": 30, "poll_timeout": 1}


@pytest.fixture
def fake() -> Iterator[FakeExchange]:
    with fast_exchange(hang_seconds=1.5) as fx:
        yield fx


@pytest.fixture
def tg() -> Iterator[FakeTelegramAPI]:
    server = FakeTelegramAPI(TOKEN).start()
    yield server
    server.stop()


def _start(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([*_cmd(), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200", **env})
    assert proc.stdout is not None
    banner = proc.stdout.readline()
    if "started" not in banner:
        proc.kill()
        raise AssertionError(f"no start banner: {banner!r}\n{proc.communicate()[1]}")
    return proc


def _interrupt_when(proc: subprocess.Popen[str], ready: Callable[[], bool], timeout: float,
                    fake: FakeExchange | None = None) -> tuple[str, str]:
    """Send SIGINT once `ready()` (or after `timeout` s); return the process's output.

    With `fake`, its clock stops first and the bot gets a second to read the venue (it polls
    on every pass): nothing fills after its last look, so the venue and the result compare exactly.
    """
    deadline = time.monotonic() + timeout
    try:
        while not ready() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if fake is not None:
            fake.clock.set_speed(0)
            _let_the_bot_look(fake)
        proc.send_signal(signal.SIGINT)
        return proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()


def _let_the_bot_look(fake: FakeExchange, passes: int = 3, timeout: float = 20.0) -> None:
    """Wait until the bot has asked the frozen venue for its state `passes` more times.

    A fixed pause was not enough on a loaded machine; the bot reads the account on every pass,
    so a few reads after the freeze mean it has seen everything the venue did.
    """
    seen = len(fake.calls("GET", "/api/v3/account"))
    deadline = time.monotonic() + timeout
    time.sleep(0.2)
    while len(fake.calls("GET", "/api/v3/account")) < seen + passes and time.monotonic() < deadline:
        time.sleep(0.05)


def _venue(fake: FakeExchange) -> tuple[list[dict[str, Any]], list[Any]]:
    with fake.engine.lock:
        return list(fake.engine.trades), list(fake.engine.orders.values())


def test_atf_live_trades_at_the_venue_and_stops_on_ctrl_c(
    tmp_path: Path, fake: FakeExchange, tg: FakeTelegramAPI
) -> None:
    fake.fault("POST", "/api/v3/order", "timeout_after_accept")  # the first order's answer never comes
    (tmp_path / "bot.yaml").write_text(bot_yaml(fake, telegram=TELEGRAM, notifications={"performance_reports": "off"}))
    env = {**VENUE_ENV, "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": str(CHAT), "TELEGRAM_BASE_URL": tg.base_url}
    proc = _start(["live", "bot.yaml", "--confirm-live", "--cancel-on-stop", "-o", "out", "--json", "live.json"],
                  tmp_path, env)

    def traded_enough() -> bool:
        # Two round trips closed, and an order cancelled at the venue: a stop moved (cancel and
        # replace), or a stop and target working now, which --cancel-on-stop cancels.
        trades, orders = _venue(fake)
        cancelled = any(o.status == "CANCELED" for o in orders) or sum(o.is_open for o in orders) == 2
        return sum(not t["isBuyer"] for t in trades) >= 2 and cancelled

    out, err = _interrupt_when(proc, traded_enough, timeout=120, fake=fake)
    assert proc.returncode == 0, err
    assert "Stopped: interrupted" in out
    result = json.loads((tmp_path / "live.json").read_text())
    assert result == json.loads((tmp_path / "out" / "result.json").read_text())
    diag = result["diagnostics"]
    assert diag["mode"] == "live" and diag["stop_reason"] == "interrupted"
    assert diag["live"]["broker"] == "binance" and diag["live"]["history_bars"]["BTCUSDT"] >= WARMUP
    assert result["metrics"]["initial_cash"] == pytest.approx(10_000.0)  # the venue's USDT at the start

    # At the venue: orders placed, filled, cancelled; each under one client order id, sent once;
    # nothing left working after the stop (--cancel-on-stop), as the state file says.
    trades, orders = _venue(fake)
    assert {"FILLED", "CANCELED"} <= {o.status for o in orders}
    assert not [o for o in orders if o.is_open]
    state = json.loads((tmp_path / "out" / "state.json").read_text())
    assert state["open_orders"] == [] and state["stop_reason"] == "interrupted"
    ids = [o.client_id for o in orders]
    assert len(ids) == len(set(ids)) and all(i.startswith("atf-") for i in ids)
    first = fake.calls("POST", "/api/v3/order")[0].params["newClientOrderId"]
    posted = [r for r in fake.calls("POST", "/api/v3/order") if r.params.get("newClientOrderId") == first]
    assert len(posted) == 1 and len(fake.orders_by_client_id(first)) == 1  # the timed-out POST was not repeated
    assert any(r.params.get("origClientOrderId") == first for r in fake.calls("GET", "/api/v3/order"))

    # The result's trades are the venue's fills: each round trip one buy and one sell, in order.
    buys = sorted((t for t in trades if t["isBuyer"]), key=lambda t: t["time"])
    sells = sorted((t for t in trades if not t["isBuyer"]), key=lambda t: t["time"])
    rows = sorted(result["trades"], key=lambda t: t["entry_time"])
    closed = [t for t in rows if t["exit_reason"] != "end_of_data"]
    assert len(rows) == len(buys) and len(closed) == len(sells) >= 2
    for row, buy in zip(rows, buys, strict=True):
        assert row["entry_price"] == pytest.approx(float(buy["price"]))
        assert row["quantity"] == pytest.approx(float(buy["qty"]))
    for row, sell in zip(sorted(closed, key=lambda t: t["exit_time"]), sells, strict=True):
        assert row["exit_price"] == pytest.approx(float(sell["price"]))
        buy = next(b for b in buys if float(b["price"]) == pytest.approx(row["entry_price"])
                   and float(b["qty"]) == pytest.approx(row["quantity"]))
        assert row["fees"] == pytest.approx(float(buy["commission"]) + float(sell["commission"]))
        assert row["exit_reason"] in {"stop_loss", "take_profit", "trailing_stop", "breakeven_stop"}

    # The order log names every venue order by the same id (a live run writes it by default).
    logged = {r.get("order_id") for r in read_records(tmp_path / "out" / "logs")}
    assert set(ids) <= logged

    # Telegram heard the start, each fill's trade, and the stop.
    texts = "\n".join(s.text for s in tg.to(CHAT))
    assert "rsi_bb_atr started (live)" in texts
    assert texts.count("closed LONG") == len(closed)
    assert "rsi_bb_atr stopped: interrupted" in texts
    assert TOKEN not in err + out


def test_atf_paper_without_replay_runs_on_the_venues_closed_candles_until_ctrl_c(
    tmp_path: Path, fake: FakeExchange
) -> None:
    (tmp_path / "bot.yaml").write_text(bot_yaml(fake, mode="paper"))
    proc = _start(["paper", "bot.yaml", "-o", "out"], tmp_path, {})
    klines = lambda: len(fake.calls("GET", "/api/v3/klines")) > 30
    out, err = _interrupt_when(proc, klines, timeout=90)
    stopped_at = fake.now_ms()
    assert proc.returncode == 0, err
    assert "Stopped: interrupted" in out
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    state = json.loads((tmp_path / "out" / "state.json").read_text())
    diag = result["diagnostics"]
    assert diag["mode"] == "paper" and diag["live"]["source"] == "ccxt:binance"
    history, fresh = diag["live"]["history_bars"]["BTCUSDT"], diag["live"]["live_bars"]["BTCUSDT"]
    assert history >= WARMUP and fresh >= 20 and result["bars"] == history + fresh
    # The last bar is a candle that had closed: its close time is before the stop.
    last_open = time_ms(state["last_bar_time"]["BTCUSDT"])
    assert last_open + 60_000 <= stopped_at
    assert not fake.calls("POST", "/api/v3/order")  # the SimBroker fills paper orders


def test_atf_live_refuses_missing_credentials_naming_the_variables(tmp_path: Path, fake: FakeExchange) -> None:
    raw = bot_config(fake)
    (tmp_path / "bot.yaml").write_text(bot_yaml(fake))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BINANCE_")}
    proc = subprocess.run([*_cmd(), "live", "bot.yaml", "--confirm-live"], cwd=tmp_path, capture_output=True,
                          text=True, env={**env, "COLUMNS": "200"}, timeout=120, check=False)
    assert proc.returncode == 1
    assert "BINANCE_API_KEY" in proc.stderr and "api_key" in proc.stderr
    assert not fake.requests and raw["broker"]["type"] == "binance"


def time_ms(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso).timestamp() * 1000)
