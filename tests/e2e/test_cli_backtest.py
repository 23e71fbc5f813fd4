"""End to end: the `atf` console script runs a backtest and writes every output."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "strategies" / "rsi_bb_atr.yaml"


def atf(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("atf", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "trading.cli"]
    return subprocess.run(
        [*cmd, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=300,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("e2e")
    db = work / "runs.db"
    proc = atf(
        "backtest", str(CONFIG), "--output", str(work / "out"), "--json", str(work / "extra.json"),
        "--db-url", f"sqlite:///{db}", cwd=work,
    )
    assert proc.returncode == 0, proc.stderr
    return {"work": work, "db": db, "proc": proc}


def test_backtest_writes_all_outputs(run: dict) -> None:
    out = run["work"] / "out"
    for name in ("result.json", "trades.csv", "equity.csv", "report.html", "equity.png"):
        assert (out / name).stat().st_size > 0, name
    assert "Report:" in run["proc"].stdout and str(out / "report.html") in run["proc"].stdout


def test_result_json_contract_is_consistent(run: dict) -> None:
    res = json.loads((run["work"] / "out" / "result.json").read_text())
    assert json.loads((run["work"] / "extra.json").read_text()) == res
    m = res["metrics"]
    required = {"total_trades", "win_rate", "total_pnl", "final_value", "max_drawdown_pct", "sharpe_ratio",
                "sortino_ratio", "profit_factor", "avg_win", "avg_loss", "largest_win", "largest_loss"}
    assert required <= set(m)
    trades = res["trades"]
    assert m["total_trades"] == len(trades) > 10
    trade_keys = {"entry_time", "exit_time", "side", "entry_price", "exit_price", "quantity", "pnl", "pnl_pct",
                  "exit_reason", "entry_tag"}
    assert all(trade_keys <= set(t) for t in trades)
    # Accounting: the trades explain the whole change in equity.
    assert sum(t["pnl"] for t in trades) == pytest.approx(m["final_value"] - 10_000.0, abs=1e-6)
    assert res["equity"][-1]["value"] == pytest.approx(m["final_value"])
    assert res["config"]["bot"]["name"] == "rsi_bb_atr"
    assert {t["exit_reason"] for t in trades} <= {"stop_loss", "trailing_stop", "take_profit", "breakeven_stop",
                                                  "end_of_data"}


def test_trades_csv_matches_json(run: dict) -> None:
    res = json.loads((run["work"] / "out" / "result.json").read_text())
    with open(run["work"] / "out" / "trades.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(res["trades"])
    assert float(rows[0]["entry_price"]) == pytest.approx(res["trades"][0]["entry_price"])


def test_run_is_stored_and_listed(run: dict) -> None:
    url = f"sqlite:///{run['db']}"
    listed = atf("runs", "list", "--db-url", url, cwd=run["work"])
    assert listed.returncode == 0, listed.stderr
    assert "rsi_bb_atr" in listed.stdout
    shown = atf("runs", "show", "1", "--db-url", url, "--trades", "3", cwd=run["work"])
    assert shown.returncode == 0, shown.stderr
    assert "total_trades" in shown.stdout


def test_start_end_cut_the_data(tmp_path: Path) -> None:
    proc = atf("backtest", str(CONFIG), "--start", "2020-03-01", "--end", "2020-03-31", "--no-save",
               "--output", str(tmp_path / "o"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    res = json.loads((tmp_path / "o" / "result.json").read_text())
    assert res["start"].startswith("2020-03-01T00:00")
    assert res["end"].startswith("2020-03-31T23:00")
    assert res["metrics"]["sharpe_ratio"] is not None  # 30 days: just enough for ratios


def test_csv_data_option(tmp_path: Path) -> None:
    from trading.data import generate_ohlcv

    df = generate_ohlcv(1500, seed=3, timeframe="15m")
    path = tmp_path / "bars.csv"
    df.rename_axis("datetime").to_csv(path)
    proc = atf("backtest", str(CONFIG), "--data", str(path), "--no-save", "--output", str(tmp_path / "o"),
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    res = json.loads((tmp_path / "o" / "result.json").read_text())
    assert res["bars"] == 1500 // 4  # 15m bars resampled to the bot's 1h


def test_invalid_config_exits_1_with_every_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.read_text().replace("x_atr_period", "x_atr_perod").replace("timeframe: 1h", "timeframe: 7x"))
    proc = atf("config", "validate", str(bad), cwd=tmp_path)
    assert proc.returncode == 1
    assert "x_atr_perod" in proc.stderr and "did you mean 'x_atr_period'" in proc.stderr
    assert "bot.timeframe" in proc.stderr
    ok = atf("config", "validate", str(CONFIG), cwd=tmp_path)
    assert ok.returncode == 0


def test_config_schema_is_json(tmp_path: Path) -> None:
    proc = atf("config", "schema", cwd=tmp_path)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["title"] == "atf bot configuration"


def test_bad_csv_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("datetime,open,high,low,close,volume\n"
                    "2024-01-01 00:00:00,10,11,9,10,1\n"
                    "2024-01-01 01:00:00,10,9,11,10,1\n")
    proc = atf("backtest", str(CONFIG), "--data", str(path), "--no-save", cwd=tmp_path)
    assert proc.returncode == 1
    assert "bad.csv" in proc.stderr and "line 3" in proc.stderr
