"""`atf data download` and `atf data list`: OHLCV history from ccxt exchanges (docs/live.md)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

data_app = typer.Typer(help="Download OHLCV history from exchanges and list the files.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


class Format(str, Enum):
    csv = "csv"
    parquet = "parquet"


def _when(value: str | None, option: str) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        t = pd.Timestamp(value)
    except ValueError:
        raise typer.BadParameter(f"'{value}' is not an ISO date or datetime (e.g. 2024-01-01)", param_hint=option) from None
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _fail(exc: BaseException) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(code=1)


@data_app.command("download")
def download_cmd(
    exchange: Annotated[str, typer.Option(help="ccxt exchange id: binance, binanceusdm (futures), kraken...")] = "binance",
    symbol: Annotated[str, typer.Option(help="Market, e.g. BTC/USDT (or the venue's id BTCUSDT).")] = "BTC/USDT",
    timeframe: Annotated[str, typer.Option(help="Candle length, e.g. 1m, 1h, 1d.")] = "1h",
    since: Annotated[str, typer.Option(help="First candle (ISO date or datetime, UTC).")] = "2024-01-01",
    until: Annotated[str | None, typer.Option(help="Last candle (default: the last closed one).")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="File format.")] = Format.csv,
    out: Annotated[Path, typer.Option(help="Folder of the files.")] = Path("data"),
    api_host: Annotated[str | None, typer.Option(help="Send the requests to this host (proxy, mirror).")] = None,
) -> None:
    """Download closed candles; an existing file gets only the candles after its last bar."""
    from trading.data.ccxt_download import download, open_exchange

    start = _when(since, "--since")
    end = _when(until, "--until")
    assert start is not None
    try:
        client = open_exchange(exchange, api_host=api_host)
    except (ImportError, ValueError) as exc:
        raise _fail(exc) from None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=err, transient=True) as bar:
            task = bar.add_task(f"{exchange} {symbol} {timeframe}", total=None)

            def progress(done: int, expected: int | None) -> None:
                bar.update(task, completed=done, total=expected or None)

            result = download(client, symbol, timeframe, start, end, out=out, fmt=fmt.value, progress=progress)
    except Exception as exc:  # noqa: BLE001 - every failure is reported the same way
        raise _fail(exc) from None
    span = f"{result.first} .. {result.last}" if result.rows else "no bars"
    console.print(f"{result.path}: +{result.added} candles, {result.rows} rows, {span}", highlight=False)


@data_app.command("list")
def list_cmd(
    folder: Annotated[Path, typer.Argument(help="Folder of downloaded files.")] = Path("data"),
) -> None:
    """List downloaded files: symbol, timeframe, first and last bar, rows."""
    from trading.data.ccxt_download import list_files

    if not folder.is_dir():
        raise _fail(FileNotFoundError(f"{folder}: no such folder"))
    files = list_files(folder)
    if not files:
        console.print(f"no downloaded files in {folder}")
        return
    table = Table("file", "exchange", "symbol", "timeframe", "first bar", "last bar", "rows")
    for f in files:
        table.add_row(f.path.name, f.exchange, f.symbol, f.timeframe, str(f.first), str(f.last), str(f.rows))
    console.print(table)
