"""No lookahead: a decision at bar t never changes when the bars after t are altered or removed.

Property tests (hypothesis) over every registered mixin, so mixins added later are covered
without touching this file:

* entry mixins: ``prepare`` on the full bars, on ``bars[:t+1]`` and on bars whose tail after
  t is replaced by unrelated random bars must give the same ``signal`` / ``should_enter``
  for every i <= t; ``signal_array``, where a mixin gives one, must equal ``signal``;
* exit mixins: a trade signalled at bar s < t and filled at s + 1 is driven through
  ``on_entry`` and ``on_bar`` up to t on the same three versions of the bars; every plan
  must be the same;
* end to end: ``run_backtest`` on the full frame, on the frame cut at t and on the frame
  with other bars after t give the same trades, entry decisions and equity up to t.
"""

from __future__ import annotations

import math
from dataclasses import astuple, fields
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from strategy.mixins.base import Bars, EntryMixin, ExitMixin, ExitPlan, OpenTrade, Side
from strategy.registry import available
from tests.strategy.conftest import SYMBOL, make_config
from trading.engine import run_backtest
from trading.results import TradeRecord

# Parameter sets per mixin name. A mixin not listed runs with its defaults, periods shrunk
# (see `shrunk_defaults`); one whose defaults are not valid on their own must be listed here.
PARAMS: dict[str, list[dict[str, Any]]] = {
    "RSIOrBBEntryMixin": [
        {"e_rsi_period": 5, "e_bb_period": 8, "e_rsi_oversold": 40, "e_rsi_overbought": 60}
    ],
    "RSIBBVolumeEntryMixin": [
        {
            "e_rsi_period": 5,
            "e_bb_period": 8,
            "e_vol_period": 6,
            "e_vol_multiplier": 1.1,
            "e_rsi_oversold": 40,
            "e_rsi_overbought": 60,
        },
    ],
    "RSIIchimokuEntryMixin": [
        {"e_rsi_period": 5, "e_tenkan": 3, "e_kijun": 6, "e_senkou_b": 12, "e_displacement": 6},
        {
            "e_rsi_period": 5,
            "e_tenkan": 3,
            "e_kijun": 6,
            "e_senkou_b": 12,
            "e_displacement": 6,
            "e_require_tk_cross": True,
            "e_require_chikou": True,
            "e_lookback": 8,
        },
    ],
    "RSIVolumeSuperTrendEntryMixin": [
        {
            "e_st_period": 4,
            "e_st_multiplier": 1.5,
            "e_rsi_period": 5,
            "e_vol_period": 5,
            "e_vol_multiplier": 1.0,
        },
    ],
    # Walk-forward ML: tiny windows and networks keep each fit to a few tens of milliseconds.
    "HMMLSTMEntryMixin": [
        {
            "e_train_bars": 80,
            "e_retrain_every": 20,
            "e_horizon": 2,
            "e_threshold": 0.5,
            "e_feature_window": 6,
            "e_seq_len": 6,
            "e_hidden": 4,
            "e_epochs": 2,
            "e_hmm_states": 2,
            "e_hmm_iter": 5,
        }
    ],
    "AdvancedATRExitMixin": [
        {
            "x_atr_period": 5,
            "x_sl_multiplier": 1.0,
            "x_tp_multiplier": 2.0,
            "x_breakeven_trigger": 0.5,
        },
        {
            "x_atr_period": 5,
            "x_sl_multiplier": 1.5,
            "x_trail_use_current_atr": True,
            "x_trail_multiplier": 1.0,
            "x_breakeven_offset": 0.001,
            "x_partial_tp_multiplier": 1.0,
        },
    ],
    "ATRExitMixin": [{"x_atr_period": 5, "x_atr_multiplier": 1.0}],
    "FixedRatioExitMixin": [{"x_stop_pct": 0.01}, {"x_atr_multiplier": 1.5, "x_atr_period": 5}],
    "MACrossoverExitMixin": [
        {"x_fast_period": 3, "x_slow_period": 8, "x_ma_type": "sma"},
        {"x_fast_period": 3, "x_slow_period": 8, "x_ma_type": "ema"},
    ],
    "TimeBasedExitMixin": [
        {"x_max_bars": 6},
        {"x_max_duration": "9h"},
        {"x_session_close": "21:00"},
    ],
    "TrailingStopExitMixin": [{"x_trail_pct": 0.01}],
}


def shrunk_defaults(cls: type) -> dict[str, Any]:
    """Return the defaults with integer parameters cut to about a third (warm-up fits small data).

    Falls back to the plain defaults when the shrunk set does not validate (e.g. a fast <
    slow rule the shrinking broke).
    """
    out: dict[str, Any] = {}
    for name, info in cls.Params.model_fields.items():
        default = info.default
        if (
            isinstance(default, int)
            and not isinstance(default, bool)
            and default > 6
            and "cooldown" not in name
        ):
            out[name] = max(2, default // 3)
    try:
        cls.Params.model_validate(out)
    except ValueError:
        return {}
    return out


def param_sets(kind: str) -> list[tuple[str, int, dict[str, Any]]]:
    """Return (mixin name, set number, parameters) for every registered mixin of `kind`."""
    cases = []
    for name, cls in available(kind).items():  # type: ignore[arg-type]
        for k, params in enumerate(PARAMS.get(name) or [shrunk_defaults(cls)]):
            cases.append((name, k, params))
    return cases


def build(kind: str, name: str, params: dict[str, Any]) -> Any:
    """Instantiate a registered mixin; a parameter set that no longer validates is a test bug."""
    cls = available(kind)[name]  # type: ignore[index]
    try:
        return cls(cls.Params.model_validate(params))
    except ValueError as exc:
        pytest.fail(
            f"{kind} mixin {name}: parameters {params} are not valid ({exc}); update PARAMS"
        )


# --------------------------------------------------------------------------- bars

START_NS = np.datetime64("2024-03-01T00:00", "ns")
HOUR_NS = np.timedelta64(3600, "s").astype("timedelta64[ns]")


def random_bars(
    n: int,
    seed: int,
    *,
    start_price: float = 100.0,
    vol: float = 0.01,
    start_time: np.datetime64 = START_NS,
) -> Bars:
    """Return n valid hourly bars: a random walk with gaps, wicks, volume spikes, missing hours."""
    rng = np.random.default_rng(seed)
    steps = np.where(rng.random(n) < 0.05, rng.integers(2, 6, n), 1)
    steps[0] = 0
    time = start_time + np.cumsum(steps) * HOUR_NS
    gaps = np.where(rng.random(n) < 0.05, rng.normal(0.0, 4 * vol, n), 0.0)
    log_close = math.log(start_price) + np.cumsum(rng.normal(0.0, vol, n) + gaps)
    prev = np.concatenate([[math.log(start_price)], log_close[:-1]])
    close, open_ = np.exp(log_close), np.exp(prev + gaps)
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, vol / 2, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, vol / 2, n)))
    volume = rng.uniform(500.0, 1500.0, n) * np.where(
        rng.random(n) < 0.1, rng.uniform(2.0, 5.0, n), 1.0
    )
    return Bars(time, open_, high, low, close, volume)


def head(bars: Bars, stop: int) -> Bars:
    """Return the first `stop` bars (copies, so no view reaches past them)."""
    return Bars(
        *(
            np.array(getattr(bars, k)[:stop])
            for k in ("time", "open", "high", "low", "close", "volume")
        )
    )


def with_new_tail(bars: Bars, t: int, seed: int, scale: float, *, keep_time: bool = False) -> Bars:
    """Keep bars 0..t; replace the later ones by random bars starting at `scale` x close[t].

    The later bars get new open times too (other gaps), unless `keep_time`.
    """
    rest = len(bars) - t - 1
    if rest == 0:
        return head(bars, t + 1)
    tail = random_bars(
        rest,
        seed,
        start_price=float(bars.close[t]) * scale,
        vol=0.03,
        start_time=bars.time[t] + HOUR_NS,
    )
    if keep_time:
        tail.time = bars.time[t + 1 :]
    return Bars(
        *(
            np.concatenate([getattr(bars, k)[: t + 1], getattr(tail, k)])
            for k in ("time", "open", "high", "low", "close", "volume")
        )
    )


def prepared_warmup(mixin: Any, n: int = 400) -> int:
    """Prepare `mixin` on throw-away bars just to read its warm-up."""
    mixin.prepare(random_bars(n, 0))
    return int(mixin.warmup())


VOLS = st.sampled_from([0.002, 0.01, 0.03])
SCALES = st.sampled_from([0.5, 1.0, 2.0])
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Whole backtests are slow to shrink: report the first failing example as found.
E2E_SETTINGS = settings(SETTINGS, phases=[Phase.explicit, Phase.reuse, Phase.generate])


# --------------------------------------------------------------------------- entries

ENTRY_CASES = param_sets("entry")
EXIT_CASES = param_sets("exit")


def test_every_registered_mixin_is_covered() -> None:
    assert {name for name, _, _ in ENTRY_CASES} == set(available("entry"))
    assert {name for name, _, _ in EXIT_CASES} == set(available("exit"))
    assert ENTRY_CASES and EXIT_CASES


@pytest.mark.parametrize(
    ("name", "k", "params"), ENTRY_CASES, ids=[f"{n}-{k}" for n, k, _ in ENTRY_CASES]
)
@SETTINGS
@given(
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
    tail_seed=st.integers(0, 2**32 - 1),
    vol=VOLS,
    scale=SCALES,
)
def test_entry_signal_at_t_ignores_later_bars(
    name: str,
    k: int,
    params: dict[str, Any],
    data: st.DataObject,
    seed: int,
    tail_seed: int,
    vol: float,
    scale: float,
) -> None:
    warmup = prepared_warmup(build("entry", name, params))
    n = warmup + data.draw(st.integers(5, 60), label="bars after warm-up")
    t = data.draw(st.integers(max(0, warmup - 2), n - 1), label="t")
    bars = random_bars(n, seed, vol=vol)
    versions = {
        "full": bars,
        "cut": head(bars, t + 1),
        "new tail": with_new_tail(bars, t, tail_seed, scale),
    }
    mixins: dict[str, EntryMixin] = {}
    for label, b in versions.items():
        m = build("entry", name, params)
        m.prepare(b)
        mixins[label] = m
    for side in available("entry")[name].sides:
        for label, m in mixins.items():
            arr = m.signal_array(side)
            if arr is not None:
                size = len(versions[label])
                assert len(arr) == size, (
                    f"{name}.signal_array({side}) on {label} bars has the wrong length"
                )
                wrong = [i for i in range(size) if bool(arr[i]) != bool(m.signal(i, side))]
                assert not wrong, (
                    f"{name}: signal_array != signal for {side} on {label} bars at {wrong[:5]}"
                )
        for i in range(t + 1):
            got = {
                label: (bool(m.signal(i, side)), bool(m.should_enter(i, side, 10**6)))
                for label, m in mixins.items()
            }
            assert len(set(got.values())) == 1, (
                f"{name}: decision for {side} at bar {i} <= t={t} differs: {got}"
            )


# --------------------------------------------------------------------------- exits


def drive_exit(mixin: ExitMixin, bars: Bars, side: Side, s: int, t: int) -> list[tuple[Any, ...]]:
    """Open a trade signalled at s (filled at s + 1's open) and return every plan up to bar t.

    The trade is updated the way BaseStrategy does: levels from the plan, best/worst price
    from each bar. Fills of the stop or target are not simulated: only the mixin's answers
    to identical inputs are compared.
    """
    mixin.prepare(bars)
    trade = OpenTrade(
        symbol=SYMBOL, side=side, signal_index=s, ref_price=float(bars.close[s]), entry_tag="test"
    )
    plan = mixin.on_entry(trade, s)
    plans = [_key(plan)]
    trade.quantity = 1.0
    trade.stop, trade.stop_reason = plan.stop, plan.stop_reason
    trade.take_profit, trade.take_profit_reason = plan.take_profit, plan.take_profit_reason
    trade.partial_target, trade.partial_fraction = plan.partial_target, plan.partial_fraction
    trade.entry_index, trade.entry_price = s + 1, float(bars.open[s + 1])
    trade.best_price = trade.worst_price = trade.entry_price
    for i in range(s + 1, t + 1):
        hi, lo = float(bars.high[i]), float(bars.low[i])
        if side is Side.LONG:
            trade.best_price, trade.worst_price = (
                max(trade.best_price, hi),
                min(trade.worst_price, lo),
            )
        else:
            trade.best_price, trade.worst_price = (
                min(trade.best_price, lo),
                max(trade.worst_price, hi),
            )
        plan = mixin.on_bar(trade, i)
        plans.append(_key(plan))
        if plan.exit_now:
            break
        trade.stop, trade.stop_reason = plan.stop, plan.stop_reason
        trade.take_profit, trade.take_profit_reason = plan.take_profit, plan.take_profit_reason
    return plans


def _key(plan: ExitPlan) -> tuple[Any, ...]:
    # NaN never equals itself; make it comparable.
    return tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in astuple(plan))


@pytest.mark.parametrize(
    ("name", "k", "params"), EXIT_CASES, ids=[f"{n}-{k}" for n, k, _ in EXIT_CASES]
)
@SETTINGS
@given(
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
    tail_seed=st.integers(0, 2**32 - 1),
    vol=VOLS,
    scale=SCALES,
    side=st.sampled_from(list(Side)),
)
def test_exit_plans_up_to_t_ignore_later_bars(
    name: str,
    k: int,
    params: dict[str, Any],
    data: st.DataObject,
    seed: int,
    tail_seed: int,
    vol: float,
    scale: float,
    side: Side,
) -> None:
    warmup = prepared_warmup(build("exit", name, params))
    n = warmup + data.draw(st.integers(5, 60), label="bars after warm-up")
    s = data.draw(st.integers(warmup, n - 3), label="signal bar")
    t = data.draw(st.integers(s + 1, n - 1), label="t")
    bars = random_bars(n, seed, vol=vol)
    versions = {
        "full": bars,
        "cut": head(bars, t + 1),
        "new tail": with_new_tail(bars, t, tail_seed, scale),
    }
    plans = {
        label: drive_exit(build("exit", name, params), b, side, s, t)
        for label, b in versions.items()
    }
    assert plans["cut"] == plans["full"], (
        f"{name} {side}: plans up to t={t} change when bars after t are removed"
    )
    assert plans["new tail"] == plans["full"], (
        f"{name} {side}: plans up to t={t} change with other bars after t"
    )


# --------------------------------------------------------------------------- end to end


def frame(bars: Bars) -> pd.DataFrame:
    index = pd.DatetimeIndex(bars.time, name="datetime").tz_localize("UTC")
    return pd.DataFrame(
        {
            "open": bars.open,
            "high": bars.high,
            "low": bars.low,
            "close": bars.close,
            "volume": bars.volume,
        },
        index=index,
    )


def first_params(name: str, cases: list[tuple[str, int, dict[str, Any]]]) -> dict[str, Any]:
    """Return the first parameter set of mixin `name`."""
    return next(params for n, _, params in cases if n == name)


def bot(entry: str, exit_: str, direction: str) -> Any:
    """Build a one-mixin-each bot with costs (fixed quantity 1, no stop required)."""
    return make_config(
        {
            "strategy": {
                "direction": direction,
                "entry_mixins": [
                    {
                        "name": entry,
                        "parameters": {**first_params(entry, ENTRY_CASES), "e_cooldown_bars": 2},
                    }
                ],
                "exit_mixins": [{"name": exit_, "parameters": first_params(exit_, EXIT_CASES)}],
            },
            "broker": {"commission_rate": 0.001, "paper_trading_config": {"base_slippage": 0.0005}},
        }
    )


def _entry_side(trade: TradeRecord) -> tuple[Any, ...]:
    return (trade.side, trade.entry_time, trade.entry_price, trade.quantity, trade.entry_tag)


@E2E_SETTINGS
@given(
    entry=st.sampled_from(sorted(available("entry"))),
    exit_=st.sampled_from(sorted(available("exit"))),
    direction=st.sampled_from(["long", "short", "both"]),
    seed=st.integers(0, 2**32 - 1),
    tail_seed=st.integers(0, 2**32 - 1),
    vol=VOLS,
    scale=SCALES,
    data=st.data(),
)
def test_backtest_trades_and_entries_decided_by_t_ignore_later_bars(
    entry: str,
    exit_: str,
    direction: str,
    seed: int,
    tail_seed: int,
    vol: float,
    scale: float,
    data: st.DataObject,
) -> None:
    n = 300
    t = data.draw(st.integers(60, n - 2), label="t")
    bars = random_bars(n, seed, vol=vol)
    df = frame(bars)
    cfg = bot(entry, exit_, direction)
    full = run_backtest(cfg, {SYMBOL: df})
    cut = run_backtest(cfg, {SYMBOL: df.iloc[: t + 1]})
    other = run_backtest(
        cfg, {SYMBOL: frame(with_new_tail(bars, t, tail_seed, scale, keep_time=True))}
    )
    last, fill_of_last = df.index[t].to_pydatetime(), df.index[t + 1].to_pydatetime()

    # Cut at t: trades closed by bar t (bar t is in both runs) are identical; those still
    # open at the close of t appear with the same entry, closed there as end_of_data.
    closed = [tr for tr in full.trades if tr.exit_time <= last]
    still_open = [tr for tr in full.trades if tr.entry_time <= last < tr.exit_time]
    assert len(cut.trades) == len(closed) + len(still_open)
    for f, c in zip(closed, cut.trades[: len(closed)], strict=True):
        assert _plain(c) == _plain(f)
    for f, c in zip(still_open, cut.trades[len(closed) :], strict=True):
        assert _entry_side(c) == _entry_side(f)
        assert (c.exit_reason, c.exit_time) == ("end_of_data", last)

    # Other bars after t: the same trades closed by t, and the same entries decided at the
    # close of t or before (an entry decided at t fills at t + 1, at another price).
    assert [_plain(o) for o in other.trades if o.exit_time <= last] == [_plain(f) for f in closed]
    decided = [
        (f.side, f.entry_time, f.entry_tag) for f in full.trades if f.entry_time <= fill_of_last
    ]
    assert [
        (o.side, o.entry_time, o.entry_tag) for o in other.trades if o.entry_time <= fill_of_last
    ] == decided

    # Equity at every close before t (and at t, unless the cut run's end-of-data costs moved it).
    np.testing.assert_array_equal(cut.equity.to_numpy()[:t], full.equity.to_numpy()[:t])
    np.testing.assert_array_equal(other.equity.to_numpy()[: t + 1], full.equity.to_numpy()[: t + 1])


def _plain(trade: TradeRecord) -> dict[str, Any]:
    """Every field of a trade record but its number (numbered by exit order within a run)."""
    return {f.name: getattr(trade, f.name) for f in fields(trade) if f.name != "trade_id"}
