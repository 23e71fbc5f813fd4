"""Causal Ichimoku: a hand-computed table, an independent pandas reference, warm-up, causality,
and the backtrader wrapper against the numpy function in a real Cerebro (runonce and next)."""

from __future__ import annotations

import math

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from strategy.indicators.ichimoku import Ichimoku, IchimokuLines, ichimoku, ichimoku_warmup
from trading.data.synthetic import generate_ohlcv

LINES = ("tenkan", "kijun", "senkou_a", "senkou_b", "chikou_ref")
NAN = math.nan


# --------------------------------------------------------------------------- independent reference


def ref_ichimoku(
    df: pd.DataFrame, tenkan: int = 9, kijun: int = 26, senkou_b: int = 52, displacement: int = 26
) -> dict[str, pd.Series]:
    """Straightforward pandas Ichimoku with the cloud and Chikou read back, not forward."""

    def mid(n: int) -> pd.Series:
        return (df["high"].rolling(n).max() + df["low"].rolling(n).min()) / 2

    tk, kj = mid(tenkan), mid(kijun)
    return {
        "tenkan": tk,
        "kijun": kj,
        "senkou_a": ((tk + kj) / 2).shift(displacement),
        "senkou_b": mid(senkou_b).shift(displacement),
        "chikou_ref": df["close"].shift(displacement),
    }


def run(df: pd.DataFrame, **kw: int) -> IchimokuLines:
    return ichimoku(df["high"].to_numpy(), df["low"].to_numpy(), df["close"].to_numpy(), **kw)


def assert_same(ours: np.ndarray, ref: np.ndarray | pd.Series) -> None:
    ref = np.asarray(ref, dtype=float)
    assert np.isnan(ours).tolist() == np.isnan(ref).tolist()
    np.testing.assert_allclose(ours[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- hand-computed table

# tenkan=2, kijun=3, senkou_b=4, displacement=2; (high, low, close) per bar.
HAND_BARS = [
    (10, 8, 9),
    (12, 9, 11),
    (11, 7, 8),
    (14, 10, 13),
    (13, 11, 12),
    (15, 12, 14),
    (16, 13, 15),
]
# tenkan[t] = (max(h[t-1], h[t]) + min(l[t-1], l[t])) / 2, e.g. t=3: (14 + 7) / 2 = 10.5
# kijun[t] over 3 bars, e.g. t=4: (max(11, 14, 13) + min(7, 10, 11)) / 2 = 10.5
# senkou_a[t] = (tenkan[t-2] + kijun[t-2]) / 2, e.g. t=6: (12 + 10.5) / 2 = 11.25
# senkou_b[t] = 4-bar midpoint at t-2, e.g. t=6: bars 1..4: (14 + 7) / 2 = 10.5
HAND_EXPECTED = {
    "tenkan": [NAN, 10.0, 9.5, 10.5, 12.0, 13.0, 14.0],
    "kijun": [NAN, NAN, 9.5, 10.5, 10.5, 12.5, 13.5],
    "senkou_a": [NAN, NAN, NAN, NAN, 9.5, 10.5, 11.25],
    "senkou_b": [NAN, NAN, NAN, NAN, NAN, 10.5, 10.5],
    "chikou_ref": [NAN, NAN, 9.0, 11.0, 8.0, 13.0, 12.0],
}


def test_hand_computed_table() -> None:
    df = pd.DataFrame(HAND_BARS, columns=["high", "low", "close"], dtype=float)
    res = run(df, tenkan=2, kijun=3, senkou_b=4, displacement=2)
    for name in LINES:
        assert_same(getattr(res, name), np.array(HAND_EXPECTED[name]))
    assert ichimoku_warmup(2, 3, 4, 2) == 5  # senkou_b: 4 - 1 + 2, the last line to appear


def test_cloud_at_t_is_the_one_computed_displacement_bars_earlier() -> None:
    """A spike in the highs at bar 60 moves the cloud only from bar 60 + displacement on."""
    df = generate_ohlcv(200, seed=5, timeframe="1h")
    spiked = df.copy()
    spiked.loc[spiked.index[60], "high"] *= 1.5
    a, b = run(df), run(spiked)
    unchanged = slice(0, 60 + 26)
    np.testing.assert_array_equal(a.senkou_a[unchanged], b.senkou_a[unchanged])
    np.testing.assert_array_equal(a.senkou_b[unchanged], b.senkou_b[unchanged])
    assert b.senkou_a[86] > a.senkou_a[86] and b.senkou_b[86] > a.senkou_b[86]
    assert b.tenkan[60] > a.tenkan[60]  # Tenkan itself reacts on the bar


# --------------------------------------------------------------------------- reference, warm-up


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"tenkan": 7, "kijun": 22, "senkou_b": 44, "displacement": 22},
        {"tenkan": 5, "kijun": 3, "senkou_b": 8, "displacement": 0},
    ],
    ids=["standard", "crypto_7_22_44", "tenkan_longer_no_displacement"],
)
@pytest.mark.parametrize("seed", [1, 2])
def test_equals_independent_pandas_implementation(params: dict[str, int], seed: int) -> None:
    df = generate_ohlcv(1500, seed=seed, timeframe="1h")
    res, ref = run(df, **params), ref_ichimoku(df, **params)
    for name in LINES:
        assert_same(getattr(res, name), ref[name])


@pytest.mark.parametrize(
    ("params", "first"),
    [
        ({}, {"tenkan": 8, "kijun": 25, "senkou_a": 51, "senkou_b": 77, "chikou_ref": 26}),
        (
            {"tenkan": 5, "kijun": 3, "senkou_b": 8, "displacement": 4},
            {"tenkan": 4, "kijun": 2, "senkou_a": 8, "senkou_b": 11, "chikou_ref": 4},
        ),
    ],
)
def test_warmup_nans_then_values(params: dict[str, int], first: dict[str, int]) -> None:
    df = generate_ohlcv(200, seed=3, timeframe="1h")
    res = run(df, **params)
    for name, k in first.items():
        line = getattr(res, name)
        assert np.isnan(line[:k]).all() and not np.isnan(line[k:]).any(), name
    assert ichimoku_warmup(**params) == max(first.values())


def test_shorter_input_than_warmup_is_all_nan_for_late_lines() -> None:
    df = generate_ohlcv(40, seed=3, timeframe="1h")
    res = run(df)
    assert np.isnan(res.senkou_b).all() and np.isnan(res.senkou_a).all()
    assert not np.isnan(res.kijun[25:]).any()


@pytest.mark.parametrize(
    "bad", [{"tenkan": 1}, {"kijun": 0}, {"senkou_b": 1}, {"displacement": -1}]
)
def test_invalid_parameters_raise(bad: dict[str, int]) -> None:
    df = generate_ohlcv(100, seed=3, timeframe="1h")
    with pytest.raises(ValueError):
        run(df, **bad)


# --------------------------------------------------------------------------- causality


@pytest.mark.parametrize("cut", [30, 77, 78, 150, 298])
def test_values_up_to_t_do_not_depend_on_later_bars(cut: int) -> None:
    df = generate_ohlcv(300, seed=7, timeframe="1h")
    other = generate_ohlcv(300, seed=8, timeframe="1h", start_price=250.0)
    altered = df.copy()
    altered.iloc[cut + 1 :] = other.iloc[cut + 1 :].to_numpy()  # every later bar replaced
    full, alt, trunc = run(df), run(altered), run(df.iloc[: cut + 1])
    for name in LINES:
        np.testing.assert_array_equal(getattr(full, name)[: cut + 1], getattr(alt, name)[: cut + 1])
        np.testing.assert_array_equal(getattr(full, name)[: cut + 1], getattr(trunc, name))
    if cut < 299:
        assert any(
            not np.array_equal(
                getattr(full, n)[cut + 1 :], getattr(alt, n)[cut + 1 :], equal_nan=True
            )
            for n in LINES
        )


# --------------------------------------------------------------------------- backtrader wrapper


class Record(bt.Strategy):
    params = (("ind_kw", {}),)

    def __init__(self) -> None:
        self.ich = Ichimoku(self.data, **self.p.ind_kw)
        self.rows: list[tuple[float, ...]] = []
        self.first_next: int | None = None

    def prenext(self) -> None:
        self.rows.append(tuple(getattr(self.ich.lines, n)[0] for n in LINES))

    def next(self) -> None:
        if self.first_next is None:
            self.first_next = len(self) - 1
        self.prenext()


@pytest.mark.parametrize("runonce", [True, False], ids=["runonce", "next"])
@pytest.mark.parametrize(
    "params",
    [{}, {"tenkan": 5, "kijun": 3, "senkou_b": 8, "displacement": 4}],
    ids=["standard", "short"],
)
def test_backtrader_indicator_equals_numpy_function(runonce: bool, params: dict[str, int]) -> None:
    df = generate_ohlcv(400, seed=11, timeframe="1h")
    cerebro = bt.Cerebro(runonce=runonce, stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=df.tz_localize(None)))
    cerebro.addstrategy(Record, ind_kw=params)
    strat = cerebro.run()[0]
    rows = np.array(strat.rows)
    assert rows.shape == (400, len(LINES))
    res = run(df, **params)
    for k, name in enumerate(LINES):
        assert_same(rows[:, k], getattr(res, name))
    # the strategy's first next() is the first bar with every line (backtrader minperiod)
    assert strat.first_next == ichimoku_warmup(**params)
