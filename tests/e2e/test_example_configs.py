"""Every bot in config/strategies runs end to end on its default data and trades.

Together the examples must use every registered mixin, and include a short-only bot, a
long/short bot and a bot whose entries combine with `all`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from strategy.registry import available
from trading.config import load_config
from trading.engine import run_backtest

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "config" / "strategies").glob("*.yaml"))
KNOWN_REASONS = {"stop_loss", "trailing_stop", "take_profit", "breakeven_stop", "partial_take_profit", "time_exit",
                 "session_close", "ma_crossover", "end_of_data"}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_example_bot_runs_and_trades(path: Path) -> None:
    cfg = load_config(path, env={})
    result = run_backtest(cfg)
    assert len(result.trades) >= 10, f"{path.name} made only {len(result.trades)} trades"
    assert sum(t.pnl for t in result.trades) == pytest.approx(result.final_value - cfg.broker.cash, abs=1e-6)
    assert {t.exit_reason for t in result.trades} <= KNOWN_REASONS
    sides = {t.side for t in result.trades}
    assert sides == ({"long", "short"} if cfg.strategy.direction == "both" else {cfg.strategy.direction})
    assert {t.symbol for t in result.trades} == set(cfg.bot.symbols)
    if cfg.strategy.entry_logic == "all":
        names = [m.name for m in cfg.strategy.entry_mixins]
        assert all(t.entry_tag.split("+") == names for t in result.trades)


def test_examples_cover_the_library() -> None:
    cfgs = [load_config(p, env={}) for p in CONFIGS]
    used = {m.name for c in cfgs for m in (*c.strategy.entry_mixins, *c.strategy.exit_mixins)}
    assert used >= (set(available("entry")) | set(available("exit"))) - {"HMMLSTMEntryMixin"}
    assert len(cfgs) >= 6
    assert any(c.strategy.direction == "short" for c in cfgs)
    assert any(c.strategy.direction == "both" for c in cfgs)
    assert any(c.strategy.entry_logic == "all" and len(c.strategy.entry_mixins) >= 2 for c in cfgs)
