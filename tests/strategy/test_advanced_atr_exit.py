"""AdvancedATRExitMixin through the real engine: fills, exit reasons, costs, sizing, end of data.

Every case is a handful of hand-written candles run through `run_backtest` with an entry
mixin we control (`FireAtBars`), in the freqtrade style: the candles, the expected exit bar,
exit price and `exit_reason`. Expected levels are derived from docs/backtesting.md with a
hand-written Wilder ATR (`wilder_atr`), never pasted from the engine's output.

Layout of every table case (bar indices of the whole frame):

* bars 0..4: identical quiet bars (100, 101, 99, 100): every true range is 2, so with
  ``x_atr_period: 3`` the ATR at the signal bar is A = mean(2, 2, 2) = 2 and its close C = 100;
* bar 4: the signal (FireAtBars fires), levels anchored at C and A:
  long stop C - 2A = 96, target C + 3A = 106 (short: 104 and 94);
* bar 5 (k = 0): the entry fills at its open; the candles after it are the case's own.

Short cases are the long cases mirrored around 100 (price p -> 200 - p, high <-> low), which
keeps every true range, so the same reasoning applies with the signs flipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pytest

from strategy.mixins.base import EntryMixin, EntryParams, ExitMixin, Side
from tests.strategy.conftest import CASH, SYMBOL, Candle, flat_candles, make_config, make_frame
from trading.engine import run_backtest
from trading.results import BacktestResult

MODULE = __name__


# --------------------------------------------------------------------------- test mixins


class FireAtBars(EntryMixin):
    """Fires at the listed bar indices (for every side the bot's `direction` allows)."""

    description = "test double: fire at fixed bars"

    class Params(EntryParams):
        e_fire_at: tuple[int, ...] = ()
        e_sides: tuple[str, ...] = ("long", "short")

    def signal(self, i: int, side: Side) -> bool:
        return i in self.p.e_fire_at and side.value in self.p.e_sides  # type: ignore[attr-defined]


class NoProtectionExit(ExitMixin):
    """Gives neither a stop nor a target: the position can only end at end of data."""

    description = "test double: no stop, no target"


FIRE = f"{MODULE}:FireAtBars"
NO_PROTECTION = f"{MODULE}:NoProtectionExit"


# --------------------------------------------------------------------------- helpers

ATR_PERIOD = 3
SL, TP = 2.0, 3.0
SIGNAL = 4
PRE: list[Candle] = flat_candles(SIGNAL + 1)  # bars 0..4, true range 2 each
ISOLATED = {"x_trailing_enabled": False, "x_breakeven_enabled": False}


def wilder_atr(candles: Sequence[Candle], period: int) -> list[float]:
    """ATR by hand: TR from bar 1, first value = mean of TR[1..period], then (prev*(p-1)+TR)/p."""
    n = len(candles)
    out = [math.nan] * n
    tr = [math.nan] + [
        max(h - lo, abs(h - candles[k - 1][3]), abs(lo - candles[k - 1][3]))
        for k, (_, h, lo, _) in enumerate(candles)
        if k > 0
    ]
    if n > period:
        out[period] = sum(tr[1 : period + 1]) / period
        for k in range(period + 1, n):
            out[k] = (out[k - 1] * (period - 1) + tr[k]) / period
    return out


def mirror(candles: Sequence[Candle], axis: float = 100.0) -> list[Candle]:
    """Reflect bars around `axis`: p -> 2*axis - p, high and low swap. True ranges are kept."""
    m = 2 * axis
    return [(m - o, m - lo, m - h, m - c) for (o, h, lo, c) in candles]


def tail(candles: Sequence[Candle], n: int = 2) -> list[Candle]:
    """n zero-range bars at the last close (they only matter if the expected exit did not happen)."""
    c = candles[-1][3]
    return [(c, c, c, c)] * n


def bar_index(frame: pd.DataFrame, when: Any) -> int:
    return int(frame.index.get_loc(pd.Timestamp(when)))


def backtest(
    candles: Sequence[Candle],
    *,
    side: str = "long",
    fire_at: Sequence[int] = (SIGNAL,),
    exit_params: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    exit_mixin: str = "AdvancedATRExitMixin",
) -> tuple[BacktestResult, pd.DataFrame]:
    """Run the real engine on `candles` with FireAtBars entries and one exit mixin."""
    params = {"x_atr_period": ATR_PERIOD, "x_sl_multiplier": SL, "x_tp_multiplier": TP}
    params.update(exit_params or {})
    strategy: dict[str, Any] = {
        "direction": side,
        "entry_mixins": [{"name": FIRE, "parameters": {"e_fire_at": list(fire_at)}}],
        "exit_mixins": [{"name": exit_mixin, "parameters": params if exit_mixin.endswith("ATRExitMixin") else {}}],
    }
    ov = dict(overrides or {})
    strategy.update(ov.pop("strategy", {}))
    cfg = make_config({"strategy": strategy, **ov})
    frame = make_frame(candles)
    return run_backtest(cfg, {SYMBOL: frame}), frame


@dataclass(frozen=True)
class Ctx:
    """The doc's quantities for one case: levels from the signal bar, bars relative to the entry."""

    candles: list[Candle]
    sign: int  # +1 long, -1 short
    sl: float = SL
    tp: float = TP

    @property
    def atr(self) -> list[float]:
        return wilder_atr(self.candles, ATR_PERIOD)

    @property
    def A(self) -> float:  # noqa: N802 - the doc's name
        return self.atr[SIGNAL]

    @property
    def C(self) -> float:  # noqa: N802
        return self.candles[SIGNAL][3]

    def bar(self, k: int) -> Candle:
        return self.candles[SIGNAL + 1 + k]

    def open(self, k: int) -> float:
        return self.bar(k)[0]

    def favour(self, k: int) -> float:
        """High of bar k for a long, low for a short."""
        return self.bar(k)[1] if self.sign > 0 else self.bar(k)[2]

    def adverse(self, k: int) -> float:
        return self.bar(k)[2] if self.sign > 0 else self.bar(k)[1]

    @property
    def entry(self) -> float:
        return self.open(0)

    @property
    def stop(self) -> float:
        return self.C - self.sign * self.sl * self.A

    @property
    def target(self) -> float:
        return self.C + self.sign * self.tp * self.A

    def best(self, through: int) -> float:
        """Highest high (long) / lowest low (short) of bars k = 0..through."""
        vals = [self.favour(k) for k in range(through + 1)]
        return max(vals) if self.sign > 0 else min(vals)

    def atr_at(self, k: int) -> float:
        return self.atr[SIGNAL + 1 + k]

    def beyond(self, price: float, level: float) -> bool:
        """True when `price` is at or past a stop `level` (below for a long, above for a short)."""
        return self.sign * (price - level) <= 0


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class ExitCase:
    id: str
    after: list[Candle]  # long form, from the entry bar (k = 0) on
    exit_k: int  # exit bar, relative to the entry bar
    reason: str
    price: Callable[[Ctx], float]
    premise: Callable[[Ctx], bool] = lambda x: True  # what the candles are meant to show
    params: dict[str, Any] = field(default_factory=dict)


CASES: list[ExitCase] = [
    ExitCase(
        "stop_traded_through_intrabar_fills_at_stop",
        [(100, 101, 99, 100.5), (100, 100.5, 95, 97)],
        1, "stop_loss", lambda x: x.stop,
        premise=lambda x: not x.beyond(x.open(1), x.stop) and x.beyond(x.adverse(1), x.stop),
    ),
    ExitCase(
        "gap_through_stop_fills_at_open",
        [(100, 101, 99, 100.5), (94, 95, 93, 94.5)],
        1, "stop_loss", lambda x: x.open(1),
        premise=lambda x: x.beyond(x.open(1), x.stop) and x.open(1) != x.stop,
    ),
    ExitCase(
        "target_touched_fills_at_target",
        [(100, 101, 99, 100.5), (100.5, 107, 100, 105)],
        1, "take_profit", lambda x: x.target,
        premise=lambda x: x.sign * (x.favour(1) - x.target) >= 0 > x.sign * (x.open(1) - x.target),
    ),
    ExitCase(
        "gap_beyond_target_fills_at_open",
        [(100, 101, 99, 100.5), (108, 109, 107, 108)],
        1, "take_profit", lambda x: x.open(1),
        premise=lambda x: x.sign * (x.open(1) - x.target) > 0,
    ),
    ExitCase(
        "stop_and_target_in_same_bar_is_stop_loss",
        [(100, 101, 99, 100.5), (100, 107, 95, 100)],
        1, "stop_loss", lambda x: x.stop,
        premise=lambda x: x.beyond(x.adverse(1), x.stop) and x.sign * (x.favour(1) - x.target) >= 0,
    ),
    ExitCase(
        "entry_bar_trading_through_stop_is_stopped_on_entry_bar",
        [(100, 100.5, 95, 96.5)],
        0, "stop_loss", lambda x: x.stop,
        premise=lambda x: x.beyond(x.adverse(0), x.stop) and not x.beyond(x.open(0), x.stop),
    ),
    ExitCase(
        "entry_bar_opening_beyond_stop_is_stopped_at_its_open",
        [(95, 96, 94, 95)],
        0, "stop_loss", lambda x: x.open(0),
        premise=lambda x: x.beyond(x.open(0), x.stop),
    ),
    ExitCase(
        "entry_bar_touching_target_takes_profit_on_entry_bar",
        [(100, 107, 99.5, 106.5)],
        0, "take_profit", lambda x: x.target,
    ),
    ExitCase(
        "entry_bar_touching_stop_and_target_is_stop_loss",
        [(100, 107, 95, 100)],
        0, "stop_loss", lambda x: x.stop,
    ),
    # Breakeven: A = 2, trigger 1 x A = 2. k=0 best 101 (gain 1 < 2); k=1 best 102.5 (gain
    # 2.5 >= 2) so after k=1's close the stop moves from 96 to the entry 100; k=2 opens
    # above 100 and trades down to 99: out at 100.
    ExitCase(
        "breakeven_after_trigger_exits_at_entry_price",
        [(100, 101, 99, 100), (100, 102.5, 99.5, 102), (101.5, 102, 99, 99.5)],
        2, "breakeven_stop", lambda x: x.entry,
        premise=lambda x: x.sign * (x.best(0) - x.entry) < x.A <= x.sign * (x.best(1) - x.entry),
        params={"x_breakeven_enabled": True, "x_trailing_enabled": False},
    ),
    # Gain of exactly 1 ATR (102 - 100 = 2.0 = A) triggers: the rule is ">=".
    ExitCase(
        "breakeven_triggers_at_exactly_the_trigger_distance",
        [(100, 102, 99, 101), (101, 101.5, 99.5, 100)],
        1, "breakeven_stop", lambda x: x.entry,
        premise=lambda x: x.sign * (x.best(0) - x.entry) == x.A,
        params={"x_breakeven_enabled": True, "x_trailing_enabled": False},
    ),
    # Gain of 1.9 < 2: no breakeven; the price comes back through the entry without exiting and
    # the initial stop at 96 takes the position out.
    ExitCase(
        "gain_below_trigger_leaves_initial_stop",
        [(100, 101.9, 99, 101), (101, 101.5, 97, 98), (98, 98.5, 95.5, 96)],
        2, "stop_loss", lambda x: x.stop,
        premise=lambda x: x.sign * (x.best(1) - x.entry) < x.A and x.beyond(x.adverse(1), x.entry),
        params={"x_breakeven_enabled": True, "x_trailing_enabled": False},
    ),
    # Offset 1 %: the breakeven stop is entry x 1.01 = 101 (short: 99).
    ExitCase(
        "breakeven_offset_puts_stop_beyond_entry",
        [(100, 101, 99, 100), (100, 102.5, 99.5, 102), (101.5, 102, 99, 99.5)],
        2, "breakeven_stop", lambda x: x.entry * (1 + x.sign * 0.01),
        params={"x_breakeven_enabled": True, "x_trailing_enabled": False, "x_breakeven_offset": 0.01},
    ),
    # Trailing 1.5 x A = 3 behind the best high: after k=0: 101-3 = 98, k=1: 104-3 = 101,
    # k=2: 105.5-3 = 102.5; k=3 opens at 105 and trades down to 102: out at 102.5.
    ExitCase(
        "trailing_stop_follows_best_high_by_multiplier_times_signal_atr",
        [(100, 101, 99, 100.5), (100.5, 104, 100, 103.5), (103.5, 105.5, 103, 105), (105, 105.2, 102, 102.3)],
        3, "trailing_stop", lambda x: x.best(2) - x.sign * 1.5 * x.A,
        premise=lambda x: not x.beyond(x.open(3), x.best(2) - x.sign * 1.5 * x.A),
        params={"x_trailing_enabled": True, "x_breakeven_enabled": False, "x_trail_multiplier": 1.5, "x_tp_multiplier": 0},
    ),
    # Default trailing distance is x_sl_multiplier x A = 4: 104.6 - 4 = 100.6 after k=1.
    ExitCase(
        "trailing_distance_defaults_to_stop_multiplier",
        [(100, 101, 99, 100.5), (100.5, 104.6, 100, 103.5), (103.5, 103.8, 99.5, 100)],
        2, "trailing_stop", lambda x: x.best(1) - x.sign * x.sl * x.A,
        params={"x_trailing_enabled": True, "x_breakeven_enabled": False, "x_tp_multiplier": 0},
    ),
    # With x_trail_use_current_atr the distance uses the ATR of the latest close: after k=2,
    # ATR = 26/9 (k=1's true range of 6 lifted it), level 106.5 - 1.5 x 26/9 = 102.17 (the
    # signal ATR would give 103.5). k=3 trades down to 101.5.
    ExitCase(
        "trailing_with_current_atr_uses_latest_atr",
        [(100, 101, 99, 100.5), (100.5, 106, 100, 105.5), (105.5, 106.5, 104.5, 105), (105, 105.5, 101.5, 102)],
        3, "trailing_stop", lambda x: x.best(2) - x.sign * 1.5 * x.atr_at(2),
        premise=lambda x: x.atr_at(2) != x.A,
        params={
            "x_trailing_enabled": True, "x_breakeven_enabled": False, "x_trail_multiplier": 1.5,
            "x_trail_use_current_atr": True, "x_tp_multiplier": 0,
        },
    ),
    # Both rules on: k=0 trails to 97; k=1 (best 102.5) moves to breakeven 100 (trailing 98.5 is
    # looser); k=2 (best 105) trails to 101, tighter: the stop now carries trailing_stop.
    ExitCase(
        "stop_carries_reason_of_rule_that_last_tightened_it",
        [(100, 101, 99, 100.5), (100.5, 102.5, 100, 102), (102, 105, 101.8, 104.5), (104.5, 104.8, 100.5, 101)],
        3, "trailing_stop", lambda x: x.best(2) - x.sign * x.sl * x.A,
        params={"x_trailing_enabled": True, "x_breakeven_enabled": True, "x_tp_multiplier": 0},
    ),
    # Same start, but the price never makes a new high after breakeven: the looser trailing
    # level (102.5 - 4 = 98.5) must not replace the breakeven stop or its reason.
    ExitCase(
        "looser_trailing_level_does_not_replace_breakeven_stop",
        [(100, 101, 99, 100.5), (100.5, 102.5, 100, 102), (102, 102.4, 99.5, 100)],
        2, "breakeven_stop", lambda x: x.entry,
        params={"x_trailing_enabled": True, "x_breakeven_enabled": True, "x_tp_multiplier": 0},
    ),
]


def _expand(cases: list[ExitCase]) -> list[Any]:
    out = []
    for case in cases:
        for side in ("long", "short"):
            out.append(pytest.param(case, side, id=f"{case.id}-{side}"))
    return out


@pytest.mark.parametrize(("case", "side"), _expand(CASES))
def test_exit_table(case: ExitCase, side: str) -> None:
    sign = 1 if side == "long" else -1
    long_candles = PRE + case.after
    long_candles = long_candles + tail(long_candles)
    candles = long_candles if sign > 0 else mirror(long_candles)
    x = Ctx(candles, sign)
    assert x.A == pytest.approx(2.0) and x.C == 100.0  # the layout described in the module doc
    assert case.premise(x), "the candles do not show what the case claims"
    params = {**ISOLATED, **case.params}

    result, frame = backtest(candles, side=side, exit_params=params)

    assert len(result.trades) == 1, result.trades
    t = result.trades[0]
    expected_price = case.price(x)
    entry_bar, exit_bar = SIGNAL + 1, SIGNAL + 1 + case.exit_k
    assert t.side == side
    assert t.entry_tag == "FireAtBars"
    assert bar_index(frame, t.entry_time) == entry_bar
    assert t.entry_price == pytest.approx(x.entry, rel=1e-12)
    assert bar_index(frame, t.exit_time) == exit_bar
    assert t.exit_reason == case.reason
    assert t.exit_price == pytest.approx(expected_price, rel=1e-12)
    assert t.bars_held == case.exit_k
    assert t.quantity == 1.0
    assert t.gross_pnl == pytest.approx(sign * (expected_price - x.entry) * 1.0, abs=1e-9)
    assert t.fees == 0.0 and t.pnl == pytest.approx(t.gross_pnl, abs=1e-12)
    # MAE/MFE: worst/best of bars entry..exit-1 and the exit price, % of entry (MAE <= 0 <= MFE).
    adverse = [x.adverse(k) for k in range(case.exit_k)] + [expected_price, x.entry]
    favour = [x.favour(k) for k in range(case.exit_k)] + [expected_price, x.entry]
    worst = min(adverse) if sign > 0 else max(adverse)
    best = max(favour) if sign > 0 else min(favour)
    assert t.mae_pct == pytest.approx(sign * (worst - x.entry) / x.entry * 100, abs=1e-9)
    assert t.mfe_pct == pytest.approx(sign * (best - x.entry) / x.entry * 100, abs=1e-9)
    assert result.final_value == pytest.approx(CASH + t.pnl, abs=1e-9)


def test_mirrored_cases_really_are_mirrored() -> None:
    """Guard on the table's construction: mirroring keeps ATR and flips the levels."""
    long_c = PRE + [(100, 101, 99, 100.5), (100, 100.5, 95, 97)]
    lx, sx = Ctx(long_c, 1), Ctx(mirror(long_c), -1)
    assert wilder_atr(long_c, ATR_PERIOD)[4:] == pytest.approx(wilder_atr(mirror(long_c), ATR_PERIOD)[4:])
    assert (lx.stop, lx.target) == (96.0, 106.0)
    assert (sx.stop, sx.target) == (104.0, 94.0)


def test_hand_atr_matches_doc_definition_on_irregular_bars() -> None:
    """The helper itself: TR from bar 1, seed = mean of the first 3 TRs, then Wilder."""
    c = [(10, 11, 9, 10), (10, 12, 10, 11), (11, 11.5, 8, 9), (9, 13, 9, 12), (12, 12, 11, 11.5)]
    # TR1 = max(2, |12-10|, |10-10|) = 2; TR2 = max(3.5, 0.5, 3) = 3.5; TR3 = max(4, 4, 0) = 4;
    # TR4 = max(1, 0, 1) = 1. ATR3 = (2 + 3.5 + 4)/3 = 9.5/3; ATR4 = (9.5/3 * 2 + 1)/3.
    atr = wilder_atr(c, 3)
    assert math.isnan(atr[2])
    assert atr[3] == pytest.approx(9.5 / 3)
    assert atr[4] == pytest.approx((9.5 / 3 * 2 + 1) / 3)


# --------------------------------------------------------------------------- costs


def clip(price: float, candle: Candle) -> float:
    """A slipped price never leaves the bar's high-low range."""
    return min(max(price, candle[2]), candle[1])


def _costs_case(side: str, long_after: list[Candle]) -> tuple[list[Candle], Ctx]:
    sign = 1 if side == "long" else -1
    c = PRE + long_after
    c = c + tail(c)
    c = c if sign > 0 else mirror(c)
    return c, Ctx(c, sign)


COST_S, COST_R, COST_Q = 0.002, 0.001, 3.0
COST_OVERRIDES = {
    "strategy": {"sizing": {"method": "fixed", "quantity": COST_Q}},
    "broker": {"commission_rate": COST_R, "paper_trading_config": {"slippage_model": "percent", "base_slippage": COST_S}},
}


@pytest.mark.parametrize("side", ["long", "short"])
def test_stopped_trade_pays_slippage_on_both_legs_and_commission_on_fill_prices(side: str) -> None:
    s, r, q = COST_S, COST_R, COST_Q
    candles, x = _costs_case(side, [(100, 101.5, 99, 100.5), (100.5, 101, 95, 96.5)])
    sign = x.sign

    result, frame = backtest(candles, side=side, exit_params=ISOLATED, overrides=COST_OVERRIDES)

    # entry: next open moved against us; exit: the stop moved against us (both inside the bar)
    entry = x.open(0) * (1 + sign * s)  # long 100.2, short 99.8
    exit_ = x.stop * (1 - sign * s)  # long 96 * 0.998 = 95.808, short 104 * 1.002 = 104.208
    assert clip(entry, x.bar(0)) == entry and clip(exit_, x.bar(1)) == exit_
    gross = sign * (exit_ - entry) * q
    fees = r * q * entry + r * q * exit_
    pnl = gross - fees
    (t,) = result.trades
    assert (t.entry_price, t.exit_price) == (pytest.approx(entry, rel=1e-12), pytest.approx(exit_, rel=1e-12))
    assert t.quantity == q
    assert t.exit_reason == "stop_loss"
    assert t.gross_pnl == pytest.approx(gross, rel=1e-12)
    assert t.fees == pytest.approx(fees, rel=1e-12)
    assert t.pnl == pytest.approx(pnl, rel=1e-12)
    assert t.pnl_pct == pytest.approx(pnl / (entry * q) * 100, rel=1e-12)
    assert t.bars_held == 1
    # the entry bar's extremes and the exit price
    worst = min(x.adverse(0), exit_) if sign > 0 else max(x.adverse(0), exit_)
    best = max(x.favour(0), exit_) if sign > 0 else min(x.favour(0), exit_)
    assert t.mae_pct == pytest.approx(sign * (worst - entry) / entry * 100, rel=1e-12)
    assert t.mfe_pct == pytest.approx(sign * (best - entry) / entry * 100, rel=1e-12)
    assert result.final_value == pytest.approx(CASH + pnl, abs=1e-9)


@pytest.mark.parametrize("side", ["long", "short"])
def test_slipped_entry_and_stop_are_clipped_to_the_bar_range(side: str) -> None:
    # entry bar opens at its high (long): 100 * 1.002 > 100 is clipped to 100;
    # exit bar's low 95.9 is above 96 * 0.998 = 95.808: the slipped stop is clipped to 95.9.
    candles, x = _costs_case(side, [(100, 100, 98.5, 99.5), (99.5, 99.8, 95.9, 96.2)])
    sign, s, r, q = x.sign, COST_S, COST_R, COST_Q

    result, _ = backtest(candles, side=side, exit_params=ISOLATED, overrides=COST_OVERRIDES)

    raw_entry, raw_exit = x.open(0) * (1 + sign * s), x.stop * (1 - sign * s)
    entry, exit_ = clip(raw_entry, x.bar(0)), clip(raw_exit, x.bar(1))
    assert entry != raw_entry and exit_ != raw_exit  # both really are clipped
    (t,) = result.trades
    assert t.entry_price == pytest.approx(entry, rel=1e-12)
    assert t.exit_price == pytest.approx(exit_, rel=1e-12)
    assert t.fees == pytest.approx(r * q * (entry + exit_), rel=1e-12)


@pytest.mark.parametrize(
    ("exit_bar", "clipped"),
    [
        pytest.param((94, 95, 93, 94.5), False, id="slip_inside_bar"),
        pytest.param((94, 95, 93.95, 94.5), True, id="slip_clipped_to_low"),
    ],
)
@pytest.mark.parametrize("side", ["long", "short"])
def test_gap_through_stop_fills_at_open_plus_slippage(side: str, exit_bar: Candle, clipped: bool) -> None:
    candles, x = _costs_case(side, [(100, 101, 99, 100.5), exit_bar])
    sign, s = x.sign, COST_S

    result, _ = backtest(candles, side=side, exit_params=ISOLATED, overrides=COST_OVERRIDES)

    raw = x.open(1) * (1 - sign * s)  # long: 94 * 0.998 = 93.812
    expected = clip(raw, x.bar(1))
    assert (expected != raw) == clipped
    (t,) = result.trades
    assert t.exit_reason == "stop_loss"
    assert t.exit_price == pytest.approx(expected, rel=1e-12)
    assert sign * (t.exit_price - x.stop) < 0  # worse than the stop


@pytest.mark.parametrize("side", ["long", "short"])
def test_touched_target_fills_at_limit_price_without_slippage(side: str) -> None:
    candles, x = _costs_case(side, [(100, 101, 99, 100.5), (100.5, 107, 100, 105)])

    result, _ = backtest(candles, side=side, exit_params=ISOLATED, overrides=COST_OVERRIDES)

    (t,) = result.trades
    assert t.exit_reason == "take_profit"
    assert t.exit_price == pytest.approx(x.target, rel=1e-12)
    assert t.fees == pytest.approx(COST_R * COST_Q * (t.entry_price + x.target), rel=1e-12)


@pytest.mark.parametrize("side", ["long", "short"])
def test_gap_beyond_target_fills_at_open_without_slippage(side: str) -> None:
    candles, x = _costs_case(side, [(100, 101, 99, 100.5), (108, 109, 107, 108)])

    result, _ = backtest(candles, side=side, exit_params=ISOLATED, overrides=COST_OVERRIDES)

    (t,) = result.trades
    assert t.exit_reason == "take_profit"
    assert t.exit_price == pytest.approx(x.open(1), rel=1e-12)  # 108 long, 92 short


# --------------------------------------------------------------------------- end of data


@pytest.mark.parametrize("side", ["long", "short"])
def test_position_open_at_end_closes_at_last_close_with_costs(side: str) -> None:
    """Trade 1 is stopped; trade 2 is still open after the last bar: end_of_data at the last close."""
    s, r, q = 0.001, 0.002, 2.0
    sign = 1 if side == "long" else -1
    long_c = PRE + [
        (100, 101, 99, 100.5),  # 5: entry 1
        (100, 100.5, 95, 97),  # 6: stop 1 (96) traded through
        (97, 98, 96.5, 97.5),  # 7
        (97.5, 98, 97, 97.8),  # 8: signal 2
        (97.8, 98.5, 97.2, 98),  # 9: entry 2
        (98, 98.6, 97.5, 98.2),  # 10: last bar
    ]
    candles = long_c if sign > 0 else mirror(long_c)
    overrides = {
        "strategy": {"sizing": {"method": "fixed", "quantity": q}},
        "broker": {"commission_rate": r, "paper_trading_config": {"slippage_model": "percent", "base_slippage": s}},
    }

    result, frame = backtest(candles, side=side, fire_at=(4, 8), exit_params=ISOLATED, overrides=overrides)

    atr = wilder_atr(candles, ATR_PERIOD)
    stop2 = candles[8][3] - sign * SL * atr[8]
    assert not any(sign * (candles[k][2 if sign > 0 else 1] - stop2) <= 0 for k in (9, 10))  # premise
    assert [t.exit_reason for t in result.trades] == ["stop_loss", "end_of_data"]
    t1, t2 = result.trades
    entry2 = clip(candles[9][0] * (1 + sign * s), candles[9])
    last_close = candles[10][3]
    exit2 = last_close * (1 - sign * s)  # 98.2 * 0.999 (long); inside the bar here
    assert clip(exit2, candles[10]) == exit2
    assert bar_index(frame, t2.exit_time) == 10
    assert t2.bars_held == 1
    assert t2.entry_price == pytest.approx(entry2, rel=1e-12)
    assert t2.exit_price == pytest.approx(exit2, rel=1e-12)
    assert t2.fees == pytest.approx(r * q * entry2 + r * q * exit2, rel=1e-12)
    assert t2.pnl == pytest.approx(sign * (exit2 - entry2) * q - r * q * (entry2 + exit2), rel=1e-12)
    # trade 1 for the accounting identity, by the doc too
    entry1 = clip(candles[5][0] * (1 + sign * s), candles[5])
    exit1 = clip((100 - sign * SL * atr[4]) * (1 - sign * s), candles[6])
    assert t1.pnl == pytest.approx(sign * (exit1 - entry1) * q - r * q * (entry1 + exit1), rel=1e-12)
    assert sum(t.pnl for t in result.trades) == pytest.approx(result.final_value - CASH, abs=1e-9)
    assert result.equity.iloc[-1] == pytest.approx(result.final_value, abs=1e-9)


@pytest.mark.parametrize("side", ["long", "short"])
def test_end_of_data_slippage_is_clipped_to_last_bar_range(side: str) -> None:
    # The last bar closes at its low (long): close * (1 - 0.01) = 98.01 is below the low 99,
    # so the exit must be the low, i.e. the close itself.
    s = 0.01
    sign = 1 if side == "long" else -1
    long_c = PRE + [(100, 101, 99, 100.5), (100.5, 101, 99, 99)]
    candles = long_c if sign > 0 else mirror(long_c)
    overrides = {"broker": {"paper_trading_config": {"slippage_model": "percent", "base_slippage": s}}}

    result, _ = backtest(candles, side=side, exit_params=ISOLATED, overrides=overrides)

    (t,) = result.trades
    assert t.exit_reason == "end_of_data"
    last = candles[-1]
    assert clip(last[3] * (1 - sign * s), last) == last[3]
    assert t.exit_price == pytest.approx(last[3], rel=1e-12)


@pytest.mark.parametrize("side", ["long", "short"])
def test_equity_is_cash_plus_position_marked_at_each_close(side: str) -> None:
    sign, q = (1 if side == "long" else -1), 10.0
    long_c = PRE + [(100, 101, 99, 100.5), (100.5, 102, 100, 101.5), (101.5, 103, 101, 102.5), (102.5, 103, 102, 102.7)]
    candles = long_c if sign > 0 else mirror(long_c)
    overrides = {"strategy": {"sizing": {"method": "fixed", "quantity": q}}}

    result, _ = backtest(candles, side=side, exit_params=ISOLATED, overrides=overrides)

    entry = candles[5][0]
    expected = [CASH] * 5 + [CASH + sign * q * (candles[k][3] - entry) for k in range(5, len(candles))]
    assert result.equity.tolist() == pytest.approx(expected, abs=1e-9)
    assert list(result.equity.index) == list(make_frame(candles).index)


# --------------------------------------------------------------------------- sizing

# Signal close C = 100, stop 96: distance d = |C - stop| = 2A = 4; equity E = 10 000.
E, C, D = CASH, 100.0, 4.0

SIZING_CASES = [
    ("fixed_quantity", {"sizing": {"method": "fixed", "quantity": 3}}, {}, 3.0),
    ("position_size_is_percent_of_equity", {"position_size": 0.1}, {}, E * 0.1 / C),
    ("percent_equity", {"sizing": {"method": "percent_equity", "percent": 0.25}}, {}, E * 0.25 / C),
    ("risk_per_trade", {"sizing": {"method": "risk_per_trade", "risk": 0.01}}, {}, E * 0.01 / D),
    ("fixed_capped_by_default_max_percent_1", {"sizing": {"method": "fixed", "quantity": 500}}, {}, E * 1.0 / C),
    (
        "percent_capped_by_max_percent",
        {"sizing": {"method": "percent_equity", "percent": 0.8, "max_percent": 0.5}}, {}, E * 0.5 / C,
    ),
    (
        "risk_sizing_capped_by_default_max_percent",
        {"sizing": {"method": "risk_per_trade", "risk": 0.05}}, {}, min(E * 0.05 / D, E * 1.0 / C),
    ),
    (
        "max_position_size_caps_notional",
        {"sizing": {"method": "percent_equity", "percent": 0.5}}, {"max_position_size": 0.2}, E * 0.2 / C,
    ),
    (
        "risk_per_trade_caps_loss_at_stop",
        {"sizing": {"method": "percent_equity", "percent": 0.9}}, {"risk_per_trade": 0.02}, E * 0.02 / D,
    ),
    (
        "both_caps_risk_is_tighter",
        {"sizing": {"method": "percent_equity", "percent": 0.9}},
        {"max_position_size": 0.6, "risk_per_trade": 0.02},
        min(E * 0.9 / C, E * 0.6 / C, E * 0.02 / D),
    ),
    (
        "both_caps_max_position_is_tighter",
        {"sizing": {"method": "percent_equity", "percent": 0.9}},
        {"max_position_size": 0.3, "risk_per_trade": 0.02},
        min(E * 0.9 / C, E * 0.3 / C, E * 0.02 / D),
    ),
    (
        "risk_sizing_capped_by_risk_cap",
        {"sizing": {"method": "risk_per_trade", "risk": 0.05}}, {"risk_per_trade": 0.01}, E * 0.01 / D,
    ),
    (
        "caps_never_grow_the_quantity",
        {"sizing": {"method": "fixed", "quantity": 2}}, {"max_position_size": 0.5, "risk_per_trade": 0.5}, 2.0,
    ),
    (
        "lot_size_rounds_down",
        {"sizing": {"method": "percent_equity", "percent": 0.1, "lot_size": 3}}, {}, math.floor(E * 0.1 / C / 3) * 3,
    ),
    # 10 000 x 0.003 / 100 = 0.3 units = exactly 3 lots of 0.1 (not 2 through float error)
    ("lot_size_exact_multiple_is_kept", {"sizing": {"method": "percent_equity", "percent": 0.003, "lot_size": 0.1}}, {}, 0.3),
]


@pytest.mark.parametrize(("strategy", "risk", "expected"), [pytest.param(s, r, e, id=i) for i, s, r, e in SIZING_CASES])
def test_sizing_quantity(strategy: dict[str, Any], risk: dict[str, Any], expected: float) -> None:
    candles = PRE + [(100, 101, 99, 100), (100, 101, 99, 100)]
    x = Ctx(candles, 1)
    assert (x.C, x.C - x.stop) == (C, D)  # the premise of the table

    result, _ = backtest(candles, exit_params=ISOLATED, overrides={"strategy": strategy, "risk_management": risk})

    (t,) = result.trades
    assert t.quantity == pytest.approx(expected, rel=1e-12)


def test_percent_sizing_uses_equity_at_signal_close_after_earlier_losses() -> None:
    p = 0.1
    candles = PRE + [
        (100, 101, 99, 100.5),  # 5: entry 1 at 100
        (100, 100.5, 95, 97),  # 6: stopped at 96
        (97, 98, 96.5, 97.5),  # 7
        (97.5, 98, 97, 97.8),  # 8: signal 2
        (97.8, 98.5, 97.2, 98),  # 9: entry 2
        (98, 98.6, 97.5, 98.2),  # 10
    ]

    result, _ = backtest(candles, fire_at=(4, 8), exit_params=ISOLATED, overrides={"strategy": {"position_size": p}})

    q1 = CASH * p / 100.0
    equity_at_8 = CASH + q1 * (96.0 - 100.0)  # flat at bar 8: cash after trade 1
    t1, t2 = result.trades
    assert t1.quantity == pytest.approx(q1, rel=1e-12)
    assert t2.quantity == pytest.approx(equity_at_8 * p / candles[8][3], rel=1e-12)


def test_percent_sizing_counts_other_symbols_open_position_at_its_close() -> None:
    """equity = portfolio value at the signal bar's close, including another symbol's position."""
    p = 0.1
    # A: signal at 4 (close 100), entry at 5 (open 100), marked at 110 at bar 6's close.
    a = PRE + [(100, 101, 99, 100.5), (100.5, 110.5, 100.5, 110), (110, 111, 109, 110.5), (110.5, 111, 110, 110.8)]
    # B: zero-range bars until 4 (ATR 0: no stop, refused under stop_loss_required), then real bars.
    b = [(50.0, 50.0, 50.0, 50.0)] * 5 + [(50, 50.5, 49.5, 50), (50, 50.5, 49.5, 50), (50, 50.5, 49.5, 50), (50, 50.5, 49.5, 50)]
    cfg = make_config(
        {
            "bot": {"symbols": ["A", "B"]},
            "strategy": {
                "entry_mixins": [{"name": FIRE, "parameters": {"e_fire_at": [4, 6]}}],
                "exit_mixins": [
                    {"name": "AdvancedATRExitMixin", "parameters": {"x_atr_period": 3, "x_tp_multiplier": 0, **ISOLATED}}
                ],
                "position_size": p,
            },
            "risk_management": {"stop_loss_required": True},
        }
    )

    result = run_backtest(cfg, {"A": make_frame(a), "B": make_frame(b)})

    assert wilder_atr(b, ATR_PERIOD)[4] == 0.0 and wilder_atr(b, ATR_PERIOD)[6] > 0
    by_symbol = {t.symbol: t for t in result.trades}
    qa = CASH * p / 100.0
    equity_at_6 = (CASH - qa * 100.0) + qa * a[6][3]  # cash after A's entry + A marked at 110
    assert by_symbol["A"].quantity == pytest.approx(qa, rel=1e-12)
    assert by_symbol["B"].quantity == pytest.approx(equity_at_6 * p / b[6][3], rel=1e-12)
    assert result.diagnostics["refusals"] == {"STOP_LOSS_REQUIRED": 1}


@pytest.mark.parametrize(("required", "trades"), [(True, 0), (False, 1)])
def test_stop_loss_required_refuses_entries_without_a_stop(required: bool, trades: int) -> None:
    candles = PRE + [(100, 101, 99, 100.5), (100.5, 101, 99, 100)]

    result, _ = backtest(
        candles, exit_mixin=NO_PROTECTION, overrides={"risk_management": {"stop_loss_required": required}}
    )

    assert len(result.trades) == trades
    refusals = result.diagnostics["refusals"]
    assert refusals == ({"STOP_LOSS_REQUIRED": 1} if required else {})
    if trades:
        assert result.trades[0].exit_reason == "end_of_data"


# --------------------------------------------------------------------------- cash


def test_long_entry_costing_more_than_cash_at_fill_is_rejected_with_its_bracket() -> None:
    # 99 units fit at the signal close (9 900) but the entry bar opens 5 % higher:
    # 99 x 105 = 10 395 > 10 000. Later bars cross both the stop and the target: nothing fills
    # (a surviving stop or target would open a position of its own). A short entry has no
    # cost to check: its proceeds are credited.
    candles = PRE + [(105, 106, 104.5, 105.5), (105.5, 110, 90, 100), (100, 100, 100, 100)]
    assert 99 * 100 <= CASH < 99 * 105
    overrides = {"strategy": {"sizing": {"method": "fixed", "quantity": 99, "max_percent": 2}}}

    result, _ = backtest(candles, exit_params=ISOLATED, overrides=overrides)

    assert result.trades == []
    assert result.diagnostics["refusals"] == {"ENTRY_MARGIN": 1}
    assert result.final_value == CASH
    assert result.equity.tolist() == [CASH] * len(candles)


@pytest.mark.parametrize(("qty", "accepted"), [(99.85, True), (99.95, False)])
def test_commission_counts_in_cash_check(qty: float, accepted: bool) -> None:
    # fill at 100 with 0.1 % commission: 99.85 -> 9 985 + 9.985 <= 10 000; 99.95 -> 9 995 + 9.995 > 10 000
    r = 0.001
    candles = PRE + [(100, 101, 99, 100.5), (100.5, 101, 99, 100)]
    assert (qty * 100 * (1 + r) <= CASH) == accepted
    overrides = {
        "strategy": {"sizing": {"method": "fixed", "quantity": qty}},
        "broker": {"commission_rate": r},
    }

    result, _ = backtest(candles, exit_params=ISOLATED, overrides=overrides)

    assert len(result.trades) == (1 if accepted else 0)
    assert result.diagnostics["refusals"] == ({} if accepted else {"ENTRY_MARGIN": 1})


def test_entry_affordable_at_fill_price_is_accepted() -> None:
    candles = PRE + [(95, 96, 94.5, 95.5), (95.5, 96, 95, 95.5)]
    assert 101 * 95 <= CASH < 101 * 100
    overrides = {"strategy": {"sizing": {"method": "fixed", "quantity": 101, "max_percent": 2}}}

    result, _ = backtest(candles, exit_params={**ISOLATED, "x_sl_multiplier": 4}, overrides=overrides)

    assert result.diagnostics["refusals"] == {}
    (t,) = result.trades
    assert t.entry_price == 95.0 and t.quantity == 101


def test_short_proceeds_are_credited_without_borrow_cost() -> None:
    q = 10.0
    candles = mirror(PRE + [(100, 101, 99, 100.5), (100.5, 101, 99.5, 100.8)])
    result, _ = backtest(candles, side="short", exit_params=ISOLATED, overrides={"strategy": {"sizing": {"method": "fixed", "quantity": q}}})
    (t,) = result.trades
    entry, last = candles[5][0], candles[-1][3]
    assert t.exit_reason == "end_of_data"
    assert result.final_value == pytest.approx(CASH + q * (entry - last), abs=1e-9)
