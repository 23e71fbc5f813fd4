"""End to end: `atf paper` on live candles killed with SIGKILL in a position, restarted on the same database
(docs/persistence.md, "Crash recovery"; docs/modes.md).

The bot (rsi_bb_atr on 1m candles) reads the fake Binance's public candles and fills with the SimBroker;
its audit trail is on SQLite. Each kill waits until the bot's order log shows a position with its stop and
target working, freezes the fake's clock (no new candle), lets the writer finish and kills the process.
While the bot is down the clock moves on a few candles. The restart fetches the candles again from the
first run's first one (its bar log, ``*.bars.json``), re-runs them through the same SimBroker, and crash
recovery checks the re-run against the database and the saved paper broker state before it trades on.

* Killed in a position, restarted, killed again in a later position, restarted again: no restart is
  refused; each killed trade goes on under its key with its stop and target (no client order id sent
  twice, no entry on the candles that closed while the bot was down), and closes once with the exit
  reason and fills of the last run (which re-ran the whole account); the database has every fill of
  that run, once, and its positions are the paper broker's.
* A saved paper broker state that the re-run does not reproduce (its cash tampered with) refuses the
  restart, naming ``BROKER_STATE_CASH``; so does an order the database has differently (``ORDER_DIFFERS``).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.e2e.live_configs import SPEED, bot_config, fast_exchange
from tests.e2e.test_cli_live import _start
from tests.e2e.test_cli_live_restart import _interrupt, _wait
from tests.e2e.test_cli_paper import _cmd
from tests.fakes.fake_exchange import FakeExchange
from trading.broker_state import BrokerStateFile
from trading.persistence import list_fills, list_orders, list_trades, make_engine, upgrade_database
from trading.persistence.db import read_connection
from trading.persistence.recovery import load_positions

MINUTE_MS = 60_000
STATE = "spool/audit-rsi_bb_atr-1.broker.json"
BARS = "spool/audit-rsi_bb_atr-1.bars.json"


@pytest.fixture
def fake() -> Iterator[FakeExchange]:
    with fast_exchange() as fx:
        yield fx


def _write_config(work: Path, fake: FakeExchange, url: str) -> None:
    raw = bot_config(fake, mode="paper", persistence={"url": url, "heartbeat_interval": 0.5,
                                                      "spool_dir": str(work / "spool")})
    (work / "bot.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def _args(out: str) -> list[str]:
    return ["paper", "bot.yaml", "-o", out, "--json", f"{out}.json"]


def _records(work: Path, out: str) -> list[dict[str, Any]]:
    path = work / out / "logs" / "trading_orders.jsonl"
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:  # a line being written
                pass
    return records


def _protected(work: Path, out: str, skip: frozenset[str] = frozenset()) -> bool:
    """The order log's last entry (not one of `skip`) filled, not closed since, with its stop and target working."""
    records = _records(work, out)
    entries = [i for i, r in enumerate(records) if r["event"] == "entry" and r["status"] == "filled"]
    closes = [i for i, r in enumerate(records) if r["event"] == "exit" and r["status"] == "closed"]
    if not entries or (closes and closes[-1] > entries[-1]) or records[entries[-1]]["order_id"] in skip:
        return False
    last: dict[str, str] = {}
    for r in records:
        if r.get("order_id"):
            last[r["order_id"]] = r["status"]
    working = {cid.split("-")[2] for cid, s in last.items() if s in ("accepted", "modified")}
    return working == {"sl", "tp"} and sum(s in ("accepted", "modified") for s in last.values()) == 2


def _kill_in_position(
    work: Path, fake: FakeExchange, engine: Engine, out: str = "out", skip: frozenset[str] = frozenset()
) -> tuple[str, set[str]]:
    """Run (the clock going) until a position (its entry not in `skip`) has its stop and target working;
    freeze the clock; SIGKILL. Return the round trip's key and its working legs, from the database."""
    proc = _start(_args(out), work, {})
    fake.clock.set_speed(SPEED)
    try:
        while True:
            assert _wait(lambda: _protected(work, out, skip), 150, proc), f"no protected position: {proc.poll()}"
            fake.clock.set_speed(0)
            if _wait(lambda: not _protected(work, out, skip), 2.0):  # it closed or moved just now: go on
                fake.clock.set_speed(SPEED)
                continue
            break  # frozen for 2 s: the writer has long written what the bot logged
    finally:
        proc.kill()  # SIGKILL: no stop, nothing saved
        proc.communicate(timeout=60)
    with read_connection(engine) as conn:
        key = conn.execute(text("SELECT trade_key FROM positions WHERE side = 'long'")).scalar_one()
    legs = {o.client_order_id for o in list_orders(engine) if o.status in ("accepted", "new", "partially_filled")}
    assert {cid.split("-")[2] for cid in legs} == {"sl", "tp"}, legs
    return key, legs


def _closed(work: Path, out: str, key: str) -> bool:
    return any(r.get("trade_id") == key and r["status"] == "closed" for r in _records(work, out))


def _q(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("1e-8"))


def _ms(ts: datetime | str) -> int:
    when = ts if isinstance(ts, datetime) else datetime.fromisoformat(ts)  # SQLite: text
    return int(when.replace(tzinfo=when.tzinfo or UTC).timestamp() * 1000)


@pytest.fixture
def url(tmp_path: Path) -> str:
    value = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade_database(value)
    return value


def test_a_paper_bot_on_live_candles_killed_in_a_position_re_runs_its_candles_and_trades_on(
    tmp_path: Path, fake: FakeExchange, url: str
) -> None:
    _write_config(tmp_path, fake, url)
    engine = make_engine(url)
    first, first_legs = _kill_in_position(tmp_path, fake, engine)
    kills = [json.loads((tmp_path / BARS).read_text())]
    assert kills[0]["first_open"] < kills[0]["warmup_end"] < kills[0]["last_open"]

    # Three candles close while the bot is down. The restart re-runs every candle from the first one,
    # passes the crash point and trades on: the killed trade closes under its key (the price keeps
    # walking), and a later one is killed again in its position.
    fake.clock.advance(3 * MINUTE_MS)
    key, legs = _kill_in_position(tmp_path, fake, engine, "out2", skip=frozenset({first}))
    assert _closed(tmp_path, "out2", first)
    kills.append(json.loads((tmp_path / BARS).read_text()))

    fake.clock.advance(2 * MINUTE_MS)  # the second restart re-runs both runs and the first downtime
    proc = _start(_args("out3"), tmp_path, {})
    fake.clock.set_speed(SPEED)
    closed = _wait(lambda: _closed(tmp_path, "out3", key), 150, proc)
    out, err = _interrupt(proc)
    assert closed and proc.returncode == 0 and "Stopped: interrupted" in out, (closed, out[-500:], err[-5000:])

    result = json.loads((tmp_path / "out3.json").read_text())
    audit = result["diagnostics"]["audit"]
    assert audit["resumed"] and audit["refused"] is None and audit["all_written"], audit
    with read_connection(engine) as conn:
        notes = conn.execute(text("SELECT payload FROM order_events WHERE kind = 'reconciliation'")).scalars().all()
        made = conn.execute(text("SELECT client_order_id, ts FROM order_events WHERE event_type = 'OrderSubmitted'")).all()
    submitted = [cid for cid, _ in made]
    assert not [n for n in notes if "unexplained" in str(n)], notes

    # No client order id was sent twice; the legs of the killed trade were not placed again and ended.
    assert len(submitted) == len(set(submitted)), Counter(submitted).most_common(3)
    orders = {o.client_order_id: o for o in list_orders(engine)}
    assert all(orders[cid].status in ("filled", "cancelled") for cid in legs | first_legs), [
        (cid, orders[cid].status) for cid in legs | first_legs]

    # The killed trades closed once each, with the exit reason and exit of the last run (the whole account).
    for k in (first, key):
        (trade,) = [t for t in list_trades(engine) if t.trade_key == k]
        assert trade.status == "closed"
        parts = [t for t in result["trades"] if datetime.fromisoformat(t["entry_time"]) == trade.entry_time.replace(
            tzinfo=trade.entry_time.tzinfo or UTC)]
        assert parts and trade.exit_reason == parts[-1]["exit_reason"], (trade, parts)
        assert float(trade.quantity) == pytest.approx(sum(p["quantity"] for p in parts))
        assert float(trade.pnl) == pytest.approx(sum(p["pnl"] for p in parts), rel=1e-6, abs=1e-6)
    # Every round trip of the restarted run is in the database once, closed ones with their exit reason.
    closed_trades = [t for t in list_trades(engine) if t.status == "closed"]
    by_entry: dict[str, list[dict[str, Any]]] = {}
    for t in result["trades"]:
        if t["exit_reason"] != "end_of_data":
            by_entry.setdefault(t["entry_time"], []).append(t)
    assert sorted((t.entry_time.replace(tzinfo=UTC).isoformat(), t.exit_reason) for t in closed_trades) == sorted(
        (k, v[-1]["exit_reason"]) for k, v in by_entry.items())

    # Every fill the last run's order log tells (the re-run and the new ones) is in the database once.
    logged = sorted((r["order_id"], _q(r["quantity"]), _q(r["price"]))
                    for r in _records(tmp_path, "out3") if r["status"] in ("filled", "partially_filled"))
    fills = list_fills(engine)
    assert sorted((f.client_order_id, _q(f.quantity), _q(f.price)) for f in fills) == logged  # 10 decimals stored

    # No entry on the candles that closed while the bot was down (history, as after an outage).
    bars = json.loads((tmp_path / BARS).read_text())
    downtime = [r for r in bars["stale"] if any(r[0] <= k["last_open"] + MINUTE_MS <= r[1] for k in kills)]
    assert len(downtime) == 2, (bars, kills)
    signals = [_ms(ts) for cid, ts in made if "-entry-" in cid]
    assert len(signals) >= 2 and not [t for t in signals if any(a <= t <= b for a, b in downtime)]

    # The paper broker's book (saved at the stop) and the database's positions agree with the run's state.
    saved = BrokerStateFile(tmp_path / STATE).load()
    assert saved is not None
    state = json.loads((tmp_path / "out3" / "state.json").read_text())
    held = {p.symbol: p.quantity for p in load_positions(engine, 1)}
    assert {p.symbol: p.quantity for p in saved.positions()} == held
    assert {s: pytest.approx(float(q)) for s, q in held.items()} == {
        p["symbol"]: p["quantity"] for p in state.get("positions", []) if p["quantity"]}
    engine.dispose()


def test_a_restart_the_re_run_does_not_explain_is_refused_naming_the_difference(
    tmp_path: Path, fake: FakeExchange, url: str
) -> None:
    _write_config(tmp_path, fake, url)
    engine = make_engine(url)
    key, legs = _kill_in_position(tmp_path, fake, engine)

    def refused() -> str:
        proc = subprocess.run([*_cmd(), *_args("again")], cwd=tmp_path, capture_output=True, text=True,
                              timeout=180, env={**os.environ, "COLUMNS": "300"}, check=False)
        assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
        return " ".join(proc.stderr.split())

    # The saved paper broker state says other cash than the re-run's.
    path = tmp_path / STATE
    original = path.read_text()
    doc = json.loads(original)
    doc["cash"] = str(Decimal(doc["cash"]) + 100)
    path.write_text(json.dumps(doc))
    said = refused()
    assert "refusing to trade" in said and "BROKER_STATE_CASH" in said, said
    assert json.loads(path.read_text())["cash"] == doc["cash"]  # left as it was

    # The database holds a working leg at another quantity than the re-run has it.
    path.write_text(original)
    stop = next(cid for cid in legs if "-sl-" in cid)
    with engine.begin() as conn:
        conn.execute(text("UPDATE orders SET quantity = :q WHERE client_order_id = :c"), {"q": "123.0", "c": stop})
    said = refused()
    assert "ORDER_DIFFERS" in said and stop in said, said
    (trade,) = [t for t in list_trades(engine) if t.trade_key == key]
    assert trade.status == "open"
    engine.dispose()
