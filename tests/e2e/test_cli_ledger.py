"""End to end: `atf ledger show` reads exported ledger files, filters them and writes table, CSV or JSON."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest

from trading.events import OrderFilled
from trading.ledger import TradeLedger
from trading.orders import ClientOrderId, OrderSide

DAY1 = datetime(2024, 3, 4, 9, 0, tzinfo=UTC)
DAY2 = datetime(2024, 3, 5, 9, 0, tzinfo=UTC)


def _cmd() -> list[str]:
    exe = shutil.which("atf", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "trading.cli"]


def atf(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_cmd(), *args], check=False, cwd=cwd, capture_output=True, text=True,
        env={**os.environ, "COLUMNS": "250"}, timeout=120,
    )


def _fill(cid: str, symbol: str, side: OrderSide, qty: str, price: str, ts: datetime) -> OrderFilled:
    return OrderFilled(ts=ts, client_order_id=ClientOrderId(cid), symbol=symbol, side=side, last_qty=D(qty),
                       last_price=D(price), fee=D("0.1"), filled_qty=D(qty), remaining_qty=D(0), avg_price=D(price))


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two runs exported on two days: run-a trades AAA (trend) and BBB (trend/carry), run-b trades AAA (carry)."""
    root = tmp_path_factory.mktemp("ledgers")
    plan = {"metadata": {"strategy_attribution": {"AAA": {"trend": 1}, "BBB": {"trend": 0.5, "carry": 0.5}}}}
    a = TradeLedger("runa", correlation_id="run-a", clock=lambda: DAY1 + timedelta(hours=8))
    a.record_filled_order(_fill("a1", "AAA", OrderSide.BUY, "2", "100", DAY1), "run-a", plan, {"bid": "99.9", "ask": "100.1"})
    a.record_filled_order(_fill("a2", "BBB", OrderSide.BUY, "4", "25.5", DAY1 + timedelta(hours=1)), "run-a", plan)
    a.record_filled_order(_fill("a3", "AAA", OrderSide.SELL, "2", "104", DAY1 + timedelta(hours=5)), "run-a", plan)
    a.export(str(root))
    b = TradeLedger("runb", correlation_id="run-b", clock=lambda: DAY2 + timedelta(hours=8))
    b.record_filled_order(_fill("b1", "AAA", OrderSide.BUY, "1", "103", DAY2),
                          "run-b", {"metadata": {"strategy_attribution": {"AAA": {"carry": 1}}}})
    b.export(str(root))
    (root / "notes.json").write_text("{}")  # not a ledger file: ignored when reading the folder
    return root


def _json(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_show_a_folder_as_json_lists_every_fill_of_every_file_by_time(exports: Path) -> None:
    doc = _json(atf("ledger", "show", str(exports), "--format", "json", cwd=exports))
    assert [e["order_id"] for e in doc["entries"]] == ["a1", "a2", "a3", "b1"]
    assert doc["totals"] == {"entries": 4, "buy_value": "405.0", "sell_value": "208", "fees": "0.4"}
    assert doc["entries"][0]["bid"] == "99.9" and doc["entries"][1]["ask"] is None


@pytest.mark.parametrize(("args", "orders"), [
    (["--symbol", "AAA"], ["a1", "a3", "b1"]),
    (["--strategy", "carry"], ["a2", "b1"]),
    (["--since", "2024-03-05"], ["b1"]),
    (["--until", "2024-03-04"], ["a1", "a2", "a3"]),
    (["--since", "2024-03-04T10:00:01", "--until", "2024-03-04T14:00:00+00:00"], ["a3"]),
    (["--symbol", "AAA", "--strategy", "trend"], ["a1", "a3"]),
])
def test_filters(exports: Path, args: list[str], orders: list[str]) -> None:
    doc = _json(atf("ledger", "show", str(exports), "--format", "json", *args, cwd=exports))
    assert [e["order_id"] for e in doc["entries"]] == orders


def test_csv_to_a_file_and_a_table_of_one_file(exports: Path, tmp_path: Path) -> None:
    out = tmp_path / "fills.csv"
    proc = atf("ledger", "show", str(exports), "--format", "csv", "--output", str(out), "--symbol", "BBB", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert [(r["order_id"], r["direction"], r["notional"], r["strategy_names"], r["strategy_weights"]) for r in rows] == [
        ("a2", "buy", "102.0", "trend;carry", "0.5;0.5")]
    one = exports / "trade-ledgers" / "2024" / "03" / "04" / "170000-runa-run-a.json"
    table = atf("ledger", "show", str(one), cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert sum("AAA" in line for line in lines) == 2 and not any("run-b" in line for line in lines)
    assert "buy value 302.0" in table.stdout and "sell value 208" in table.stdout
    assert "trend:0.5, carry:0.5" in table.stdout


def test_a_missing_source_or_a_bad_date_exits_1_with_the_reason(exports: Path, tmp_path: Path) -> None:
    missing = atf("ledger", "show", str(tmp_path / "nothing-here"), cwd=tmp_path)
    assert missing.returncode == 1 and "no trade ledger files" in missing.stderr
    bad = atf("ledger", "show", str(exports), "--since", "last tuesday", cwd=tmp_path)
    assert bad.returncode == 1 and "not an ISO date" in bad.stderr
