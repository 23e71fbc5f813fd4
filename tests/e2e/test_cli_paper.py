"""End to end: `atf paper --replay` matches `atf backtest` on the same CSV; Ctrl-C; `atf live` refusals.

Live runs against the fake venues are in test_cli_live.py and test_cli_live_ibkr.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trading.data import generate_ohlcv

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "strategies" / "rsi_bb_atr.yaml"


def _cmd() -> list[str]:
    exe = shutil.which("atf", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "trading.cli"]


def atf(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_cmd(), *args], check=False, cwd=cwd, capture_output=True, text=True,
        env={**os.environ, "COLUMNS": "200"}, timeout=300,
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("paper")
    generate_ohlcv(600, seed=5, timeframe="1h", start="2022-06-01").rename_axis("datetime").to_csv(work / "bars.csv")
    (work / "live.yaml").write_text(CONFIG.read_text().replace("trading_mode: paper", "trading_mode: live"))
    return work


def _result(path: Path) -> dict:
    res = json.loads(path.read_text())
    res.get("diagnostics", {}).pop("run_at", None)
    return res


def test_paper_replay_result_json_equals_the_backtest_on_the_same_csv(work: Path) -> None:
    bt = atf("backtest", str(CONFIG), "--data", "bars.csv", "--no-save", "--json", "bt.json", "-o", "bt", cwd=work)
    assert bt.returncode == 0, bt.stderr
    paper = atf("paper", str(CONFIG), "--replay", "bars.csv", "--speed", "max", "--json", "paper.json",
                "-o", "paper", cwd=work)
    assert paper.returncode == 0, paper.stderr
    b, p = _result(work / "bt.json"), _result(work / "paper.json")
    assert p == _result(work / "paper" / "result.json")
    assert b["trades"] and p["trades"] == b["trades"]
    assert p["metrics"] == b["metrics"]
    assert p["diagnostics"].pop("mode") == "paper" and p["diagnostics"].pop("stop_reason") == "end_of_data"
    assert p.keys() == b.keys()
    for name in ("trades.csv", "equity.csv", "report.html", "equity.png", "state.json"):
        assert (work / "paper" / name).stat().st_size > 0, name


def test_ctrl_c_stops_the_replay_and_writes_the_outputs_and_state(work: Path) -> None:
    # 1h bars at 3600x: one bar per second, so the run is still going when SIGINT arrives.
    proc = subprocess.Popen(
        [*_cmd(), "paper", str(CONFIG), "--replay", "bars.csv", "--speed", "3600", "-o", "int"],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
    )
    try:
        assert proc.stdout is not None
        assert "started" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        out, errout = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, errout
    assert "Stopped: interrupted" in out
    state = json.loads((work / "int" / "state.json").read_text())
    result = json.loads((work / "int" / "result.json").read_text())
    assert state["stop_reason"] == "interrupted"
    assert 0 < result["bars"] < 600
    assert state["last_bar_time"]["BTCUSDT"].startswith(result["end"][:19])


def test_live_refuses_a_paper_config_even_with_confirmation(work: Path) -> None:
    proc = atf("live", str(CONFIG), "--confirm-live", cwd=work)
    assert proc.returncode == 1
    assert "broker.trading_mode: live" in proc.stderr


def test_live_refuses_without_confirm_live(work: Path) -> None:
    proc = atf("live", "live.yaml", cwd=work)
    assert proc.returncode == 1
    assert "--confirm-live" in proc.stderr


def test_live_and_paper_without_replay_name_what_is_missing(work: Path) -> None:
    # broker.type paper is the simulator: no venue to trade at, and none to read live bars from.
    live = atf("live", "live.yaml", "--confirm-live", cwd=work)
    assert live.returncode == 1
    assert "broker.type is paper" in live.stderr
    paper = atf("paper", str(CONFIG), cwd=work)
    assert paper.returncode == 1
    assert "broker.ccxt.exchange" in paper.stderr and "--replay" in paper.stderr
