"""A paper bot with its audit trail, for the crash tests: run it, SIGKILL it, run it again.

    python tests/e2e/crash_bot.py --db URL --spool DIR --csv BARS.csv --out result.json \
        [--bars-per-second N] [--batch-delay S] [--state-interval S] [--actions BAR:KIND[=SYMBOL],...]

Replays BARS.csv through `BaseTradingBot` in paper mode with the audit trail switched on by
the config's `persistence:` section, then writes what the bot and its broker ended with to
--out. `--actions` plays an operator: at the end of bar BAR (the strategy's len) it calls the
bot's request_stop_entries / request_resume / request_force_exit(SYMBOL) /
request_emergency_stop / request_stop, as Telegram would (a force_exit or an emergency_stop waits for a filled position).
Exit status 3 if crash recovery refused to trade (the message is in the output too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from trading.bot import BaseTradingBot
from trading.bus import EventBus
from trading.config import parse_config
from trading.events import Event
from trading.recovery import ReconciliationMismatch

CONFIG = """
bot: {name: crash_bot, symbols: [AAA], timeframe: 1h}
data: {source: synthetic, bars: 300, seed: 7}
strategy:
  name: rsi_bb_atr
  entry_mixins:
    - name: RSIOrBBEntryMixin
      parameters: {e_rsi_period: 14, e_rsi_oversold: 35, e_bb_period: 20, e_bb_dev: 1.8, e_cooldown_bars: 2}
  exit_mixins:
    - name: AdvancedATRExitMixin
      parameters: {x_atr_period: 14, x_sl_multiplier: 1.5, x_tp_multiplier: 2.0, x_trailing_enabled: true}
  position_size: 0.2
broker:
  trading_mode: paper
  cash: 10000.0
  commission_rate: 0.001
risk_management: {stop_loss_required: true}
"""


REQUESTS = {
    "stop_entries": lambda bot, sym: bot.request_stop_entries(),
    "resume": lambda bot, sym: bot.request_resume(),
    "force_exit": lambda bot, sym: bot.request_force_exit(sym),
    "emergency_stop": lambda bot, sym: bot.request_emergency_stop(),
    "stop": lambda bot, sym: bot.request_stop("operator"),
}


def parse_actions(spec: str) -> list[tuple[int, str, str | None]]:
    out = []
    for item in filter(None, spec.split(",")):
        bar, _, what = item.partition(":")
        kind, _, sym = what.partition("=")
        assert kind in REQUESTS, kind
        out.append((int(bar), kind, sym or None))
    return sorted(out, key=lambda a: a[0])


class OperatedBot(BaseTradingBot):
    """The bot with an operator who sends requests at given bars (from the bar thread)."""

    def __init__(self, *args: object, actions: list[tuple[int, str, str | None]], **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.actions = list(actions)

    def _strategy_cls(self):  # type: ignore[no-untyped-def]
        base = super()._strategy_cls()
        bot, todo = self, self.actions

        def on_bar(strat) -> None:  # type: ignore[no-untyped-def]
            base.next(strat)
            while todo and todo[0][0] <= len(strat):
                _bar, kind, sym = todo[0]
                if kind in ("force_exit", "emergency_stop"):  # wait for a filled position
                    books = [b for b in strat.books if sym is None or b.symbol == sym]
                    if not any(b.trade is not None and b.trade.is_filled for b in books):
                        return
                todo.pop(0)
                REQUESTS[kind](bot, sym)

        return type("OperatedStrategy", (base,), {"next": on_bar})


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--spool", required=True, type=Path)
    ap.add_argument("--csv", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--bars-per-second", type=float, default=None, help="pace (default: max)")
    ap.add_argument("--batch-delay", type=float, default=0.0)
    ap.add_argument("--state-interval", type=float, default=1.0)
    ap.add_argument("--actions", default="", help="operator requests: BAR:KIND[=SYMBOL],...")
    args = ap.parse_args()

    persistence = {
        "url": "${CRASH_BOT_DB}",  # the URL (PostgreSQL's has a password) comes from the env
        "spool_dir": str(args.spool.resolve()),
        "batch_delay": args.batch_delay,
        "state_interval": args.state_interval,
        "heartbeat_interval": 0.5,
        "retry_initial": 0.05,
        "retry_max": 0.5,
    }
    cfg = parse_config(
        CONFIG + "persistence: " + json.dumps(persistence), env={"CRASH_BOT_DB": args.db}
    )
    speed = "max" if args.bars_per_second is None else 3600.0 * args.bars_per_second
    bus = EventBus()
    published: Counter[str] = Counter()

    def count(event: Event) -> None:
        published[type(event).__name__] += 1

    bus.subscribe(count, inline=True, name="count")
    bot = OperatedBot(cfg, mode="paper", replay=args.csv, speed=speed, bus=bus,
                      actions=parse_actions(args.actions))
    try:
        result = asyncio.run(bot.start_trading())  # the bot attaches and closes its audit trail
    except ReconciliationMismatch as exc:
        print(exc, file=sys.stderr)
        args.out.write_text(json.dumps({"refused": str(exc)}, indent=1))
        return 3
    session = bot.audit
    assert session is not None, "the persistence section did not switch the audit trail on"
    rec = session.recovery
    out = {
        "stop_reason": result.diagnostics.get("stop_reason"),
        "all_written": result.diagnostics["audit"]["all_written"],
        "refused": None if session.refusal is None else str(session.refusal),
        "recovered": rec is not None,
        "restored_events": 0 if rec is None else len(rec.lost),
        "corrections": []
        if rec is None or rec.result is None
        else [c.reason for c in rec.result.corrections],
        "published": dict(published),
        "health": {k: str(v) for k, v in session.health().items()},
        "positions": {
            p.symbol: [str(p.quantity), str(p.avg_entry_price)]
            for p in bot.position_manager.open_positions()
        },
        "open_orders": sorted(str(o.client_order_id) for o in bot.order_manager.open_orders()),
        "broker_positions": {p.symbol: str(p.quantity) for p in session.book.positions()},
        "trades": len(result.trades),
        "actions": None if getattr(bot._control, "journal", None) is None else bot._control.journal.summary(),
    }
    args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
