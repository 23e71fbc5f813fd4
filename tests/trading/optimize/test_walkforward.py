"""Walk-forward: rolling windows, in-sample winners traded out of sample, stitched equity."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from tests.trading.optimize.conftest import study_from
from trading.exceptions import ATFError
from trading.optimize import Runner, Study, Workload, make_windows, run_grid, run_walk_forward
from trading.optimize.walkforward import WalkForwardResult, data_span, stitch

DAY = pd.Timedelta(days=1)
T0 = pd.Timestamp("2024-01-01", tz="UTC")


def test_windows_roll_by_step_and_end_with_the_data() -> None:
    w = make_windows(T0, T0 + 60 * DAY, 20 * DAY, 10 * DAY, 10 * DAY)
    assert [(x.train[0], x.train[1], x.test[0], x.test[1]) for x in w] == [
        (T0 + k * DAY, T0 + (k + 20) * DAY, T0 + (k + 20) * DAY, T0 + (k + 30) * DAY)
        for k in (0, 10, 20, 30)
    ]
    gaps = make_windows(T0, T0 + 60 * DAY, 20 * DAY, 10 * DAY, 15 * DAY)
    assert [x.test for x in gaps] == [
        (T0 + 20 * DAY, T0 + 30 * DAY),
        (T0 + 35 * DAY, T0 + 45 * DAY),
        (T0 + 50 * DAY, T0 + 60 * DAY),
    ]
    with pytest.raises(ATFError, match="one walk-forward window needs train \\+ test"):
        make_windows(T0, T0 + 25 * DAY, 20 * DAY, 10 * DAY, 10 * DAY)


def test_the_data_span_ends_one_bar_after_the_last_bar(workload: Workload) -> None:
    df = workload.frames["BTCUSDT"]
    assert data_span(workload.frames) == (df.index[0], df.index[-1] + pd.Timedelta(hours=1))


def test_stitching_continues_each_curve_from_the_last_value() -> None:
    a = pd.Series([100.0, 110.0, 105.0], index=pd.date_range(T0, periods=3, freq="h"))
    b = pd.Series([100.0, 90.0], index=pd.date_range(T0 + DAY, periods=2, freq="h"))
    out = stitch([a, b], cash=100.0)
    assert out.tolist() == [100.0, 110.0, 105.0, 105.0, 95.0]
    assert out.index.equals(a.index.append(b.index))


@pytest.fixture(scope="module")
def wf_study() -> Study:
    # total_pnl: ratios such as sharpe are undefined on windows shorter than 30 days
    return study_from(
        "optimize:\n  objective: total_pnl\n  parameters:\n    e_rsi_period: [8, 14]\n"
        "    e_bb_dev: [1.5, 2.5]\n"
    )


@pytest.fixture(scope="module")
def wf(wf_study: Study, workload: Workload) -> tuple[WalkForwardResult, Workload]:
    wl = Workload.from_study(wf_study, workload.frames)
    with Runner() as runner:
        runner.start(wl)
        res = run_walk_forward(
            wf_study.spec, runner, wl, train=20 * DAY, test=10 * DAY, step=10 * DAY
        )
    return res, wl


def test_each_window_optimises_in_sample_and_trades_its_winner_out_of_sample(
    wf: tuple[WalkForwardResult, Workload], wf_study: Study
) -> None:
    res, wl = wf
    assert len(res.windows) == 4  # 1500 hourly bars = 62.5 days
    for r in res.windows:
        with Runner() as runner:
            runner.start(wl)
            alone = run_grid(wf_study.spec, runner, window=r.window.train)
        assert [(o.params, o.value) for o in r.search.trials] == [
            (o.params, o.value) for o in alone.trials
        ]
        assert (
            r.search.best is not None and r.oos is not None and r.oos.params == r.search.best.params
        )
        assert all(o.bars == 480 for o in r.search.trials) and r.oos.bars == 240
        direct = wl.backtest(r.search.best.params, r.window.test)
        pd.testing.assert_series_equal(r.oos.equity, direct.equity)
        assert (
            r.oos.equity.index[0] >= r.window.test[0] and r.oos.equity.index[-1] < r.window.test[1]
        )
    assert res.last_best is res.windows[-1].search.best


def test_the_stitched_out_of_sample_curve_adds_up_the_windows(
    wf: tuple[WalkForwardResult, Workload],
) -> None:
    from trading.analytics.metrics import compute_metrics
    from trading.results import trades_frame

    res, _ = wf
    cash = 10_000.0
    oos = [r.oos for r in res.windows if r.oos is not None]
    assert len(res.equity) == sum(len(o.equity) for o in oos)  # type: ignore[arg-type]
    assert res.equity.index.is_monotonic_increasing and res.equity.index.is_unique
    gains = sum(float(o.equity.iloc[-1]) - cash for o in oos)  # type: ignore[union-attr]
    assert float(res.equity.iloc[-1]) - cash == pytest.approx(gains, abs=1e-6)
    assert sum(t.pnl for t in res.trades) == pytest.approx(gains, abs=1e-6)
    assert [t.trade_id for t in res.trades] == list(range(1, len(res.trades) + 1))
    expected = compute_metrics(trades_frame(res.trades), res.equity, cash)
    assert res.oos_metrics["total_pnl"] == expected["total_pnl"]
    assert res.oos_value == expected["total_pnl"] and res.oos_metrics["total_trades"] == len(
        res.trades
    )


def test_in_sample_metrics_are_the_mean_of_the_window_winners(
    wf: tuple[WalkForwardResult, Workload],
) -> None:
    res, _ = wf
    bests = [r.search.best for r in res.windows]
    assert res.is_value == pytest.approx(sum(b.value for b in bests) / len(bests))  # type: ignore[union-attr, misc]
    assert res.is_metrics["total_trades"] == pytest.approx(
        sum(b.metrics["total_trades"] for b in bests) / len(bests)  # type: ignore[union-attr]
    )


def test_a_window_without_a_feasible_trial_is_skipped_and_noted(
    wf_study: Study, workload: Workload
) -> None:
    c = wf_study.spec.constraints.model_copy(update={"min_trades": 10_000})
    st = replace(wf_study, spec=wf_study.spec.model_copy(update={"constraints": c}))
    wl = Workload.from_study(st, workload.frames)
    with Runner() as runner:
        runner.start(wl)
        res = run_walk_forward(st.spec, runner, wl, train=40 * DAY, test=20 * DAY, step=20 * DAY)
    assert len(res.windows) == 1 and res.windows[0].oos is None and res.last_best is None
    assert res.equity.empty and res.oos_value is None
    assert res.notes == ["window 0: no feasible in-sample trial, no out-of-sample run"]
