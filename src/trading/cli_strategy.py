"""`atf mixins list|show` and `atf lookahead`: commands about strategies rather than runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from trading.exceptions import ATFError

mixins_app = typer.Typer(help="The entry and exit mixins a bot can name.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


def _fail(exc: BaseException) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code=1)


def _default(value: Any) -> str:
    return "—" if value is None else json.dumps(value) if isinstance(value, (list, tuple, bool)) else str(value)


@mixins_app.command("list")
def mixins_list(
    kind: Annotated[str | None, typer.Option(help="Only 'entry' or 'exit' mixins.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """List every registered mixin with its parameters and defaults."""
    from strategy.registry import available, describe

    kinds = ("entry", "exit") if kind is None else (kind,)
    if any(k not in ("entry", "exit") for k in kinds):
        raise _fail(ATFError(f"--kind must be 'entry' or 'exit', not {kind!r}"))
    described = [describe(cls) for k in kinds for cls in available(k).values()]  # type: ignore[arg-type]
    if as_json:
        console.print_json(json.dumps(described, default=str))
        return
    for d in described:
        table = Table(title=f"{d['name']}  ({d['kind']})  {d['description']}", title_justify="left", expand=False)
        for col in ("parameter", "default", "constraints", "description"):
            table.add_column(col, overflow="fold")
        for p in d["parameters"]:  # type: ignore[attr-defined]
            table.add_row(p["name"], _default(p["default"]), p["constraints"], p["description"])
        console.print(table)


@mixins_app.command("show")
def mixins_show(name: Annotated[str, typer.Argument(help="Mixin name, e.g. AdvancedATRExitMixin.")]) -> None:
    """Show one mixin: its rule (docstring), parameters, types and defaults."""
    from strategy.registry import MixinLookupError, available, describe, resolve_mixin

    kind = "entry" if name in available("entry") else "exit"
    try:
        cls = resolve_mixin(name, kind)
    except MixinLookupError as exc:
        problem: Exception = exc
        if kind == "exit" and ":" not in name:
            # Neither kind knows it: suggest from both.
            from trading.suggest import did_you_mean

            hint = did_you_mean(name, [*available("entry"), *available("exit")])
            problem = MixinLookupError(f"unknown mixin {name!r}" + (f"; did you mean '{hint}'?" if hint else ""))
        raise _fail(problem) from None
    d = describe(cls)
    console.print(f"[bold]{d['name']}[/bold]  ({d['kind']} mixin, {d['module']})\n")
    console.print(d["doc"], highlight=False, markup=False)
    table = Table(title="parameters", title_justify="left")
    for col in ("name", "type", "default", "constraints", "description"):
        table.add_column(col, overflow="fold")
    for p in d["parameters"]:  # type: ignore[attr-defined]
        table.add_row(p["name"], p["type"], "required" if p["required"] else _default(p["default"]),
                      p["constraints"], p["description"])
    console.print(table)


def lookahead(
    config: Annotated[Path, typer.Argument(help="Bot YAML file.")],
    data: Annotated[Path | None, typer.Option("--data", help="CSV file instead of the configured data.")] = None,
    start: Annotated[str | None, typer.Option(help="First bar (ISO date or datetime, UTC).")] = None,
    end: Annotated[str | None, typer.Option(help="Last bar (ISO date = whole day, UTC).")] = None,
    cuts: Annotated[int, typer.Option(help="How many cut points to re-run the bot at.")] = 8,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON here.")] = None,
) -> None:
    """Re-run the bot on data cut at several bars; report any signal, decision or trade that changes.

    Exit 0 when nothing changes, 1 when lookahead bias is found (or on bad input).
    """
    from trading.config import load_config
    from trading.engine import load_bars
    from trading.lookahead import analyse

    try:
        cfg = load_config(config)
        frames = load_bars(cfg, data_file=data, start=start, end=end)
        with console.status("re-running the bot on truncated data"):
            report = analyse(cfg, frames, cuts=cuts)
    except (ATFError, FileNotFoundError, ValueError) as exc:
        raise _fail(exc) from None
    if json_path is not None:
        json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    console.print(
        f"{len(report.cuts)} cut points; compared {report.signals_checked:,} signals, "
        f"{report.decisions_checked:,} decisions, {report.trades_checked:,} trades"
    )
    if report.ok:
        console.print("[green]no lookahead bias found[/green]")
        return
    table = Table(title=f"lookahead bias in: {', '.join(report.biased_sources)}", title_justify="left")
    for col in ("check", "source", "symbol", "bar", "time", "cut at bar", "full data", "cut data"):
        table.add_column(col, overflow="fold")
    for f in report.findings[:30]:
        table.add_row(f.check, f.source, f.symbol, str(f.bar), f.time, str(f.cut), f.full, f.truncated)
    console.print(table)
    if len(report.findings) > 30:
        console.print(f"... and {len(report.findings) - 30} more (see --json)")
    raise typer.Exit(code=1)
