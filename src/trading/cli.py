"""The `atf` command line: backtest, config, runs, db, mixins, lookahead."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from trading.cli_audit import orders, trades
from trading.cli_bot import live, paper
from trading.cli_data import data_app
from trading.cli_ledger import ledger_app
from trading.cli_models import models_app
from trading.cli_optimize import optimize
from trading.cli_status import status
from trading.cli_strategy import lookahead, mixins_app
from trading.exceptions import ATFError, ConfigError

app = typer.Typer(help="atf: YAML-configured trading bots on backtrader.", no_args_is_help=True)
config_app = typer.Typer(help="Validate bot files and export their JSON Schema.", no_args_is_help=True)
runs_app = typer.Typer(help="Backtest runs stored in the database.", no_args_is_help=True)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(runs_app, name="runs")
app.add_typer(db_app, name="db")
app.add_typer(mixins_app, name="mixins")
app.add_typer(models_app, name="models")
app.add_typer(ledger_app, name="ledger")
app.add_typer(data_app, name="data")
app.command("lookahead")(lookahead)
app.command("paper")(paper)
app.command("live")(live)
app.command("optimize")(optimize)
app.command("status")(status)
app.command("orders")(orders)
app.command("trades")(trades)

console = Console()
err = Console(stderr=True)

PROGRESS_MIN_BARS = 20_000


def _fail(exc: BaseException) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code=1)


# ----------------------------------------------------------------------------- backtest
@app.command()
def backtest(
    config: Annotated[Path, typer.Argument(help="Bot YAML file.")],
    data: Annotated[Path | None, typer.Option("--data", help="CSV file instead of the configured data.")] = None,
    start: Annotated[str | None, typer.Option(help="First bar (ISO date or datetime, UTC).")] = None,
    end: Annotated[str | None, typer.Option(help="Last bar (ISO date = whole day, UTC).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Folder for report and files.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the result JSON here.")] = None,
    save: Annotated[bool, typer.Option("--save/--no-save", help="Store the run in the database.")] = True,
    db_url: Annotated[str | None, typer.Option("--db-url", help="SQLAlchemy URL (default: config or atf.db).")] = None,
) -> None:
    """Run a backtest and write result JSON, trades/equity CSV, an HTML report and an equity PNG."""
    from trading.analytics.output import write_outputs
    from trading.config import load_config
    from trading.engine import load_bars, run_backtest

    try:
        cfg = load_config(config)
        frames = load_bars(cfg, data_file=data, start=start, end=end)
    except (ATFError, FileNotFoundError, ValueError) as exc:
        raise _fail(exc) from None

    total = max(len(df) for df in frames.values())
    try:
        if total >= PROGRESS_MIN_BARS:
            result = _run_with_progress(cfg, frames, total)
        else:
            result = run_backtest(cfg, frames)
    except ATFError as exc:
        raise _fail(exc) from None

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    outdir = output or Path("results") / f"{cfg.bot.name}-{stamp}"
    paths = write_outputs(result, outdir, json_path=json_path)
    run_id = None
    if save and cfg.database.enabled:
        run_id = _save_run(result, db_url or cfg.database.url, paths["html"])

    _print_summary(result)
    console.print(f"Report:  {paths['html']}")
    console.print(f"Results: {outdir}" + (f"  (run id {run_id})" if run_id is not None else ""))


def _run_with_progress(cfg: Any, frames: Any, total: int) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from trading.engine import run_backtest

    with Progress(
        TextColumn("backtest"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} bars"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("run", total=total)
        return run_backtest(cfg, frames, progress=lambda done, _t: bar.update(task, completed=done))


def _save_run(result: Any, url: str | None, report: Path) -> int | None:
    from trading.persistence import ensure_database, save_backtest

    try:
        engine = ensure_database(url)
        try:
            return save_backtest(engine, result, report_path=str(report))
        finally:
            engine.dispose()
    except ATFError as exc:
        err.print(f"[yellow]warning:[/yellow] run not stored: {exc}")
        return None


def _fmt(v: Any, suffix: str = "", digits: int = 2) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{digits}f}{suffix}"
    return f"{v}{suffix}"


def _print_summary(result: Any) -> None:
    m = result.metrics
    table = Table(title=f"{result.name}  {', '.join(result.symbols)}  {result.timeframe}  "
                  f"{result.start:%Y-%m-%d} → {result.end:%Y-%m-%d}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("final value", _fmt(m.get("final_value"))),
        ("total return", _fmt(m.get("total_return_pct"), " %")),
        ("total pnl", _fmt(m.get("total_pnl"))),
        ("trades", _fmt(m.get("total_trades"))),
        ("win rate", _fmt(m.get("win_rate"), " %")),
        ("profit factor", _fmt(m.get("profit_factor"))),
        ("expectancy", _fmt(m.get("expectancy"))),
        ("max drawdown", _fmt(m.get("max_drawdown_pct"), " %")),
        ("sharpe", _fmt(m.get("sharpe_ratio"))),
        ("sortino", _fmt(m.get("sortino_ratio"))),
        ("CAGR", _fmt(m.get("cagr_pct"), " %")),
        ("SQN", _fmt(m.get("sqn"))),
        ("exposure", _fmt(m.get("exposure_pct"), " %")),
        ("fees", _fmt(m.get("total_fees"))),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    reasons = m.get("by_exit_reason") or {}
    if reasons:
        t2 = Table(title="by exit reason")
        for col in ("reason", "trades", "win rate", "total pnl"):
            t2.add_column(col, justify="left" if col == "reason" else "right")
        for reason, s in reasons.items():
            t2.add_row(reason, _fmt(s.get("trades")), _fmt(s.get("win_rate"), " %"), _fmt(s.get("total_pnl")))
        console.print(t2)


# ----------------------------------------------------------------------------- config
@config_app.command("validate")
def config_validate(files: Annotated[list[Path], typer.Argument(help="Bot YAML files.")]) -> None:
    """Validate bot files; print every error with file, line and key path. Exit 1 on any error."""
    from trading.config import load_config

    bad = 0
    for f in files:
        try:
            load_config(f)
            console.print(f"[green]ok[/green]  {f}")
        except ConfigError as exc:
            bad += 1
            err.print(str(exc), highlight=False, markup=False)
    if bad:
        raise typer.Exit(code=1)


@config_app.command("schema")
def config_schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
) -> None:
    """Print the JSON Schema of bot files (for editor completion)."""
    from trading.config import json_schema

    text = json.dumps(json_schema(), indent=2)
    if output:
        output.write_text(text + "\n", encoding="utf-8")
        console.print(f"wrote {output}")
    else:
        sys.stdout.write(text + "\n")


# ----------------------------------------------------------------------------- runs
@runs_app.command("list")
def runs_list(
    limit: Annotated[int, typer.Option(help="How many runs, newest first.")] = 20,
    name: Annotated[str | None, typer.Option(help="Only runs of this bot.")] = None,
    db_url: Annotated[str | None, typer.Option("--db-url")] = None,
) -> None:
    """List stored backtest runs."""
    from trading.persistence import ensure_database, list_runs

    try:
        engine = ensure_database(db_url)
    except ATFError as exc:
        raise _fail(exc) from None
    runs = list_runs(engine, limit=limit, name=name)
    table = Table(title="backtest runs")
    for col in ("id", "when (UTC)", "bot", "symbols", "tf", "bars", "trades", "pnl", "win %", "sharpe", "max dd %"):
        table.add_column(col, justify="right" if col not in ("bot", "symbols", "when (UTC)") else "left")
    for r in runs:
        table.add_row(
            str(r.id), f"{r.started_at:%Y-%m-%d %H:%M:%S}", r.name, ",".join(r.symbols), r.timeframe,
            str(r.bars), str(r.total_trades), _fmt(float(r.total_pnl)), _fmt(r.win_rate),
            _fmt(r.sharpe_ratio), _fmt(r.max_drawdown_pct),
        )
    console.print(table)


@runs_app.command("show")
def runs_show(
    run_id: Annotated[int, typer.Argument(help="Run id from `atf runs list`.")],
    trades: Annotated[int, typer.Option(help="How many trades to list.")] = 20,
    db_url: Annotated[str | None, typer.Option("--db-url")] = None,
) -> None:
    """Show one run: metrics and its first trades."""
    from trading.persistence import ensure_database, get_run

    try:
        engine = ensure_database(db_url)
    except ATFError as exc:
        raise _fail(exc) from None
    run = get_run(engine, run_id)
    if run is None:
        raise _fail(ATFError(f"no run with id {run_id}"))
    console.print(f"[bold]run {run.id}[/bold]  {run.name}  {','.join(run.symbols)} {run.timeframe}  "
                  f"at {run.started_at:%Y-%m-%d %H:%M:%S} UTC")
    table = Table(title="metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in run.metrics.items():
        if not isinstance(v, dict):
            table.add_row(k, _fmt(v))
    console.print(table)
    tt = Table(title=f"trades (first {min(trades, len(run.trades))} of {len(run.trades)})")
    cols = ("symbol", "side", "entry_time", "exit_time", "entry_price", "exit_price", "quantity", "pnl", "exit_reason")
    for c in cols:
        tt.add_column(c)
    for t in run.trades[:trades]:
        tt.add_row(*(_fmt(t.get(c)) if not isinstance(t.get(c), float) else f"{float(t.get(c)):.6g}" for c in cols))
    console.print(tt)


# ----------------------------------------------------------------------------- db
@db_app.command("upgrade")
def db_upgrade(
    db_url: Annotated[str | None, typer.Option("--db-url")] = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Migrate the database to the latest (or a given) revision."""
    from trading.persistence import current_revision, safe_url, upgrade_database

    try:
        upgrade_database(db_url, revision)
        console.print(f"{safe_url(db_url)} is at revision {current_revision(db_url)}")
    except ATFError as exc:
        raise _fail(exc) from None


@db_app.command("current")
def db_current(db_url: Annotated[str | None, typer.Option("--db-url")] = None) -> None:
    """Print the database's revision and the one this version needs."""
    from trading.persistence import current_revision, head_revision, safe_url

    try:
        cur = current_revision(db_url)
    except ATFError as exc:
        raise _fail(exc) from None
    head = head_revision()
    state = "up to date" if cur == head else "needs `atf db upgrade`"
    console.print(f"{safe_url(db_url)}: current {cur or '(empty)'}, required {head} — {state}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
