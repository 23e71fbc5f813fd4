"""End to end: `atf data download` against the fake Binance (real ccxt over HTTP), incremental runs
that never duplicate a candle, files the CSV loader reads, and `atf data list`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.fakes.fake_exchange import FakeExchange
from trading.cli import app
from trading.data import load_csv

START = 1_704_067_230_000  # 2024-01-01 00:00:30 UTC
HOUR = 3_600_000


def _cmd() -> list[str]:
    exe = shutil.which("atf", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "trading.cli"]


def atf(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_cmd(), *args], check=False, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "250"}, timeout=120)


@pytest.fixture
def fake() -> Iterator[FakeExchange]:
    with FakeExchange(start_ms=START, check_timestamp=False) as fx:
        yield fx


def _download(fake: FakeExchange, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return atf("data", "download", "--exchange", "binance", "--symbol", "BTC/USDT", "--timeframe", "1h",
               "--api-host", fake.url, "--out", str(tmp_path / "data"), *extra, cwd=tmp_path)


def test_download_writes_closed_candles_the_csv_loader_reads(fake: FakeExchange, tmp_path: Path) -> None:
    result = _download(fake, tmp_path, "--since", "2023-12-20")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "data" / "binance_BTC-USDT_1h.csv"
    df = load_csv(path, timeframe="1h")  # validated by the project's loader
    assert df.index[0] == pd.Timestamp("2023-12-20", tz="UTC")
    # 00:00 on Jan 1 is still forming at 00:00:30: the last bar is 23:00 the day before
    assert df.index[-1] == pd.Timestamp("2023-12-31 23:00", tz="UTC")
    assert len(df) == 12 * 24 and df.attrs["data_report"].gaps == []
    row = df.loc[pd.Timestamp("2023-12-31 23:00", tz="UTC")]
    o, h, low, c, v = fake.engine.paths["BTCUSDT"].candle(START - 30_000 - HOUR, HOUR, fake.now_ms())
    assert (row.open, row.high, row.low, row.close, row.volume) == (float(o), float(h), float(low), float(c), float(v))
    assert len(fake.calls("GET", "/api/v3/klines")) == 1  # 288 candles: one page of 1000


def test_download_again_appends_only_new_candles(fake: FakeExchange, tmp_path: Path) -> None:
    assert _download(fake, tmp_path, "--since", "2023-12-30").returncode == 0
    path = tmp_path / "data" / "binance_BTC-USDT_1h.csv"
    before = path.read_text()

    again = _download(fake, tmp_path, "--since", "2023-12-30")
    assert again.returncode == 0 and "+0 candles" in again.stdout
    assert path.read_text() == before  # nothing new: the file is untouched

    fake.clock.advance(5 * HOUR)  # five more hours have closed
    more = _download(fake, tmp_path, "--since", "2023-12-30")
    assert more.returncode == 0 and "+5 candles" in more.stdout
    assert path.read_text().startswith(before)  # the old rows stay as they were
    df = load_csv(path, timeframe="1h")
    assert len(df) == 48 + 5 and df.index.is_unique and df.index[-1] == pd.Timestamp("2024-01-01 04:00", tz="UTC")
    last_call = fake.calls("GET", "/api/v3/klines")[-1]
    assert int(last_call.params["startTime"]) == START - 30_000  # asked only after the last bar
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_download_parquet_pages_through_the_limit_and_lists(fake: FakeExchange, tmp_path: Path) -> None:
    result = _download(fake, tmp_path, "--since", "2023-11-01", "--until", "2023-12-31T12:00", "--format", "parquet")
    assert result.returncode == 0, result.stderr
    df = pd.read_parquet(tmp_path / "data" / "binance_BTC-USDT_1h.parquet")
    # the venue's history starts on 2023-12-02 01:00: from there to the --until bar
    assert (df.index[0], df.index[-1]) == (pd.Timestamp("2023-12-02 01:00", tz="UTC"),
                                           pd.Timestamp("2023-12-31 12:00", tz="UTC"))
    assert len(df) == 708 and df.index.is_unique

    minutes = atf("data", "download", "--symbol", "BTCUSDT", "--timeframe", "1m", "--since", "2023-12-31",
                  "--api-host", fake.url, "--out", str(tmp_path / "data"), cwd=tmp_path)
    assert minutes.returncode == 0, minutes.stderr
    one_minute = load_csv(tmp_path / "data" / "binance_BTC-USDT_1m.csv", timeframe="1m")
    assert len(one_minute) == 24 * 60 and one_minute.attrs["data_report"].gaps == []
    pages = [c for c in fake.calls("GET", "/api/v3/klines") if c.params["interval"] == "1m"]
    assert len(pages) == 2  # 1000, then 440

    listing = atf("data", "list", str(tmp_path / "data"), cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    rows = {ln.split()[1]: ln for ln in listing.stdout.splitlines() if "binance_BTC-USDT" in ln}
    assert set(rows) == {"binance_BTC-USDT_1h.parquet", "binance_BTC-USDT_1m.csv"}
    assert "BTC/USDT" in rows["binance_BTC-USDT_1m.csv"] and "1440" in rows["binance_BTC-USDT_1m.csv"]
    assert "2023-12-31 12:00:00+00:00" in rows["binance_BTC-USDT_1h.parquet"]
    assert "708" in rows["binance_BTC-USDT_1h.parquet"]


def test_download_errors_are_one_line_and_outages_are_retried(fake: FakeExchange, tmp_path: Path) -> None:
    runner = CliRunner()
    common = ["data", "download", "--api-host", fake.url, "--out", str(tmp_path)]
    bad = runner.invoke(app, [*common, "--symbol", "DOGE/EUR"])
    assert bad.exit_code == 1 and "has no market 'DOGE/EUR'" in bad.output
    tf = runner.invoke(app, [*common, "--timeframe", "7m"])
    assert tf.exit_code == 1 and "has no timeframe '7m'" in tf.output
    fake.fault("GET", "/api/v3/klines", "unavailable", times=2)
    ok = runner.invoke(app, [*common, "--since", "2023-12-31"])
    assert ok.exit_code == 0 and "+24 candles" in ok.output  # retried through the 503s
    assert len(fake.calls("GET", "/api/v3/klines")) == 3
