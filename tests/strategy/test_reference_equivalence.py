"""atf's trades equal those of an independent, plain re-implementation of the same rules.

The reference below never calls atf or TA-Lib: it computes RSI (Wilder), Bollinger bands
(SMA +- k x population std, as TA-Lib's BBANDS) and ATR (Wilder, seeded by the mean of the
first `period` true ranges) in numpy, then walks the bars one by one following
docs/backtesting.md: signal at the close of bar i, warm-up, cooldown, no entry on the last
bar, market entry at the next open with slippage clipped to the bar, sizing from the signal
close and the equity at that close, the cash check at the fill, the bracket live from the
entry bar (stop before target, gaps fill at the open, the target without slippage), the
AdvancedATRExitMixin breakeven and trailing after each close, and end_of_data at the last
close. Every trade and the final equity must match the engine's run of the same YAML bot on
generated data.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.strategy.conftest import CASH, SYMBOL, make_config
from trading.data import generate_ohlcv
from trading.engine import run_backtest

BARS = 3000
SEEDS = (3, 17, 2024)
REL = 1e-9


# --------------------------------------------------------------------------- indicators


def ref_rsi(close: np.ndarray, period: int) -> np.ndarray:
    """Wilder RSI: simple means of the first `period` gains/losses, then Wilder smoothing."""
    n = len(close)
    out = np.full(n, np.nan)
    if n <= period:
        return out
    diff = np.diff(close)
    gain = np.where(diff > 0, diff, 0.0)
    loss = np.where(diff < 0, -diff, 0.0)
    avg_gain, avg_loss = gain[:period].mean(), loss[:period].mean()

    def value(g: float, lo: float) -> float:
        # TA-Lib reports 0 when there was no movement at all.
        return 100.0 * g / (g + lo) if g + lo > 0 else 0.0

    out[period] = value(avg_gain, avg_loss)
    for k in range(period + 1, n):
        avg_gain = (avg_gain * (period - 1) + gain[k - 1]) / period
        avg_loss = (avg_loss * (period - 1) + loss[k - 1]) / period
        out[k] = value(avg_gain, avg_loss)
    return out


def ref_bbands(close: np.ndarray, period: int, dev: float) -> tuple[np.ndarray, np.ndarray]:
    """Return (upper, lower): SMA(period) +- dev x population std over the same window."""
    n = len(close)
    upper = np.full(n, np.nan)
    lower = np.full(n, np.nan)
    if n >= period:
        windows = np.lib.stride_tricks.sliding_window_view(close, period)
        mean = windows.mean(axis=1)
        std = windows.std(axis=1, ddof=0)
        upper[period - 1 :] = mean + dev * std
        lower[period - 1 :] = mean - dev * std
    return upper, lower


def ref_atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    """Wilder ATR: true ranges from bar 1, first value the mean of TR[1..period] at bar `period`."""
    n = len(close)
    out = np.full(n, np.nan)
    if n <= period:
        return out
    prev = close[:-1]
    tr = np.maximum.reduce([high[1:] - low[1:], np.abs(high[1:] - prev), np.abs(low[1:] - prev)])
    atr = tr[:period].mean()
    out[period] = atr
    for k in range(period + 1, n):
        atr = (atr * (period - 1) + tr[k - 1]) / period
        out[k] = atr
    return out


# --------------------------------------------------------------------------- the rules


@dataclass(frozen=True)
class Rules:
    """One bot: RSIOrBBEntryMixin + AdvancedATRExitMixin with costs and sizing."""

    direction: str = "long"
    rsi_period: int = 14
    oversold: float = 30.0
    overbought: float = 70.0
    bb_period: int = 20
    bb_dev: float = 2.0
    cooldown: int = 5
    atr_period: int = 14
    sl: float = 2.0
    tp: float = 3.0
    trailing: bool = True
    trail_mult: float | None = None
    trail_current_atr: bool = False
    breakeven: bool = True
    be_trigger: float = 1.0
    be_offset: float = 0.0
    sizing: tuple[str, float] = ("fixed", 1.0)
    commission: float = 0.001
    slippage: float = 0.0005
    cash: float = CASH

    def config(self) -> Any:
        """Build the same bot through the real YAML path."""
        method, amount = self.sizing
        sizing = {
            "method": method,
            "quantity": amount if method == "fixed" else None,
            "percent": amount if method == "percent_equity" else None,
        }
        return make_config(
            {
                "strategy": {
                    "direction": self.direction,
                    "entry_mixins": [
                        {
                            "name": "RSIOrBBEntryMixin",
                            "parameters": {
                                "e_rsi_period": self.rsi_period,
                                "e_rsi_oversold": self.oversold,
                                "e_rsi_overbought": self.overbought,
                                "e_bb_period": self.bb_period,
                                "e_bb_dev": self.bb_dev,
                                "e_cooldown_bars": self.cooldown,
                            },
                        }
                    ],
                    "exit_mixins": [
                        {
                            "name": "AdvancedATRExitMixin",
                            "parameters": {
                                "x_atr_period": self.atr_period,
                                "x_sl_multiplier": self.sl,
                                "x_tp_multiplier": self.tp,
                                "x_trailing_enabled": self.trailing,
                                "x_trail_multiplier": self.trail_mult,
                                "x_trail_use_current_atr": self.trail_current_atr,
                                "x_breakeven_enabled": self.breakeven,
                                "x_breakeven_trigger": self.be_trigger,
                                "x_breakeven_offset": self.be_offset,
                            },
                        }
                    ],
                    "sizing": sizing,
                },
                "broker": {
                    "cash": self.cash,
                    "commission_rate": self.commission,
                    "paper_trading_config": {
                        "slippage_model": "percent",
                        "base_slippage": self.slippage,
                    },
                },
            }
        )


@dataclass
class RefTrade:
    """One round trip of the reference, with the state its exit rules need."""

    side: int
    entry_bar: int
    entry_price: float
    quantity: float
    entry_fee: float
    atr0: float
    stop: float
    stop_reason: str
    target: float | None
    best: float
    breakeven_done: bool = False
    exit_bar: int = -1
    exit_price: float = math.nan
    exit_fee: float = 0.0
    exit_reason: str = ""
    exit_kind: str = ""  # gap (at the open) | touch (at the level) | end (last close)

    @property
    def gross(self) -> float:
        return self.side * (self.exit_price - self.entry_price) * self.quantity

    @property
    def pnl(self) -> float:
        return self.gross - self.entry_fee - self.exit_fee


@dataclass
class RefRun:
    """What the reference simulation produces."""

    trades: list[RefTrade]
    final_equity: float
    rejected: int  # entries the cash at the fill could not pay
    conflicts: int  # bars where long and short fired together


def simulate(df: pd.DataFrame, r: Rules) -> RefRun:
    """Walk the bars as docs/backtesting.md describes."""
    o, h, lo, c = (df[k].to_numpy(dtype=np.float64) for k in ("open", "high", "low", "close"))
    n = len(c)
    rsi = ref_rsi(c, r.rsi_period)
    upper, lower = ref_bbands(c, r.bb_period, r.bb_dev)
    atr = ref_atr(h, lo, c, r.atr_period)
    with np.errstate(invalid="ignore"):
        fires = {1: (rsi < r.oversold) | (c <= lower), -1: (rsi > r.overbought) | (c >= upper)}
    sides = {"long": (1,), "short": (-1,), "both": (1, -1)}[r.direction]
    warmup = max(r.rsi_period, r.bb_period - 1, r.atr_period)
    s = r.slippage

    def slipped(price: float, buy: bool, k: int) -> float:
        """Move `price` against the order by the slippage, never outside bar k's range."""
        return min(price * (1 + s), h[k]) if buy else max(price * (1 - s), lo[k])

    cash = r.cash
    trades: list[RefTrade] = []
    pos: RefTrade | None = None
    pending: tuple[int, int, float] | None = None  # (side, signal bar, quantity)
    last_exit = -(10**9)
    rejected = conflicts = 0

    def close_position(k: int, price: float, reason: str, kind: str) -> None:
        nonlocal cash, pos, last_exit
        assert pos is not None
        pos.exit_bar, pos.exit_price, pos.exit_reason, pos.exit_kind = k, price, reason, kind
        pos.exit_fee = r.commission * pos.quantity * price
        cash += pos.side * pos.quantity * price - pos.exit_fee
        trades.append(pos)
        pos, last_exit = None, k

    for k in range(n):
        # --- the broker during bar k: the pending entry, then its stop, then its target.
        if pending is not None:
            side, i, qty = pending
            pending = None
            price = slipped(o[k], side > 0, k)
            fee = r.commission * qty * price
            # A short's proceeds are credited, so only a long can run out of cash.
            if side * qty * price + fee > cash:
                rejected += 1
            else:
                cash -= side * qty * price + fee
                stop = c[i] - side * r.sl * atr[i]
                target = c[i] + side * r.tp * atr[i] if r.tp > 0 else None
                pos = RefTrade(
                    side, k, price, qty, fee, atr[i], stop, "stop_loss", target, best=price
                )
        if pos is not None:
            sd = pos.side
            if sd * (o[k] - pos.stop) <= 0:  # opened at or beyond the stop: a gap
                close_position(k, slipped(o[k], sd < 0, k), pos.stop_reason, "gap")
            elif sd * ((lo[k] if sd > 0 else h[k]) - pos.stop) <= 0:
                close_position(k, slipped(pos.stop, sd < 0, k), pos.stop_reason, "touch")
            elif pos.target is not None and sd * (o[k] - pos.target) >= 0:
                close_position(k, o[k], "take_profit", "gap")  # better than the limit, no slippage
            elif pos.target is not None and sd * ((h[k] if sd > 0 else lo[k]) - pos.target) >= 0:
                close_position(k, pos.target, "take_profit", "touch")
        # --- the strategy at the close of bar k.
        if pos is not None:
            sd = pos.side
            pos.best = max(pos.best, h[k]) if sd > 0 else min(pos.best, lo[k])
            if (
                r.breakeven
                and not pos.breakeven_done
                and sd * (pos.best - pos.entry_price) >= r.be_trigger * pos.atr0
            ):
                pos.breakeven_done = True
                level = pos.entry_price * (1 + sd * r.be_offset)
                if sd * (level - pos.stop) > 0:
                    pos.stop, pos.stop_reason = level, "breakeven_stop"
            if r.trailing:
                a = atr[k] if r.trail_current_atr else pos.atr0
                level = pos.best - sd * (r.trail_mult or r.sl) * a
                if sd * (level - pos.stop) > 0:
                    pos.stop, pos.stop_reason = level, "trailing_stop"
        elif pending is None and warmup <= k < n - 1 and k - last_exit >= r.cooldown:
            fired = [sd for sd in sides if fires[sd][k]]
            conflicts += len(fired) == 2  # both sides at once: stay out
            if len(fired) == 1:
                sd = fired[0]
                equity = cash  # flat: the portfolio value at this close is the cash
                method, amount = r.sizing
                qty = amount if method == "fixed" else equity * amount / c[k]
                pending = (sd, k, min(qty, equity / c[k]))  # sizing.max_percent defaults to 1.0
    if pos is not None:
        close_position(n - 1, slipped(c[n - 1], pos.side < 0, n - 1), "end_of_data", "end")
    return RefRun(trades, cash, rejected, conflicts)


# --------------------------------------------------------------------------- cases

BASE = Rules()
CASES: dict[str, Rules] = {
    "long_trail_breakeven": BASE,
    "short_trail_breakeven": replace(BASE, direction="short"),
    "long_plain_percent_equity": replace(
        BASE, trailing=False, breakeven=False, sizing=("percent_equity", 0.5)
    ),
    "short_plain_percent_equity": replace(
        BASE, direction="short", trailing=False, breakeven=False, sizing=("percent_equity", 0.5)
    ),
    "both_current_atr_trail_offset_breakeven_no_target": replace(
        BASE,
        direction="both",
        cooldown=0,
        tp=0.0,
        trail_mult=1.5,
        trail_current_atr=True,
        be_trigger=0.5,
        be_offset=0.002,
        sizing=("percent_equity", 0.3),
    ),
    "long_wide_slippage_tight_levels": replace(
        BASE, sl=1.0, tp=1.5, cooldown=2, slippage=0.003, rsi_period=7, bb_period=10, atr_period=5
    ),
    "short_wide_slippage_breakeven_only": replace(
        BASE,
        direction="short",
        trailing=False,
        slippage=0.003,
        be_trigger=0.7,
        sizing=("percent_equity", 0.8),
    ),
    # Overlapping RSI thresholds: both sides often fire on one bar and no trade is taken.
    "both_overlapping_thresholds": replace(
        BASE,
        direction="both",
        oversold=52.0,
        overbought=48.0,
        cooldown=1,
        sizing=("percent_equity", 0.4),
    ),
    # Notional plus fees near the whole cash: about half the entries do not fit at the fill.
    "long_nearly_all_equity_cash_check": replace(BASE, sizing=("percent_equity", 0.9985)),
    "long_no_costs": replace(BASE, commission=0.0, slippage=0.0),
}


@functools.cache
def reference(case: str, seed: int, cut: int | None = None) -> tuple[pd.DataFrame, RefRun]:
    """The generated bars of `seed` (the first `cut` of them if given) and the reference run."""
    df = generate_ohlcv(BARS, seed=seed, timeframe="1h")
    if cut is not None:
        df = df.iloc[:cut]
    return df, simulate(df, CASES[case])


def assert_engine_matches(case: str, df: pd.DataFrame, ref: RefRun) -> None:
    """Run the engine on `df` and compare every trade, the final equity and the refusals."""
    got = run_backtest(CASES[case].config(), {SYMBOL: df})
    want = ref.trades
    times = df.index
    assert len(got.trades) == len(want), _first_difference(got.trades, want, times)
    for g, w in zip(got.trades, want, strict=True):
        where = f"reference trade entered at bar {w.entry_bar}: {w}"
        assert g.side == ("long" if w.side > 0 else "short"), where
        assert g.entry_time == times[w.entry_bar].to_pydatetime(), where
        assert g.exit_time == times[w.exit_bar].to_pydatetime(), where
        assert g.exit_reason == w.exit_reason, where
        assert g.entry_price == pytest.approx(w.entry_price, rel=REL), where
        assert g.exit_price == pytest.approx(w.exit_price, rel=REL), where
        assert g.quantity == pytest.approx(w.quantity, rel=REL), where
        assert g.bars_held == w.exit_bar - w.entry_bar, where
        scale = REL * w.entry_price * w.quantity  # pnl can be ~0: compare against the notional
        assert g.fees == pytest.approx(w.entry_fee + w.exit_fee, rel=REL, abs=scale), where
        assert g.pnl == pytest.approx(w.pnl, rel=REL, abs=scale), where
    assert got.final_value == pytest.approx(ref.final_equity, rel=REL)
    refusals = got.diagnostics["refusals"]
    assert refusals.get("ENTRY_MARGIN", 0) == ref.rejected
    assert refusals.get("CONFLICTING_SIGNALS", 0) == ref.conflicts


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", list(CASES))
def test_engine_trades_equal_the_reference_simulation(case: str, seed: int) -> None:
    df, ref = reference(case, seed)
    assert len(ref.trades) > 20, "the case should trade often enough to mean something"
    assert_engine_matches(case, df, ref)


def _end_cuts(case: str, seed: int, count: int = 2) -> list[int]:
    """Return bar counts where the data ends in a position, the slipped close outside the bar."""
    df, ref = reference(case, seed)
    lo, hi, c = (df[k].to_numpy() for k in ("low", "high", "close"))
    s = CASES[case].slippage
    cuts = []
    for tr in ref.trades:
        # Bars entry_bar..exit_bar-1 end with the position open; the exit bar itself may not.
        for k in range(tr.entry_bar, tr.exit_bar):
            price = c[k] * (1 - tr.side * s)
            if not lo[k] <= price <= hi[k]:
                cuts.append(k + 1)
                break
        if len(cuts) == count:
            break
    return cuts


END_CASES = [
    (case, seed)
    for case in ("long_wide_slippage_tight_levels", "short_wide_slippage_breakeven_only")
    for seed in SEEDS[:2]
]


@pytest.mark.parametrize(("case", "seed"), END_CASES)
def test_end_of_data_exit_is_clipped_to_the_last_bar(case: str, seed: int) -> None:
    cuts = _end_cuts(case, seed)
    assert cuts, "the data should end inside a position with a close near the bar's extreme"
    for cut in cuts:
        df, ref = reference(case, seed, cut)
        last = ref.trades[-1]
        assert last.exit_reason == "end_of_data"
        assert last.exit_price == (df["low"].iloc[-1] if last.side > 0 else df["high"].iloc[-1])
        assert_engine_matches(case, df, ref)


def test_the_cases_exercise_every_fill_rule() -> None:
    """Guard the equivalence test against vacuity: every documented path occurs in the data."""
    seen: dict[str, int] = {}

    def count(key: str, n: int = 1) -> None:
        seen[key] = seen.get(key, 0) + n

    for case in CASES:
        for seed in SEEDS:
            df, ref = reference(case, seed)
            lo, hi = df["low"].to_numpy(), df["high"].to_numpy()
            count("rejected entry", ref.rejected)
            count("both sides fired", ref.conflicts)
            for a, b in zip(ref.trades, ref.trades[1:], strict=False):
                count("entry decided on an exit bar", a.exit_bar == b.entry_bar - 1)
            for tr in ref.trades:
                target = tr.exit_reason == "take_profit"
                order = "target" if target else "end" if tr.exit_kind == "end" else "stop"
                count(f"{order} {tr.exit_kind}")
                count(tr.exit_reason)
                count("exit on the entry bar", tr.exit_bar == tr.entry_bar)
                count(
                    "entry slippage clipped", tr.entry_price in (lo[tr.entry_bar], hi[tr.entry_bar])
                )
                if not target:
                    count(
                        "exit slippage clipped", tr.exit_price in (lo[tr.exit_bar], hi[tr.exit_bar])
                    )
    want = [
        "rejected entry",
        "both sides fired",
        "entry decided on an exit bar",
        "stop gap",
        "stop touch",
        "target gap",
        "target touch",
        "end end",
        "stop_loss",
        "trailing_stop",
        "breakeven_stop",
        "take_profit",
        "end_of_data",
        "exit on the entry bar",
        "entry slippage clipped",
        "exit slippage clipped",
    ]
    assert {k: seen.get(k, 0) for k in want if not seen.get(k)} == {}


def _first_difference(got: list[Any], want: list[RefTrade], times: pd.DatetimeIndex) -> str:
    """Describe the first trade where the engine and the reference part ways."""
    for k, w in enumerate(want):
        if k >= len(got):
            return f"engine has {len(got)} trades, reference {len(want)}; missing from #{k}: {w}"
        g = got[k]
        if (
            g.entry_time != times[w.entry_bar].to_pydatetime()
            or g.exit_time != times[w.exit_bar].to_pydatetime()
        ):
            return f"trade #{k} differs:\n engine    {g}\n reference {w}"
    return f"engine has {len(got)} trades, reference {len(want)}; extra: {got[len(want)]}"


def test_reference_indicators_match_hand_computed_values() -> None:
    """Check the reference's own indicators on numbers small enough to work out by hand."""
    close = np.array([10.0, 11.0, 10.0, 12.0, 12.0, 9.0])
    # Changes: +1, -1, +2, 0, -3. RSI(2): first averages gain (1+0)/2, loss (0+1)/2 -> 50;
    # then gain (0.5+2)/2 = 1.25, loss 0.25 -> 83.33..; then 0.625/0.125 -> 83.33..;
    # then 0.3125/1.5625 -> 16.66...
    np.testing.assert_allclose(ref_rsi(close, 2)[2:], [50.0, 250 / 3, 250 / 3, 50 / 3])
    # Window [10, 11, 10, 12]: mean 10.75, population variance (0.5625+0.0625+0.5625+1.5625)/4.
    upper, lower = ref_bbands(close, 4, 2.0)
    sd = math.sqrt(2.75 / 4)
    assert upper[3] == pytest.approx(10.75 + 2 * sd) and lower[3] == pytest.approx(10.75 - 2 * sd)
    assert np.isnan(upper[2])
    high = np.array([10.5, 11.5, 11.0, 12.5, 13.0, 12.0])
    low = np.array([9.5, 10.0, 9.0, 10.5, 11.5, 8.5])
    # TR from bar 1: max(1.5, 1.5, 0)=1.5; max(2, 0, 2)=2; max(2, 2.5, 0.5)=2.5; 1.5; 3.5.
    # ATR(2): (1.5+2)/2 = 1.75 at bar 2, then (1.75+2.5)/2, (2.125+1.5)/2, (1.8125+3.5)/2.
    np.testing.assert_allclose(ref_atr(high, low, close, 2)[2:], [1.75, 2.125, 1.8125, 2.65625])
