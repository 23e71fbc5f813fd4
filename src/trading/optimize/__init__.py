"""Parameter optimisation: grid and Optuna search, walk-forward analysis, parallel and Dask runs.

spec (the `optimize:` section) -> search (grid / Optuna) over trial (one backtest, scored) on a
runner (this process, a process pool, Dask) -> walkforward -> report. See docs/optimize.md.
"""

from __future__ import annotations

from trading.optimize.runner import DaskRunner, MissingExtraError, PoolRunner, Runner, make_runner
from trading.optimize.search import SearchResult, grid_points, run_grid, run_optuna, run_search
from trading.optimize.spec import OptimizeSpec, Study, apply_params, load_study, parse_study
from trading.optimize.trial import Task, TrialOutcome, Workload, best_of
from trading.optimize.walkforward import WalkForwardResult, make_windows, run_walk_forward

__all__ = [
    "DaskRunner",
    "MissingExtraError",
    "OptimizeSpec",
    "PoolRunner",
    "Runner",
    "SearchResult",
    "Study",
    "Task",
    "TrialOutcome",
    "WalkForwardResult",
    "Workload",
    "apply_params",
    "best_of",
    "grid_points",
    "load_study",
    "make_runner",
    "make_windows",
    "parse_study",
    "run_grid",
    "run_optuna",
    "run_search",
    "run_walk_forward",
]
