"""TrailingStopExitMixin through the real engine: a stop x_trail_pct behind the best price.

Layout (see exit_harness): signal close C = 100 at bar 4, entry at the open of bar 5 (k = 0).
With x_trail_pct = p = 2 %, the initial stop is C x (1 - p) = 98 for a long and
C x (1 + p) = 102 for a short; after each close it moves to best x (1 -/+ p). A percentage is
not symmetric under mirroring, so each side's level is computed with its own formula.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from strategy.mixins.exit.trailing_stop import TrailingStopExitMixin
from tests.strategy.exit_harness import ENTRY, PRE, View, check_trade, run_exits, sided, tail

P = 0.02
EXITS = [("TrailingStopExitMixin", {"x_trail_pct": P})]


def trail(x: View, k: int) -> float:
    """The stop after the close of bar k: best so far -/+ p, never looser than the initial stop."""
    initial = x.C * (1 - x.sign * P)
    level = x.best(k) * (1 - x.sign * P)
    return max(initial, level) if x.sign > 0 else min(initial, level)


@dataclass(frozen=True)
class Case:
    id: str
    after: list[tuple[float, float, float, float]]  # long form, from the entry bar (k = 0)
    exit_k: int
    price: Callable[[View], float]
    premise: Callable[[View], bool] = lambda x: True


CASES = [
    Case(
        "initial_stop_traded_through_fills_at_stop",
        [(100, 100, 99, 99.5), (99.5, 99.8, 97, 97.5)],
        1, lambda x: x.C * (1 - x.sign * P),
        premise=lambda x: trail(x, 0) == x.C * (1 - x.sign * P) and not x.beyond(x.open(1), trail(x, 0)),
    ),
    Case(
        "entry_bar_through_initial_stop_is_stopped_on_entry_bar",
        [(100, 100.5, 97, 97.5)],
        0, lambda x: x.C * (1 - x.sign * P),
    ),
    # long: k=0 best 101 -> 98.98; k=1 best 105 -> 102.9; k=2 trades down to 102.
    # short: k=0 best 99 -> 100.98; k=1 best 95 -> 96.9; k=2 trades up to 98.
    Case(
        "stop_follows_best_price",
        [(100, 101, 99, 100.5), (100.5, 105, 100.5, 104.5), (104.5, 104.8, 102, 102.5)],
        2, lambda x: x.best(1) * (1 - x.sign * P),
        premise=lambda x: not x.beyond(x.adverse(1), trail(x, 0)) and not x.beyond(x.open(2), trail(x, 1)),
    ),
    Case(
        "gap_through_trailing_stop_fills_at_open",
        [(100, 101, 99, 100.5), (100.5, 105, 100.5, 104.5), (101, 101.5, 100, 100.5)],
        2, lambda x: x.open(2),
        premise=lambda x: x.beyond(x.open(2), trail(x, 1)),
    ),
    # A pull-back that stays above the trailed stop does not move it back: after k=1 the stop
    # is 102.9 (short 96.9); k=2 dips to 103.2 without touching it, k=3 trades through it.
    Case(
        "pull_back_does_not_loosen_the_stop",
        [(100, 101, 99, 100.5), (100.5, 105, 100.5, 104.5), (104.5, 104.6, 103.2, 103.5),
         (103.5, 103.8, 102.5, 102.6)],
        3, lambda x: x.best(1) * (1 - x.sign * P),
        premise=lambda x: not x.beyond(x.adverse(2), trail(x, 1)) and x.best(3) == x.best(1),
    ),
]


@pytest.mark.parametrize("side", ["long", "short"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_trailing_stop_table(case: Case, side: str) -> None:
    long_candles = PRE + case.after
    candles = sided(long_candles + tail(long_candles), side)
    x = View(candles, 1 if side == "long" else -1)
    assert case.premise(x), "the candles do not show what the case claims"
    stop_in_force = trail(x, case.exit_k - 1) if case.exit_k else x.C * (1 - x.sign * P)
    assert x.beyond(x.adverse(case.exit_k), stop_in_force)  # the exit bar reaches the stop

    result, frame = run_exits(candles, EXITS, side=side)

    (t,) = result.trades
    check_trade(t, frame, side=side, entry_bar=ENTRY, exit_bar=ENTRY + case.exit_k, reason="trailing_stop",
                price=case.price(x))


def test_defaults_and_validation() -> None:
    assert TrailingStopExitMixin().p.x_trail_pct == 0.02
    assert TrailingStopExitMixin().warmup() == 0
    for bad in (0, 1, -0.1):
        with pytest.raises(ValueError, match="x_trail_pct"):
            TrailingStopExitMixin({"x_trail_pct": bad})
