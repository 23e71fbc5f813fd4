"""A user objective for the tests: named in YAML as 'tests.trading.optimize.objectives:pnl_per_trade'."""

from __future__ import annotations

from trading.results import BacktestResult


def pnl_per_trade(result: BacktestResult) -> float | None:
    """Return the mean net pnl per closed trade (None without trades)."""
    if not result.trades:
        return None
    return sum(t.pnl for t in result.trades) / len(result.trades)
