"""Telegram commands: authorise the chat, then answer from the query layer or call the bot.

Independent of the Telegram library: `CommandRouter.handle(chat_id, text)` returns the reply,
or None when the chat may not command (refused and logged, no answer).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime

from notification.control import BotControl, EntryControl, ForceExitControl
from trading.status import StatusSnapshot, answer

log = logging.getLogger(__name__)

HELP = """Commands:
/status – bot state
/positions – open positions
/balance – balance and realised pnl
/profit – pnl, win rate, drawdown
/daily [n] – pnl of the last n days
/weekly [n] – pnl of the last n weeks
/trades [n] – last n closed trades
/performance – pnl per symbol
/stop – stop after the current bar
/start – allow entries again
/stopentry – no new entries; exits keep working
/forceexit SYMBOL|all – close positions (now when live, else at the next bar)
/help – this list"""

_QUERIES = {"status": None, "positions": None, "balance": None, "profit": None, "performance": None,
            "daily": 31, "weekly": 12, "trades": 50}  # command -> largest n (None: takes no n)


class CommandRouter:
    def __init__(
        self,
        *,
        status: Callable[[], StatusSnapshot],
        control: BotControl | None,
        allowed: Iterable[int],
        now: Callable[[], datetime],
    ) -> None:
        self._status = status
        self._control = control
        self.allowed = frozenset(int(c) for c in allowed)
        self._now = now
        self.refused = 0

    def handle(self, chat_id: int, text: str, user: str = "") -> str | None:
        """Return the reply to one command message, or None if the chat is not allowed."""
        parts = text.strip().split()
        cmd = parts[0].lstrip("/").split("@", 1)[0].lower() if parts else ""
        args = parts[1:]
        if chat_id not in self.allowed:
            self.refused += 1
            log.warning("refused /%s from chat %s%s: not a configured telegram.chat_id",
                        cmd, chat_id, f" (user {user})" if user else "")
            return None
        log.info("telegram command /%s %s from chat %s", cmd, " ".join(args), chat_id)
        if cmd in _QUERIES:
            return self._query(cmd, args)
        control_cmd = getattr(self, f"_cmd_{cmd}", None)
        if control_cmd is not None:
            return str(control_cmd(args))
        return f"Unknown command /{cmd}.\n\n{HELP}" if cmd != "help" else HELP

    def _query(self, cmd: str, args: list[str]) -> str:
        limit = _QUERIES[cmd]
        n = None
        if args and limit is not None:
            if not args[0].isdigit() or not 1 <= int(args[0]) <= limit:
                return f"Usage: /{cmd} [n], n from 1 to {limit}"
            n = int(args[0])
        return answer(cmd, self._status(), wall=self._now(), n=n)

    def _cmd_stop(self, args: list[str]) -> str:
        if self._control is None:
            return "No bot is attached: nothing to stop."
        self._control.request_stop("telegram /stop")
        return "⏹ Stopping after the current bar; the state is saved."

    def _cmd_start(self, args: list[str]) -> str:
        if not isinstance(self._control, EntryControl):
            return "/start is not available: this bot cannot resume entries yet."
        self._control.request_resume()
        return "▶️ Entries allowed again."

    def _cmd_stopentry(self, args: list[str]) -> str:
        if not isinstance(self._control, EntryControl):
            return "/stopentry is not available: this bot cannot pause entries yet."
        self._control.request_stop_entries()
        return "⏸ No new entries; open positions keep their exits. /start allows entries again."

    def _cmd_forceexit(self, args: list[str]) -> str:
        if len(args) != 1:
            return "Usage: /forceexit SYMBOL or /forceexit all"
        target = args[0]
        if self._control is None:
            return "No bot is attached: nothing to close."
        if target.lower() == "all":
            if isinstance(self._control, ForceExitControl):
                self._control.request_force_exit(None)
                return f"Closing every position {self._when()}."
            self._control.request_emergency_stop()
            return (f"🛑 Emergency stop: cancelling every order and closing every position {self._when()}, "
                    "then stopping (this bot cannot close positions and keep running).")
        open_symbols = {p.symbol.upper(): p.symbol for p in self._status().positions}
        symbol = open_symbols.get(target.upper())
        if symbol is None:
            held = ", ".join(sorted(open_symbols.values())) or "none"
            return f"No open position in {target} (open: {held})."
        if not isinstance(self._control, ForceExitControl):
            return "/forceexit SYMBOL is not available: this bot can only close all (/forceexit all)."
        self._control.request_force_exit(symbol)
        return f"Closing {symbol} {self._when()}."

    def _when(self) -> str:
        """When the bot acts on an exit command: `exits_act` of a bot that says, else the next bar."""
        return str(getattr(self._control, "exits_act", "at the next bar"))
