"""The operator-action log (trading.action_log): what a paper bot with persistence applied, at
which bar, re-run by a restart so crash recovery finds the same history.

In-process paper replays on SQLite with the real bot, SimBroker, audit trail and recovery; the
operator is tests/e2e/crash_bot.py's `OperatedBot` (request_* from the bar thread at a bar).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.e2e.crash_bot import CONFIG, OperatedBot, parse_actions
from trading.action_log import ActionLog, action_log_path
from trading.config import parse_config
from trading.data import generate_ohlcv
from trading.persistence import list_trades, make_engine, upgrade_database
from trading.persistence.db import read_connection
from trading.recovery import ReconciliationMismatch


@pytest.fixture(scope="module")
def bars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    csv = tmp_path_factory.mktemp("bars") / "aaa.csv"
    generate_ohlcv(620, seed=11, timeframe="1h", start="2021-03-01").rename_axis("datetime").to_csv(csv)
    return csv


def run(url: str, spool: Path, bars: Path, actions: str = "", **kw: Any) -> OperatedBot:
    persistence = {"url": url, "spool_dir": str(spool), "heartbeat_interval": 0.5}
    cfg = parse_config(CONFIG + "persistence: " + json.dumps(persistence))
    bot = OperatedBot(cfg, mode="paper", replay=bars, speed="max", actions=parse_actions(actions), **kw)
    asyncio.run(bot.start_trading())
    return bot


def cids(url: str) -> list[str]:
    with read_connection(make_engine(url)) as conn:
        return [r[0] for r in conn.execute(text("SELECT client_order_id FROM orders"))]


def test_a_restart_after_an_emergency_stop_re_runs_it_instead_of_refusing(bars: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    upgrade_database(url)
    first = run(url, tmp_path / "spool", bars, "200:emergency_stop")
    assert first.stop_reason == "emergency_stop"
    trades = list_trades(make_engine(url))
    assert trades and trades[-1].exit_reason == "emergency_stop"
    orders = sorted(cids(url))

    again = run(url, tmp_path / "spool", bars)  # no operator: the log re-runs the emergency stop
    journal = again._control.journal
    assert journal is not None and journal.replayed == 1 and not journal.skipped
    assert again.audit is not None and again.audit.refusal is None
    assert again.stop_reason == "emergency_stop" and again._control.halted  # never resumed
    assert sorted(cids(url)) == orders  # nothing new, nothing twice
    assert [(t.entry_time, t.exit_time, t.exit_reason) for t in list_trades(make_engine(url))] == [
        (t.entry_time, t.exit_time, t.exit_reason) for t in trades
    ]


def test_a_restart_after_a_cancel_on_stop_stop_re_runs_the_cancels(bars: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade_database(url)
    spool = tmp_path / "spool"
    first = run(url, spool, bars, "300:force_exit=AAA,301:stop", cancel_on_stop=True)
    assert first.stop_reason == "operator"
    (log_file,) = spool.glob("*.actions.jsonl")
    kinds = [json.loads(line)["kind"] for line in log_file.read_text().splitlines()]
    assert kinds[-1] == "cancel_on_stop", kinds
    assert first.state is not None and first.state["cancelled_on_stop"] > 0

    again = run(url, spool, bars)  # to the end of the bars, keeping its orders at the stop
    assert again.audit is not None and again.audit.refusal is None
    journal = again._control.journal
    assert journal is not None and journal.replayed == len(kinds) and not journal.skipped
    ids = cids(url)
    assert len(ids) == len(set(ids))
    assert again.result is not None and again.result.bars == 620  # ran on to the end of the bars


def test_an_action_log_re_runs_at_its_bar_queues_requests_and_drops_a_torn_line(tmp_path: Path) -> None:
    path = action_log_path(tmp_path / "audit-b-1.broker.json")
    assert path.name == "audit-b-1.actions.jsonl"
    applied: list[tuple[str, str | None]] = []
    ts = datetime(2021, 3, 1, tzinfo=UTC)
    first = ActionLog(path, lambda k, s: applied.append((k, s)), fresh=True)
    first.request("stop_entries")
    first.request("force_exit", "AAA")
    first.at_bar(5, ts)
    assert applied == [("stop_entries", None), ("force_exit", "AAA")]
    with open(path, "ab") as f:
        f.write(b'{"bar":9,"ki')  # killed mid-write: never applied
    with pytest.raises(ValueError):
        first.request("nonsense")

    applied.clear()
    holding = [True]
    again = ActionLog(path, lambda k, s: applied.append((k, s)), holding=lambda: holding[0])
    assert [a.kind for a in again.replay] == ["stop_entries", "force_exit"]
    assert path.read_bytes().endswith(b"\n")  # the torn line is gone
    again.request("resume")  # an operator during the re-run
    again.at_bar(4, ts)
    assert applied == []
    again.at_bar(5, ts)
    assert applied == [("stop_entries", None), ("force_exit", "AAA")]  # same bar, same order
    again.at_bar(6, ts)
    assert len(applied) == 2  # still before the resume point: the request waits
    holding[0] = False
    again.at_bar(7, ts)
    assert applied[-1] == ("resume", None) and again.replayed == 2
    assert [json.loads(line)["bar"] for line in path.read_text().splitlines()] == [5, 5, 7]


def test_a_refused_restart_still_refuses_without_the_log(bars: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    upgrade_database(url)
    spool = tmp_path / "spool"
    run(url, spool, bars, "200:emergency_stop")
    (log_file,) = spool.glob("*.actions.jsonl")
    log_file.unlink()  # without the log the re-run cannot know the emergency stop
    with pytest.raises(ReconciliationMismatch):
        run(url, spool, bars)


def test_a_request_after_the_last_bar_is_reported_not_silently_dropped(
    bars: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'late.db'}"
    upgrade_database(url)
    n = len(generate_ohlcv(620, seed=11, timeframe="1h", start="2021-03-01"))
    with caplog.at_level("WARNING", logger="trading.bot"):
        bot = run(url, tmp_path / "spool", bars, f"{n}:stop_entries")  # asked at the last bar
    assert bot.result is not None
    assert bot.result.diagnostics["actions"]["queued"] == 1  # taken at the next bar: there is none
    assert bot.result.diagnostics["actions"]["logged"] == 0
    assert bot.audit is not None
    logged = action_log_path(bot.audit.state_file.path)
    assert not logged.exists() or logged.read_text() == ""  # never applied, so never logged
    assert "1 operator request(s) arrived after the last bar and were not applied: stop_entries" in caplog.text
