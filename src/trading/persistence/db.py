"""Engines, URL resolution and schema migrations for the atf database.

SQLite (the default) and PostgreSQL are supported. Every SQLite connection runs in
WAL mode with foreign keys on, and every transaction starts with ``BEGIN IMMEDIATE``
so the write lock is taken up front instead of failing half way through a transaction.
SQLite's automatic WAL checkpoint stays on, except on the engine of a running audit writer
(`defer_wal_checkpoints`: its `WalCheckpointer` checkpoints off the commits).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from trading.exceptions import DatabaseError

log = logging.getLogger(__name__)

ENV_DATABASE_URL = "ATF_DATABASE_URL"
ENV_DB_PATH = "ATF_DB_PATH"
DEFAULT_DB_PATH = "./atf.db"
VERSION_TABLE = "alembic_version"

#: Execution option naming the SQLite BEGIN mode of a connection's transactions.
SQLITE_BEGIN_OPTION = "atf_sqlite_begin"
_BEGIN_MODES = frozenset({"DEFERRED", "IMMEDIATE", "EXCLUSIVE"})
#: Seconds a SQLite connection waits for a lock before "database is locked".
SQLITE_BUSY_TIMEOUT = 30.0

_PACKAGE_DIR = Path(__file__).resolve().parent
MIGRATIONS_DIR = _PACKAGE_DIR / "migrations"
ALEMBIC_INI = _PACKAGE_DIR / "alembic.ini"
#: Key of the PostgreSQL advisory lock held while migrating (any constant unique to atf).
_PG_LOCK = 0x61746664_62  # "atfdb"


def default_db_url() -> str:
    """Return ``sqlite:///`` plus ``$ATF_DB_PATH`` (or ``./atf.db``), read now."""
    path = os.environ.get(ENV_DB_PATH) or DEFAULT_DB_PATH
    return "sqlite:///" + os.path.expanduser(path)


#: The default URL as seen when this module was imported; `resolve_db_url` re-reads the env.
DEFAULT_DB_URL = default_db_url()


def resolve_db_url(url: str | None = None) -> str:
    """Return the URL to use: explicit `url`, else ``$ATF_DATABASE_URL``, else the default."""
    if url:
        return url
    return os.environ.get(ENV_DATABASE_URL) or default_db_url()


def safe_url(url: str | URL | None) -> str:
    """Render `url` with its password masked, for logs and error messages."""
    try:
        parsed = make_url(resolve_db_url(url) if not isinstance(url, URL) else url)
    except ArgumentError:
        return "<unparseable database URL>"
    return parsed.render_as_string(hide_password=True)


def make_engine(url: str | None = None, *, connect_args: dict[str, Any] | None = None) -> Engine:
    """Create an engine for `url` (resolved with `resolve_db_url`), tuned for SQLite if needed."""
    resolved = resolve_db_url(url)
    try:
        parsed = make_url(resolved)
    except ArgumentError as exc:
        raise DatabaseError(f"invalid database URL: {safe_url(resolved)}") from exc
    is_sqlite = parsed.get_backend_name() == "sqlite"
    args: dict[str, Any] = dict(connect_args or {})
    if is_sqlite:
        args.setdefault("timeout", SQLITE_BUSY_TIMEOUT)
        _create_sqlite_parent(parsed)
    try:
        engine = create_engine(parsed, connect_args=args, pool_pre_ping=not is_sqlite)
    except ImportError as exc:
        raise DatabaseError(
            f"the driver for {safe_url(parsed)} is not installed ({exc.name}); "
            "for PostgreSQL install the extra: pip install 'atf[postgres]'"
        ) from exc
    except ArgumentError as exc:  # unknown dialect or bad engine argument
        raise DatabaseError(f"cannot use database {safe_url(parsed)}: {exc}") from exc
    if is_sqlite:
        _install_sqlite_hooks(engine, float(args["timeout"]))
    return engine


def _create_sqlite_parent(url: URL) -> None:
    """Create the folder of a file-backed SQLite database."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    Path(database).parent.mkdir(parents=True, exist_ok=True)


def _install_sqlite_hooks(engine: Engine, busy_timeout: float) -> None:
    """Apply the pragmas and take over BEGIN from pysqlite (SQLAlchemy's documented recipe)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop pysqlite from emitting BEGIN (and COMMIT before DDL) on its own.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            _enable_wal(cursor, busy_timeout)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = str(conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "IMMEDIATE")).upper()
        if mode not in _BEGIN_MODES:
            raise ValueError(f"{SQLITE_BEGIN_OPTION} must be one of {sorted(_BEGIN_MODES)}")
        conn.exec_driver_sql(f"BEGIN {mode}")


#: SQLite's default ``wal_autocheckpoint`` (pages): what a connection gets back on undo.
SQLITE_AUTOCHECKPOINT = 1000
_DEFERRED = "atf_checkpoints_deferred"  # in a pool entry's info: the pragmas it runs with
_deferrals: weakref.WeakKeyDictionary[Engine, list[int]] = weakref.WeakKeyDictionary()


def defer_wal_checkpoints(engine: Engine, *, journal_size_limit: int) -> Callable[[], None]:
    """Leave `engine`'s WAL checkpoints to a `WalCheckpointer`; return the undo.

    Every connection `engine` hands out from now on runs ``wal_autocheckpoint=0`` (its
    commits never checkpoint) and ``journal_size_limit`` (the first commit after the log
    restarts truncates a WAL file larger than that back to it).
    Other engines, and other processes, keep SQLite's defaults. Nested calls are counted;
    after the last undo, connections get the defaults back at their next checkout.
    """
    if engine.dialect.name != "sqlite":
        return lambda: None
    state = _deferrals.get(engine)
    if state is None:
        state = _deferrals[engine] = [0, journal_size_limit]

        @event.listens_for(engine, "checkout")
        def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
            wanted = (0, state[1]) if state[0] else (SQLITE_AUTOCHECKPOINT, -1)
            if record.info.get(_DEFERRED, (SQLITE_AUTOCHECKPOINT, -1)) != wanted:
                dbapi_connection.execute(f"PRAGMA wal_autocheckpoint={wanted[0]}").fetchall()
                dbapi_connection.execute(f"PRAGMA journal_size_limit={wanted[1]}").fetchall()
                record.info[_DEFERRED] = wanted

    state[0] += 1
    state[1] = journal_size_limit
    undone = False

    def undo() -> None:
        nonlocal undone
        if not undone:
            undone = True
            state[0] -= 1

    return undo


def _enable_wal(cursor: Any, busy_timeout: float) -> None:
    """Switch the file to WAL, retrying while another connection holds it.

    Changing the journal mode needs an exclusive lock and SQLite does not call its busy
    handler for it, so several processes opening a fresh file at once would otherwise fail
    with "database is locked". WAL is persistent: later connections find it already set.
    """
    deadline = time.monotonic() + busy_timeout
    delay = 0.005
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL").fetchone()  # "memory" for :memory:
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


@contextmanager
def read_connection(engine: Engine) -> Iterator[Connection]:
    """Yield a connection whose SQLite transactions are DEFERRED (reads never take the lock)."""
    with engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN_OPTION: "DEFERRED"})
        yield conn


# --- migrations -----------------------------------------------------------------------------


def alembic_config(connection: Connection | None = None) -> Config:
    """Build the Alembic config from the packaged files (works from an installed wheel)."""
    cfg = Config(str(ALEMBIC_INI)) if ALEMBIC_INI.is_file() else Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """Return the revision this version of atf needs."""
    head = _script().get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise DatabaseError("no migrations found in " + str(MIGRATIONS_DIR))
    return head


@contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """Yield a connection inside one transaction for running migrations.

    On PostgreSQL, a transaction-level advisory lock serialises concurrent migrations.
    On SQLite, foreign keys are switched off for the duration (so batch table rebuilds
    cannot cascade-delete child rows) and verified with ``PRAGMA foreign_key_check``
    before commit; any violation rolls the whole migration back.
    """
    with engine.connect() as conn:
        is_sqlite = conn.dialect.name == "sqlite"
        if is_sqlite:
            _raw_pragma(conn, "PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    # BEGIN IMMEDIATE's counterpart: migrations of one database queue up here,
                    # and Alembic then reads the revision the previous one committed.
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
                yield conn
                if is_sqlite:
                    bad = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if bad:
                        raise DatabaseError(
                            f"migration left {len(bad)} foreign key violation(s), rolled back: "
                            + ", ".join(str(tuple(row)) for row in bad[:5])
                        )
        finally:
            if is_sqlite and not conn.invalidated:
                _raw_pragma(conn, "PRAGMA foreign_keys=ON")


def _raw_pragma(conn: Connection, sql: str) -> None:
    """Run a pragma outside any transaction (foreign_keys is a no-op inside one)."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql)
    finally:
        cursor.close()


def _run_command(engine: Engine, fn: Any, revision: str) -> None:
    try:
        with migration_connection(engine) as conn:
            fn(alembic_config(conn), revision)
    except (CommandError, SQLAlchemyError) as exc:
        message = f"migration of {safe_url(engine.url)} failed: {type(exc).__name__}: {_orig(exc)}"
        raise DatabaseError(_scrub(message, engine.url)) from exc


def upgrade_database(url: str | None = None, revision: str = "head") -> None:
    """Migrate the database forward to `revision` in one transaction."""
    engine = make_engine(url)
    try:
        log.info("upgrading %s to %s", safe_url(engine.url), revision)
        _run_command(engine, command.upgrade, revision)
    finally:
        engine.dispose()


def downgrade_database(url: str | None, revision: str) -> None:
    """Migrate the database back to `revision` (``"base"`` drops every atf table and its data)."""
    engine = make_engine(url)
    try:
        log.warning("downgrading %s to %s", safe_url(engine.url), revision)
        _run_command(engine, command.downgrade, revision)
    finally:
        engine.dispose()


def _current(engine: Engine) -> str | None:
    with read_connection(engine) as conn:
        return MigrationContext.configure(conn).get_current_revision()


def current_revision(url: str | None = None) -> str | None:
    """Return the revision the database is at, or None if it has never been migrated."""
    engine = make_engine(url)
    try:
        return _current(engine)
    except SQLAlchemyError as exc:
        raise DatabaseError(_connect_failure(engine, exc)) from exc
    finally:
        engine.dispose()


def ensure_database(url: str | None = None, *, auto_create: bool = True) -> Engine:
    """Return an engine for a database at head, migrating it first if it is empty.

    Raise `DatabaseError` if the database has tables but is at another revision.
    """
    engine = make_engine(url)
    try:
        _ensure_at_head(engine, auto_create=auto_create)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _ensure_at_head(engine: Engine, *, auto_create: bool) -> None:
    head = head_revision()
    where = safe_url(engine.url)
    try:
        with read_connection(engine) as conn:
            tables = set(inspect(conn).get_table_names()) - {VERSION_TABLE}
            current = MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise DatabaseError(_connect_failure(engine, exc)) from exc
    if current == head:
        return
    if current is None and not tables:
        if not auto_create:
            raise DatabaseError(
                f"database {where} is empty (revision none, atf needs {head}); "
                "run `atf db upgrade` to create the tables"
            )
        log.info("creating the atf schema in %s", where)
        _run_command(engine, command.upgrade, "head")
        return
    if current is not None and not _is_known(current):
        raise DatabaseError(
            f"database {where} is at revision {current}, which this version of atf does not "
            f"know (it needs {head}); it was probably migrated by a newer atf: upgrade atf, "
            "or point ATF_DATABASE_URL at another database (`atf db upgrade` cannot go back)"
        )
    raise DatabaseError(
        f"database {where} is at revision {current or 'none'} but this version of atf needs "
        f"{head}; back it up, then run `atf db upgrade`"
    )


def _is_known(revision: str) -> bool:
    try:
        return _script().get_revision(revision) is not None
    except CommandError:
        return False


def _orig(exc: BaseException) -> object:
    return getattr(exc, "orig", None) or exc


def _scrub(message: str, url: URL) -> str:
    """Mask the URL's password should a driver message echo it."""
    password = url.password
    if password:
        message = message.replace(str(password), "***")
    return message


def _connect_failure(engine: Engine, exc: SQLAlchemyError) -> str:
    message = f"cannot use database {safe_url(engine.url)}: {type(exc).__name__}: {_orig(exc)}"
    return _scrub(message, engine.url)
