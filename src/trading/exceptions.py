"""The exception hierarchy of atf: catch `ATFError` for anything the framework raises on purpose."""

from __future__ import annotations


class ATFError(Exception):
    """Base class of every error atf raises on purpose."""


class ConfigError(ATFError, ValueError):
    """A bot configuration is invalid; `errors` lists every problem found."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = list(errors)
        n = len(self.errors)
        head = f"{source}: {n} configuration error{'s' if n != 1 else ''}"
        super().__init__(head + "\n" + "\n".join(f"  - {e}" for e in self.errors))


class DataValidationError(ATFError, ValueError):
    """Market data failed validation; `problems` lists each bad row or value."""

    def __init__(self, source: str, problems: list[str], total: int | None = None) -> None:
        self.source = source
        self.problems = list(problems)
        total = len(self.problems) if total is None else total
        shown = "\n".join(f"  - {p}" for p in self.problems)
        more = f"\n  ... and {total - len(self.problems)} more" if total > len(self.problems) else ""
        super().__init__(f"{source}: {total} data problem{'s' if total != 1 else ''}\n{shown}{more}")


class DatabaseError(ATFError):
    """The database is unreachable, or not at the revision this version needs."""


class StrategyError(ATFError):
    """A strategy or mixin was used in a way its contract forbids."""
