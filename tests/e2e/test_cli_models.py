"""`atf models list` and `atf models clear` on a real cache folder."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from strategy.ml.cache import ModelCache
from trading.cli import app


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelCache:
    monkeypatch.setenv("ATF_MODEL_CACHE", str(tmp_path))
    c = ModelCache()
    for k, age_days in (("a" * 32, 10), ("b" * 32, 0)):
        c.put(k, {"w": [1.0, 2.0]}, {"model": "HMMLSTMEntryMixin", "train_start": "2020-01-01T00:00",
                                     "train_end": "2020-02-01T00:00", "bars": 600, "val_loss": 0.69})
        old = time.time() - age_days * 86_400
        os.utime(tmp_path / f"{k}.json", (old, old))
    return c


def test_models_list_shows_every_cached_model(cache: ModelCache) -> None:
    out = CliRunner().invoke(app, ["models", "list"], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "2 models" in out.output and "a" * 12 in out.output and "b" * 12 in out.output
    assert "HMMLSTM" in out.output and "0.6900" in out.output


def test_models_clear_older_than_keeps_recent_ones(cache: ModelCache) -> None:
    out = CliRunner().invoke(app, ["models", "clear", "--older-than", "5", "--yes"])
    assert out.exit_code == 0, out.output
    assert "Removed 1" in out.output
    assert [e.key for e in cache.entries()] == ["b" * 32]
    assert not (cache.root / f"{'a' * 32}.pt").exists()


def test_models_clear_asks_first(cache: ModelCache) -> None:
    out = CliRunner().invoke(app, ["models", "clear"], input="n\n")
    assert out.exit_code == 1
    assert len(list(cache.entries())) == 2
    out = CliRunner().invoke(app, ["models", "clear"], input="y\n")
    assert out.exit_code == 0 and not list(cache.entries())
