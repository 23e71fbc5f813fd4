"""`atf paper` and `atf live`: run a bot through BaseTradingBot (docs/modes.md)."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from trading.exceptions import ATFError

console = Console()
err = Console(stderr=True)


def _fail(exc: BaseException) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code=1)


def _replay_files(values: list[str]) -> str | dict[str, str] | None:
    """Return one file, or symbol -> file from SYMBOL=FILE values."""
    if not values:
        return None
    pairs = [v.split("=", 1) for v in values]
    if len(values) == 1 and len(pairs[0]) == 1:
        return values[0]
    if any(len(p) != 2 for p in pairs):
        raise ATFError("--replay: give one FILE, or SYMBOL=FILE once per symbol")
    return {sym: path for sym, path in pairs}


def _speed(value: str) -> float | None:
    if value.strip().lower() == "max":
        return None
    try:
        speed = float(value)
    except ValueError:
        raise ATFError(f"--speed: '{value}' is not a number or 'max'") from None
    if speed <= 0:
        raise ATFError(f"--speed must be positive or 'max', got {value}")
    return speed


async def _run(bot: Any) -> Any:
    """Run the bot; Ctrl-C (SIGINT) and SIGTERM end it after the current bar."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, bot.request_stop, "interrupted")
        except (NotImplementedError, RuntimeError):  # pragma: no cover - platforms without it
            pass
    return await bot.start_trading()


def _finish(result: Any, json_path: Path | None, outdir: Path) -> None:
    from trading.analytics.output import write_outputs
    from trading.cli import _print_summary

    paths = write_outputs(result, outdir, json_path=json_path)
    _print_summary(result)
    console.print(f"Stopped: {result.diagnostics.get('stop_reason')}  ({result.bars} bars)")
    console.print(f"Report:  {paths['html']}")
    console.print(f"Results: {outdir}  (state: {outdir / 'state.json'})")


def paper(
    config: Annotated[Path, typer.Argument(help="Bot YAML file.")],
    replay: Annotated[
        list[str] | None,
        typer.Option("--replay", help="CSV to stream as if live (SYMBOL=FILE once per symbol for several)."),
    ] = None,
    speed: Annotated[str, typer.Option(help="Replay pace: N times real time, or 'max'.")] = "1",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Folder for report, files and state.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the result JSON here.")] = None,
    cancel_on_stop: Annotated[
        bool, typer.Option("--cancel-on-stop/--keep-orders", help="Cancel working orders when stopped.")
    ] = False,
) -> None:
    """Paper trade: the backtest's strategy and fill model on bars that arrive one by one.

    With --replay the bars come from CSV files; without it, closed bars come live from the
    configured venue (broker.type, or broker.ccxt.exchange / broker.ibkr): see docs/modes.md.
    """
    from trading.bot import BaseTradingBot
    from trading.bus import EventBus
    from trading.config import load_config

    try:
        cfg = load_config(config)
        files = _replay_files(replay or [])
        pace = _speed(speed)
    except (ATFError, ValueError) as exc:
        raise _fail(exc) from None
    outdir = output or Path("results") / f"{cfg.bot.name}-paper-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    what = f"paper replay of {cfg.bot.name} started at speed {speed}" if files is not None else (
        f"paper trading of {cfg.bot.name} on live bars started")
    bus = _banner(EventBus(), what)
    bot = BaseTradingBot(cfg, mode="paper", replay=files, speed=pace, bus=bus, state_dir=outdir,
                         cancel_on_stop=cancel_on_stop)
    try:
        result = asyncio.run(_run(bot))
    except (ATFError, FileNotFoundError, ValueError) as exc:
        raise _fail(exc) from None
    _finish(result, json_path, outdir)


def _banner(bus: Any, what: str) -> Any:
    """Print `what` on BotStarted (checks passed, Ctrl-C handled), flushed: a supervisor, or a
    test, then knows the bot is running."""
    from trading.events import BotStarted

    bus.subscribe(lambda e: print(f"{what}; Ctrl-C stops after the current bar", flush=True),
                  BotStarted, inline=True, name="cli-banner")
    return bus


def live(
    config: Annotated[Path, typer.Argument(help="Bot YAML file (broker.trading_mode: live).")],
    confirm_live: Annotated[bool, typer.Option("--confirm-live", help="Confirm trading with real money.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Folder for report, files and state.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the result JSON here.")] = None,
    cancel_on_stop: Annotated[
        bool, typer.Option("--cancel-on-stop/--keep-orders", help="Cancel working orders at the venue when stopped.")
    ] = False,
) -> None:
    """Trade live with real money; refused unless the config says live and --confirm-live is given.

    Runs until Ctrl-C (or SIGTERM): the bot ends after the current bar, its open positions and
    (unless --cancel-on-stop) working orders stay at the venue, and the result is written.
    """
    from trading.bot import BaseTradingBot, check_live_allowed
    from trading.bus import EventBus
    from trading.config import load_config

    try:
        cfg = load_config(config)
        check_live_allowed(cfg, confirm_live=confirm_live)
    except ATFError as exc:
        raise _fail(exc) from None
    outdir = output or Path("results") / f"{cfg.bot.name}-live-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    bus = _banner(EventBus(), f"live trading of {cfg.bot.name} on {cfg.broker.type} started")
    bot = BaseTradingBot(cfg, mode="live", bus=bus, state_dir=outdir, confirm_live=confirm_live,
                         cancel_on_stop=cancel_on_stop)
    try:
        result = asyncio.run(_run(bot))
    except (ATFError, ValueError) as exc:
        raise _fail(exc) from None
    _finish(result, json_path, outdir)
