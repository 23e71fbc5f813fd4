"""Report files: every trial as CSV/JSON, the heatmap, and a best-parameters bot that reruns to its metric."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.trading.optimize.conftest import bot_text
from trading.config import load_config
from trading.engine import run_backtest
from trading.optimize import SearchResult, Study, parse_study
from trading.optimize.report import best_bot_yaml, best_table, write_report


@pytest.fixture
def written(study: Study, serial_grid: SearchResult, tmp_path: Path) -> dict[str, Path]:
    return write_report(study, serial_grid, tmp_path / "out")


def test_the_best_yaml_reruns_to_the_reported_metric(
    serial_grid: SearchResult, written: dict[str, Path]
) -> None:
    cfg = load_config(written["best"])
    best = serial_grid.best
    assert best is not None
    assert cfg.strategy.entry_mixins[0].parameters["e_rsi_period"] == best.params["e_rsi_period"]
    assert (
        cfg.strategy.exit_mixins[0].parameters["x_sl_multiplier"] == best.params["x_sl_multiplier"]
    )
    result = run_backtest(cfg)
    assert result.metrics["sharpe_ratio"] == best.value
    assert result.metrics["total_trades"] == best.metrics["total_trades"]


def test_every_trial_is_in_the_csv_and_json(
    serial_grid: SearchResult, written: dict[str, Path]
) -> None:
    with written["csv"].open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    records = json.loads(written["json"].read_text(encoding="utf-8"))
    assert len(rows) == len(records) == len(serial_grid.trials)
    for row, rec, o in zip(rows, records, serial_grid.trials, strict=True):
        assert int(row["number"]) == rec["number"] == o.number
        assert float(row["param_e_bb_dev"]) == rec["param_e_bb_dev"] == o.params["e_bb_dev"]
        assert float(row["value"]) == rec["value"] == o.value and rec["status"] == "ok"
    summary = json.loads(written["summary"].read_text(encoding="utf-8"))
    assert summary["best"]["number"] == serial_grid.best.number and summary["trials"] == 12  # type: ignore[union-attr]


def test_the_heatmap_shows_the_best_value_per_cell(
    serial_grid: SearchResult, written: dict[str, Path]
) -> None:
    html = written["heatmap"].read_text(encoding="utf-8")
    assert "e_rsi_period" in html and "e_bb_dev" in html and "best over x_sl_multiplier" in html
    cell = max(
        o.value
        for o in serial_grid.trials
        if o.params["e_rsi_period"] == 12 and o.params["e_bb_dev"] == 2.5
    )
    assert json.dumps(cell) in html  # type: ignore[arg-type]


def test_the_best_yaml_keeps_variables_as_written_and_drops_the_section(tmp_path: Path) -> None:
    text = bot_text().replace("cash: 10000.0", "cash: '${CASH:-10000}'")
    st = parse_study(text, source="bot.yaml")
    out = best_bot_yaml(
        st,
        {"e_rsi_period": 12, "e_bb_dev": 2.5, "x_sl_multiplier": 1.0},
        value=1.5,
        objective="sharpe",
    )
    assert "${CASH:-10000}" in out and "optimize" not in out.split("\n", 2)[2]
    path = tmp_path / "best.yaml"
    path.write_text(out, encoding="utf-8")
    cfg = load_config(path, env={"CASH": "5000"})
    assert cfg.broker.cash == 5000 and cfg.strategy.entry_mixins[0].parameters["e_bb_dev"] == 2.5


def test_the_table_lists_feasible_trials_best_first(serial_grid: SearchResult) -> None:
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(best_table(serial_grid, top=3))
    text = console.export_text()
    ranked = sorted(serial_grid.trials, key=lambda o: -o.value)  # type: ignore[operator]
    lines = [ln for ln in text.splitlines() if ln.startswith("│")]
    assert [int(ln.split("│")[1]) for ln in lines] == [o.number for o in ranked[:3]]
