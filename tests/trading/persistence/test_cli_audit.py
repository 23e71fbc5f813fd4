"""`atf orders` and `atf trades` on a real database: filters, table, CSV, JSON, --output."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from trading.cli import app
from trading.cli_audit import parse_when
from trading.persistence import apply_events, register_bot_instance, save_backtest

from .builders import UTC, cid, round_trip
from .test_repository import make_result, make_trade


@pytest.fixture
def filled(engine: Engine, db_url: str) -> str:
    """A backtest run with one trade, and bot `alpha` with a BTC and an ETH round trip."""
    save_backtest(engine, make_result([make_trade(1)]))
    alpha = register_bot_instance(engine, "alpha", "paper", strategy="Rsi").id
    apply_events(engine, round_trip(1) + round_trip(2, symbol="ETH/USDT"), alpha)
    return db_url


def atf(*args: str) -> str:
    out = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    return out.output


def test_orders_table_shows_the_filtered_orders(filled: str) -> None:
    out = atf("orders", "--db-url", filled, "--symbol", "ETH/USDT")
    assert "2 orders" in out
    assert str(cid(2)) in out and str(cid(1)) not in out
    assert "take_profit" in out and "filled" in out


def test_orders_json_has_every_field_with_exact_decimals(filled: str) -> None:
    doc = json.loads(atf("orders", "--db-url", filled, "--bot", "alpha", "--format", "json"))
    assert doc["count"] == 4
    first = doc["orders"][0]
    assert first["client_order_id"] == str(cid(1))
    assert first["quantity"] == "2" and first["fee"] == "0.2"
    assert first["created_at"] == "2024-05-01T12:00:00+00:00"
    assert first["strategy"] == "Rsi"


def test_trades_csv_to_a_file_with_filters(filled: str, tmp_path: Path) -> None:
    target = tmp_path / "out" / "trades.csv"
    atf(
        "trades",
        "--db-url",
        filled,
        "--type",
        "paper",
        "--status",
        "closed",
        "--output",
        str(target),
    )
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [r["symbol"] for r in rows] == ["BTC/USDT", "ETH/USDT"]
    assert rows[0]["pnl"] == "19.58" and rows[0]["exit_reason"] == "take_profit"
    assert rows[0]["bot"] == "alpha" and rows[0]["trade_type"] == "paper"


def test_trades_include_backtests_and_filter_by_strategy_and_dates(filled: str) -> None:
    doc = json.loads(atf("trades", "--db-url", filled, "--format", "json"))
    assert [t["trade_type"] for t in doc["trades"]] == ["backtest", "paper", "paper"]
    doc = json.loads(atf("trades", "--db-url", filled, "--strategy", "Rsi", "--format", "json"))
    assert doc["count"] == 2
    # The paper trades close on 2024-05-01; the backtest trade on 2024-01-02.
    doc = json.loads(
        atf(
            "trades",
            "--db-url",
            filled,
            "--since",
            "2024-05-01",
            "--until",
            "2024-05-01",
            "--format",
            "json",
        )
    )
    assert [t["trade_type"] for t in doc["trades"]] == ["paper", "paper"]
    out = atf("trades", "--db-url", filled, "--until", "2024-04-30")
    assert "1 trades" in out


def test_bad_filter_exits_1_with_a_hint(filled: str) -> None:
    out = CliRunner().invoke(app, ["orders", "--db-url", filled, "--status", "filed"])
    assert out.exit_code == 1
    assert "did you mean 'filled'" in out.output
    out = CliRunner().invoke(app, ["trades", "--db-url", filled, "--since", "yesterday"])
    assert out.exit_code == 1 and "not an ISO date" in out.output
    out = CliRunner().invoke(app, ["trades", "--db-url", filled, "--output", "x.txt"])
    assert out.exit_code == 1 and ".csv or .json" in out.output


def test_parse_when() -> None:
    assert parse_when("2024-05-01").tzinfo is UTC  # type: ignore[union-attr]
    assert parse_when("2024-05-01", end=True).day == 2  # type: ignore[union-attr]
    assert parse_when("2024-05-01T10:00", end=True).hour == 10  # type: ignore[union-attr]
    assert parse_when("2024-05-01T10:00+02:00").hour == 8  # type: ignore[union-attr]
    assert parse_when(None) is None
