"""What Telegram commands may ask of a bot: a small control interface.

`BaseTradingBot` already is a `BotControl` (`request_stop`, `request_emergency_stop`:
thread-safe, return at once). The optional capabilities are separate protocols; a command
whose capability the bot lacks answers that it is not available.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class BotControl(Protocol):
    def request_stop(self, reason: str = "stop") -> None:
        """End after the current bar and save the state."""
        ...

    def request_emergency_stop(self) -> None:
        """Cancel every order, close every position at the next bar's open, halt and stop."""
        ...


@runtime_checkable
class EntryControl(Protocol):
    def request_stop_entries(self) -> None:
        """Refuse new entries; open positions keep their exits."""
        ...

    def request_resume(self) -> None:
        """Allow entries again (after `request_stop_entries` or a halt that needs a resume)."""
        ...


@runtime_checkable
class ForceExitControl(Protocol):
    def request_force_exit(self, symbol: str | None) -> None:
        """Close the position in `symbol` (None: every position) at the next bar; keep running."""
        ...
