"""Optimisation outputs: the best-trials table, a heatmap, every trial as CSV/JSON, the best bot YAML.

Files written to the output folder:
  trials.csv, trials.json   every trial: parameters, objective value, status, key metrics
  summary.json              method, objective, best trial, counts, timing
  heatmap.html              objective over two parameters (the best over any others)
  best.yaml                 the bot with the best parameters: `atf backtest best.yaml` reruns it
  walkforward.json/.csv, oos_equity.csv, walkforward.html   with --walk-forward
"""

from __future__ import annotations

import copy
import csv
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from trading.optimize.search import SearchResult
from trading.optimize.spec import OBJECTIVES as OBJECT_METRIC
from trading.optimize.spec import Study, set_path
from trading.optimize.trial import TrialOutcome
from trading.optimize.walkforward import SUMMARY_METRICS, WalkForwardResult


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def best_table(search: SearchResult, top: int = 10) -> Table:
    """Return a rich table of the best feasible trials, then the best infeasible ones."""
    sign = 1.0 if search.direction == "maximize" else -1.0
    ranked = sorted(
        search.trials,
        key=lambda o: (not o.feasible, o.value is None, -sign * (o.value or 0.0), o.number),
    )
    names = list(search.trials[0].params) if search.trials else []
    title = (
        f"best of {len(search.trials)} trials ({search.feasible} feasible) — "
        f"{search.method}, {search.direction} {search.objective}"
    )
    table = Table(title=title)
    extra = [
        (label, key, digits)
        for label, key, digits in (
            ("trades", "total_trades", 0),
            ("sharpe", "sharpe_ratio", 3),
            ("max dd %", "max_drawdown_pct", 2),
            ("pnl", "total_pnl", 2),
        )
        if OBJECT_METRIC.get(search.objective) != key
    ]
    for col in ("#", *names, search.objective, *(e[0] for e in extra), "status"):
        table.add_column(col, justify="left" if col == "status" else "right")
    for o in ranked[:top]:
        status = (
            "; ".join(o.violations) or o.status if o.error is None else f"error: {o.error[:60]}"
        )
        table.add_row(
            str(o.number),
            *(_num(o.params.get(n)) for n in names),
            _num(o.value),
            *(_num(o.metrics.get(key), digits) for _, key, digits in extra),
            status,
        )
    return table


def walk_forward_table(wf: WalkForwardResult) -> Table:
    """Return in-sample (mean of the windows' winners) beside stitched out-of-sample metrics."""
    table = Table(title=f"walk-forward: {len(wf.windows)} windows, in-sample vs out-of-sample")
    for col in ("metric", "in-sample (mean)", "out-of-sample (stitched)"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    table.add_row(f"objective: {wf.objective}", _num(wf.is_value), _num(wf.oos_value))
    for k in SUMMARY_METRICS:
        table.add_row(k, _num(wf.is_metrics.get(k)), _num(wf.oos_metrics.get(k)))
    return table


# ----------------------------------------------------------------------------- files
def write_trials(trials: list[TrialOutcome], outdir: Path) -> dict[str, Path]:
    """Write every trial to trials.csv and trials.json."""
    return write_rows([_clean(o.row()) for o in trials], outdir, "trials")


def write_rows(rows: list[dict[str, Any]], outdir: Path, stem: str) -> dict[str, Path]:
    csv_path, json_path = outdir / f"{stem}.csv", outdir / f"{stem}.json"
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    json_path.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return {"csv": csv_path, "json": json_path}


def summary(search: SearchResult) -> dict[str, Any]:
    best = search.best
    return _clean(
        {
            "method": search.method,
            "objective": search.objective,
            "direction": search.direction,
            "trials": len(search.trials),
            "feasible": search.feasible,
            "workers": search.workers,
            "seconds": round(search.seconds, 3),
            "study": search.study_name,
            "best": None
            if best is None
            else {
                "number": best.number,
                "params": best.params,
                "value": best.value,
                "metrics": {k: best.metrics.get(k) for k in SUMMARY_METRICS},
            },
            "notes": search.notes,
        }
    )


def best_bot_yaml(
    study: Study, params: dict[str, Any], *, value: float | None, objective: str
) -> str:
    """Return the bot file with `params` set: variables stay as written, `optimize:` is left out."""
    tree = copy.deepcopy(study.raw)
    for key, v in params.items():
        set_path(tree, study.targets[key].path, v)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = (
        f"# Best parameters from `atf optimize {study.source}` ({stamp}):\n"
        f"#   {objective} = {_num(value, 6)} with "
        + ", ".join(f"{k}={v!r}" for k, v in params.items())
        + "\n"
    )
    return head + yaml.safe_dump(
        tree, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100
    )


def heatmap(
    search: SearchResult, path: Path, x: str | None = None, y: str | None = None
) -> Path | None:
    """Write a plotly heatmap of the objective over two parameters; None with fewer than two.

    Cells hold the best feasible value over the other parameters; infeasible cells are blank.
    """
    import plotly.graph_objects as go

    names = list(search.trials[0].params) if search.trials else []
    if len(names) < 2:
        return None
    x, y = x or names[0], y or names[1]
    xs = sorted({o.params[x] for o in search.trials}, key=_sort_key)
    ys = sorted({o.params[y] for o in search.trials}, key=_sort_key)
    sign = 1.0 if search.direction == "maximize" else -1.0
    cell: dict[tuple[Any, Any], float] = {}
    for o in search.trials:
        if o.feasible:
            k = (o.params[x], o.params[y])
            if k not in cell or sign * float(o.value) > sign * cell[k]:  # type: ignore[arg-type]
                cell[k] = float(o.value)  # type: ignore[arg-type]
    z = [[cell.get((xv, yv)) for xv in xs] for yv in ys]
    others = [n for n in names if n not in (x, y)]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[str(v) for v in xs],
            y=[str(v) for v in ys],
            colorscale="Viridis",
            colorbar={"title": search.objective},
            hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>{search.objective}=%{{z}}<extra></extra>",
        )
    )
    sub = f" (best over {', '.join(others)})" if others else ""
    fig.update_layout(
        title=f"{search.objective} by {x} and {y}{sub}; blank: no feasible trial",
        xaxis_title=x,
        yaxis_title=y,
        template="plotly_white",
    )
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    return path


def _sort_key(v: Any) -> tuple[int, Any]:
    return (0, v) if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, str(v))


def write_report(study: Study, search: SearchResult, outdir: Path) -> dict[str, Path]:
    """Write trials, summary, heatmap and best YAML for one search."""
    outdir.mkdir(parents=True, exist_ok=True)
    paths = write_trials(search.trials, outdir)
    paths["summary"] = outdir / "summary.json"
    paths["summary"].write_text(json.dumps(summary(search), indent=2) + "\n", encoding="utf-8")
    hm = heatmap(search, outdir / "heatmap.html")
    if hm is not None:
        paths["heatmap"] = hm
    if search.best is not None:
        paths["best"] = outdir / "best.yaml"
        paths["best"].write_text(
            best_bot_yaml(
                study, search.best.params, value=search.best.value, objective=search.objective
            ),
            encoding="utf-8",
        )
    return paths


def write_walk_forward(study: Study, wf: WalkForwardResult, outdir: Path) -> dict[str, Path]:
    """Write the per-window table, the stitched out-of-sample equity, a chart and the latest best YAML."""
    import plotly.graph_objects as go

    outdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in wf.windows:
        best, oos = r.search.best, r.oos
        rows.append(
            _clean(
                {
                    "window": r.window.index,
                    "train_start": r.window.train[0].isoformat(),
                    "train_end": r.window.train[1].isoformat(),
                    "test_start": r.window.test[0].isoformat(),
                    "test_end": r.window.test[1].isoformat(),
                    "trials": len(r.search.trials),
                    "feasible": r.search.feasible,
                    **{f"param_{k}": v for k, v in (best.params if best else {}).items()},
                    "is_value": best.value if best else None,
                    "oos_value": oos.value if oos else None,
                    **{f"is_{k}": (best.metrics.get(k) if best else None) for k in SUMMARY_METRICS},
                    **{f"oos_{k}": (oos.metrics.get(k) if oos else None) for k in SUMMARY_METRICS},
                }
            )
        )
    paths = {
        "csv": outdir / "walkforward.csv",
        "json": outdir / "walkforward.json",
        "equity": outdir / "oos_equity.csv",
        "html": outdir / "walkforward.html",
    }
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with paths["csv"].open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    doc = {
        "objective": wf.objective,
        "direction": wf.direction,
        "in_sample": {"value": wf.is_value, "metrics": wf.is_metrics},
        "out_of_sample": {
            "value": wf.oos_value,
            "metrics": wf.oos_metrics,
            "trades": len(wf.trades),
        },
        "windows": rows,
        "notes": wf.notes,
    }
    paths["json"].write_text(json.dumps(_clean(doc), indent=2) + "\n", encoding="utf-8")
    wf.equity.rename_axis("time").to_csv(paths["equity"], header=True)
    trials = [
        _clean({"window": r.window.index, **o.row()}) for r in wf.windows for o in r.search.trials
    ]
    paths.update({f"trials_{k}": v for k, v in write_rows(trials, outdir, "trials").items()})
    fig = go.Figure(
        go.Scatter(x=wf.equity.index.tz_convert(None), y=wf.equity.to_numpy(), name="out-of-sample")
    )
    for r in wf.windows:
        fig.add_vline(
            x=r.window.test[0].tz_convert(None), line={"width": 1, "dash": "dot", "color": "grey"}
        )
    fig.update_layout(
        title=f"stitched out-of-sample equity ({len(wf.windows)} windows); "
        f"{wf.objective}: in-sample {_num(wf.is_value)} vs out-of-sample {_num(wf.oos_value)}",
        template="plotly_white",
        yaxis_title="equity",
    )
    fig.write_html(paths["html"], include_plotlyjs=True, full_html=True)
    best = wf.last_best
    if best is not None:
        paths["best"] = outdir / "best.yaml"
        paths["best"].write_text(
            best_bot_yaml(study, best.params, value=best.value, objective=wf.objective),
            encoding="utf-8",
        )
    return paths


def _clean(obj: Any) -> Any:
    """Make values JSON/CSV friendly: NaN/inf to None, numpy scalars to Python."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
