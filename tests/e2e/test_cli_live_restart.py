"""End to end: `atf live` killed with SIGKILL in a position, restarted on the same database (docs/live.md, "Restart").

The bot (rsi_bb_atr on 1m candles) trades at the fake Binance spot market, whose OCO list holds
the position's stop (STOP_LOSS_LIMIT) and target (LIMIT_MAKER); the audit trail is on SQLite
or PostgreSQL. Each case waits until the database shows the position and both legs working,
freezes the fake's clock and kills the process (nothing is saved at a kill -9).

* The stop fills while the bot is down: the restart records the venue's fill (its trade id),
  closes the round trip with ``stop_loss``, the target is over at the venue and in the record,
  reconciliation agrees, and the bot trades on.
* Nothing happens while it is down: ``live.on_restart: refuse`` refuses as before; the default
  adopts the position and its legs without placing them again, and when the adopted target
  fills the same trade row closes with ``take_profit`` and the venue's pnl. Coins at the venue
  that the bot never bought are then a mismatch that refuses the restart, naming the symbol.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.e2e.live_configs import SPEED, VENUE_ENV, bot_config, fast_exchange
from tests.e2e.test_cli_live import _start
from tests.e2e.test_cli_paper import _cmd
from tests.fakes.fake_exchange import FakeExchange
from trading.brokers.ccxt_config import CcxtOptions
from trading.persistence import (
    TradeView,
    list_fills,
    list_orders,
    list_trades,
    make_engine,
    upgrade_database,
)
from trading.persistence.db import read_connection

SYMBOL = "BTCUSDT"
ARGS = ["live", "bot.yaml", "--confirm-live", "--cancel-on-stop", "-o", "out", "--json", "result.json"]


@pytest.fixture
def fake() -> Iterator[FakeExchange]:
    with fast_exchange() as fx:
        yield fx


def _write_config(work: Path, fake: FakeExchange, url: str, **live: Any) -> None:
    import yaml

    raw = bot_config(fake, persistence={"url": url, "heartbeat_interval": 0.5})
    if "websocket" in CcxtOptions.model_fields:  # the fake serves REST only here: poll
        raw["broker"]["ccxt"]["websocket"] = "off"
    if live:
        raw["live"] = live
    (work / "bot.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def _wait(condition: Callable[[], bool], timeout: float, proc: subprocess.Popen[str] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc is not None and proc.poll() is not None:
            return condition()
        time.sleep(0.05)
    return False


def _legs(fake: FakeExchange) -> list[Any]:
    with fake.engine.lock:
        return [o for o in fake.engine.orders.values() if o.is_open and o.side == "SELL"]


def _accepted(work: Path) -> set[str]:
    """The orders the bot has told as accepted and not ended, from its order log (not the database:
    the test reads it only once the bot is dead, not while its writer and checkpoints run)."""
    status: dict[str, str] = {}
    path = work / "out" / "logs" / "trading_orders.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line being written
                continue
            if record.get("order_id"):
                status[record["order_id"]] = record.get("status") or ""
    return {cid for cid, s in status.items() if s == "accepted"}


def _hold(fake: FakeExchange, target: Decimal, minutes: int = 60) -> float:
    """A price to hold while the bot restarts: the highest high of the last `minutes` (its trailing
    stop, recomputed over the bars it warms up on, stays below it; the current minute's high alone
    once left a recomputed stop above the price: rejected, WOULD_TRIGGER_NOW), just below the target."""
    now = fake.now_ms()
    path = fake.engine.paths[SYMBOL]
    this_minute = now - now % 60_000
    high = max(path.candle(this_minute - k * 60_000, 60_000, now)[1] for k in range(minutes))
    return float(min(max(high, fake.engine.price(SYMBOL)), target - Decimal("0.05")))


def _closed(work: Path, key: str) -> bool:
    """Whether the bot's order log has the round trip `key` closed."""
    path = work / "out" / "logs" / "trading_orders.jsonl"
    return path.exists() and any(f'"trade_id":"{key}"' in line and '"status":"closed"' in line
                                 for line in path.read_text().splitlines())


def _kill_in_position(
    work: Path,
    fake: FakeExchange,
    engine: Engine,
    legs: Callable[[FakeExchange], list[Any]] = _legs,
    kinds: tuple[str, str] = ("STOP_LOSS_LIMIT", "LIMIT_MAKER"),
    held: Callable[[], bool] = lambda: True,
) -> tuple[Any, Any, str]:
    """Run until the position (`held`) has its stop and target (`legs`, of `kinds`) working at the
    venue and in the record; SIGKILL; return the stop, the target and the round trip's key."""
    proc = _start(ARGS, work, VENUE_ENV)
    try:
        def protected() -> bool:
            working = legs(fake)
            return held() and len(working) == 2 and {o.client_id for o in working} <= _accepted(work)

        while True:
            assert _wait(protected, 150, proc), f"no protected position: {proc.poll()} {legs(fake)}"
            fake.clock.set_speed(0)
            if _wait(lambda: not protected(), 2.0):  # it moved the stop just now: go on
                fake.clock.set_speed(SPEED)
                continue
            break  # frozen for 2 s: its writer has long written what it logged
    finally:
        proc.kill()  # SIGKILL: no stop, no state saved
        proc.communicate(timeout=60)
    stop = next(o for o in legs(fake) if o.type == kinds[0])
    target = next(o for o in legs(fake) if o.type == kinds[1])
    with read_connection(engine) as conn:
        key = conn.execute(text("SELECT trade_key FROM positions WHERE side = 'long'")).scalar_one()
    return stop, target, key


def _walk(price: float, hold: int) -> list[float]:
    """`hold` ticks at `price`, then a random walk from there (the bot keeps finding signals)."""
    steps = np.random.default_rng(7).normal(0.0, 0.0003, 50_000)
    return [price] * hold + (price * np.exp(np.cumsum(steps))).tolist()


def _interrupt(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Ctrl-C (or the run's own end) and its output."""
    try:
        if proc.poll() is None:
            proc.send_signal(2)
        return proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()


def _polls(fake: FakeExchange, since: int, path: str) -> int:
    return sum(r.method == "GET" and r.path == path for r in fake.requests[since:])


def _posted(fake: FakeExchange, since: int) -> list[dict[str, str]]:
    return [r.params for r in fake.requests[since:] if r.method == "POST"]


def _trade(engine: Engine, key: str) -> TradeView:
    return next(t for t in list_trades(engine) if t.trade_key == key)


def _fills_once(engine: Engine, fake: FakeExchange, book: Any = None, fees: bool = True) -> None:
    """Every venue execution (in `book`: the spot engine by default) is in the record once, at the
    venue's price, quantity and (`fees`) commission, under the venue's trade id."""
    book = fake.engine if book is None else book
    with book.lock:
        venue = {str(t["id"]): t for t in book.trades}
        orders = {o.order_id: o.client_id for o in book.orders.values()}
    fills = list_fills(engine)
    assert sorted(str(f.venue_trade_id) for f in fills) == sorted(venue)  # each trade, once, by id
    db = sorted((f.client_order_id, f.price, f.quantity, f.fee if fees else None) for f in fills)
    at_venue = sorted((orders[t["orderId"]], Decimal(t["price"]), Decimal(t["qty"]),
                       Decimal(t["commission"]) if fees else None) for t in venue.values())
    assert db == at_venue


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        value = f"sqlite:///{tmp_path / 'audit.db'}"
    else:
        value = request.getfixturevalue("postgres_url")
    upgrade_database(value)
    return value


def test_a_stop_that_filled_while_the_bot_was_down_is_recorded_and_closes_the_trade_at_the_restart(
    tmp_path: Path, fake: FakeExchange, url: str
) -> None:
    _write_config(tmp_path, fake, url)
    engine = make_engine(url)
    stop, target, key = _kill_in_position(tmp_path, fake, engine)
    assert _trade(engine, key).status == "open"

    # While the bot is down the price falls through the stop: the venue sells, the OCO target expires.
    fake.script(SYMBOL, _walk(float(stop.stop) * 0.999, 8))
    fake.step(4)
    fake.engine.advance()
    assert stop.status == "FILLED" and target.status == "EXPIRED"
    sold = next(t for t in fake.engine.trades if t["orderId"] == stop.order_id)

    since = len(fake.requests)
    fake.clock.set_speed(SPEED)
    proc = _start(ARGS, tmp_path, VENUE_ENV)
    # The restart records the fill and trades on: a new entry goes out.
    traded_on = _wait(lambda: any(p.get("side") == "BUY" for p in _posted(fake, since)), 150, proc)
    out, err = _interrupt(proc)
    assert traded_on and proc.returncode == 0 and "Stopped: interrupted" in out, err[-5000:]

    trade = _trade(engine, key)
    assert trade.status == "closed" and trade.exit_reason == "stop_loss", trade
    assert trade.exit_price == Decimal(sold["price"])
    stored = {o.client_order_id: o for o in list_orders(engine)}
    assert stored[stop.client_id].status == "filled" and stored[target.client_id].status == "cancelled"
    with read_connection(engine) as conn:
        fill = conn.execute(text("SELECT venue_trade_id, ts FROM fills WHERE client_order_id = :c"),
                            {"c": stop.client_id}).one()
        notes = conn.execute(text("SELECT payload FROM order_events WHERE kind = 'reconciliation'")).scalars().all()
    assert fill[0] == str(sold["id"]) and not [n for n in notes if "unexplained" in str(n)], notes
    assert not [p for p in _posted(fake, since) if stop.client_id in p.values() or target.client_id in p.values()]
    _fills_once(engine, fake)
    engine.dispose()


def test_a_restart_adopts_the_open_position_and_its_legs_and_closes_the_same_trade_when_the_target_fills(
    tmp_path: Path, fake: FakeExchange, url: str
) -> None:
    _write_config(tmp_path, fake, url)
    engine = make_engine(url)
    stop, target, key = _kill_in_position(tmp_path, fake, engine)
    legs = {stop.client_id, target.client_id}

    # live.on_restart: refuse: refused as before, the position and both legs named, nothing sent.
    _write_config(tmp_path, fake, url, on_restart="refuse")
    since = len(fake.requests)
    proc = subprocess.run([*_cmd(), *ARGS], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **VENUE_ENV, "COLUMNS": "300"}, check=False)
    said = " ".join(proc.stderr.split())
    assert proc.returncode == 1 and "still holds what the earlier run left open" in said, said
    assert f"position {SYMBOL}" in said and all(cid in said for cid in legs)
    assert not _posted(fake, since)

    # The default adopts: the legs keep working under their ids and are never placed again.
    _write_config(tmp_path, fake, url)
    since = len(fake.requests)
    fake.script(SYMBOL, [_hold(fake, target.price)] * 100_000)  # nothing fills until the bot has adopted
    fake.clock.set_speed(SPEED)
    proc = _start(ARGS, tmp_path, VENUE_ENV)
    closed = _wait(lambda: _polls(fake, since, "/api/v3/openOrders") >= 3, 90, proc)
    if closed:
        # It polls the adopted legs (one read was the reconciliation's): the price rises through the target.
        fake.script(SYMBOL, _walk(float(target.price) * 1.002, 400))
        closed = _wait(lambda: _closed(tmp_path, key), 120, proc)
    fake.clock.set_speed(0)
    out, err = _interrupt(proc)
    assert closed and proc.returncode == 0 and "Stopped: interrupted" in out, (closed, key, out[-300:], err[-2000:])
    assert not [p for p in _posted(fake, since) if legs & set(p.values())]  # never placed again
    # The same trade row closes at a target, with the pnl of the venue's fills of the round trip. It is
    # the adopted target, unless the first live bar moved the legs (a position older than the warm-up
    # bars: its exits are recomputed from the first bar they cover) and a replacement filled.
    trade = _trade(engine, key)
    assert trade.exit_reason == "take_profit" and trade.status == "closed", trade
    assert target.status == "FILLED" or stop.status in ("CANCELED", "EXPIRED")
    fills = [f for f in list_fills(engine) if f.trade_key == key]
    (sold,) = [f for f in fills if f.side == "sell"]
    gross = sum((f.quantity * f.price * (1 if f.side == "sell" else -1) for f in fills), Decimal(0))
    assert trade.pnl == gross - sum((f.fee for f in fills), Decimal(0)) and trade.exit_price == sold.price
    # The strategy managed the adopted trade: its result closes it at the target the venue filled.
    result = json.loads((tmp_path / "result.json").read_text())
    (managed,) = [t for t in result["trades"] if t["exit_reason"] == "take_profit"
                  and t["exit_price"] == pytest.approx(float(sold.price))]
    assert managed["quantity"] == pytest.approx(float(sold.quantity))
    _fills_once(engine, fake)

    # Coins the bot never bought are not its position: the restart refuses, naming the symbol.
    with fake.engine.lock:
        fake.engine.free["BTC"] = fake.engine.free.get("BTC", Decimal(0)) + Decimal("0.25")
    since = len(fake.requests)
    proc = subprocess.run([*_cmd(), *ARGS], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **VENUE_ENV, "COLUMNS": "300"}, check=False)
    said = " ".join(proc.stderr.split())
    assert proc.returncode == 1 and "POSITION_MISMATCH" in said and SYMBOL in said, said
    assert not _posted(fake, since)
    engine.dispose()


def test_ctrl_c_with_cancel_on_stop_gets_the_answer_of_a_cancel_that_timed_out(tmp_path: Path, fake: FakeExchange) -> None:
    """The venue cancels a leg but its answers never come (a slow venue, every retry timing out):
    at stop the bot asks again and reads the venue, so neither the venue nor the state holds a
    working order, and both legs count as cancelled (CI once saw a leg left `pending_cancel`)."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade_database(url)
    _write_config(tmp_path, fake, url)
    proc = _start(ARGS, tmp_path, VENUE_ENV)
    try:
        def protected() -> bool:
            working = _legs(fake)
            return len(working) == 2 and {o.client_id for o in working} <= _accepted(tmp_path)

        assert _wait(protected, 150, proc), f"no protected position: {proc.poll()}"
        fake.clock.set_speed(0)
        legs = {o.client_id for o in _legs(fake)}
        # The first leg's cancel goes through (the venue's OCO list takes the other leg with it);
        # every try of the second leg's cancel times out.
        fake.fault("DELETE", "/api/v3/order", "none")  # no fault: answered as usual
        fake.fault("DELETE", "/api/v3/order", "timeout", times=4)
        out, err = _interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Stopped: interrupted" in out, err[-3000:]
    assert not _legs(fake)
    with fake.engine.lock:
        assert {o.client_id for o in fake.engine.orders.values() if o.status == "CANCELED"} >= legs
    state = json.loads((tmp_path / "out" / "state.json").read_text())
    assert state["open_orders"] == [] and state["cancelled_on_stop"] == 2
    stored = {o.client_order_id: o.status for o in list_orders(make_engine(url))}
    assert {stored[c] for c in legs} == {"cancelled"}
