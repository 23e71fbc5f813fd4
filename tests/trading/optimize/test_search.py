"""Grid and Optuna search on one process: enumeration, objectives, constraints, seeds."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from typing import Any

import pytest

from tests.trading.optimize.conftest import optuna_spec, study_from
from trading.optimize import (
    OptimizeSpec,
    Runner,
    SearchResult,
    Study,
    Workload,
    best_of,
    grid_points,
    run_grid,
    run_optuna,
)
from trading.optimize.trial import Task


def run_serial(
    study: Study,
    workload: Workload,
    spec: OptimizeSpec | None = None,
    method: str = "grid",
    **kw: Any,
) -> SearchResult:
    """Run `spec` (default: the study's) in this process on the workload's bars."""
    st = replace(study, spec=spec or study.spec)
    with Runner() as runner:
        runner.start(Workload.from_study(st, workload.frames))
        return (run_grid if method == "grid" else run_optuna)(st.spec, runner, **kw)


def test_grid_enumerates_exactly_the_product(study: Study) -> None:
    points = grid_points(study.spec)
    values = [r.grid_values() for r in study.spec.parameters.values()]
    expected = [
        dict(zip(study.spec.parameters, combo, strict=True)) for combo in itertools.product(*values)
    ]
    assert points == expected
    assert len(points) == study.spec.grid_size() == 3 * 2 * 2
    assert len({tuple(p.items()) for p in points}) == len(points)


def test_grid_runs_every_point_once_and_picks_the_best(
    study: Study, serial_grid: SearchResult
) -> None:
    assert [o.params for o in serial_grid.trials] == grid_points(study.spec)
    assert all(o.status == "ok" and o.bars == 1500 for o in serial_grid.trials)
    values = [o.value for o in serial_grid.trials]
    assert len(set(values)) > 1  # the parameters matter on these bars
    assert serial_grid.best is not None and serial_grid.best.value == max(
        v for v in values if v is not None
    )


def test_each_trial_equals_a_backtest_of_its_parameters(
    workload: Workload, serial_grid: SearchResult
) -> None:
    for o in serial_grid.trials[:3]:
        result = workload.backtest(o.params)
        assert o.value == result.metrics["sharpe_ratio"] and o.metrics["total_trades"] == len(
            result.trades
        )


def test_constraints_exclude_trials_and_the_best_is_never_one_of_them(
    study: Study, workload: Workload, serial_grid: SearchResult
) -> None:
    trades = sorted(o.metrics["total_trades"] for o in serial_grid.trials)
    cut = trades[len(trades) // 2]  # about half the trials have fewer trades than this
    spec = study.spec.model_copy(
        update={"constraints": study.spec.constraints.model_copy(update={"min_trades": cut})}
    )
    res = run_serial(study, workload, spec)
    excluded = [o for o in res.trials if o.metrics["total_trades"] < cut]
    assert excluded and all(
        o.status == "infeasible" and o.violations[0].startswith("min_trades:") for o in excluded
    )
    assert all(o.feasible for o in res.trials if o.metrics["total_trades"] >= cut)
    assert res.best is not None and res.best.metrics["total_trades"] >= cut
    assert res.best.value == max(o.value for o in res.trials if o.feasible)  # type: ignore[type-var]
    assert res.feasible == len(res.trials) - len(excluded)


def test_a_drawdown_cap_no_trial_meets_leaves_no_best(study: Study, workload: Workload) -> None:
    c = study.spec.constraints.model_copy(update={"max_drawdown": 1e-6})
    res = run_serial(study, workload, study.spec.model_copy(update={"constraints": c}))
    assert res.best is None and res.feasible == 0
    assert all(v.startswith("max_drawdown:") for o in res.trials for v in o.violations)


def test_minimising_picks_the_lowest_value(
    study: Study, workload: Workload, serial_grid: SearchResult
) -> None:
    res = run_serial(study, workload, study.spec.model_copy(update={"direction": "minimize"}))
    assert res.best is not None and res.best.value == min(o.value for o in serial_grid.trials)  # type: ignore[type-var]


def test_a_custom_objective_function_scores_each_trial(workload: Workload) -> None:
    st = study_from(
        "optimize:\n  objective: tests.trading.optimize.objectives:pnl_per_trade\n"
        "  parameters: {e_bb_dev: [1.5, 2.5]}\n"
    )
    res = run_serial(st, workload, st.spec)
    for o in res.trials:
        result = Workload.from_study(st, workload.frames).backtest(o.params)
        assert o.value == pytest.approx(
            sum(t.pnl for t in result.trades) / len(result.trades), rel=1e-12
        )


def test_an_invalid_combination_is_an_error_trial_not_a_crash(workload: Workload) -> None:
    st = study_from("optimize:\n  parameters: {x_breakeven_offset: [0.0, 0.05]}\n")
    wl = Workload.from_study(st, workload.frames)
    bad = wl.run(Task(0, {"x_breakeven_offset": 0.5}))
    assert bad.status == "error" and "x_breakeven_offset" in (bad.error or "") and not bad.feasible
    assert best_of([bad]) is None


def test_optuna_is_reproducible_by_seed(
    study: Study, workload: Workload, serial_optuna: SearchResult
) -> None:
    again = run_serial(study, workload, optuna_spec(study), method="optuna")
    assert [(o.params, o.value) for o in again.trials] == [
        (o.params, o.value) for o in serial_optuna.trials
    ]
    other = run_serial(study, workload, optuna_spec(study, seed=4), method="optuna")
    assert [o.params for o in other.trials] != [o.params for o in serial_optuna.trials]


def test_optuna_runs_the_requested_trials_within_the_ranges(
    study: Study, serial_optuna: SearchResult
) -> None:
    trials = serial_optuna.trials
    assert [o.number for o in trials] == list(range(study.spec.trials))
    for o in trials:
        assert 8 <= o.params["e_rsi_period"] <= 16 and (o.params["e_rsi_period"] - 8) % 4 == 0
        assert o.params["e_bb_dev"] in (1.5, 2.5)
        assert 1.0 <= o.params["x_sl_multiplier"] <= 2.0 and math.isclose(
            o.params["x_sl_multiplier"] % 1.0, 0.0
        )
    best = serial_optuna.best
    assert best is not None and best.value == max(o.value for o in trials if o.feasible)  # type: ignore[type-var]


def test_optuna_keeps_constraint_violations_out_of_its_best(
    study: Study, workload: Workload, serial_optuna: SearchResult
) -> None:
    import optuna

    trades = sorted(o.metrics["total_trades"] for o in serial_optuna.trials)
    c = study.spec.constraints.model_copy(update={"min_trades": trades[len(trades) // 2]})
    storage = optuna.storages.InMemoryStorage()
    res = run_serial(
        study,
        workload,
        optuna_spec(study, constraints=c),
        method="optuna",
        storage=storage,
        study_name="c",
    )
    assert any(not o.feasible for o in res.trials) and res.best is not None and res.best.feasible
    assert optuna.load_study(study_name="c", storage=storage).best_trial.number == res.best.number
