"""SIGKILL a paper bot mid-run, restart it: nothing lost, nothing doubled, the same trades.

Each case runs tests/e2e/crash_bot.py three times in fresh processes: once uninterrupted
(the reference), once paced and killed with SIGKILL after the database shows orders, and
once more to the end on the same database and spool folder. On SQLite and PostgreSQL the
kill waits until the saved paper broker state is ahead of the database (events lost in the
crash); in the outage case PostgreSQL is stopped first, so the dead process leaves a spool.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from trading.persistence import (
    list_fills,
    list_orders,
    list_trades,
    load_open_orders,
    load_positions,
    make_engine,
    upgrade_database,
)
from trading.persistence.db import read_connection

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "e2e" / "crash_bot.py"
CASES = ("sqlite", "postgresql", "postgresql-outage")


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def new_db(
    case: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[str], str]]:
    made: list[str] = []

    def make(name: str) -> str:
        if case == "sqlite":
            url = f"sqlite:///{tmp_path / name}.db"
        else:
            url = request.getfixturevalue("postgres_server").create_database()
            made.append(url)
        upgrade_database(url)
        return url

    yield make
    for url in made:
        request.getfixturevalue("postgres_server").drop_database(url)


def command(db: str, spool: Path, bars: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(SCRIPT),
        "--db",
        db,
        "--spool",
        str(spool),
        "--csv",
        str(bars),
        "--out",
        str(out),
        *extra,
    ]


def run_to_end(db: str, spool: Path, bars: Path, out: Path) -> dict[str, Any]:
    done = subprocess.run(
        command(db, spool, bars, out), capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(out.read_text()))


def scalar(engine: Engine, sql: str, **params: object) -> Any:
    with read_connection(engine) as conn:
        return conn.execute(text(sql), params).scalar()


def broker_state_ahead_of_db(engine: Engine, spool: Path) -> bool:
    """True when the saved paper broker state includes an event the database lacks."""
    for f in spool.glob("*.broker.json"):
        try:
            key = json.loads(f.read_text())["last_key"]
        except (OSError, ValueError, KeyError):
            return False
        known = scalar(engine, "SELECT count(*) FROM order_events WHERE event_key = :k", k=key)
        known += scalar(engine, "SELECT count(*) FROM risk_events WHERE event_key = :k", k=key)
        return key is not None and known == 0
    return False


def wait_until(
    condition: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the bot ended before it could be killed mid-run"
        assert time.monotonic() < deadline, "timed out waiting for the bot"
        time.sleep(0.005)


def audit(engine: Engine) -> dict[str, Any]:
    """What the database says the bot did, in comparable form."""
    with read_connection(engine) as conn:
        keys = conn.execute(
            text("SELECT event_key FROM order_events WHERE kind <> 'reconciliation'")
        )
        event_keys = sorted(r[0] for r in keys)
    return {
        "event_keys": event_keys,
        "orders": sorted((o.client_order_id, o.status, o.filled_qty) for o in list_orders(engine)),
        "fills": sorted(
            (f.client_order_id, f.ts, f.quantity, f.price, f.fee) for f in list_fills(engine)
        ),
        "trades": [
            (
                t.symbol,
                t.side,
                t.status,
                t.entry_time,
                t.exit_time,
                t.entry_price,
                t.exit_price,
                t.quantity,
                t.pnl,
                t.exit_reason,
            )
            for t in list_trades(engine)
        ],
        "positions": [
            (p.symbol, p.quantity, p.avg_entry_price)
            for p in load_positions(engine, 1, include_flat=True)
        ],
    }


def test_a_bot_killed_mid_run_and_restarted_loses_nothing_doubles_nothing_and_trades_as_if_never_killed(
    case: str,
    new_db: Callable[[str], str],
    bars: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    reference_db = new_db("reference")
    reference = run_to_end(reference_db, tmp_path / "ref-spool", bars, tmp_path / "ref.json")

    db, spool = new_db("crashed"), tmp_path / "spool"
    engine = make_engine(db)
    proc = subprocess.Popen(
        command(
            db,
            spool,
            bars,
            tmp_path / "killed.json",
            "--bars-per-second",
            "80",
            "--batch-delay",
            "0.3",
            "--state-interval",
            "0.05",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: scalar(engine, "SELECT count(*) FROM orders") >= 10, proc, 120)
        if case == "postgresql-outage":  # the database goes down, then the process dies
            server = request.getfixturevalue("postgres_server")
            engine.dispose()
            server.stop()
            wait_until(lambda: any(f.stat().st_size for f in spool.glob("*.jsonl")), proc, 60)
        else:
            wait_until(lambda: broker_state_ahead_of_db(engine, spool), proc, 60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        if case == "postgresql-outage":
            request.getfixturevalue("postgres_server").start()
    assert proc.returncode == -signal.SIGKILL
    left_spool = sum(f.stat().st_size for f in spool.glob("*.jsonl"))
    lost_in_crash = case != "postgresql-outage" and broker_state_ahead_of_db(engine, spool)
    orders_at_kill = scalar(engine, "SELECT count(*) FROM orders")
    assert (
        scalar(engine, "SELECT status FROM bot_instances") == "running"
    )  # it never said it stopped

    restarted = run_to_end(db, spool, bars, tmp_path / "restarted.json")
    assert restarted["refused"] is None and restarted["recovered"]
    assert restarted["all_written"]

    expected, got = audit(make_engine(reference_db)), audit(engine)
    assert orders_at_kill < len(expected["orders"])  # the kill landed mid-run
    assert got["orders"] == expected["orders"]  # no lost order, same final states
    assert scalar(engine, "SELECT count(*) - count(DISTINCT client_order_id) FROM orders") == 0
    assert got["fills"] == expected["fills"]  # no lost or doubled fill
    assert got["event_keys"] == expected["event_keys"]  # every order event once
    assert got["trades"] == expected["trades"]  # the trades of an uninterrupted run
    assert got["positions"] == expected["positions"]
    # positions and working orders equal the broker's (620 bars end with a position open)
    # (the database and the paper book keep the columns' 10 decimals; the bot keeps all)
    held = {
        s: Decimal(q).quantize(Decimal("1e-10")) for s, (q, _avg) in restarted["positions"].items()
    }
    assert held and {p.symbol: p.quantity for p in load_positions(engine, 1)} == held
    assert {s: Decimal(q) for s, q in restarted["broker_positions"].items()} == held
    assert restarted["positions"] == reference["positions"]
    open_orders = sorted(o.client_order_id for o in load_open_orders(engine, 1))
    assert open_orders == restarted["open_orders"] == reference["open_orders"] != []
    assert scalar(engine, "SELECT status FROM bot_instances") == "stopped"
    assert not any(f.stat().st_size for f in spool.glob("*.jsonl"))  # the spool was replayed
    notes = scalar(engine, "SELECT count(*) FROM order_events WHERE kind = 'reconciliation'")
    if lost_in_crash:  # events the database never got were re-derived and noted as corrections
        assert restarted["restored_events"] > 0 and notes > 0
        assert set(restarted["corrections"]) <= {"ORDER_RESTORED", "POSITION_RESTORED"}
    if case == "postgresql-outage":
        assert left_spool > 0  # the dead process left a spool: the restart replayed it
