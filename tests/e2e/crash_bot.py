"""A paper bot with its audit trail, for the crash tests: run it, SIGKILL it, run it again.

    python tests/e2e/crash_bot.py --db URL --spool DIR --csv BARS.csv --out result.json \
        [--bars-per-second N] [--batch-delay S] [--state-interval S]

Replays BARS.csv through `BaseTradingBot` in paper mode with the audit trail switched on by
the config's `persistence:` section, then writes what the bot and its broker ended with to
--out. Exit status 3 if crash recovery refused to trade (the message is in the output too).
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--spool", required=True, type=Path)
    ap.add_argument("--csv", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--bars-per-second", type=float, default=None, help="pace (default: max)")
    ap.add_argument("--batch-delay", type=float, default=0.0)
    ap.add_argument("--state-interval", type=float, default=1.0)
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
    bot = BaseTradingBot(cfg, mode="paper", replay=args.csv, speed=speed, bus=bus)
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
    }
    args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
