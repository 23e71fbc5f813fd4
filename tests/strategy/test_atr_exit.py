"""ATRExitMixin through the real engine: an ATR stop that trails the best price with the current ATR.

Layout (see exit_harness): signal at bar 4 with C = 100 and ATR(3) = A = 2, so the initial
stop is C - 2A = 96 (short: 104); bar k of a case is bar 5 + k. Expected levels follow the
rule in the mixin's docstring with the hand-written Wilder ATR of test_advanced_atr_exit;
short cases are the long candles mirrored around 100 (ATR unchanged, levels mirrored).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from strategy.mixins.exit.atr import ATRExitMixin
from strategy.registry import resolve_mixin
from tests.strategy.exit_harness import ENTRY, PRE, SIGNAL, check_trade, run_exits, sided, tail, wilder_atr

PERIOD, MULT = 3, 2.0
EXITS = [("ATRExitMixin", {"x_atr_period": PERIOD, "x_atr_multiplier": MULT})]


@dataclass(frozen=True)
class X:
    """The case seen from one side: favourable/adverse extremes and ATR by bar k after entry."""

    candles: list[tuple[float, float, float, float]]
    sign: int

    def bar(self, k: int) -> tuple[float, float, float, float]:
        return self.candles[ENTRY + k]

    def best(self, through: int) -> float:
        """Best price from the entry fill (the open of k = 0) through bar k = through."""
        hi = [self.bar(k)[1] if self.sign > 0 else self.bar(k)[2] for k in range(through + 1)]
        vals = [self.bar(0)[0], *hi]
        return max(vals) if self.sign > 0 else min(vals)

    def adverse(self, k: int) -> float:
        return self.bar(k)[2] if self.sign > 0 else self.bar(k)[1]

    def atr(self, k: int) -> float:
        return wilder_atr(self.candles, PERIOD)[ENTRY + k]

    @property
    def stop(self) -> float:
        return self.candles[SIGNAL][3] - self.sign * MULT * wilder_atr(self.candles, PERIOD)[SIGNAL]

    def trail(self, k: int) -> float:
        """The trailing level after the close of bar k."""
        return self.best(k) - self.sign * MULT * self.atr(k)

    def beyond(self, price: float, level: float) -> bool:
        return self.sign * (price - level) <= 0


@dataclass(frozen=True)
class Case:
    id: str
    after: list[tuple[float, float, float, float]]  # long form, from the entry bar (k = 0)
    exit_k: int
    reason: str
    price: Callable[[X], float]
    premise: Callable[[X], bool] = lambda x: True


CASES = [
    # Entry bar makes no new best (high 100 = entry): level 100 - 2 x 2 = 96, not tighter.
    Case(
        "initial_stop_traded_through_fills_at_stop",
        [(100, 100, 98, 99), (99, 99.5, 95, 96)],
        1, "stop_loss", lambda x: x.stop,
        premise=lambda x: x.trail(0) == x.stop and not x.beyond(x.bar(1)[0], x.stop),
    ),
    Case(
        "gap_through_stop_fills_at_open",
        [(100, 100, 98, 99), (94, 95, 93, 94.5)],
        1, "stop_loss", lambda x: x.bar(1)[0],
        premise=lambda x: x.beyond(x.bar(1)[0], x.stop),
    ),
    Case(
        "entry_bar_through_stop_is_stopped_on_entry_bar",
        [(100, 100.5, 95, 96)],
        0, "stop_loss", lambda x: x.stop,
    ),
    # k=0: ATR 2, best 101 -> 97. k=1: TR 4 -> ATR (2*2 + 4)/3 = 8/3, best 104 -> 104 - 16/3.
    Case(
        "trails_best_price_by_current_atr",
        [(100, 101, 99, 100.5), (100.5, 104, 100, 103.5), (103.5, 103.8, 98, 99)],
        2, "trailing_stop", lambda x: x.trail(1),
        premise=lambda x: x.atr(1) != x.atr(0) and not x.beyond(x.bar(2)[0], x.trail(1)),
    ),
    Case(
        "gap_through_trailing_stop_fills_at_open",
        [(100, 101, 99, 100.5), (100.5, 104, 100, 103.5), (97.5, 98, 97, 97.5)],
        2, "trailing_stop", lambda x: x.bar(2)[0],
        premise=lambda x: x.beyond(x.bar(2)[0], x.trail(1)),
    ),
    # k=0 trails to 97. k=1's wide bar lifts ATR to 2.5 without a new best: level 101 - 5 = 96
    # is looser and ignored. k=2 trades to 96.5, through 97 (a loosened stop would survive).
    Case(
        "rising_atr_never_loosens_the_stop",
        [(100, 101, 99, 100.5), (100.5, 101, 97.5, 100.8), (100.8, 101, 96.5, 97)],
        2, "trailing_stop", lambda x: x.trail(0),
        premise=lambda x: x.sign * (x.trail(1) - x.trail(0)) < 0 and not x.beyond(x.adverse(1), x.trail(0))
        and x.beyond(x.adverse(2), x.trail(0)) and not x.beyond(x.adverse(2), x.trail(1)),
    ),
]


@pytest.mark.parametrize("side", ["long", "short"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_atr_exit_table(case: Case, side: str) -> None:
    long_candles = PRE + case.after
    candles = sided(long_candles + tail(long_candles), side)
    x = X(candles, 1 if side == "long" else -1)
    assert x.stop == (96.0 if side == "long" else 104.0)  # the layout in the module doc
    assert case.premise(x), "the candles do not show what the case claims"

    result, frame = run_exits(candles, EXITS, side=side)

    (t,) = result.trades
    check_trade(t, frame, side=side, entry_bar=ENTRY, exit_bar=ENTRY + case.exit_k, reason=case.reason,
                price=case.price(x))


def test_atr_exit_is_registered_with_documented_defaults() -> None:
    assert resolve_mixin("ATRExitMixin", "exit") is ATRExitMixin
    p = ATRExitMixin().p
    assert (p.x_atr_period, p.x_atr_multiplier) == (14, 2.0)
    assert ATRExitMixin({"x_atr_period": 5}).warmup() == 5
