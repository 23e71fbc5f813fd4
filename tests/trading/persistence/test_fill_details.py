"""The details of a fill in the `fills` ledger table: fee currency, bid/ask, the run's
correlation id and strategy attribution, from a real paper run to the row; and the
idempotency key, which leaves those annotations out."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from tests.trading.test_bot import bot_yaml, write_csv
from trading.audit_session import RunContext
from trading.bot import BaseTradingBot
from trading.brokers.sim import fee_currency
from trading.config import parse_config
from trading.data import generate_ohlcv
from trading.events import Event, OrderFill, OrderFilled, encode_event
from trading.ledger import TradeLedger
from trading.persistence import apply_events
from trading.persistence.audit import event_key
from trading.persistence.columns import at_scale
from trading.persistence.models import FillRecord, OrderEventRecord, OrderRecord

from .builders import D, fill, submit

ANNOTATED = {
    "fee_currency": "USDT",
    "bid": D("99.9"),
    "ask": D("100.1"),
    "correlation_id": "run-1",
    "strategy_names": ("trend", "carry"),
    "strategy_weights": (D("0.75"), D("0.25")),
}


def rows(engine: Engine, model: type) -> list[dict]:
    table = model.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table).order_by(table.c.id))]


# --------------------------------------------------------------------------- the key and the rows


def test_the_key_of_a_fill_leaves_its_annotations_out_and_is_the_key_of_a_fill_from_before_them() -> None:
    bare = fill(1)
    annotated = dataclasses.replace(bare, **ANNOTATED)
    assert event_key(annotated) == event_key(bare)
    # The payload an older atf encoded had none of the new fields: its key is unchanged.
    old = {k: v for k, v in encode_event(bare).items() if k not in ANNOTATED}
    text = json.dumps(old, sort_keys=True, separators=(",", ":"))
    assert event_key(bare) == hashlib.sha256(text.encode()).hexdigest()
    # What makes the fill is still in the key.
    assert event_key(dataclasses.replace(bare, last_price=D("100.5"))) != event_key(bare)


def test_a_fill_row_holds_the_events_details_and_the_order_its_fee_currency(engine: Engine, bot: int) -> None:
    first = dataclasses.replace(fill(1, qty="1", total="2", filled="1"), **ANNOTATED)
    second = dataclasses.replace(fill(1, qty="1", total="2", filled="2", minute=2), fee_currency="USDT")
    apply_events(engine, [submit(1), first, second], bot)

    one, two = rows(engine, FillRecord)
    assert (one["fee_currency"], one["bid"], one["ask"], one["correlation_id"]) == ("USDT", D("99.9"), D("100.1"), "run-1")
    assert one["strategy_names"] == ["trend", "carry"]
    assert one["strategy_weights"] == {"trend": "0.75", "carry": "0.25"}
    # Without attribution and quote: the bot's strategy, no bid/ask.
    assert (two["fee_currency"], two["bid"], two["ask"], two["correlation_id"]) == ("USDT", None, None, None)
    assert two["strategy_names"] == ["RsiBb"] and two["strategy_weights"] == {"RsiBb": "1"}
    [order] = rows(engine, OrderRecord)
    assert (order["fee"], order["fee_currency"]) == (D("0.4"), "USDT")


def test_an_order_without_a_known_fee_currency_keeps_none(engine: Engine, bot: int) -> None:
    apply_events(engine, [submit(1), fill(1)], bot)
    [order] = rows(engine, OrderRecord)
    assert order["fee_currency"] is None and order["fee"] == D("0.2")


def test_the_same_fill_with_and_without_its_annotations_is_recorded_once(engine: Engine, bot: int) -> None:
    bare = fill(1)
    apply_events(engine, [submit(1), dataclasses.replace(bare, **ANNOTATED)], bot)
    apply_events(engine, [bare, dataclasses.replace(bare, correlation_id="run-2")], bot)  # a re-run's copies
    assert len(rows(engine, OrderEventRecord)) == 2
    [row] = rows(engine, FillRecord)
    assert row["correlation_id"] == "run-1" and row["bid"] == D("99.9")


def test_the_run_context_stamps_what_a_fill_lacks_and_nothing_else() -> None:
    ctx = RunContext("run-7", {"BTC/USDT": {"trend": 0.5, "carry": 0.5}, "*": {"other": 1}})
    stamped = ctx.stamp(fill(1))
    assert isinstance(stamped, OrderFilled) and stamped.correlation_id == "run-7"
    assert (stamped.strategy_names, stamped.strategy_weights) == (("trend", "carry"), (D("0.5"), D("0.5")))
    assert ctx.stamp(fill(2, symbol="ETH/USDT")).strategy_names == ("other",)
    assert RunContext("run-7").stamp(fill(3)).strategy_names is None  # no attribution: the database's default
    own = dataclasses.replace(fill(4), correlation_id="plan-9", strategy_names=("x",), strategy_weights=(D(1),))
    assert ctx.stamp(own) == own
    assert ctx.stamp(submit(1)) == submit(1)
    with pytest.raises(ValueError, match="sum to"):
        RunContext("r", {"*": {"a": 0.5}})


@pytest.mark.parametrize(
    ("symbol", "account", "expected"),
    [("BTC/USDT", None, "USDT"), ("BTC/USDT:USDT", "EUR", "USDT"), ("BTCUSDT", "USDT", "USDT"),
     ("AAA", None, None), ("AAA", "EUR", "EUR")],
)
def test_the_sim_charges_fees_in_the_symbols_quote_else_the_account_currency(
    symbol: str, account: str | None, expected: str | None
) -> None:
    assert fee_currency(symbol, account) == expected


# --------------------------------------------------------------------------- a real paper run


@pytest.fixture(scope="module")
def csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bars = generate_ohlcv(400, seed=11, timeframe="1h", start="2021-03-01")
    return write_csv(bars, tmp_path_factory.mktemp("bars") / "aaa.csv")


def _paper_yaml(db_url: str, spool: Path) -> str:
    yaml = bot_yaml(["AAA"]).replace("  cash: 10000.0\n", "  cash: 10000.0\n  currency: USDT\n")
    assert "currency: USDT" in yaml
    return yaml + f"""
ledger:
  attribution: {{AAA: {{trend: 0.75, carry: 0.25}}}}
persistence: {{url: '{db_url}', spool_dir: '{spool}', heartbeat_interval: 60}}
"""


def _run(db_url: str, tmp_path: Path, csv: Path, out: str) -> tuple[dict, list[Event]]:
    bot = BaseTradingBot(parse_config(_paper_yaml(db_url, tmp_path / "spool")), mode="paper", replay=csv,
                         speed="max", state_dir=tmp_path / out)
    assert bot.bus is not None
    seen: list[Event] = []
    bot.bus.subscribe(seen.append, inline=True, name="truth")
    result = asyncio.run(bot.start_trading())
    assert result.diagnostics["audit"]["all_written"] is True
    return result.diagnostics, seen


def test_a_paper_runs_fills_rows_carry_its_correlation_id_attribution_and_fee_currency_like_its_ledger(
    engine: Engine, db_url: str, tmp_path: Path, csv: Path
) -> None:
    diagnostics, seen = _run(db_url, tmp_path, csv, "out")
    run_id = diagnostics["ledger"]["correlation_id"]
    ledger = TradeLedger.load(diagnostics["ledger"]["url"]).get_ledger()
    fills = rows(engine, FillRecord)
    events = [e for e in seen if isinstance(e, OrderFill)]
    assert len(fills) == len(ledger) == len(events) > 0

    for row, entry in zip(fills, ledger, strict=True):
        assert row["client_order_id"] == entry.order_id
        assert (row["side"], row["quantity"], row["price"], row["fee"]) == (  # at the columns' scale
            entry.direction.value, at_scale(entry.filled_qty), at_scale(entry.fill_price), at_scale(entry.fee))
        assert row["ts"] == entry.timestamp
        assert row["order_type"] == (entry.order_type.value if entry.order_type else None)
        # Bars have no quote: neither the database nor the ledger makes one up.
        assert (row["bid"], row["ask"]) == (entry.bid, entry.ask) == (None, None)
        assert row["correlation_id"] == entry.correlation_id == run_id
        assert row["strategy_names"] == list(entry.strategy_names) == ["trend", "carry"]
        assert row["strategy_weights"] == {
            n: str(w) for n, w in zip(entry.strategy_names, entry.strategy_weights, strict=True)
        } == {"trend": "0.75", "carry": "0.25"}
        assert row["fee_currency"] == "USDT"
    # The bus carried the broker's details only; the run's context is the audit trail's stamp.
    assert all(e.fee_currency == "USDT" and e.correlation_id is None for e in events)

    orders = rows(engine, OrderRecord)
    filled = {r["client_order_id"] for r in fills}
    assert {o["fee_currency"] for o in orders if o["client_order_id"] in filled} == {"USDT"}
    assert {o["fee_currency"] for o in orders if o["client_order_id"] not in filled} <= {None}


def test_a_restarted_paper_run_adds_no_fill_and_keeps_the_first_runs_correlation_id(
    engine: Engine, db_url: str, tmp_path: Path, csv: Path
) -> None:
    first, _ = _run(db_url, tmp_path, csv, "out1")
    before = rows(engine, FillRecord)
    asyncio.run(asyncio.sleep(1.1))  # the second run's id differs (it has the start second)
    second, _ = _run(db_url, tmp_path, csv, "out2")
    assert second["audit"]["resumed"] and second["ledger"]["correlation_id"] != first["ledger"]["correlation_id"]
    after = rows(engine, FillRecord)
    assert after == before and {r["correlation_id"] for r in after} == {first["ledger"]["correlation_id"]}
