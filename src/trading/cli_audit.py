"""`atf orders` and `atf trades`: the audit trail in the database, filtered, as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trading.exceptions import ATFError

err = Console(stderr=True)


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


Bot = Annotated[str | None, typer.Option("--bot", help="Only this bot (its name).")]
Symbol = Annotated[str | None, typer.Option("--symbol", help="Only this symbol, e.g. BTC/USDT.")]
Strategy = Annotated[str | None, typer.Option("--strategy", help="Only this strategy.")]
Since = Annotated[
    str | None, typer.Option("--since", help="From this ISO date/time (UTC if naive).")
]
Until = Annotated[
    str | None,
    typer.Option("--until", help="Before this ISO date/time; a bare date includes the day."),
]
Limit = Annotated[int | None, typer.Option("--limit", help="Only the newest N rows.")]
Fmt = Annotated[Format, typer.Option("--format", help="table, csv or json.")]
Output = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Write to FILE (.csv or .json sets the format)."),
]
DbUrl = Annotated[
    str | None,
    typer.Option("--db-url", help="SQLAlchemy URL (default: ATF_DATABASE_URL or atf.db)."),
]

ORDER_COLUMNS = (
    "created_at",
    "bot",
    "symbol",
    "side",
    "order_type",
    "role",
    "quantity",
    "price",
    "stop_price",
    "status",
    "filled_qty",
    "avg_fill_price",
    "fee",
    "client_order_id",
)
TRADE_COLUMNS = (
    "entry_time",
    "exit_time",
    "bot",
    "trade_type",
    "symbol",
    "side",
    "quantity",
    "entry_price",
    "exit_price",
    "pnl",
    "pnl_pct",
    "exit_reason",
    "strategy",
    "status",
)


def parse_when(value: str | None, *, end: bool = False) -> datetime | None:
    """Parse an ISO date or datetime as UTC (naive means UTC); a bare date as `end` is the next midnight."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"'{value}' is not an ISO date or datetime (e.g. 2024-05-01 or 2024-05-01T12:00)"
        ) from None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if end and _is_date(value):
        when += timedelta(days=1)
    return when


def _is_date(value: str) -> bool:
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _plain(value: Any) -> Any:
    """Return a JSON/CSV-ready value: Decimal as text (exact), datetimes in ISO 8601."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return escape(str(_plain(value)))


def render(
    rows: Sequence[Any], fmt: Format, *, kind: str, columns: Sequence[str], view: type
) -> str | Table:
    """Render `view` rows as a rich table (`columns`), or CSV / JSON with every field."""
    if fmt is Format.json:
        doc = {
            "count": len(rows),
            kind: [{k: _plain(v) for k, v in asdict(r).items()} for r in rows],
        }
        return json.dumps(doc, indent=2) + "\n"
    if fmt is Format.csv:
        buf = io.StringIO()
        names = [f.name for f in fields(view)]
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(names)
        for r in rows:
            writer.writerow(
                json.dumps(v) if isinstance(v, (list, dict)) else "" if v is None else _plain(v)
                for v in (getattr(r, n) for n in names)
            )
        return buf.getvalue()
    table = Table(title=f"{len(rows)} {kind}", title_justify="left")
    for c in columns:
        numeric = c in (
            "quantity",
            "price",
            "stop_price",
            "filled_qty",
            "avg_fill_price",
            "fee",
            "entry_price",
            "exit_price",
            "pnl",
            "pnl_pct",
        )
        table.add_column(
            c.replace("_", " "),
            justify="right" if numeric else "left",
            overflow="fold",
            no_wrap=c == "client_order_id" or c.endswith(("_at", "_time")),
        )
    for r in rows:
        table.add_row(*(_cell(getattr(r, c)) for c in columns))
    return table


def _emit(out: str | Table, output: Path | None) -> None:
    if output is None:
        if isinstance(out, Table):
            Console().print(out)  # made now: the width is the terminal's at this moment
        else:
            typer.echo(out, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    assert isinstance(out, str)
    output.write_text(out, encoding="utf-8")
    err.print(f"wrote {output}")


def _run(
    query: Callable[..., list[Any]],
    view: type,
    kind: str,
    columns: Sequence[str],
    fmt: Format,
    output: Path | None,
    db_url: str | None,
    **filters: Any,
) -> None:
    """Call `query` with the CLI's filters (dates parsed) and emit its rows; fail on bad input."""
    from trading.persistence import ensure_database

    if output is not None and fmt is Format.table:
        suffix = output.suffix.lower().lstrip(".")
        if suffix not in ("csv", "json"):
            raise _fail(f"--output {output}: name a .csv or .json file, or pass --format csv|json")
        fmt = Format(suffix)
    try:
        filters["since"] = parse_when(filters["since"])
        filters["until"] = parse_when(filters["until"], end=True)
        engine = ensure_database(db_url)
    except (ATFError, ValueError) as exc:
        raise _fail(str(exc)) from None
    try:
        rows = query(engine, **filters)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    finally:
        engine.dispose()
    _emit(render(rows, fmt, kind=kind, columns=columns, view=view), output)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code=1)


def orders(
    bot: Bot = None,
    symbol: Symbol = None,
    strategy: Strategy = None,
    since: Since = None,
    until: Until = None,
    status: Annotated[
        str | None, typer.Option("--status", help="A status, or open / done.")
    ] = None,
    limit: Limit = None,
    fmt: Fmt = Format.table,
    output: Output = None,
    db_url: DbUrl = None,
) -> None:
    """List orders from the audit trail (paper and live bots), oldest first."""
    from trading.persistence import OrderView, list_orders

    _run(
        list_orders, OrderView, "orders", ORDER_COLUMNS, fmt, output, db_url,
        bot=bot, symbol=symbol, strategy=strategy, since=since, until=until, status=status,
        limit=limit,
    )  # fmt: skip


def trades(
    bot: Bot = None,
    symbol: Symbol = None,
    strategy: Strategy = None,
    since: Since = None,
    until: Until = None,
    status: Annotated[str | None, typer.Option("--status", help="open or closed.")] = None,
    trade_type: Annotated[
        str | None, typer.Option("--type", help="backtest, paper or live.")
    ] = None,
    limit: Limit = None,
    fmt: Fmt = Format.table,
    output: Output = None,
    db_url: DbUrl = None,
) -> None:
    """List round trips (backtest, paper, live); dates filter closed trades by exit time."""
    from trading.persistence import TradeView, list_trades

    _run(
        list_trades, TradeView, "trades", TRADE_COLUMNS, fmt, output, db_url,
        bot=bot, symbol=symbol, strategy=strategy, since=since, until=until, status=status,
        trade_type=trade_type, limit=limit,
    )  # fmt: skip
