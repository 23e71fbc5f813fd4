"""Where a bot's audit spool lives by default: with its database, whatever the run's ``--output``.

A bot restarted after a crash must find the spool (and the paper broker state saved beside
it) that its predecessor left, so the default folder depends on the database alone, one
folder per database (instance ids are per database: two databases must not share one):

* a SQLite file: ``<database file>-spool/`` beside it (``atf.db`` -> ``atf.db-spool/``, like
  SQLite's own ``atf.db-wal`` and ``atf.db-shm``);
* PostgreSQL (any other backend), or SQLite in memory: ``<state>/spool/<database>/`` in the
  user's state folder, ``$XDG_STATE_HOME/atf`` (``~/.local/state/atf`` when unset); the
  folder names the backend, host, port and database, never the user or password.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.engine.url import URL

from trading.persistence.db import resolve_db_url

ENV_STATE_HOME = "XDG_STATE_HOME"


def state_home() -> Path:
    """Return atf's per-user state folder: ``$XDG_STATE_HOME/atf`` or ``~/.local/state/atf``."""
    value = os.environ.get(ENV_STATE_HOME, "")
    # The XDG spec says to ignore a relative value.
    base = Path(value) if value and os.path.isabs(value) else Path.home() / ".local" / "state"
    return base / "atf"


def default_spool_dir(url: str | URL | None = None) -> Path:
    """Return the spool folder of the database `url` (resolved like `resolve_db_url`)."""
    parsed = url if isinstance(url, URL) else make_url(resolve_db_url(url))
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file:")  # or a URI
    if parsed.get_backend_name() == "sqlite" and not in_memory:
        return Path(os.path.abspath(database) + "-spool")
    name = "memory" if database in ("", ":memory:") else database
    parts = (parsed.get_backend_name(), parsed.host or "local", parsed.port, name)
    name = "-".join(str(p) for p in parts if p not in (None, ""))
    return state_home() / "spool" / re.sub(r"[^A-Za-z0-9_.\-]+", "_", name).strip("._")
