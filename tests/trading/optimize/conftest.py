"""A small bot with an `optimize:` section, its study and bars, shared by the optimisation tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from trading.engine import load_bars
from trading.optimize import (
    OptimizeSpec,
    Runner,
    SearchResult,
    Study,
    Workload,
    parse_study,
    run_grid,
    run_optuna,
)

BOT = """\
bot: {name: opt_test, symbols: [BTCUSDT], timeframe: 1h}
data: {source: synthetic, bars: BARS, seed: 7}
strategy:
  name: RSI_BB_ATR
  direction: long
  entry_mixins:
    - name: RSIOrBBEntryMixin
      parameters: {e_rsi_period: 14, e_bb_period: 20, e_bb_dev: 2.0, e_cooldown_bars: 3}
  exit_mixins:
    - name: AdvancedATRExitMixin
      parameters: {x_atr_period: 14, x_sl_multiplier: 2.0, x_tp_multiplier: 3.0}
  position_size: 0.1
broker: {cash: 10000.0, commission_rate: 0.001}
"""

OPTIMIZE = """\
optimize:
  method: grid
  trials: 10
  seed: 3
  batch_size: 4
  objective: sharpe
  parameters:
    e_rsi_period: {low: 8, high: 16, step: 4}
    e_bb_dev: [1.5, 2.5]
    x_sl_multiplier: {low: 1.0, high: 2.0, step: 1.0}
"""


def bot_text(optimize: str = OPTIMIZE, bars: int = 1500) -> str:
    return BOT.replace("BARS", str(bars)) + optimize


def study_from(optimize: str = OPTIMIZE, bars: int = 1500, source: str = "bot.yaml") -> Study:
    return parse_study(bot_text(optimize, bars), source=source)


@pytest.fixture(scope="session")
def study() -> Study:
    return study_from()


@pytest.fixture(scope="session")
def frames(study: Study) -> dict[str, pd.DataFrame]:
    return load_bars(study.config)


@pytest.fixture(scope="session")
def workload(study: Study, frames: dict[str, pd.DataFrame]) -> Workload:
    return Workload.from_study(study, frames)


@pytest.fixture
def bot_file(tmp_path: Path) -> Path:
    path = tmp_path / "bot.yaml"
    path.write_text(bot_text(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def serial_grid(study: Study, workload: Workload) -> SearchResult:
    """The reference: the study's grid run trial by trial in this process."""
    with Runner() as runner:
        runner.start(workload)
        return run_grid(study.spec, runner)


def optuna_spec(study: Study, **update: object) -> OptimizeSpec:
    return study.spec.model_copy(update={"method": "optuna", **update})


@pytest.fixture(scope="session")
def serial_optuna(study: Study, workload: Workload) -> SearchResult:
    with Runner() as runner:
        runner.start(workload)
        return run_optuna(optuna_spec(study), runner)


def same_trials(a: SearchResult, b: SearchResult) -> None:
    """Assert two searches ran the same trials with the same results, trial by trial."""
    assert [o.number for o in a.trials] == [o.number for o in b.trials]
    for x, y in zip(a.trials, b.trials, strict=True):
        assert (x.params, x.value, x.status, x.violations) == (
            y.params,
            y.value,
            y.status,
            y.violations,
        )
        assert x.metrics == y.metrics
    assert (a.best.number, a.best.value) == (b.best.number, b.best.value)  # type: ignore[union-attr]
