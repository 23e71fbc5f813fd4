"""Fixtures shared by the e2e crash-recovery tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from trading.data import generate_ohlcv


@pytest.fixture(scope="module")
def bars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """620 hourly bars of one symbol (seed 11) as a CSV: the crash bot's replay."""
    csv = tmp_path_factory.mktemp("bars") / "aaa.csv"
    frame = generate_ohlcv(620, seed=11, timeframe="1h", start="2021-03-01")
    frame.rename_axis("datetime").to_csv(csv)
    return csv
