"""Schema migrations, revision checks and URL handling."""

from __future__ import annotations

import logging
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from trading.exceptions import DatabaseError
from trading.persistence import (
    Base,
    current_revision,
    db,
    default_db_url,
    downgrade_database,
    ensure_database,
    head_revision,
    make_engine,
    resolve_db_url,
    save_backtest,
    upgrade_database,
)
from trading.persistence.db import ALEMBIC_INI, MIGRATIONS_DIR, alembic_config

from .test_repository import make_result, make_trade

ATF_TABLES = {
    "backtest_runs",
    "trades",
    "bot_instances",
    "orders",
    "order_events",
    "fills",
    "positions",
    "equity_snapshots",
    "risk_events",
}
HEAD = "0002"


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def run_sql(url: str, *statements: str) -> None:
    """Run raw SQL behind atf's back (a user's manual change, a stray table...)."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            for sql in statements:
                conn.execute(text(sql))
    finally:
        engine.dispose()


def scalar(url: str, sql: str) -> object:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def test_fresh_database_is_migrated_to_head(db_url: str) -> None:
    assert current_revision(db_url) is None
    engine = ensure_database(db_url)
    engine.dispose()
    assert current_revision(db_url) == head_revision() == HEAD
    assert ATF_TABLES <= tables(db_url)
    # A second call on an up-to-date database is a no-op.
    ensure_database(db_url).dispose()
    assert current_revision(db_url) == head_revision()


def test_auto_create_off_refuses_an_empty_database(db_url: str) -> None:
    with pytest.raises(DatabaseError, match="atf db upgrade"):
        ensure_database(db_url, auto_create=False)
    assert not ATF_TABLES & tables(db_url)


def test_models_match_the_migrations(db_url: str) -> None:
    """Autogenerate finds nothing to do: models.py and the revisions describe the same schema."""
    engine = ensure_database(db_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, Base.metadata) == []
    finally:
        engine.dispose()


def test_older_revision_raises_naming_upgrade_command(db_url: str) -> None:
    upgrade_database(db_url, "base")
    run_sql(db_url, "CREATE TABLE stray (id INTEGER PRIMARY KEY)")
    with pytest.raises(DatabaseError) as info:
        ensure_database(db_url)
    message = str(info.value)
    assert "atf db upgrade" in message
    assert "revision none" in message
    assert head_revision() in message
    assert not ATF_TABLES & tables(db_url)  # nothing was migrated behind the user's back
    upgrade_database(db_url)
    ensure_database(db_url).dispose()


NEXT_REVISION = '''
"""test-only revision: rebuild backtest_runs (SQLite batch mode) to add a column"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _recreate():
    # A rebuild is SQLite's way; PostgreSQL alters in place (and cannot drop a referenced table).
    return "always" if op.get_bind().dialect.name == "sqlite" else "auto"


def upgrade():
    with op.batch_alter_table("backtest_runs", recreate=_recreate()) as batch:
        batch.add_column(sa.Column("notes", sa.String(), nullable=True))


def downgrade():
    with op.batch_alter_table("backtest_runs", recreate=_recreate()) as batch:
        batch.drop_column("notes")
'''


ORPHAN_REVISION = '''
"""test-only revision: a buggy data migration that leaves a trade pointing at no run"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.execute(
        "INSERT INTO trades (run_id, trade_type, symbol, side, entry_time, exit_time, entry_price,"
        " exit_price, quantity, gross_pnl, fees, pnl) VALUES (999, 'backtest', 'X', 'long',"
        " '2024-01-01 00:00:00', '2024-01-01 00:00:00', '1', '1', '1', '0', '0', '0')"
    )


def downgrade():
    pass
'''


def ship_next_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    """Pretend a newer atf ships `source` as revision 0003."""
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    (migrations / "versions" / "0003_next.py").write_text(source)
    monkeypatch.setattr(db, "MIGRATIONS_DIR", migrations)


@pytest.fixture
def newer_atf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Pretend a newer atf ships revision 0003, which rebuilds the parent table of trades."""
    ship_next_revision(tmp_path, monkeypatch, NEXT_REVISION)
    return "0003"


def test_older_known_revision_raises_then_upgrade_keeps_every_row(
    db_url: str, newer_atf: str
) -> None:
    upgrade_database(db_url, HEAD)
    engine = make_engine(db_url)
    try:
        save_backtest(engine, make_result([make_trade(i) for i in range(1, 4)]))
    finally:
        engine.dispose()

    with pytest.raises(DatabaseError) as info:
        ensure_database(db_url)
    message = str(info.value)
    assert f"revision {HEAD}" in message and "needs 0003" in message
    assert "atf db upgrade" in message

    upgrade_database(db_url)
    assert current_revision(db_url) == newer_atf
    engine = ensure_database(db_url)
    try:
        with engine.connect() as conn:
            # Rebuilding backtest_runs must not cascade-delete its trades (SQLite drops the
            # old table with an implicit DELETE when foreign keys are on).
            assert conn.execute(text("SELECT count(*) FROM trades")).scalar() == 3
            assert conn.execute(text("SELECT count(notes) FROM backtest_runs")).scalar() == 0
            if conn.dialect.name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        downgrade_database(db_url, HEAD)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM trades")).scalar() == 3
    finally:
        engine.dispose()


def test_migration_leaving_dangling_foreign_keys_is_rolled_back(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade_database(db_url)
    ship_next_revision(tmp_path, monkeypatch, ORPHAN_REVISION)
    # SQLite finds it at the final foreign_key_check, PostgreSQL at the INSERT itself.
    with pytest.raises(DatabaseError, match="(?i)foreign key"):
        upgrade_database(db_url)
    assert current_revision(db_url) == HEAD
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM trades")).scalar() == 0
    finally:
        engine.dispose()


def test_unknown_newer_revision_raises(db_url: str) -> None:
    upgrade_database(db_url)
    run_sql(db_url, "UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(DatabaseError, match="9999.*newer atf"):
        ensure_database(db_url)


def test_downgrade_to_base_and_upgrade_again(db_url: str) -> None:
    upgrade_database(db_url)
    downgrade_database(db_url, "base")
    assert current_revision(db_url) is None
    assert not ATF_TABLES & tables(db_url)
    upgrade_database(db_url)
    assert current_revision(db_url) == head_revision()
    engine = ensure_database(db_url)  # only alembic_version was left: treated as empty
    try:
        run_id = save_backtest(engine, make_result([make_trade(1)]))
        assert run_id == 1
    finally:
        engine.dispose()


def test_failed_migration_rolls_back_completely(db_url: str) -> None:
    """DDL is transactional: a clash half way leaves no table and no revision behind."""
    run_sql(db_url, "CREATE TABLE trades (id INTEGER PRIMARY KEY)")  # clashes with the 2nd table
    with pytest.raises(DatabaseError, match="migration"):
        upgrade_database(db_url)
    assert tables(db_url) == {"trades"}
    assert current_revision(db_url) is None


def test_migrations_keep_existing_rows(db_url: str) -> None:
    engine = ensure_database(db_url)
    try:
        save_backtest(engine, make_result([make_trade(1), make_trade(2)]))
    finally:
        engine.dispose()
    upgrade_database(db_url)  # already at head: nothing happens, nothing is lost
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM trades")).scalar() == 2
    finally:
        engine.dispose()


def test_single_linear_history_ships_with_the_package() -> None:
    assert ALEMBIC_INI.is_file()
    assert (MIGRATIONS_DIR / "env.py").is_file()
    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [head_revision()]
    revisions = list(script.walk_revisions())
    assert revisions[-1].down_revision is None
    for rev in revisions:
        assert Path(rev.path).name.startswith(rev.revision + "_")


def test_upgrade_leaves_application_logging_alone(db_url: str) -> None:
    app_logger = logging.getLogger("atf.test.app")
    root_handlers = list(logging.getLogger().handlers)
    upgrade_database(db_url)
    assert not app_logger.disabled
    assert logging.getLogger().handlers == root_handlers


# --- URLs ---------------------------------------------------------------------------------------


def test_url_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ATF_DATABASE_URL", raising=False)
    monkeypatch.delenv("ATF_DB_PATH", raising=False)
    assert resolve_db_url(None) == "sqlite:///./atf.db"
    monkeypatch.setenv("ATF_DB_PATH", str(tmp_path / "x.db"))
    assert resolve_db_url(None) == f"sqlite:///{tmp_path / 'x.db'}" == default_db_url()
    monkeypatch.setenv("ATF_DATABASE_URL", "postgresql+psycopg://u@db/atf")
    assert resolve_db_url(None) == "postgresql+psycopg://u@db/atf"
    assert resolve_db_url("sqlite:///explicit.db") == "sqlite:///explicit.db"


def test_env_url_is_used_by_ensure_database(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    monkeypatch.setenv("ATF_DATABASE_URL", db_url)
    ensure_database().dispose()
    assert current_revision(db_url) == head_revision()


POSTGRES_URL = "postgresql+psycopg://trader:hunter2-s3cret@127.0.0.1:1/atf?connect_timeout=2"


@pytest.mark.parametrize(
    "call",
    [
        lambda: ensure_database(POSTGRES_URL),
        lambda: current_revision(POSTGRES_URL),
        lambda: upgrade_database(POSTGRES_URL),
    ],
    ids=["ensure_database", "current_revision", "upgrade_database"],
)
def test_password_never_appears_in_errors(call: object) -> None:
    # Without psycopg the driver is missing; with it, nothing listens on port 1.
    with pytest.raises(DatabaseError) as info:
        call()  # type: ignore[operator]
    err = info.value
    texts = [str(err), repr(err)]
    cause = err.__cause__
    while cause is not None:
        texts.append(str(cause))
        cause = cause.__cause__
    assert all("hunter2-s3cret" not in t for t in texts)
    assert "trader:***@127.0.0.1" in str(err)


def test_concurrent_auto_create_is_safe(db_url: str) -> None:
    """Several bots starting at once on a fresh file: one migrates, the others wait and see head."""
    barrier = threading.Barrier(4)

    def start() -> str | None:
        barrier.wait()
        engine = ensure_database(db_url)
        engine.dispose()
        return current_revision(db_url)

    with ThreadPoolExecutor(max_workers=4) as pool:
        revisions = list(pool.map(lambda _: start(), range(4)))
    assert revisions == [head_revision()] * 4
