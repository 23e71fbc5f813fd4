"""End to end: the restart cases of test_cli_live_restart.py on USDⓈ-M futures (`market: future`).

On futures the bracket is emulated: the stop (STOP_MARKET) and the target (TAKE_PROFIT_MARKET)
are two reduce-only conditional orders, and the venue does not cancel one when the other
fills. So when the stop fills while the bot is down, the restart must cancel the target at the
venue itself; and an adopted pair keeps working as two separate orders.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.e2e.live_configs import SPEED, VENUE_ENV, bot_config, fast_exchange
from tests.e2e.test_cli_live import _start
from tests.e2e.test_cli_live_restart import (
    ARGS,
    SYMBOL,
    _closed,
    _hold,
    _interrupt,
    _polls,
    _trade,
    _wait,
    _walk,
)
from tests.e2e.test_cli_live_restart import _fills_once as fills_once
from tests.e2e.test_cli_live_restart import _kill_in_position as kill_in_position
from tests.fakes.fake_exchange import FakeExchange
from trading.brokers.ccxt_config import CcxtOptions
from trading.persistence import list_fills, list_orders, make_engine, upgrade_database
from trading.persistence.db import read_connection


@pytest.fixture
def fake() -> Iterator[FakeExchange]:
    with fast_exchange() as fx:
        yield fx


@pytest.fixture
def url(tmp_path: Path) -> str:
    value = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade_database(value)
    return value


def _write_config(work: Path, fake: FakeExchange, url: str) -> None:
    raw = bot_config(fake, persistence={"url": url, "heartbeat_interval": 0.5})
    raw["broker"]["ccxt"]["market"] = "future"
    if "websocket" in CcxtOptions.model_fields:
        raw["broker"]["ccxt"]["websocket"] = "off"
    (work / "bot.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def _legs(fake: FakeExchange) -> list[Any]:
    with fake.futures.lock:
        return [a for a in fake.futures.algos.values() if a.is_open and a.side == "SELL"]


def _kill_in_position(work: Path, fake: FakeExchange, engine: Engine) -> tuple[Any, Any, str]:
    """Run until the long position's stop and target work at the venue and in the record; SIGKILL."""
    return kill_in_position(work, fake, engine, _legs, ("STOP_MARKET", "TAKE_PROFIT_MARKET"),
                            held=lambda: fake.futures.positions[SYMBOL].qty > 0)


def _posted(fake: FakeExchange, since: int) -> list[dict[str, str]]:
    return [r.params for r in fake.requests[since:] if r.method == "POST" and "/order" in r.path.lower()]


def _fills_once(engine: Engine, fake: FakeExchange) -> None:
    fills_once(engine, fake, fake.futures, fees=False)


def test_on_futures_a_stop_filled_while_down_closes_the_trade_and_the_target_is_cancelled_at_the_restart(
    tmp_path: Path, fake: FakeExchange, url: str
) -> None:
    _write_config(tmp_path, fake, url)
    engine = make_engine(url)
    stop, target, key = _kill_in_position(tmp_path, fake, engine)

    fake.script(SYMBOL, _walk(float(stop.trigger) * 0.999, 8))
    fake.step(4)
    fake.futures.advance()
    assert stop.status == "FINISHED" and target.is_open  # two separate orders: the target still works
    (sold,) = [t for t in fake.futures.trades if t["orderId"] == int(stop.actual_order_id)]

    since = len(fake.requests)
    fake.clock.set_speed(SPEED)
    proc = _start(ARGS, tmp_path, VENUE_ENV)
    cancelled = _wait(lambda: target.status == "CANCELED", 60, proc)
    traded_on = cancelled and _wait(lambda: any(p.get("side") == "BUY" for p in _posted(fake, since)), 150, proc)
    out, err = _interrupt(proc)
    assert cancelled and traded_on and proc.returncode == 0 and "Stopped: interrupted" in out, err[-5000:]

    trade = _trade(engine, key)
    assert trade.status == "closed" and trade.exit_reason == "stop_loss", trade
    assert trade.exit_price == Decimal(sold["price"])
    stored = {o.client_order_id: o for o in list_orders(engine)}
    assert stored[stop.client_id].status == "filled" and stored[target.client_id].status == "cancelled"
    with read_connection(engine) as conn:
        tid = conn.execute(text("SELECT venue_trade_id FROM fills WHERE client_order_id = :c"),
                           {"c": stop.client_id}).scalar_one()
    assert tid == str(sold["id"])
    assert not [p for p in _posted(fake, since) if {stop.client_id, target.client_id} & set(p.values())]
    _fills_once(engine, fake)
    engine.dispose()


def test_on_futures_a_restart_adopts_both_legs_and_the_target_fill_closes_the_trade_and_cancels_the_stop(
    tmp_path: Path, fake: FakeExchange, url: str
) -> None:
    _write_config(tmp_path, fake, url)
    engine = make_engine(url)
    stop, target, key = _kill_in_position(tmp_path, fake, engine)
    legs = {stop.client_id, target.client_id}

    since = len(fake.requests)
    fake.script(SYMBOL, [_hold(fake, target.trigger)] * 100_000)  # nothing fills until the bot has adopted
    fake.clock.set_speed(SPEED)
    proc = _start(ARGS, tmp_path, VENUE_ENV)
    closed = _wait(lambda: _polls(fake, since, "/fapi/v1/openOrders") >= 3, 90, proc)
    if closed:
        fake.script(SYMBOL, _walk(float(target.trigger) * 1.002, 400))
        closed = _wait(lambda: _closed(tmp_path, key), 120, proc)
        closed = closed and _wait(lambda: not stop.is_open, 30, proc)  # the venue does not cancel it itself
    fake.clock.set_speed(0)
    out, err = _interrupt(proc)
    assert closed and proc.returncode == 0 and "Stopped: interrupted" in out, (closed, key, err[-3000:])
    assert not [p for p in _posted(fake, since) if legs & set(p.values())]
    trade = _trade(engine, key)
    assert trade.exit_reason == "take_profit", trade
    assert target.status == "FINISHED" or target.status == "CANCELED"  # replaced on the first live bar
    exit_order = {str(f.client_order_id) for f in list_fills(engine) if f.trade_key == key and f.side == "sell"}
    ids = {o.order_id for o in fake.futures.orders.values() if o.client_id in exit_order}
    (sold,) = [t for t in fake.futures.trades if t["orderId"] in ids]
    assert trade.exit_price == Decimal(sold["price"]) and trade.pnl == Decimal(sold["realizedPnl"]) - trade.fees
    result = json.loads((tmp_path / "result.json").read_text())
    assert [t for t in result["trades"] if t["exit_reason"] == "take_profit"
            and t["exit_price"] == pytest.approx(float(sold["price"]))]
    _fills_once(engine, fake)
    engine.dispose()

