"""Walk-forward analysis: optimise in-sample, trade the winner out of sample, roll on.

Windows roll by `step` over the bars: `train` in-sample, then `test` out of sample. The
out-of-sample runs start flat with the bot's cash (indicators warm up inside the window);
their equity curves are stitched additively (each continues from where the previous one
ended, so the stitched gain equals the sum of the trades' pnl) and the stitched curve and
trades get the usual metrics, shown beside the in-sample winners' metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from trading.exceptions import ATFError
from trading.optimize.runner import Runner
from trading.optimize.search import SearchResult, run_search
from trading.optimize.spec import OptimizeSpec
from trading.optimize.trial import Objective, Task, TrialOutcome, Workload
from trading.results import BacktestResult, trades_frame

SUMMARY_METRICS = (
    "sharpe_ratio",
    "sortino_ratio",
    "calmar_ratio",
    "profit_factor",
    "sqn",
    "total_pnl",
    "total_return_pct",
    "max_drawdown_pct",
    "total_trades",
    "win_rate",
)


@dataclass(frozen=True)
class WFWindow:
    index: int
    train: tuple[pd.Timestamp, pd.Timestamp]  # [start, end)
    test: tuple[pd.Timestamp, pd.Timestamp]


def make_windows(
    first: pd.Timestamp,
    end: pd.Timestamp,
    train: pd.Timedelta,
    test: pd.Timedelta,
    step: pd.Timedelta,
) -> list[WFWindow]:
    """Return the rolling windows whose test part ends by `end` (exclusive: after the last bar)."""
    out: list[WFWindow] = []
    start = first
    while start + train + test <= end:
        out.append(
            WFWindow(len(out), (start, start + train), (start + train, start + train + test))
        )
        start = start + step
    if not out:
        raise ATFError(
            f"the data covers {first:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} "
            f"({end - first}); one walk-forward window needs train + test = {train + test}"
        )
    return out


def data_span(frames: dict[str, pd.DataFrame]) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Return the first bar time and the end of the last bar (one bar spacing after it)."""
    first = min(df.index[0] for df in frames.values())
    last_df = max(frames.values(), key=lambda df: df.index[-1])
    spacing = pd.Series(last_df.index).diff().dropna()
    bar = spacing.mode().iloc[0] if len(spacing) else pd.Timedelta(0)
    return first, last_df.index[-1] + bar


@dataclass
class WindowResult:
    window: WFWindow
    search: SearchResult
    oos: TrialOutcome | None  # the in-sample winner run on the test window


@dataclass
class WalkForwardResult:
    objective: str
    direction: str
    windows: list[WindowResult]
    equity: pd.Series  # stitched out-of-sample equity
    trades: list[Any]
    oos_metrics: dict[str, Any]
    oos_value: float | None
    is_metrics: dict[str, Any]  # mean over windows of the in-sample winners' metrics
    is_value: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def last_best(self) -> TrialOutcome | None:
        """The winner of the latest in-sample window: the parameters to trade next."""
        for w in reversed(self.windows):
            if w.search.best is not None:
                return w.search.best
        return None


def run_walk_forward(
    spec: OptimizeSpec,
    runner: Runner,
    workload: Workload,
    *,
    train: pd.Timedelta,
    test: pd.Timedelta,
    step: pd.Timedelta,
    method: str | None = None,
    trials: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    on_result: Callable[[TrialOutcome], None] | None = None,
    on_window: Callable[[WFWindow], None] | None = None,
) -> WalkForwardResult:
    """Optimise every in-sample window, then run each winner on its out-of-sample window."""
    first, end = data_span(workload.frames)
    windows = make_windows(first, end, train, test, step)
    searches: list[SearchResult] = []
    for w in windows:
        if on_window:
            on_window(w)
        name = f"{study_name}-w{w.index}" if study_name else None
        searches.append(
            run_search(
                spec,
                runner,
                method=method,
                trials=trials,
                window=w.train,
                storage=storage,
                study_name=name,
                on_result=on_result,
            )
        )
    tasks = [
        Task(w.index, s.best.params, w.test, full=True)
        for w, s in zip(windows, searches, strict=True)
        if s.best is not None
    ]
    oos = {o.number: o for o in runner.map(tasks)}
    for o in oos.values():
        if on_result:
            on_result(o)
    results = [WindowResult(w, s, oos.get(w.index)) for w, s in zip(windows, searches, strict=True)]
    return summarise(results, workload, Objective(spec.objective, spec.direction))


def stitch(parts: list[pd.Series], cash: float) -> pd.Series:
    """Chain equity curves additively: each continues from the previous one's last value."""
    out, offset = [], 0.0
    for eq in parts:
        if eq is None or eq.empty:
            continue
        shifted = eq + offset
        out.append(shifted)
        offset = float(shifted.iloc[-1]) - cash
    if not out:
        return pd.Series(dtype="float64", name="equity")
    return pd.concat(out).rename("equity")


def summarise(
    results: list[WindowResult], workload: Workload, objective: Objective
) -> WalkForwardResult:
    from trading.analytics.metrics import compute_metrics
    from trading.config import BotConfig

    cfg = BotConfig.model_validate(workload.tree)
    cash = cfg.broker.cash
    runs = [r.oos for r in results if r.oos is not None and r.oos.error is None]
    equity = stitch([r.equity for r in runs], cash)  # type: ignore[misc]
    trades = [t for r in runs for t in (r.trades or [])]
    for n, t in enumerate(trades, start=1):
        t.trade_id = n
    notes = [
        f"window {r.window.index}: no feasible in-sample trial, no out-of-sample run"
        for r in results
        if r.search.best is None
    ]
    notes += [
        f"window {r.window.index}: out-of-sample run failed: {r.oos.error}"
        for r in results
        if r.oos is not None and r.oos.error
    ]
    oos_metrics: dict[str, Any] = {}
    oos_value = None
    if len(equity) >= 2:
        full = compute_metrics(
            trades_frame(trades), equity, cash, periods_per_year=cfg.analytics.periods_per_year
        )
        oos_metrics = {k: v for k, v in full.items() if not isinstance(v, dict)}
        stitched = BacktestResult(
            name=cfg.bot.name,
            symbols=list(workload.frames),
            timeframe=cfg.bot.timeframe,
            start=equity.index[0].to_pydatetime(),
            end=equity.index[-1].to_pydatetime(),
            initial_cash=cash,
            final_value=float(equity.iloc[-1]),
            trades=trades,
            equity=equity,
            metrics=full,
            config={},
            bars=sum(r.bars for r in runs),
        )
        oos_value = objective.score(stitched)
    bests = [r.search.best for r in results if r.search.best is not None]
    is_metrics = {k: _mean([b.metrics.get(k) for b in bests]) for k in SUMMARY_METRICS}
    is_value = _mean([b.value for b in bests])
    return WalkForwardResult(
        objective.name,
        objective.direction,
        results,
        equity,
        trades,
        oos_metrics,
        oos_value,
        is_metrics,
        is_value,
        notes,
    )


def _mean(values: list[Any]) -> float | None:
    nums = [float(v) for v in values if v is not None]
    return sum(nums) / len(nums) if nums else None
