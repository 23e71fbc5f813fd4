"""The backtest engine: loading bars for a bot, several symbols, refusals, accounting."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.strategy.conftest import make_config
from trading.data import generate_ohlcv
from trading.engine import load_bars, run_backtest
from trading.exceptions import ConfigError, DataValidationError

MODULE = "tests.strategy.test_advanced_atr_exit"


def _trade_keys(result, symbol: str) -> list[tuple]:  # type: ignore[no-untyped-def]
    return [
        (t.entry_time, t.exit_time, t.side, t.entry_price, t.exit_price, t.quantity, t.exit_reason, t.entry_tag)
        for t in result.trades
        if t.symbol == symbol
    ]


def test_each_symbol_trades_as_if_alone() -> None:
    """Two symbols in one bot keep separate positions: with a fixed size and ample cash, each
    symbol's trades equal those of a bot trading that symbol alone."""
    frames = {
        "AAA": generate_ohlcv(3000, seed=11, timeframe="1h", symbol="AAA"),
        "BBB": generate_ohlcv(3000, seed=12, timeframe="1h", symbol="BBB"),
    }
    over = {"broker": {"cash": 1e9, "commission_rate": 0.001}, "strategy": {"direction": "both"}}
    both = run_backtest(make_config({"bot": {"symbols": ["AAA", "BBB"]}, **over}), frames)
    assert {t.symbol for t in both.trades} == {"AAA", "BBB"}
    overlap = any(
        a.entry_time < b.exit_time and b.entry_time < a.exit_time
        for a in both.trades if a.symbol == "AAA"
        for b in both.trades if b.symbol == "BBB"
    )
    assert overlap, "the test needs positions open on both symbols at once"
    for sym in frames:
        alone = run_backtest(make_config({"bot": {"symbols": [sym]}, **over}), {sym: frames[sym]})
        assert _trade_keys(both, sym) == _trade_keys(alone, sym)
    # The portfolio explains itself: the sum of all trades is the change in value.
    assert sum(t.pnl for t in both.trades) == pytest.approx(both.final_value - 1e9, abs=1e-4)


def test_stop_loss_required_refuses_unprotected_entries() -> None:
    frame = generate_ohlcv(1000, seed=5, timeframe="1h", symbol="SYM")
    cfg = make_config(
        {
            "strategy": {"exit_mixins": [{"name": f"{MODULE}:NoProtectionExit"}]},
            "risk_management": {"stop_loss_required": True},
        }
    )
    result = run_backtest(cfg, {"SYM": frame})
    assert result.trades == []
    assert result.diagnostics["refusals"]["STOP_LOSS_REQUIRED"] > 0
    assert result.final_value == pytest.approx(10_000.0)


def test_load_bars_cuts_bare_end_date_to_the_whole_day() -> None:
    cfg = make_config({"data": {"source": "synthetic", "bars": 24 * 10, "seed": 1, "start": "2024-01-01"}})
    frames = load_bars(cfg, start="2024-01-03", end="2024-01-04")
    df = frames["SYM"]
    assert df.index[0] == pd.Timestamp("2024-01-03 00:00", tz="UTC")
    assert df.index[-1] == pd.Timestamp("2024-01-04 23:00", tz="UTC")
    assert len(df) == 48


def test_one_data_file_for_two_symbols_is_a_config_error(tmp_path: Path) -> None:
    cfg = make_config({"bot": {"symbols": ["AAA", "BBB"]}})
    with pytest.raises(ConfigError, match="--data gives one file but the bot trades 2 symbols"):
        load_bars(cfg, data_file=tmp_path / "x.csv")


def test_csv_coarser_than_the_timeframe_is_refused_with_the_file_named(tmp_path: Path) -> None:
    path = tmp_path / "daily.csv"
    generate_ohlcv(100, seed=2, timeframe="1d").rename_axis("datetime").to_csv(path)
    cfg = make_config({"data": {"source": "csv", "path": str(path)}})
    with pytest.raises(DataValidationError, match=r"(?s)daily\.csv.*coarser than the bot timeframe 1h"):
        load_bars(cfg)


def test_csv_paths_per_symbol_must_cover_every_symbol(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    generate_ohlcv(100, seed=2, timeframe="1h").rename_axis("datetime").to_csv(path)
    cfg = make_config({"bot": {"symbols": ["AAA", "BBB"]}, "data": {"source": "csv", "paths": {"AAA": str(path)}}})
    with pytest.raises(ConfigError, match="BBB"):
        load_bars(cfg)


def test_empty_window_is_an_error_naming_the_symbol() -> None:
    cfg = make_config({"data": {"source": "synthetic", "bars": 100, "start": "2024-01-01"}})
    with pytest.raises(DataValidationError, match=r"(?s)SYM.*fewer than 2 bars from 2030-01-01 to the last bar; the data covers 2024-01-01 00:00"):
        load_bars(cfg, start="2030-01-01")
