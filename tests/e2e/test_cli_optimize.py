"""End to end: `atf optimize` runs grid, Optuna and walk-forward searches and writes every report file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.e2e.test_cli_backtest import atf
from tests.trading.optimize.conftest import bot_text

WF = "optimize:\n  objective: total_pnl\n  parameters:\n    e_rsi_period: [8, 14]\n    e_bb_dev: [1.5, 2.5]\n"


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("optimize")
    (work / "bot.yaml").write_text(bot_text(), encoding="utf-8")
    (work / "wf.yaml").write_text(bot_text(WF), encoding="utf-8")
    return work


@pytest.fixture(scope="module")
def grid(work: Path) -> Path:
    proc = atf("optimize", "bot.yaml", "--jobs", "2", "--output", "grid", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert (
        "grid, 12 trials per search, 2 worker(s) (pool)" in proc.stdout
        and "Best:    trial" in proc.stdout
    )
    return work / "grid"


def test_a_grid_writes_trials_summary_heatmap_and_best_yaml(grid: Path) -> None:
    trials = rows(grid / "trials.csv")
    assert len(trials) == len(json.loads((grid / "trials.json").read_text())) == 12
    assert {
        (r["param_e_rsi_period"], r["param_e_bb_dev"], r["param_x_sl_multiplier"]) for r in trials
    } == {(str(a), str(b), str(c)) for a in (8, 12, 16) for b in (1.5, 2.5) for c in (1.0, 2.0)}
    assert len({r["worker"] for r in trials}) >= 1 and all(r["status"] == "ok" for r in trials)
    summary = json.loads((grid / "summary.json").read_text())
    assert summary["best"]["value"] == max(float(r["value"]) for r in trials)
    assert "<div" in (grid / "heatmap.html").read_text() and (grid / "best.yaml").is_file()


def test_the_best_yaml_is_a_bot_that_backtests_to_the_reported_metric(grid: Path) -> None:
    summary = json.loads((grid / "summary.json").read_text())
    proc = atf(
        "backtest", "best.yaml", "--no-save", "--output", "rerun", "--json", "rerun.json", cwd=grid
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((grid / "rerun.json").read_text())
    assert result["metrics"]["sharpe_ratio"] == summary["best"]["value"]
    assert result["metrics"]["total_trades"] == summary["best"]["metrics"]["total_trades"]


def test_optuna_on_a_local_dask_cluster_equals_one_process(work: Path) -> None:
    args = ("optimize", "bot.yaml", "--method", "optuna", "--trials", "6")
    dask = atf(*args, "--scheduler", "local", "--jobs", "2", "--output", "dask", cwd=work)
    serial = atf(*args, "--jobs", "1", "--output", "serial", cwd=work)
    assert dask.returncode == 0 and serial.returncode == 0, dask.stderr + serial.stderr
    assert "2 worker(s) (dask (local))" in dask.stdout
    skip = {"seconds", "cpu_seconds", "worker"}
    a, b = rows(work / "dask" / "trials.csv"), rows(work / "serial" / "trials.csv")
    assert len(a) == 6 and [{k: v for k, v in r.items() if k not in skip} for r in a] == [
        {k: v for k, v in r.items() if k not in skip} for r in b
    ]
    # Which of the two workers ran which trial is Dask's choice (under load one may take all six):
    # the results, not the placement, are what must equal the single process's.
    assert all(r["worker"] for r in a)


def test_walk_forward_reports_in_sample_beside_out_of_sample(work: Path) -> None:
    proc = atf(
        "optimize",
        "wf.yaml",
        "--walk-forward",
        "--train",
        "20d",
        "--test",
        "10d",
        "--jobs",
        "1",
        "--output",
        "wf",
        cwd=work,
    )
    assert proc.returncode == 0, proc.stderr
    assert "in-sample vs out-of-sample" in proc.stdout
    out = work / "wf"
    report = json.loads((out / "walkforward.json").read_text())
    assert len(report["windows"]) == 4 and report["out_of_sample"]["value"] is not None
    equity = rows(out / "oos_equity.csv")
    assert float(equity[-1]["equity"]) - 10_000 == pytest.approx(
        report["out_of_sample"]["metrics"]["total_pnl"]
    )
    assert len(rows(out / "trials.csv")) == 4 * 4 and (out / "walkforward.html").is_file()
    assert [int(r["window"]) for r in rows(out / "walkforward.csv")] == [0, 1, 2, 3]
    last = report["windows"][-1]
    best = (out / "best.yaml").read_text()
    assert f"e_rsi_period: {last['param_e_rsi_period']}" in best


def test_a_bad_parameter_fails_with_file_line_and_hint(work: Path) -> None:
    (work / "bad.yaml").write_text(
        bot_text("optimize:\n  parameters:\n    e_rsi_perod: [8, 14]\n"), encoding="utf-8"
    )
    proc = atf("optimize", "bad.yaml", "--jobs", "1", cwd=work)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert (
        "bad.yaml: 1 configuration error" in proc.stderr
        and "did you mean 'e_rsi_period'?" in proc.stderr
    )
    assert "optimize.parameters.e_rsi_perod" in proc.stderr


def test_walk_forward_longer_than_the_data_is_a_clear_error(work: Path) -> None:
    proc = atf("optimize", "wf.yaml", "--walk-forward", "--train", "300d", "--jobs", "1", cwd=work)
    assert proc.returncode == 1 and "one walk-forward window needs train + test" in proc.stderr
