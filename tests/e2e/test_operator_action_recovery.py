"""Operator actions survive a crash: a paper bot paused, resumed and force-exited, then SIGKILLed,
restarts without refusal and trades as an uninterrupted run that got the same actions.

tests/e2e/crash_bot.py plays the operator (`--actions`: the bot's request_* methods, as Telegram
calls them, from the bar thread at given bars). The run logs each action at the bar it is
applied (`<spool_dir>/audit-<bot>-<id>.actions.jsonl`, trading.action_log); the restarted
process gets no action and re-runs the logged ones at the same bars.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from tests.e2e.test_crash_recovery import audit, command, scalar, wait_until
from trading.persistence import make_engine, upgrade_database
from trading.persistence.db import read_connection

ACTIONS = "100:stop_entries,160:resume,220:force_exit=AAA"



def run_to_end(db: str, spool: Path, bars: Path, out: Path, *extra: str) -> dict[str, Any]:
    done = subprocess.run(command(db, spool, bars, out, *extra), capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(out.read_text()))


def new_db(tmp_path: Path, name: str) -> str:
    url = f"sqlite:///{tmp_path / name}.db"
    upgrade_database(url)
    return url


def logged(spool: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for f in spool.glob("*.actions.jsonl")
        for line in f.read_text().splitlines()
        if line.strip()
    ]


def risk_keys(engine: Engine) -> list[tuple[str, str]]:
    from sqlalchemy import text

    with read_connection(engine) as conn:
        rows = conn.execute(text("SELECT event_type, event_key FROM risk_events WHERE event_type <> 'Reconciliation'"))
        return sorted((str(r[0]), str(r[1])) for r in rows)


def kill_after_actions(db: str, spool: Path, bars: Path, out: Path) -> int:
    """Run paced with the operator's actions; SIGKILL once all three are applied and the run
    has gone on trading after them. Return the number of orders the database had then."""
    engine = make_engine(db)
    proc = subprocess.Popen(
        command(db, spool, bars, out, "--bars-per-second", "80", "--batch-delay", "0.3",
                "--state-interval", "0.05", "--actions", ACTIONS),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        forced = "SELECT count(*) FROM trades WHERE exit_reason = 'force_exit'"
        wait_until(lambda: scalar(engine, forced) >= 1, proc, 120)  # the last action traded
        after = scalar(engine, "SELECT count(*) FROM orders")
        wait_until(lambda: scalar(engine, "SELECT count(*) FROM orders") >= after + 4, proc, 120)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert scalar(engine, "SELECT status FROM bot_instances") == "running"
    return int(scalar(engine, "SELECT count(*) FROM orders"))


def test_a_paper_bot_killed_after_operator_actions_restarts_and_trades_as_if_never_killed(
    bars: Path, tmp_path: Path
) -> None:
    reference_db = new_db(tmp_path, "reference")
    reference = run_to_end(reference_db, tmp_path / "ref-spool", bars, tmp_path / "ref.json", "--actions", ACTIONS)
    expected = audit(make_engine(reference_db))
    assert any(t[-1] == "force_exit" for t in expected["trades"])  # the forced exit traded
    assert reference["published"]["Halted"] == reference["published"]["Resumed"] == 1

    db, spool = new_db(tmp_path, "crashed"), tmp_path / "spool"
    orders_at_kill = kill_after_actions(db, spool, bars, tmp_path / "killed.json")
    first_log = logged(spool)

    # The restart gets no operator action: it re-runs the logged ones at their bars.
    restarted = run_to_end(db, spool, bars, tmp_path / "restarted.json")
    assert restarted["refused"] is None and restarted["recovered"] and restarted["all_written"]
    assert [a["kind"] for a in first_log] == ["stop_entries", "resume", "force_exit"]
    assert first_log == logged(tmp_path / "ref-spool")  # the same bars as the reference
    assert restarted["actions"]["replayed"] == 3 and restarted["actions"]["skipped"] == 0
    engine = make_engine(db)
    got = audit(engine)
    assert orders_at_kill < len(expected["orders"])  # killed mid-run
    assert scalar(engine, "SELECT count(*) - count(DISTINCT client_order_id) FROM orders") == 0
    assert got["trades"] == expected["trades"]  # entry/exit times, prices, reasons (force_exit)
    assert got["orders"] == expected["orders"]
    assert got["fills"] == expected["fills"]
    assert got["event_keys"] == expected["event_keys"]
    assert got["positions"] == expected["positions"]
    assert risk_keys(engine) == risk_keys(make_engine(reference_db))  # Halted, Resumed once each
    assert restarted["positions"] == reference["positions"]
    assert restarted["open_orders"] == reference["open_orders"]
    assert logged(spool) == first_log  # re-run actions are not logged twice
    assert scalar(engine, "SELECT status FROM bot_instances") == "stopped"


def test_a_tampered_action_log_refuses_the_restart_and_requests_during_the_rerun_wait(
    bars: Path, tmp_path: Path
) -> None:
    # Tampered: the forced exit removed from the log -> the re-run differs -> refused.
    db, spool = new_db(tmp_path, "tampered"), tmp_path / "spool"
    kill_after_actions(db, spool, bars, tmp_path / "killed.json")
    (log_file,) = spool.glob("*.actions.jsonl")
    lines = log_file.read_text().splitlines(keepends=True)
    log_file.write_text("".join(line for line in lines if '"force_exit"' not in line))
    done = subprocess.run(command(db, spool, bars, tmp_path / "restarted.json"),
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 3, done.stderr[-3000:]
    refused = json.loads((tmp_path / "restarted.json").read_text())["refused"]
    assert "ORDER" in refused or "POSITION" in refused or "CRASH_POINT" in refused or "BROKER_STATE" in refused

    # Intact log, and an operator request arriving during the re-run (at bar 50, long before
    # the resume point): it waits until the re-run passed the point, then applies and is logged.
    db2, spool2 = new_db(tmp_path, "queued"), tmp_path / "spool2"
    kill_after_actions(db2, spool2, bars, tmp_path / "killed2.json")
    before = logged(spool2)
    restarted = run_to_end(db2, spool2, bars, tmp_path / "restarted2.json", "--actions", "50:stop_entries")
    assert restarted["refused"] is None and restarted["recovered"]
    after = logged(spool2)
    assert after[:3] == before and len(after) == 4
    assert after[3]["kind"] == "stop_entries" and after[3]["bar"] > before[-1]["bar"] > 51
    assert restarted["published"]["Halted"] == 2  # the re-run's pause, then the new one
