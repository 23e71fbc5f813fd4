"""`atf ledger show`: read exported trade ledger files, filter them, print or export them."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trading.ledger import LedgerEntry

ledger_app = typer.Typer(help="Trade ledgers exported after runs (docs/ledger.md).", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

CSV_COLUMNS = (
    "entry_id", "order_id", "symbol", "direction", "filled_qty", "fill_price", "notional", "fee",
    "bid", "ask", "timestamp", "order_type", "strategy_names", "strategy_weights", "correlation_id",
)


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def parse_bound(value: str | None, *, end: bool) -> datetime | None:
    """Parse an ISO date or datetime as UTC (naive = UTC); a bare date as `end` means the whole day."""
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"'{value}' is not an ISO date or datetime (e.g. 2024-05-01 or 2024-05-01T12:00)") from None
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    if end and len(value) <= 10:
        t += timedelta(days=1) - timedelta(microseconds=1)
    return t


def _csv_text(entries: list[LedgerEntry]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for e in entries:
        row = e.to_dict()
        row["strategy_names"] = ";".join(row["strategy_names"])
        row["strategy_weights"] = ";".join(row["strategy_weights"])
        writer.writerow(row)
    return buf.getvalue()


def _json_text(entries: list[LedgerEntry]) -> str:
    from trading.ledger_store import totals_of

    doc = {"totals": totals_of(entries), "entries": [e.to_dict() for e in entries]}
    return json.dumps(doc, indent=2) + "\n"


def _opt(x: object) -> str:
    return "—" if x is None else str(x)


def _table(entries: list[LedgerEntry], source: str) -> Table:
    from trading.ledger_store import totals_of

    totals = totals_of(entries)
    table = Table(title=f"trade ledger  {source}  ({len(entries)} fills)", title_justify="left")
    for col in ("time (UTC)", "symbol", "side", "qty", "price", "notional", "fee", "bid", "ask",
                "type", "strategies", "order id", "correlation id"):
        numeric = col in ("qty", "price", "notional", "fee", "bid", "ask")
        table.add_column(col, justify="right" if numeric else "left", overflow="fold")
    for e in entries:
        table.add_row(
            f"{e.timestamp:%Y-%m-%d %H:%M:%S}", e.symbol, e.direction.value, str(e.filled_qty),
            str(e.fill_price), str(e.notional), str(e.fee), _opt(e.bid), _opt(e.ask),
            _opt(e.order_type.value if e.order_type else None),
            ", ".join(f"{n}:{w}" for n, w in e.attribution.items()) or "—", e.order_id, e.correlation_id,
        )
    table.caption = (f"buy value {totals['buy_value']}  ·  sell value {totals['sell_value']}  ·  "
                     f"fees {totals['fees']}")
    return table


@ledger_app.command("show")
def ledger_show(
    source: Annotated[str, typer.Argument(metavar="PATH_OR_URL",
                                          help="A ledger file, or a folder / URL prefix: every ledger under it.")],
    symbol: Annotated[str | None, typer.Option(help="Only fills of this symbol.")] = None,
    strategy: Annotated[str | None, typer.Option(help="Only fills this strategy has a share of.")] = None,
    since: Annotated[str | None, typer.Option(help="From this time on (ISO date or datetime, UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this time (ISO; a date = the whole day, UTC).")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="table, csv or json.")] = Format.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
) -> None:
    """Show the fills of exported trade ledgers (local files, file://, s3://, memory://)."""
    from trading.ledger_store import LedgerFileError, query_entries

    try:
        entries = query_entries(source, symbol=symbol, strategy=strategy,
                                since=parse_bound(since, end=False), until=parse_bound(until, end=True))
    except (FileNotFoundError, LedgerFileError, ValueError, ImportError) as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None
    if fmt is Format.table:
        if output is None:
            console.print(_table(entries, source))
            return
        with output.open("w", encoding="utf-8") as fh:
            Console(file=fh, width=200, color_system=None).print(_table(entries, source))
    else:
        text = _csv_text(entries) if fmt is Format.csv else _json_text(entries)
        if output is None:
            typer.echo(text, nl=False)
            return
        output.write_text(text, encoding="utf-8")
    err.print(f"wrote {len(entries)} fills to {output}")
