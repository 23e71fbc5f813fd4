"""`atf status`: ask a bot's output folder what Telegram's commands answer (same query layer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from trading.status import QUERIES, answer, read_status


def status(
    folder: Annotated[Path, typer.Argument(help="The bot's output folder: status.json while it runs (Notifier), "
                                           "result.json and state.json once stopped.")],
    query: Annotated[str, typer.Argument(help=f"One of: {', '.join(QUERIES)}.")] = "status",
    n: Annotated[int | None, typer.Option("-n", min=1, help="How many trades, days or weeks.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole snapshot as JSON instead.")] = False,
) -> None:
    """Show a bot's status, positions, balance, profit, daily, weekly, trades or performance."""
    if query not in QUERIES:
        typer.echo(f"error: unknown query '{query}'; choose one of {', '.join(QUERIES)}", err=True)
        raise typer.Exit(code=2)
    try:
        snap = read_status(folder)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    if as_json:
        typer.echo(json.dumps(snap.to_dict(), indent=2))
    else:
        typer.echo(answer(query, snap, n=n))
