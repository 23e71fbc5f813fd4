"""One trial: a parameter set applied to the bot, backtested on a window, scored and checked.

A `Workload` (the bot as plain data, the parameter targets, the objective, the constraints
and the bars) is shipped to each worker once; a `Task` names only the parameters and the
window, so that a trial costs its backtest and little else.
"""

from __future__ import annotations

import importlib
import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from trading.exceptions import ATFError
from trading.optimize.spec import OBJECTIVES, Constraints, Study, Target, apply_params
from trading.results import BacktestResult

Window = tuple[pd.Timestamp, pd.Timestamp]  # [start, end)


@dataclass(frozen=True)
class Task:
    number: int
    params: dict[str, Any]
    window: Window | None = None
    full: bool = False  # also return the equity curve and the trades


@dataclass
class TrialOutcome:
    """What a trial produced; `value` is None when the objective is undefined or the trial failed."""

    number: int
    params: dict[str, Any]
    value: float | None
    metrics: dict[str, Any]
    violations: list[str] = field(default_factory=list)
    error: str | None = None
    bars: int = 0
    seconds: float = 0.0  # inside the backtest: building, running, metrics
    cpu_seconds: float = 0.0  # CPU time of that; well below `seconds` on a busy machine
    worker: str = ""
    equity: pd.Series | None = None
    trades: list[Any] | None = None

    @property
    def feasible(self) -> bool:
        return self.value is not None and not self.violations and self.error is None

    @property
    def status(self) -> str:
        if self.error is not None:
            return "error"
        if self.violations:
            return "infeasible"
        return "ok" if self.value is not None else "undefined"

    def row(self) -> dict[str, Any]:
        """Return the trial as one flat, JSON-friendly record."""
        keys = (
            "total_trades",
            "total_pnl",
            "sharpe_ratio",
            "sortino_ratio",
            "calmar_ratio",
            "profit_factor",
            "sqn",
            "max_drawdown_pct",
            "win_rate",
            "total_return_pct",
        )
        return {
            "number": self.number,
            **{f"param_{k}": v for k, v in self.params.items()},
            "value": self.value,
            "status": self.status,
            "violations": "; ".join(self.violations),
            "error": self.error or "",
            **{k: self.metrics.get(k) for k in keys},
            "bars": self.bars,
            "seconds": round(self.seconds, 6),
            "cpu_seconds": round(self.cpu_seconds, 6),
            "worker": self.worker,
        }


@dataclass(frozen=True)
class Objective:
    """A built-in metric name or an importable `package.module:function(result) -> float`."""

    name: str
    direction: str = "maximize"

    @property
    def metric(self) -> str | None:
        return OBJECTIVES.get(self.name)

    def function(self) -> Callable[[BacktestResult], Any]:
        module, _, attr = self.name.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ATFError(f"objective {self.name!r} cannot be imported: {exc}") from None
        if not callable(fn):
            raise ATFError(f"objective {self.name!r} is not callable")
        return fn  # type: ignore[no-any-return]

    def score(self, result: BacktestResult) -> float | None:
        raw = result.metrics.get(self.metric) if self.metric else self.function()(result)
        if raw is None:
            return None
        value = float(raw)
        return value if math.isfinite(value) else None

    def better(self, a: float, b: float) -> bool:
        return a > b if self.direction == "maximize" else a < b


def constraint_excess(metrics: Mapping[str, Any], c: Constraints) -> dict[str, float]:
    """Return by how much each set constraint is exceeded (<= 0: satisfied)."""
    out = {}
    if c.min_trades is not None:
        out["min_trades"] = float(c.min_trades - int(metrics.get("total_trades") or 0))
    if c.max_drawdown is not None:
        out["max_drawdown"] = float(metrics.get("max_drawdown_pct") or 0.0) / 100.0 - c.max_drawdown
    return out


def violations(metrics: Mapping[str, Any], c: Constraints) -> list[str]:
    """Return one message per constraint the metrics break."""
    excess = constraint_excess(metrics, c)
    out = []
    if excess.get("min_trades", 0.0) > 0:
        out.append(f"min_trades: {int(metrics.get('total_trades') or 0)} < {c.min_trades}")
    if excess.get("max_drawdown", 0.0) > 0:
        dd = float(metrics.get("max_drawdown_pct") or 0.0) / 100.0
        out.append(f"max_drawdown: {dd:.2%} > {c.max_drawdown:.2%}")
    return out


@dataclass
class Workload:
    """Everything a worker needs, shipped once: the bot, targets, objective, constraints, bars."""

    tree: dict[str, Any]
    targets: dict[str, Target]
    objective: Objective
    constraints: Constraints
    frames: dict[str, pd.DataFrame]

    @classmethod
    def from_study(cls, study: Study, frames: Mapping[str, pd.DataFrame]) -> Workload:
        return cls(
            tree=study.base_tree(),
            targets=dict(study.targets),
            objective=Objective(study.spec.objective, study.spec.direction),
            constraints=study.spec.constraints,
            frames=dict(frames),
        )

    def bars(self, window: Window | None) -> dict[str, pd.DataFrame]:
        if window is None:
            return self.frames
        start, end = window
        out = {}
        for sym, df in self.frames.items():
            cut = df[(df.index >= start) & (df.index < end)]
            if len(cut) < 2:
                raise ATFError(f"{sym}: fewer than 2 bars in the window {start} .. {end}")
            out[sym] = cut
        return out

    def backtest(self, params: Mapping[str, Any], window: Window | None = None) -> BacktestResult:
        """Run the bot with `params` on `window` (all bars when None)."""
        from trading.engine import build_cerebro, collect_result

        cfg = apply_params(self.tree, self.targets, dict(params))
        frames = self.bars(window)
        cerebro, _ = build_cerebro(cfg, frames)
        strat = cerebro.run()[0]
        result = collect_result(cfg, frames, cerebro, strat)
        result.prices = {}  # the worker has the bars; do not ship them back
        return result

    def run(self, task: Task) -> TrialOutcome:
        """Evaluate one task; an invalid parameter set is reported on the outcome, not raised."""
        worker = f"{socket.gethostname()}:{os.getpid()}"
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            result = self.backtest(task.params, task.window)
            value = self.objective.score(result)
        except (ATFError, ValueError) as exc:
            return TrialOutcome(
                task.number,
                dict(task.params),
                None,
                {},
                error=str(exc),
                seconds=time.perf_counter() - t0,
                cpu_seconds=time.process_time() - c0,
                worker=worker,
            )
        metrics = {k: v for k, v in result.metrics.items() if not isinstance(v, dict)}
        outcome = TrialOutcome(
            task.number,
            dict(task.params),
            value,
            metrics,
            violations(metrics, self.constraints),
            bars=result.bars,
            seconds=time.perf_counter() - t0,
            cpu_seconds=time.process_time() - c0,
            worker=worker,
        )
        if task.full:
            outcome.equity, outcome.trades = result.equity, result.trades
        return outcome


def best_of(outcomes: list[TrialOutcome], direction: str = "maximize") -> TrialOutcome | None:
    """Return the best feasible trial (lowest number on ties), or None if none is feasible."""
    sign = 1.0 if direction == "maximize" else -1.0
    feasible = [o for o in outcomes if o.feasible]
    if not feasible:
        return None
    return max(feasible, key=lambda o: (sign * float(o.value), -o.number))  # type: ignore[arg-type]
