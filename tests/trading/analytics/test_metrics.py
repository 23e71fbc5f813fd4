"""Tests for trading.analytics.metrics: hand-computed cases, empyrical reference, properties."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import empyrical
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.analytics.metrics import (
    compute_metrics,
    daily_returns,
    drawdown_series,
    infer_periods_per_year,
)
from trading.results import TRADE_COLUMNS, TradeRecord, trades_frame

UTC = timezone.utc
T0 = datetime(2024, 1, 1, tzinfo=UTC)

EXPECTED_KEYS = {
    "initial_cash", "final_value", "total_return_pct", "total_trades", "winning_trades",
    "losing_trades", "win_rate", "total_pnl", "gross_pnl", "total_fees", "avg_pnl",
    "avg_pnl_pct", "avg_win", "avg_loss", "largest_win", "largest_loss", "profit_factor",
    "expectancy", "max_consecutive_wins", "max_consecutive_losses", "max_drawdown",
    "max_drawdown_pct", "max_drawdown_duration_bars", "max_drawdown_duration_days",
    "sharpe_ratio", "sortino_ratio", "cagr_pct", "calmar_ratio", "sqn", "exposure_pct",
    "avg_bars_held", "annualization_periods", "start", "end", "bars", "by_exit_reason",
    "by_entry_tag",
}  # fmt: skip
GROUP_KEYS = {
    "trades", "win_rate", "total_pnl", "avg_pnl", "avg_pnl_pct", "profit_factor", "avg_bars_held"
}  # fmt: skip
REL = 1e-9


def trade(
    trade_id: int,
    pnl: float,
    *,
    entry: datetime = T0,
    exit_: datetime | None = None,
    fees: float = 2.0,
    pnl_pct: float = 0.0,
    reason: str = "signal",
    tag: str = "rsi",
    bars: int = 1,
) -> TradeRecord:
    return TradeRecord(
        trade_id=trade_id, symbol="BTC/USDT", side="long",
        entry_time=entry, exit_time=exit_ or entry + timedelta(hours=1),
        entry_price=100.0, exit_price=100.0, quantity=1.0,
        gross_pnl=pnl + fees, fees=fees, pnl=pnl, pnl_pct=pnl_pct,
        exit_reason=reason, entry_tag=tag, bars_held=bars, mae_pct=0.0, mfe_pct=0.0,
    )  # fmt: skip


def series(values: list[float], index: pd.DatetimeIndex) -> pd.Series:
    return pd.Series(np.asarray(values, dtype=float), index=index)


def flat_equity(days: int = 10, value: float = 1000.0) -> pd.Series:
    return series([value] * days, pd.date_range("2024-01-01", periods=days, freq="D", tz="UTC"))


def assert_json_scalars(d: dict) -> None:
    for k, v in d.items():
        if isinstance(v, dict):
            assert_json_scalars(v)
        else:
            assert v is None or type(v) in (float, int, str), (k, type(v))
            if type(v) is float:
                assert math.isfinite(v), k


# --------------------------------------------------------------------------- trade statistics


@pytest.fixture
def six_trades() -> pd.DataFrame:
    # Exit order (by exit_time): W(+100) W(+50) L(-40) B(0) L(-60) W(+30).
    day = timedelta(days=1)
    recs = [
        trade(1, 100.0, exit_=T0 + 1 * day, pnl_pct=10.0, reason="take_profit", tag="rsi", bars=4),
        trade(2, 50.0, exit_=T0 + 2 * day, pnl_pct=5.0, reason="take_profit", tag="rsi+macd",
              bars=2),
        trade(3, -40.0, exit_=T0 + 3 * day, pnl_pct=-4.0, reason="stop_loss", tag="rsi", bars=3),
        trade(4, 0.0, exit_=T0 + 4 * day, pnl_pct=0.0, reason="signal", tag="macd", bars=1),
        trade(5, -60.0, exit_=T0 + 5 * day, pnl_pct=-6.0, reason="stop_loss", tag="rsi", bars=5),
        trade(6, 30.0, exit_=T0 + 6 * day, pnl_pct=3.0, reason="signal", tag="rsi", bars=6),
    ]  # fmt: skip
    # Input order +100 +50 +30 -40 -60 0 would give streaks of 3 wins and 2 losses: the
    # implementation has to sort by exit time to get the right answer (2 and 1).
    return trades_frame([recs[i] for i in (0, 1, 5, 2, 4, 3)])


def test_trade_statistics_hand_computed(six_trades: pd.DataFrame) -> None:
    m = compute_metrics(six_trades, flat_equity(), 1000.0)
    assert m["total_trades"] == 6
    assert m["winning_trades"] == 3  # +100, +50, +30
    assert m["losing_trades"] == 2  # -40, -60 (the 0 trade is neither)
    assert m["win_rate"] == pytest.approx(3 / 6 * 100)  # 50 %, breakeven in the denominator
    assert m["total_pnl"] == pytest.approx(80.0)  # 100 + 50 - 40 + 0 - 60 + 30
    assert m["total_fees"] == pytest.approx(12.0)  # 6 trades x 2
    assert m["gross_pnl"] == pytest.approx(92.0)  # net + fees = 80 + 12
    assert m["avg_pnl"] == pytest.approx(80 / 6)
    assert m["avg_pnl_pct"] == pytest.approx((10 + 5 - 4 + 0 - 6 + 3) / 6)  # 8 / 6
    assert m["avg_win"] == pytest.approx(60.0)  # (100 + 50 + 30) / 3
    assert m["avg_loss"] == pytest.approx(-50.0)  # (-40 - 60) / 2
    assert m["largest_win"] == pytest.approx(100.0)
    assert m["largest_loss"] == pytest.approx(-60.0)
    assert m["profit_factor"] == pytest.approx(1.8)  # 180 / |-100|
    # 0.5 * 60 + (2/6) * (-50) = 30 - 16.667 = 13.333 = avg pnl
    assert m["expectancy"] == pytest.approx(3 / 6 * 60 + 2 / 6 * -50)
    assert m["expectancy"] == pytest.approx(m["avg_pnl"])
    assert m["max_consecutive_wins"] == 2  # trades 1, 2
    assert m["max_consecutive_losses"] == 1  # -40, 0, -60: the breakeven breaks the streak
    # sum pnl^2 = 10000 + 2500 + 1600 + 0 + 3600 + 900 = 18600; SS = 18600 - 6 * (80/6)^2
    std = math.sqrt((18600 - 6400 / 6) / 5)
    assert m["sqn"] == pytest.approx(math.sqrt(6) * (80 / 6) / std)  # ~0.5515
    assert m["avg_bars_held"] == pytest.approx((4 + 2 + 3 + 1 + 5 + 6) / 6)  # 3.5


def test_group_statistics_hand_computed(six_trades: pd.DataFrame) -> None:
    m = compute_metrics(six_trades, flat_equity(), 1000.0)
    by_reason = m["by_exit_reason"]
    assert set(by_reason) == {"take_profit", "stop_loss", "signal"}
    assert all(set(v) == GROUP_KEYS for v in by_reason.values())
    tp, sl, sig = by_reason["take_profit"], by_reason["stop_loss"], by_reason["signal"]
    # take_profit: +100, +50 (10 %, 5 %; 4 and 2 bars)
    assert tp["trades"] == 2 and tp["win_rate"] == pytest.approx(100.0)
    assert tp["total_pnl"] == pytest.approx(150.0) and tp["avg_pnl"] == pytest.approx(75.0)
    assert tp["avg_pnl_pct"] == pytest.approx(7.5) and tp["avg_bars_held"] == pytest.approx(3.0)
    assert tp["profit_factor"] is None  # no losing trade
    # stop_loss: -40, -60 (-4 %, -6 %; 3 and 5 bars)
    assert sl["trades"] == 2 and sl["win_rate"] == pytest.approx(0.0)
    assert sl["total_pnl"] == pytest.approx(-100.0) and sl["avg_pnl"] == pytest.approx(-50.0)
    assert sl["avg_pnl_pct"] == pytest.approx(-5.0) and sl["avg_bars_held"] == pytest.approx(4.0)
    assert sl["profit_factor"] == pytest.approx(0.0)  # 0 / 100
    # signal: 0, +30 (0 %, 3 %; 1 and 6 bars)
    assert sig["trades"] == 2 and sig["win_rate"] == pytest.approx(50.0)
    assert sig["total_pnl"] == pytest.approx(30.0) and sig["avg_pnl"] == pytest.approx(15.0)
    assert sig["avg_pnl_pct"] == pytest.approx(1.5) and sig["avg_bars_held"] == pytest.approx(3.5)
    assert sig["profit_factor"] is None

    by_tag = m["by_entry_tag"]
    assert set(by_tag) == {"rsi", "rsi+macd", "macd"}
    rsi = by_tag["rsi"]  # +100, -40, -60, +30
    assert rsi["trades"] == 4 and rsi["win_rate"] == pytest.approx(50.0)
    assert rsi["total_pnl"] == pytest.approx(30.0) and rsi["avg_pnl"] == pytest.approx(7.5)
    assert rsi["avg_pnl_pct"] == pytest.approx((10 - 4 - 6 + 3) / 4)
    assert rsi["profit_factor"] == pytest.approx(130 / 100)
    assert rsi["avg_bars_held"] == pytest.approx((4 + 3 + 5 + 6) / 4)
    assert by_tag["macd"]["win_rate"] == pytest.approx(0.0)  # one breakeven trade
    assert by_tag["macd"]["profit_factor"] is None
    assert by_tag["rsi+macd"]["total_pnl"] == pytest.approx(50.0)


def test_zero_trades_has_every_key() -> None:
    m = compute_metrics(trades_frame([]), flat_equity(value=1000.0), 1000.0)
    assert set(m) == EXPECTED_KEYS
    assert_json_scalars(m)
    assert (m["total_trades"], m["winning_trades"], m["losing_trades"]) == (0, 0, 0)
    assert m["total_pnl"] == 0.0 and m["gross_pnl"] == 0.0 and m["total_fees"] == 0.0
    for key in ("win_rate", "avg_pnl", "avg_pnl_pct", "avg_win", "avg_loss", "largest_win",
                "largest_loss", "profit_factor", "expectancy", "sqn", "avg_bars_held"):  # fmt: skip
        assert m[key] is None, key
    assert m["max_consecutive_wins"] == 0 and m["max_consecutive_losses"] == 0
    assert m["exposure_pct"] == 0.0
    assert m["by_exit_reason"] == {} and m["by_entry_tag"] == {}
    assert m["max_drawdown"] == 0.0 and m["max_drawdown_pct"] == 0.0
    assert m["max_drawdown_duration_bars"] == 0


def test_all_winners() -> None:
    tr = trades_frame([trade(i, p, exit_=T0 + timedelta(hours=i)) for i, p in enumerate([5, 15])])
    m = compute_metrics(tr, flat_equity(), 1000.0)
    assert m["profit_factor"] is None  # no gross loss to divide by
    assert m["win_rate"] == pytest.approx(100.0)
    assert m["avg_loss"] is None and m["largest_loss"] is None
    assert m["max_consecutive_wins"] == 2 and m["max_consecutive_losses"] == 0
    assert m["expectancy"] == pytest.approx(10.0)  # 1.0 * (5 + 15) / 2
    # sqn: mean 10, std(ddof=1) = sqrt((25 + 25) / 1) = 7.071; sqrt(2) * 10 / 7.071 = 2
    assert m["sqn"] == pytest.approx(2.0)


def test_all_losers_profit_factor_zero_and_single_trade_sqn_none() -> None:
    m = compute_metrics(trades_frame([trade(1, -5.0)]), flat_equity(), 1000.0)
    assert m["profit_factor"] == 0.0
    assert m["sqn"] is None  # N < 2
    assert m["win_rate"] == 0.0 and m["max_consecutive_losses"] == 1


def test_total_return_pct() -> None:
    eq = series([100, 110, 125], pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC"))
    m = compute_metrics(trades_frame([]), eq, 100.0)
    assert m["final_value"] == 125.0
    assert m["total_return_pct"] == pytest.approx(25.0)  # (125 / 100 - 1) * 100
    assert m["bars"] == 3
    assert m["start"] == "2024-01-01T00:00:00+00:00" and m["end"] == "2024-01-03T00:00:00+00:00"


# --------------------------------------------------------------------------- drawdown


def test_drawdown_hand_computed_with_weekend_gap() -> None:
    # Business days from Thu 2024-01-04: 0 Thu 4, 1 Fri 5, 2 Mon 8, 3 Tue 9, 4 Wed 10,
    # 5 Thu 11, 6 Fri 12, 7 Mon 15.
    idx = pd.bdate_range("2024-01-04", periods=8, tz="UTC")
    eq = series([100, 120, 105, 90, 100, 120, 125, 125], idx)
    m = compute_metrics(trades_frame([]), eq, 100.0)
    assert m["max_drawdown"] == pytest.approx(30.0)  # peak 120 - trough 90
    assert m["max_drawdown_pct"] == pytest.approx(25.0)  # 30 / 120
    # Peak at bar 1 (Fri 5th), back at 120 on bar 5 (Thu 11th): 4 bars, 6 calendar days.
    assert m["max_drawdown_duration_bars"] == 4
    assert m["max_drawdown_duration_days"] == pytest.approx(6.0)

    dd = drawdown_series(eq)
    assert list(dd.columns) == ["peak", "drawdown", "drawdown_pct"]
    assert dd.index.equals(idx)
    np.testing.assert_allclose(dd["peak"], [100, 120, 120, 120, 120, 120, 125, 125])
    np.testing.assert_allclose(dd["drawdown"], [0, 0, 15, 30, 20, 0, 0, 0])
    np.testing.assert_allclose(
        dd["drawdown_pct"], [0, 0, 12.5, 25, 20 / 120 * 100, 0, 0, 0], rtol=1e-12
    )


def test_drawdown_never_recovered_runs_to_end() -> None:
    idx = pd.date_range("2024-01-01", periods=5, freq="h", tz="UTC")
    eq = series([100, 120, 90, 100, 110], idx)
    m = compute_metrics(trades_frame([]), eq, 100.0)
    assert m["max_drawdown"] == pytest.approx(30.0)
    assert m["max_drawdown_pct"] == pytest.approx(25.0)
    assert m["max_drawdown_duration_bars"] == 3  # peak bar 1 to last bar 4
    assert m["max_drawdown_duration_days"] == pytest.approx(3 / 24)


def test_drawdown_currency_and_pct_maxima_are_independent() -> None:
    idx = pd.date_range("2024-01-01", periods=6, freq="D", tz="UTC")
    # Episode 1: 100 -> 50 (50 currency, 50 %). Episode 2: 1000 -> 800 (200 currency, 20 %).
    eq = series([100, 50, 100, 1000, 800, 1000], idx)
    m = compute_metrics(trades_frame([]), eq, 100.0)
    assert m["max_drawdown"] == pytest.approx(200.0)
    assert m["max_drawdown_pct"] == pytest.approx(50.0)
    assert m["max_drawdown_duration_bars"] == 2  # 0 -> 2 and 3 -> 5


def test_monotonic_equity_has_no_drawdown_and_no_calmar() -> None:
    idx = pd.date_range("2024-01-01", periods=60, freq="D", tz="UTC")
    eq = series(list(np.linspace(100, 160, 60)), idx)
    m = compute_metrics(trades_frame([]), eq, 100.0)
    assert m["max_drawdown"] == 0.0 and m["max_drawdown_pct"] == 0.0
    assert m["max_drawdown_duration_bars"] == 0 and m["max_drawdown_duration_days"] == 0.0
    assert m["sortino_ratio"] is None  # no negative day: downside deviation 0
    assert m["calmar_ratio"] is None
    # 59 days: 1.6 ** (365.25 / 59) - 1
    assert m["cagr_pct"] == pytest.approx((1.6 ** (365.25 / 59) - 1) * 100, rel=REL)


# --------------------------------------------------------------------------- exposure


def test_exposure_overlapping_back_to_back_and_outside_bars() -> None:
    idx = pd.date_range("2024-01-01", periods=24, freq="h", tz="UTC")  # bars at 00:00..23:00
    h = lambda x: T0 + timedelta(hours=x)  # noqa: E731
    tr = trades_frame([
        trade(1, 1.0, entry=h(2), exit_=h(6)),  # bars 2,3,4,5
        trade(2, 1.0, entry=h(4), exit_=h(8)),  # overlaps: adds 6,7
        trade(3, 1.0, entry=h(3), exit_=h(4)),  # nested: adds nothing
        trade(4, 1.0, entry=h(8), exit_=h(10)),  # back to back: adds 8,9
        trade(5, 1.0, entry=h(15), exit_=h(16)),  # bar 15
        trade(6, 1.0, entry=h(20), exit_=h(20)),  # same-bar trade: no bar satisfies t < exit
        trade(7, 1.0, entry=h(18.5), exit_=h(20)),  # between bars: bar 19 only
        trade(8, 1.0, entry=h(22), exit_=h(26)),  # runs past the last bar: 22, 23
    ])  # fmt: skip
    m = compute_metrics(tr, series([1.0] * 24, idx), 1.0)
    # covered bars: 2..9 (8) + 15 (1) + 19 (1) + 22, 23 (2) = 12 of 24
    assert m["exposure_pct"] == pytest.approx(12 / 24 * 100)


# --------------------------------------------------------------------------- ratios


def test_infer_periods_per_year() -> None:
    assert infer_periods_per_year(pd.bdate_range("2024-01-01", periods=30, tz="UTC")) == 252
    hourly = pd.date_range("2024-01-01", periods=300, freq="h", tz="UTC")  # spans a weekend
    assert infer_periods_per_year(hourly) == 365
    assert infer_periods_per_year(pd.DatetimeIndex([], tz="UTC")) == 252


def test_daily_returns_calendars() -> None:
    # Hourly bars Mon 2024-01-01..Sun 2024-01-07, but Wednesday is missing entirely.
    idx = pd.date_range("2024-01-01", "2024-01-07 23:00", freq="h", tz="UTC")
    idx = idx[idx.day != 3]
    eq = series(list(100 + np.arange(len(idx), dtype=float)), idx)
    r365 = daily_returns(eq, 365)
    r252 = daily_returns(eq, 252)
    # Day-end values: Mon 123, Tue 147, (Wed missing), Thu 171, ..., Sun 243.
    assert len(r365) == 6 and r365.loc["2024-01-03"].item() == 0.0  # carried forward
    assert r365.loc["2024-01-04"].item() == pytest.approx(171 / 147 - 1)
    assert len(r252) == 5 and "2024-01-03" not in r252.index.strftime("%Y-%m-%d")
    assert r252.loc["2024-01-04"].item() == pytest.approx(171 / 147 - 1)
    # Trading-day calendar: weekend days without bars are dropped, not zero returns.
    bidx = pd.bdate_range("2024-01-01", periods=10, tz="UTC")
    assert len(daily_returns(series(list(range(1, 11)), bidx), 252)) == 9


def _random_walk(n: int, seed: int, start: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0004, 0.012, n - 1)
    return start * np.concatenate(([1.0], np.cumprod(1.0 + r)))


def test_reference_daily_business_days_vs_empyrical() -> None:
    idx = pd.bdate_range("2022-01-03", periods=400, tz="UTC")  # ~1.6 years, no weekends
    eq = pd.Series(_random_walk(400, seed=7, start=100_000.0), index=idx)
    m = compute_metrics(trades_frame([]), eq, 100_000.0)
    assert m["annualization_periods"] == 252
    rets = eq.pct_change().dropna()  # daily bars, so bar returns are the daily returns
    assert len(rets) == 399
    assert m["sharpe_ratio"] == pytest.approx(
        empyrical.sharpe_ratio(rets, annualization=252), rel=REL
    )
    assert m["sortino_ratio"] == pytest.approx(
        empyrical.sortino_ratio(rets, annualization=252), rel=REL
    )
    assert m["max_drawdown_pct"] == pytest.approx(-empyrical.max_drawdown(rets) * 100, rel=REL)
    days = (idx[-1] - idx[0]).days
    cagr = (eq.iloc[-1] / 100_000.0) ** (365.25 / days) - 1
    assert m["cagr_pct"] == pytest.approx(cagr * 100, rel=REL)
    assert m["calmar_ratio"] == pytest.approx(cagr / -empyrical.max_drawdown(rets), rel=REL)


def test_reference_hourly_crypto_vs_empyrical() -> None:
    n = 24 * 400  # 400 days of hourly bars, weekends included
    idx = pd.date_range("2023-01-01", periods=n, freq="h", tz="UTC")
    rng = np.random.default_rng(11)
    r = rng.normal(0.00002, 0.003, n - 1)
    eq = pd.Series(50_000.0 * np.concatenate(([1.0], np.cumprod(1.0 + r))), index=idx)
    m = compute_metrics(trades_frame([]), eq, 50_000.0)
    assert m["annualization_periods"] == 365
    # Daily returns built independently: last bar of each UTC date.
    day_close = eq.groupby(eq.index.floor("D")).last()
    d = day_close.pct_change().dropna()
    assert len(d) == 399
    assert m["sharpe_ratio"] == pytest.approx(empyrical.sharpe_ratio(d, annualization=365), rel=REL)
    assert m["sortino_ratio"] == pytest.approx(
        empyrical.sortino_ratio(d, annualization=365), rel=REL
    )
    # Max drawdown is measured on every bar, i.e. on the hourly returns.
    hourly = eq.pct_change().dropna()
    assert m["max_drawdown_pct"] == pytest.approx(-empyrical.max_drawdown(hourly) * 100, rel=REL)
    # empyrical's num_years = len(returns) / annualization = (n - 1) / (24 * 365.25) equals our
    # span_days / 365.25, and its growth = final / equity[0] = final / initial_cash here.
    assert m["cagr_pct"] == pytest.approx(
        empyrical.annual_return(hourly, annualization=24 * 365.25) * 100, rel=REL
    )
    span_days = (n - 1) / 24
    assert m["cagr_pct"] == pytest.approx(
        ((eq.iloc[-1] / 50_000.0) ** (365.25 / span_days) - 1) * 100, rel=REL
    )


def test_explicit_periods_per_year_overrides_inference() -> None:
    idx = pd.bdate_range("2022-01-03", periods=100, tz="UTC")
    eq = pd.Series(_random_walk(100, seed=3, start=1000.0), index=idx)
    m252 = compute_metrics(trades_frame([]), eq, 1000.0)
    m365 = compute_metrics(trades_frame([]), eq, 1000.0, periods_per_year=365)
    assert m365["annualization_periods"] == 365
    # 365 calendar: weekends become zero-return days, so the ratio is not a rescale of the 252 one.
    rets = eq.resample("D").last().ffill().pct_change().dropna()
    assert m365["sharpe_ratio"] == pytest.approx(
        empyrical.sharpe_ratio(rets, annualization=365), rel=REL
    )
    assert m252["sharpe_ratio"] != pytest.approx(m365["sharpe_ratio"], rel=1e-3)


@pytest.mark.parametrize(("days", "defined"), [(29, False), (30, True)])
def test_short_run_ratios_are_none(days: int, defined: bool) -> None:
    idx = pd.date_range("2024-01-01", periods=days + 1, freq="D", tz="UTC")  # spans `days` days
    eq = pd.Series(_random_walk(days + 1, seed=1, start=1000.0), index=idx)
    m = compute_metrics(trades_frame([]), eq, 1000.0)
    for key in ("sharpe_ratio", "sortino_ratio", "cagr_pct"):
        assert (m[key] is not None) is defined, key
    if not defined:
        assert m["calmar_ratio"] is None
        assert m["max_drawdown_pct"] is not None  # drawdown does not need a minimum span


def test_constant_equity_ratios_none() -> None:
    m = compute_metrics(trades_frame([]), flat_equity(days=90), 1000.0)
    assert m["sharpe_ratio"] is None and m["sortino_ratio"] is None  # zero std / downside
    assert m["cagr_pct"] == 0.0 and m["calmar_ratio"] is None


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError):
        compute_metrics(trades_frame([]), flat_equity(), 0.0)
    bad = flat_equity()
    bad.iloc[3] = np.nan
    with pytest.raises(ValueError):
        compute_metrics(trades_frame([]), bad, 1000.0)
    with pytest.raises(ValueError):
        compute_metrics(trades_frame([]), flat_equity().iloc[::-1], 1000.0)


def test_one_million_bars_is_fast() -> None:
    idx = pd.date_range("2020-01-01", periods=1_000_000, freq="min", tz="UTC")
    eq = pd.Series(_random_walk(len(idx), seed=5, start=1e4), index=idx)
    n = 20_000
    rng = np.random.default_rng(5)
    entry = np.sort(rng.integers(0, len(idx) - 200, n))
    exit_ = entry + rng.integers(1, 200, n)
    tr = pd.DataFrame({c: 0.0 for c in TRADE_COLUMNS}, index=range(n))
    tr["trade_id"] = np.arange(n)
    tr["entry_time"], tr["exit_time"] = idx[entry], idx[exit_]
    tr["pnl"] = rng.normal(size=n)
    tr["exit_reason"] = rng.choice(["tp", "sl", "signal"], n)
    tr["entry_tag"] = rng.choice(["a", "b"], n)
    tr["bars_held"] = exit_ - entry
    m = compute_metrics(tr, eq, 1e4)
    assert m["bars"] == 1_000_000 and m["total_trades"] == n


# --------------------------------------------------------------------------- properties

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    pnls=st.lists(st.one_of(finite, st.just(0.0)), max_size=30),
    values=st.lists(st.floats(1e-3, 1e9, allow_nan=False), min_size=1, max_size=60),
)
def test_properties(pnls: list[float], values: list[float]) -> None:
    idx = pd.date_range("2024-01-01", periods=len(values), freq="D", tz="UTC")
    tr = trades_frame(
        [trade(i, p, exit_=T0 + timedelta(days=i % 7), fees=0.0) for i, p in enumerate(pnls)]
    )
    m = compute_metrics(tr, series(values, idx), values[0])
    assert set(m) == EXPECTED_KEYS
    assert_json_scalars(m)
    assert 0.0 <= m["max_drawdown_pct"] <= 100.0
    assert m["max_drawdown"] >= 0.0
    tol = 1e-9 * max(1.0, math.fsum(abs(p) for p in pnls))
    assert abs(m["total_pnl"] - math.fsum(pnls)) <= tol
    assert m["winning_trades"] + m["losing_trades"] <= m["total_trades"] == len(pnls)
    if pnls:
        assert 0.0 <= m["win_rate"] <= 100.0
        assert abs(m["expectancy"] - m["avg_pnl"]) <= tol
        assert sum(g["trades"] for g in m["by_exit_reason"].values()) == len(pnls)
    else:
        assert m["win_rate"] is None
    assert m["exposure_pct"] is not None and 0.0 <= m["exposure_pct"] <= 100.0
