"""Keep secrets out of logs, exceptions and reprs.

The Telegram token is part of every Bot API URL, and the HTTP client logs URLs; a SMTP
server may echo what it was sent. Every secret a channel holds is registered here, and
`scrub` replaces it wherever it appears. `install_log_filter` puts a filter on the loggers
of the libraries that see the secrets (their records are rewritten before any handler).
"""

from __future__ import annotations

import logging
import threading
import traceback

MASK = "***"
_secrets: set[str] = set()
_lock = threading.Lock()
LIBRARY_LOGGERS = ("httpx", "httpcore", "telegram", "aiosmtplib", "notification")


def register_secret(value: str | None) -> None:
    """Scrub `value` from every later log record and `scrub` call (ignores short values)."""
    if value and len(value) >= 6:
        with _lock:
            _secrets.add(value)


def scrub(text: object) -> str:
    """Return str(text) with every registered secret replaced by '***'."""
    s = str(text)
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in s:
            s = s.replace(secret, MASK)
    return s


class ScrubFilter(logging.Filter):
    """Rewrite a record's message and traceback with the secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is logged as is
            return True
        record.msg, record.args = scrub(msg), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


_FILTER = ScrubFilter()


def install_log_filter(prefixes: tuple[str, ...] = LIBRARY_LOGGERS) -> None:
    """Attach the filter to the named loggers and to every existing logger below them."""
    names = set(prefixes) | {
        name for name in logging.root.manager.loggerDict
        if any(name == p or name.startswith(p + ".") for p in prefixes)
    }
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
