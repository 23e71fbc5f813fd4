"""`atf db current` and `atf db upgrade` as a user runs them, on SQLite and PostgreSQL."""

from __future__ import annotations

from urllib.parse import urlsplit

from typer.testing import CliRunner

from trading.cli import app
from trading.persistence import head_revision

from .test_migrations import tables


def atf(*args: str, code: int = 0) -> str:
    out = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})
    assert out.exit_code == code, out.output
    return " ".join(out.output.split())  # rich wraps long lines; compare words


def test_current_then_upgrade_step_by_step_to_head(db_url: str) -> None:
    head = head_revision()
    assert head != "0001"  # the step-by-step path below needs an older revision
    out = atf("db", "current", "--db-url", db_url)
    assert f"current (empty), required {head} — needs `atf db upgrade`" in out
    assert "orders" not in tables(db_url)  # `current` only reads

    out = atf("db", "upgrade", "--db-url", db_url, "--revision", "0001")
    assert out.endswith("is at revision 0001")
    assert "backtest_runs" in tables(db_url) and "orders" not in tables(db_url)
    assert f"current 0001, required {head} — needs `atf db upgrade`" in atf(
        "db", "current", "--db-url", db_url
    )

    assert atf("db", "upgrade", "--db-url", db_url).endswith(f"is at revision {head}")
    assert {"orders", "order_events", "fills", "trades", "risk_events"} <= tables(db_url)
    assert f"current {head}, required {head} — up to date" in atf(
        "db", "current", "--db-url", db_url
    )
    # Upgrading a database at head is a no-op, not an error.
    assert atf("db", "upgrade", "--db-url", db_url).endswith(f"is at revision {head}")


def test_the_password_of_the_url_never_reaches_the_output(db_url: str) -> None:
    password = urlsplit(db_url).password
    for args in (("current",), ("upgrade",), ("current",)):
        out = atf("db", *args, "--db-url", db_url)
        if password:  # PostgreSQL: the URL carries one
            assert password not in out and "***" in out


def test_an_unreachable_database_is_a_clear_error_with_exit_code_1(tmp_path: object) -> None:
    url = "postgresql+psycopg://atf:s3cret-pw@127.0.0.1:1/nowhere"
    for args in (("current",), ("upgrade",)):
        out = atf("db", *args, "--db-url", url, code=1)
        assert out.startswith("error:") and "127.0.0.1:1" in out
        assert "s3cret-pw" not in out
