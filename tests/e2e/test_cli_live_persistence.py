"""End to end: `atf live` with a `persistence:` section, against the fake Binance, three runs.

1. The bot trades until it is flat after a round trip, then Ctrl-C (`--cancel-on-stop`): the
   SQLite audit trail holds the venue's orders and fills under the same client order ids.
2. Restarted on the same database: the bot instance resumes, its record is reconciled with the
   venue (nothing open on either side) and it trades on; Ctrl-C with a position open, its stop
   and target left working at the venue.
3. An order the bot never placed is working at the venue: the restart refuses to trade, names
   it, writes the unexplained difference, and sends nothing.
4. The stray order gone, the record and the venue agree; with ``live.on_restart: refuse`` what
   run 2 left open is not adopted: refused, each order and the position named (adoption, the
   default: tests/e2e/test_cli_live_restart.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.e2e.live_configs import SPEED, VENUE_ENV, bot_yaml, fast_exchange
from tests.e2e.test_cli_live import _start, _venue
from tests.e2e.test_cli_paper import _cmd
from tests.fakes.fake_exchange import FakeExchange
from trading.ledger import TradeLedger
from trading.persistence import list_fills, list_orders, make_engine, upgrade_database
from trading.persistence.columns import at_scale
from trading.persistence.db import read_connection


@pytest.fixture
def fake() -> Iterator[FakeExchange]:
    with fast_exchange() as fx:
        yield fx


def _flat(fake: FakeExchange) -> bool:
    with fake.engine.lock:
        coins = fake.engine.free.get("BTC", 0) + fake.engine.locked.get("BTC", 0)
        working = any(o.is_open for o in fake.engine.orders.values())
    return coins == 0 and not working


def _stop_when_flat(proc: subprocess.Popen[str], fake: FakeExchange, timeout: float = 150) -> tuple[str, str]:
    """SIGINT once a round trip is done and the account is flat (the clock stopped to keep it so)."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            trades, _ = _venue(fake)
            if any(not t["isBuyer"] for t in trades) and _flat(fake):
                fake.clock.set_speed(0)
                time.sleep(1.0)  # an entry the bot sent just before stays visible now
                if _flat(fake):
                    break
                fake.clock.set_speed(SPEED)
            time.sleep(0.05)
        proc.send_signal(2)
        return proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()


def _stop_when_protected(proc: subprocess.Popen[str], fake: FakeExchange, timeout: float = 150) -> tuple[str, str]:
    """SIGINT while a position is open with its protective orders working at the venue."""

    def protected() -> bool:
        with fake.engine.lock:
            coins = fake.engine.locked.get("BTC", 0)
            sells = [o for o in fake.engine.orders.values() if o.is_open and o.side == "SELL"]
        return coins > 0 and len(sells) == 2

    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if protected():
                fake.clock.set_speed(0)
                time.sleep(1.0)
                if protected():
                    break
                fake.clock.set_speed(SPEED)
            time.sleep(0.05)
        proc.send_signal(2)
        return proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()


def _history(fake: FakeExchange, cid: str, recorded: object) -> str:
    """What the venue was asked about `cid`, for a failure message."""
    asked = [f"{r.method} {r.path} {r.params}" for r in fake.requests if cid in r.params.values()]
    return f"{cid}: recorded {recorded}; venue {fake.orders_by_client_id(cid)}; requests {asked}"


def test_a_live_bot_records_its_orders_and_fills_and_reconciles_with_the_venue_when_restarted(
    tmp_path: Path, fake: FakeExchange
) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade_database(url)
    (tmp_path / "bot.yaml").write_text(bot_yaml(fake, persistence={"url": url, "heartbeat_interval": 0.5}))
    args = ["live", "bot.yaml", "--confirm-live", "--cancel-on-stop", "-o", "out", "--json", "result.json"]

    # 1. Trade, stop flat.
    out, err = _stop_when_flat(_start(args, tmp_path, VENUE_ENV), fake)
    assert "Stopped: interrupted" in out, err
    first = json.loads((tmp_path / "result.json").read_text())
    assert first["diagnostics"]["audit"]["all_written"] and not first["diagnostics"]["audit"]["resumed"]
    instance = first["diagnostics"]["audit"]["bot_instance_id"]
    engine = make_engine(url)
    trades, orders = _venue(fake)
    db_orders = {o.client_order_id: o for o in list_orders(engine)}
    # Every venue order is in the record under the bot's id, with what filled; the record's other
    # orders never reached the venue (refused before sending, or cancelled while held back).
    assert {o.client_id for o in orders} <= set(db_orders)
    for o in orders:
        assert db_orders[o.client_id].filled_qty == o.executed, _history(fake, o.client_id, db_orders[o.client_id])
    unsent = [o for cid, o in db_orders.items() if cid not in {v.client_id for v in orders}]
    assert all(o.status in ("rejected", "cancelled") and o.filled_qty == 0 for o in unsent)
    db_fills = sorted((f.client_order_id, f.price, f.quantity, f.fee) for f in list_fills(engine))
    by_order = {o.order_id: o.client_id for o in orders}
    venue_fills = sorted((by_order[t["orderId"]], Decimal(t["price"]), Decimal(t["qty"]), Decimal(t["commission"]))
                         for t in trades)
    assert db_fills == venue_fills and len(db_fills) >= 2
    # Each fill row carries the venue's fee currency, its quote when the fill was seen, and the
    # run: the ledger's correlation id.
    run_id = first["diagnostics"]["ledger"]["correlation_id"]
    for f in list_fills(engine):
        assert (f.fee_currency, f.correlation_id) == ("USDT", run_id)
        assert f.bid is not None and f.ask is not None and f.bid <= f.ask
    ledger_url = Path(first["diagnostics"]["ledger"]["url"])
    ledger = TradeLedger.load(str(ledger_url if ledger_url.is_absolute() else tmp_path / ledger_url))
    assert sorted((e.order_id, at_scale(e.fill_price), at_scale(e.bid), at_scale(e.ask), e.correlation_id)
                  for e in ledger.get_ledger() if e.bid is not None and e.ask is not None) == sorted(
        (f.client_order_id, f.price, f.bid, f.ask, f.correlation_id) for f in list_fills(engine))
    with read_connection(engine) as conn:
        assert tuple(conn.execute(text("SELECT status, stop_reason FROM bot_instances")).one()) == (
            "stopped", "interrupted")

    # 2. Restart: resumed, reconciled (nothing open anywhere), trading on; stopped with a position
    #    open and its stop and target working at the venue (the default: orders are kept).
    fake.clock.set_speed(SPEED)
    posts = len(fake.calls("POST", "/api/v3/order"))
    out, err = _stop_when_protected(_start(args[:3] + args[4:], tmp_path, VENUE_ENV), fake)
    assert "Stopped: interrupted" in out, err
    second = json.loads((tmp_path / "result.json").read_text())
    audit = second["diagnostics"]["audit"]
    assert audit["resumed"] and audit["bot_instance_id"] == instance and audit["refused"] is None
    assert second["diagnostics"]["live"]["live_bars"]["BTCUSDT"] > 0
    with read_connection(engine) as conn:
        assert conn.execute(text("SELECT count(*) FROM order_events WHERE kind = 'reconciliation'")).scalar() == 0
    assert {o.client_id for o in _venue(fake)[1]} <= {o.client_order_id for o in list_orders(engine)}
    assert len(fake.calls("POST", "/api/v3/order")) > posts
    working = {o.client_id for o in _venue(fake)[1] if o.is_open}
    assert working and {o["client_order_id"] for o in _state(tmp_path)["open_orders"]} == working

    # 3. An order at the venue the bot never placed: the restart refuses before trading.
    fake.clock.set_speed(0)
    stray = fake.engine.new_order({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                                   "quantity": "0.5", "price": "50.00", "newClientOrderId": "manual-1"})
    assert stray.is_open
    posts = len(fake.calls("POST", "/api/v3/order"))
    proc = subprocess.run([*_cmd(), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **VENUE_ENV, "COLUMNS": "200"}, check=False)
    assert proc.returncode == 1
    assert "ORDER_NOT_IN_DB" in proc.stderr and "manual-1" in proc.stderr
    assert len(fake.calls("POST", "/api/v3/order")) == posts  # nothing sent
    with read_connection(engine) as conn:
        rows = conn.execute(text("SELECT client_order_id, payload FROM order_events WHERE kind = 'reconciliation'")).all()
    assert len(rows) == 1 and rows[0][0] == "manual-1"
    assert '"unexplained": true' in str(rows[0][1]) and "ORDER_NOT_IN_DB" in str(rows[0][1])

    # 4. Without it, the record and the venue agree (the venue's rounded prices and amounts are the
    #    record's), but on_restart: refuse does not adopt the position and its orders: refused, named.
    fake.engine.cancel("BTCUSDT", None, "manual-1")
    (tmp_path / "bot.yaml").write_text(bot_yaml(fake, persistence={"url": url, "heartbeat_interval": 0.5},
                                                live={"on_restart": "refuse"}))
    proc = subprocess.run([*_cmd(), *args], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **VENUE_ENV, "COLUMNS": "300"}, check=False)
    assert proc.returncode == 1
    said = " ".join(proc.stderr.split())
    assert "still holds what the earlier run left open" in said and "position BTCUSDT" in said, said
    assert all(cid in said for cid in working)
    assert len(fake.calls("POST", "/api/v3/order")) == posts
    with read_connection(engine) as conn:  # no difference beyond the stray order was written
        assert conn.execute(text("SELECT count(*) FROM order_events WHERE kind = 'reconciliation'")).scalar() == 1
    engine.dispose()


def _state(work: Path) -> dict:
    return json.loads((work / "out" / "state.json").read_text())
