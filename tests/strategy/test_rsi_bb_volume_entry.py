"""RSIBBVolumeEntryMixin: the RSI/Bollinger rule AND volume > multiplier x SMA(volume).

Hand-worked volume cases on the DROP/SPIKE series of the RSI/BB tests, and an equivalence
check against an independent pandas computation on random data, long and short.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from strategy.mixins.base import Bars, Side
from strategy.mixins.entry.rsi_bb_volume import RSIBBVolumeEntryMixin
from tests.strategy.test_rsi_bb_entry import DROP, SPIKE, random_closes, ref_bbands, ref_rsi


def prepared(closes: list[float] | np.ndarray, volume: list[float] | np.ndarray, **params: Any) -> RSIBBVolumeEntryMixin:
    c = np.asarray(closes, dtype=np.float64)
    times = np.datetime64("2024-01-01T00:00", "ns") + np.arange(len(c)) * np.timedelta64(1, "h")
    m = RSIBBVolumeEntryMixin(params)
    m.prepare(Bars(times, c.copy(), c.copy(), c.copy(), c.copy(), np.asarray(volume, dtype=np.float64)))
    return m


def flat_volume_with(n: int, spikes: dict[int, float]) -> list[float]:
    v = [100.0] * n
    for k, x in spikes.items():
        v[k] = x
    return v


@pytest.mark.parametrize(
    ("spike", "fires"),
    [
        # SMA(20) at bar 30 with the spike: (19 x 100 + s)/20; fire iff s > 1.5 x that,
        # i.e. s > 2850/18.5 = 154.05...
        (155.0, True),
        (154.0, False),
        (100.0, False),  # no surge at all: the RSI/BB signal alone is not enough
    ],
)
def test_drop_fires_long_only_with_enough_volume(spike: float, fires: bool) -> None:
    m = prepared(DROP, flat_volume_with(len(DROP), {30: spike}))
    assert [i for i, v in enumerate(m.long_signal) if v] == ([30] if fires else [])
    assert not any(m.short_signal)


def test_spike_fires_short_with_volume_and_not_on_a_quiet_bar() -> None:
    m = prepared(SPIKE, flat_volume_with(len(SPIKE), {30: 300.0}))
    assert [i for i, v in enumerate(m.short_signal) if v] == [30]
    # The same surge one bar early, on a bar without a price signal, does nothing.
    quiet = prepared(SPIKE, flat_volume_with(len(SPIKE), {29: 300.0}))
    assert not any(quiet.short_signal) and not any(quiet.long_signal)


def test_multiplier_and_period_are_used() -> None:
    # SMA(5) at bar 30: (4 x 100 + 250)/5 = 130; 250 > 1.9 x 130 = 247 fires, > 2 x 130 = 260 does not.
    vol = flat_volume_with(len(DROP), {30: 250.0})
    assert prepared(DROP, vol, e_vol_period=5, e_vol_multiplier=1.9).long_signal[30]
    assert not prepared(DROP, vol, e_vol_period=5, e_vol_multiplier=2.0).long_signal[30]


def test_warmup_covers_the_volume_average() -> None:
    assert RSIBBVolumeEntryMixin({"e_vol_period": 40}).warmup() == 39
    assert RSIBBVolumeEntryMixin({}).warmup() == 19  # BB(20) is the slowest by default


def test_cooldown_applies() -> None:
    m = prepared(DROP, flat_volume_with(len(DROP), {30: 500.0}), e_cooldown_bars=3)
    assert m.should_enter(30, Side.LONG, 3) and not m.should_enter(30, Side.LONG, 2)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_signals_equal_independent_pandas_computation(seed: int) -> None:
    closes = random_closes(3000, seed)
    rng = np.random.default_rng(seed + 100)
    volume = rng.lognormal(6.0, 0.6, len(closes))
    params = {"e_rsi_period": 7, "e_bb_period": 15, "e_bb_dev": 1.8, "e_vol_period": 10, "e_vol_multiplier": 1.3}
    m = prepared(closes, volume, **params)
    close, vol = pd.Series(closes), pd.Series(volume)
    rsi = ref_rsi(close, 7)
    upper, lower = ref_bbands(close, 15, 1.8)
    surge = vol > 1.3 * vol.rolling(10).mean()
    want_long = (((rsi < 30) | (close <= lower)) & surge).tolist()
    want_short = (((rsi > 70) | (close >= upper)) & surge).tolist()
    assert sum(want_long) > 20 and sum(want_short) > 20
    # Floating-point ties on the band edge may differ in the last bit; allow none here but
    # report where they differ if they do.
    diff = [i for i in range(len(closes)) if m.long_signal[i] != want_long[i] or m.short_signal[i] != want_short[i]]
    assert diff == []
