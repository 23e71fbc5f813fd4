"""Tests for the HTML/PNG report and the atomic output writer."""

from __future__ import annotations

import json
import math
import struct
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trading.analytics import output as output_mod
from trading.analytics import report as report_mod
from trading.analytics.output import OUTPUT_FILES, write_outputs
from trading.analytics.report import (
    MAX_PLOT_POINTS,
    PNG_DPI,
    PNG_FIGSIZE,
    atomic_write_bytes,
    build_figure,
    downsample_minmax,
    write_equity_png,
    write_html_report,
)
from trading.results import TRADE_COLUMNS, BacktestResult, TradeRecord

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
START = pd.Timestamp("2024-01-01T00:00:00Z")
EXIT_REASONS = ("take_profit", "stop_loss", "trailing_stop", "signal_exit")


def _ohlcv(n: int, seed: int, base: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    idx = pd.date_range(START, periods=n, freq="h")
    close = base * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    open_ = np.concatenate(([base], close[:-1]))
    spread = np.abs(rng.normal(0, 0.002, n)) * close
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
            "volume": rng.uniform(1, 10, n),
        },
        index=idx,
    )


def _trade(
    trade_id: int,
    symbol: str,
    side: str,
    entry_bar: int,
    exit_bar: int,
    prices: pd.DataFrame,
    exit_reason: str,
    entry_tag: str,
    qty: float = 0.5,
) -> TradeRecord:
    entry = float(prices["close"].iloc[entry_bar])
    exit_ = float(prices["close"].iloc[exit_bar])
    gross = (exit_ - entry) * qty * (1 if side == "long" else -1)
    fees = round((entry + exit_) * qty * 0.001, 6)
    pnl = gross - fees
    return TradeRecord(
        trade_id=trade_id,
        symbol=symbol,
        side=side,
        entry_time=prices.index[entry_bar].to_pydatetime(),
        exit_time=prices.index[exit_bar].to_pydatetime(),
        entry_price=entry,
        exit_price=exit_,
        quantity=qty,
        gross_pnl=gross,
        fees=fees,
        pnl=pnl,
        pnl_pct=pnl / (entry * qty) * 100,
        exit_reason=exit_reason,
        entry_tag=entry_tag,
        bars_held=exit_bar - entry_bar,
        mae_pct=-1.25,
        mfe_pct=2.5,
    )


def _metrics(trades: list[TradeRecord], initial: float, final: float) -> dict:
    def group(attr: str) -> dict:
        out: dict = {}
        for t in trades:
            g = out.setdefault(
                getattr(t, attr),
                {"trades": 0, "win_rate": None, "total_pnl": 0.0, "avg_pnl": None,
                 "avg_pnl_pct": None, "profit_factor": None, "avg_bars_held": None},
            )  # fmt: skip
            g["trades"] += 1
            g["total_pnl"] += t.pnl
        return out

    return {
        "initial_cash": initial,
        "final_value": final,
        "total_return_pct": (final / initial - 1) * 100,
        "total_trades": len(trades),
        "winning_trades": sum(t.pnl > 0 for t in trades),
        "losing_trades": sum(t.pnl < 0 for t in trades),
        "win_rate": 50.0,
        "total_pnl": sum(t.pnl for t in trades),
        "total_fees": sum(t.fees for t in trades),
        "avg_pnl": None,
        "avg_win": 12.5,
        "avg_loss": -7.25,
        "largest_win": 20.0,
        "largest_loss": -10.0,
        "profit_factor": 1.72,
        "expectancy": 2.5,
        "max_drawdown": 123.456,
        "max_drawdown_pct": 1.23,
        "max_drawdown_duration_days": 3.5,
        "sharpe_ratio": None,
        "sortino_ratio": None,
        "cagr_pct": 12.0,
        "calmar_ratio": None,
        "sqn": 0.8,
        "exposure_pct": 42.0,
        "avg_bars_held": 12.5,
        "start": START.isoformat(),
        "end": (START + timedelta(hours=299)).isoformat(),
        "bars": 300,
        "by_exit_reason": group("exit_reason"),
        "by_entry_tag": group("entry_tag"),
    }


def _make_result(prices: dict[str, pd.DataFrame], trades: list[TradeRecord]) -> BacktestResult:
    first = next(iter(prices.values()))
    n = len(first)
    rng = np.random.default_rng(7)
    initial = 10_000.0
    equity = pd.Series(initial + np.cumsum(rng.normal(0, 5, n)), index=first.index)
    final = float(equity.iloc[-1])
    return BacktestResult(
        name="ema-cross-bot",
        symbols=list(prices),
        timeframe="1h",
        start=first.index[0].to_pydatetime(),
        end=first.index[-1].to_pydatetime(),
        initial_cash=initial,
        final_value=final,
        trades=trades,
        equity=equity,
        metrics=_metrics(trades, initial, final),
        config={"bot": {"name": "ema-cross-bot"}, "risk": {"stake_pct": np.float64(2.0)}},
        bars=n,
        prices=prices,
    )


@pytest.fixture
def result() -> BacktestResult:
    btc = _ohlcv(300, seed=1, base=42_000.0)
    eth = _ohlcv(300, seed=2, base=2_300.0)
    trades = [
        _trade(1, "BTC/USDT", "long", 10, 40, btc, "take_profit", "ema_cross"),
        _trade(2, "BTC/USDT", "short", 60, 75, btc, "stop_loss", "rsi_overbought"),
        _trade(3, "ETH/USDT", "long", 100, 180, eth, "trailing_stop", "ema_cross+volume"),
        _trade(4, "BTC/USDT", "short", 200, 260, btc, "signal_exit", "rsi_overbought"),
    ]
    return _make_result({"BTC/USDT": btc, "ETH/USDT": eth}, trades)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _role(fig, role: str) -> list:
    return [t for t in fig.data if isinstance(t.meta, dict) and t.meta.get("role") == role]


# ----------------------------------------------------------------------- write_outputs


def test_write_outputs_creates_all_files(result: BacktestResult, tmp_path: Path) -> None:
    paths = write_outputs(result, tmp_path / "run")
    assert set(paths) == {"json", "trades", "equity", "html", "png"}
    for key, p in paths.items():
        assert p.is_file(), key
        assert p.name == OUTPUT_FILES[key]
        assert p.stat().st_size > 0
    # nothing but the five outputs: no temp files left behind
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(OUTPUT_FILES.values())


def test_result_json_matches_contract(result: BacktestResult, tmp_path: Path) -> None:
    paths = write_outputs(result, tmp_path)
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    for key in ("metrics", "trades", "equity", "config"):
        assert key in data
    assert data["trades"] == [t.to_dict() for t in result.trades]
    assert data["name"] == "ema-cross-bot"
    assert data["metrics"]["sharpe_ratio"] is None
    assert data["metrics"]["by_exit_reason"]["stop_loss"]["trades"] == 1
    assert data["config"]["risk"]["stake_pct"] == 2.0
    assert len(data["equity"]) == len(result.equity)
    assert data["equity"][0] == {
        "time": result.equity.index[0].isoformat(),
        "value": float(result.equity.iloc[0]),
    }


def test_json_path_also_written(result: BacktestResult, tmp_path: Path) -> None:
    extra = tmp_path / "elsewhere" / "latest.json"
    paths = write_outputs(result, tmp_path / "out", json_path=extra)
    assert extra.read_bytes() == paths["json"].read_bytes()
    assert set(paths) == set(OUTPUT_FILES)


def test_nan_and_numpy_scalars_become_valid_json(result: BacktestResult, tmp_path: Path) -> None:
    result.metrics["sharpe_ratio"] = float("nan")
    result.metrics["sortino_ratio"] = np.float64("nan")
    result.metrics["calmar_ratio"] = float("inf")
    result.metrics["sqn"] = np.float64(1.5)
    result.metrics["total_trades"] = np.int64(4)
    result.config["arr"] = np.array([1.0, np.nan])
    result.config["when"] = pd.Timestamp("2024-02-01", tz="UTC")
    paths = write_outputs(result, tmp_path)
    text = paths["json"].read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    m = data["metrics"]
    assert m["sharpe_ratio"] is None
    assert m["sortino_ratio"] is None
    assert m["calmar_ratio"] is None
    assert m["sqn"] == 1.5 and isinstance(m["sqn"], float)
    assert m["total_trades"] == 4 and isinstance(m["total_trades"], int)
    assert data["config"]["arr"] == [1.0, None]
    assert data["config"]["when"] == "2024-02-01T00:00:00+00:00"
    # the written text is strict JSON
    json.dumps(data, allow_nan=False)


def test_trades_csv_round_trips(result: BacktestResult, tmp_path: Path) -> None:
    paths = write_outputs(result, tmp_path)
    df = pd.read_csv(paths["trades"])
    assert list(df.columns) == list(TRADE_COLUMNS)
    assert len(df) == len(result.trades)
    np.testing.assert_array_equal(df["entry_price"], [t.entry_price for t in result.trades])
    np.testing.assert_array_equal(df["exit_price"], [t.exit_price for t in result.trades])
    np.testing.assert_array_equal(df["pnl"], [t.pnl for t in result.trades])
    assert list(df["exit_reason"]) == [t.exit_reason for t in result.trades]
    assert all(s.endswith("+00:00") for s in df["entry_time"])
    entry = pd.to_datetime(df["entry_time"], utc=True)
    assert list(entry) == [pd.Timestamp(t.entry_time) for t in result.trades]


def test_trades_csv_naive_times_are_utc(result: BacktestResult, tmp_path: Path) -> None:
    t0 = result.trades[0]
    t0.entry_time = t0.entry_time.replace(tzinfo=None)
    paths = write_outputs(result, tmp_path)
    df = pd.read_csv(paths["trades"])
    assert df["entry_time"].iloc[0] == pd.Timestamp(t0.entry_time).isoformat() + "+00:00"


def test_empty_trades_csv_has_header(result: BacktestResult, tmp_path: Path) -> None:
    result.trades = []
    result.metrics.pop("by_exit_reason")
    result.metrics.pop("by_entry_tag")
    paths = write_outputs(result, tmp_path)
    df = pd.read_csv(paths["trades"])
    assert list(df.columns) == list(TRADE_COLUMNS) and df.empty
    assert "No trades." in paths["html"].read_text(encoding="utf-8")


def test_equity_csv(result: BacktestResult, tmp_path: Path) -> None:
    paths = write_outputs(result, tmp_path)
    assert paths["equity"].read_text().splitlines()[0] == "time,value"
    df = pd.read_csv(paths["equity"])
    assert len(df) == len(result.equity)
    np.testing.assert_array_equal(df["value"], result.equity.to_numpy())
    assert pd.Timestamp(df["time"].iloc[-1]) == result.equity.index[-1]


# ----------------------------------------------------------------------------- atomic


def test_atomic_write_failure_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "result.json"
    target.write_text("old")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(report_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_write_outputs_failure_leaves_no_partial_files(
    result: BacktestResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_: BacktestResult) -> str:
        raise RuntimeError("render failed")

    monkeypatch.setattr(output_mod, "render_html_report", broken)
    with pytest.raises(RuntimeError):
        write_outputs(result, tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    # JSON and CSVs were completed before the failure; no report, no temp files
    assert names == ["equity.csv", "result.json", "trades.csv"]
    json.loads((tmp_path / "result.json").read_text())


def test_atomic_write_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["x.bin"]


# ------------------------------------------------------------------------------- HTML


def test_html_is_self_contained(result: BacktestResult, tmp_path: Path) -> None:
    path = write_html_report(result, tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "plotly.js v" in text  # the library banner, i.e. inlined
    assert path.stat().st_size > 3_000_000
    assert '<script src="http' not in text
    assert "ema-cross-bot" in text
    for reason in EXIT_REASONS:
        assert reason in text
    for tag in ("ema_cross", "rsi_overbought", "ema_cross+volume"):
        assert tag in text
    assert "BTC/USDT, ETH/USDT" in text
    assert "2024-01-01 00:00" in text


def test_html_formats_metrics(result: BacktestResult, tmp_path: Path) -> None:
    result.metrics["sortino_ratio"] = float("inf")
    result.metrics["max_drawdown_duration_bars"] = 17  # unknown key -> "Other" group
    text = write_html_report(result, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<td>Max drawdown duration bars</td><td class=\"n\">17</td>" in text
    assert "<td>Sortino</td><td class=\"n\">∞</td>" in text
    assert "<td>Sharpe</td><td class=\"n\">—</td>" in text
    assert "123.46" in text  # max_drawdown money, 2 decimals
    assert "1.23%" in text  # max_drawdown_pct
    assert "10,000.00" in text  # initial cash
    assert "42.00%" in text  # exposure
    assert "1.72" in text  # profit factor
    assert "—" in text  # None metrics


def test_html_escapes_user_text(result: BacktestResult, tmp_path: Path) -> None:
    result.name = "<b>bad</b> & co"
    result.trades[0].exit_reason = "<script>alert(1)</script>"
    result.metrics.pop("by_exit_reason")
    text = write_html_report(result, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "&lt;b&gt;bad&lt;/b&gt; &amp; co" in text
    assert "<script>alert(1)</script>" not in text


def test_breakdown_computed_when_metrics_lack_it(
    result: BacktestResult, tmp_path: Path
) -> None:
    result.metrics.pop("by_exit_reason")
    result.metrics.pop("by_entry_tag")
    text = write_html_report(result, tmp_path / "r.html").read_text(encoding="utf-8")
    section = text[text.index("<h2>By exit reason") : text.index("<h2>By entry tag")]
    by_reason = {t.exit_reason: t for t in result.trades}
    for reason, t in by_reason.items():
        row = section[section.index(f"<td>{reason}</td>") :].split("</tr>")[0]
        assert ("100.00%" if t.pnl > 0 else "0.00%") in row
        assert f"{t.pnl:,.2f}" in row
    tags = text[text.index("<h2>By entry tag") : text.index("<h2>Trades")]
    assert "<td>rsi_overbought</td><td class=\"n\">2</td>" in tags


def test_html_notes_truncated_trade_table(result: BacktestResult, tmp_path: Path) -> None:
    base = result.trades[0]
    result.trades = [
        TradeRecord(**{**{c: getattr(base, c) for c in TRADE_COLUMNS}, "trade_id": i})
        for i in range(1, 611)
    ]
    text = write_html_report(result, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "first 500 of 610 trades" in text
    trades_section = text[text.index("<h2>Trades") :]
    assert trades_section.count("<tr>") == 500 + 1  # header row + 500 rows


# ----------------------------------------------------------------------------- figure


def test_figure_markers(result: BacktestResult) -> None:
    fig = build_figure(result)
    entries = _role(fig, "entry")
    exits = _role(fig, "exit")
    assert sum(len(t.x) for t in entries) == len(result.trades)
    assert sum(len(t.x) for t in exits) == len(result.trades)
    symbols = {t.marker.symbol for t in entries}
    assert symbols == {"triangle-up", "triangle-down"}
    for t in entries:
        assert t.marker.color == "#2ca02c"
    n_long = sum(t.side == "long" for t in result.trades)
    assert sum(len(t.x) for t in entries if t.marker.symbol == "triangle-up") == n_long
    n_losers = sum(t.pnl < 0 for t in result.trades)
    assert 0 < n_losers < len(result.trades)  # both marker colours are exercised
    red = [t for t in exits if t.marker.color == "#d62728"]
    assert sum(len(t.x) for t in red) == n_losers
    for t in exits:
        assert t.marker.symbol == "x"
    hover = " ".join(h for t in exits for h in t.hovertext)
    for reason in EXIT_REASONS:
        assert reason in hover
    assert "pnl:" in hover and "entry tag: ema_cross" in hover
    # markers sit at the trade prices
    btc_long = next(t for t in entries if t.meta["symbol"] == "BTC/USDT" and t.name == "Long entry")
    assert list(btc_long.y) == [result.trades[0].entry_price]


def test_figure_panels_and_candles(result: BacktestResult) -> None:
    fig = build_figure(result)
    prices = _role(fig, "price")
    assert [p.meta["symbol"] for p in prices] == ["BTC/USDT", "ETH/USDT"]
    assert all(p.type == "candlestick" for p in prices)
    assert len(prices[0].x) == 300
    # 2 price panels + equity + drawdown, on distinct y axes sharing the x axis
    axes = {t.yaxis for t in fig.data}
    assert len(axes) == 4
    eq = _role(fig, "equity")[0]
    dd = _role(fig, "drawdown")[0]
    assert dd.fill == "tozeroy"
    assert len(eq.x) == len(result.equity)
    assert max(dd.y) <= 0.0
    expected = (result.equity / result.equity.cummax() - 1).min() * 100
    assert math.isclose(min(dd.y), expected, rel_tol=1e-12)


def test_figure_caps_price_panels(result: BacktestResult, tmp_path: Path) -> None:
    for i in range(4):
        sym = f"ALT{i}/USDT"
        result.prices[sym] = _ohlcv(300, seed=10 + i, base=1.0)
        result.symbols.append(sym)
    fig = build_figure(result)
    prices = _role(fig, "price")
    assert len(prices) == 4
    assert "ALT3/USDT" not in {p.meta["symbol"] for p in prices}
    text = write_html_report(result, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "not charted: ALT2/USDT, ALT3/USDT" in text


# -------------------------------------------------------------------------------- PNG


def test_png(result: BacktestResult, tmp_path: Path) -> None:
    path = write_equity_png(result, tmp_path / "equity.png")
    data = path.read_bytes()
    w, h = _png_size(data)
    assert (w, h) == (round(PNG_FIGSIZE[0] * PNG_DPI), round(PNG_FIGSIZE[1] * PNG_DPI))
    assert PNG_DPI == 150
    assert len(data) > 10_000


# ------------------------------------------------------------------------- downsample


def test_downsample_keeps_extremes() -> None:
    rng = np.random.default_rng(3)
    n = 100_003
    values = np.cumsum(rng.normal(0, 1, n))
    values[12_345] = 1e6  # single-bar spike
    values[87_654] = -1e6
    s = pd.Series(values, index=pd.date_range(START, periods=n, freq="min"))
    out = downsample_minmax(s, 5_000)
    assert len(out) <= 5_000
    assert len(out) > 4_000
    assert out.max() == 1e6 and out.min() == -1e6
    assert out.index.is_monotonic_increasing and out.index.is_unique
    assert out.index[0] == s.index[0] and out.index[-1] == s.index[-1]
    # every kept point is an original (time, value) pair
    pd.testing.assert_series_equal(out, s.loc[out.index])


@pytest.mark.parametrize("max_points", [4, 5, 99, 1_000])
def test_downsample_respects_budget(max_points: int) -> None:
    s = pd.Series(np.sin(np.arange(10_007) / 37.0))
    out = downsample_minmax(s, max_points)
    assert len(out) <= max_points
    assert out.max() == s.max() and out.min() == s.min()


def test_downsample_short_series_and_nan() -> None:
    s = pd.Series([1.0, 2.0, 3.0])
    assert downsample_minmax(s, 10) is s
    v = np.arange(1_000, dtype=float)
    v[100:300] = np.nan
    v[500] = -5.0
    out = downsample_minmax(pd.Series(v), 50)
    assert len(out) <= 50
    assert out.min() == -5.0 and out.max() == 999.0
    with pytest.raises(ValueError):
        downsample_minmax(s, 3)


# ------------------------------------------------------------------------------ large


def test_large_run_html_stays_small(tmp_path: Path) -> None:
    n = 200_000
    prices = _ohlcv(n, seed=11, base=30_000.0)
    trades = []
    for i in range(300):
        entry = 100 + i * 600
        side = "long" if i % 2 else "short"
        trades.append(
            _trade(i + 1, "BTC/USDT", side, entry, entry + 300, prices,
                   EXIT_REASONS[i % 4], "ema_cross")
        )  # fmt: skip
    result = _make_result({"BTC/USDT": prices}, trades)
    fig = build_figure(result)
    for role in ("price", "equity", "drawdown"):
        (trace,) = _role(fig, role)
        assert trace.type == "scatter"
        assert len(trace.x) <= MAX_PLOT_POINTS
    # the global price extremes survive downsampling
    (price,) = _role(fig, "price")
    assert max(price.y) == prices["close"].max() and min(price.y) == prices["close"].min()
    assert sum(len(t.x) for t in _role(fig, "entry")) == 300  # markers never downsampled

    path = write_html_report(result, tmp_path / "report.html")
    size = path.stat().st_size
    assert size < 8_000_000, size
    assert "downsampled" in path.read_text(encoding="utf-8")
