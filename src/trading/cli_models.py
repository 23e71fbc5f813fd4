"""`atf models list|clear`: the on-disk cache of trained ML window models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

models_app = typer.Typer(help="Trained ML models cached on disk ($ATF_MODEL_CACHE).", no_args_is_help=True)
console = Console()


@models_app.command("list")
def models_list() -> None:
    """List cached models: key, training range, bars, validation loss, size, age."""
    from strategy.ml.cache import ModelCache

    cache = ModelCache()
    entries = list(cache.entries())
    table = Table(title=f"{len(entries)} models in {cache.root}", title_justify="left")
    table.add_column("key", no_wrap=True, min_width=12)
    for col in ("model", "train start", "train end", "bars", "val loss", "size", "created"):
        table.add_column(col, overflow="fold")
    total = 0
    for e in entries:
        m = e.meta
        total += e.size_bytes
        val = m.get("val_loss")
        table.add_row(
            e.key[:12], str(m.get("model", "")).removesuffix("EntryMixin"), str(m.get("train_start", "")), str(m.get("train_end", "")),
            str(m.get("bars", "")), f"{val:.4f}" if isinstance(val, float) else "—",
            f"{e.size_bytes / 1024:.1f} KiB", datetime.fromtimestamp(e.modified).strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)
    console.print(f"Total: {total / 1024:.1f} KiB")


@models_app.command("clear")
def models_clear(
    older_than: Annotated[float | None, typer.Option("--older-than", help="Only models older than DAYS.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete cached models (all, or those older than --older-than DAYS)."""
    from strategy.ml.cache import ModelCache

    cache = ModelCache()
    what = "all cached models" if older_than is None else f"cached models older than {older_than:g} days"
    if not yes and not typer.confirm(f"Delete {what} in {cache.root}?"):
        raise typer.Exit(code=1)
    removed = cache.clear(older_than)
    console.print(f"Removed {removed} model(s) from {cache.root}")
