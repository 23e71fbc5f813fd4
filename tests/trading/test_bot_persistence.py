"""`atf paper` with a `persistence:` section: the bot records its own audit trail.

Real SQLite files and a real PostgreSQL server; the CLI runs in-process (typer's CliRunner)
so the test can compare the database with the bot's OrderManager and published events.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import Counter
from dataclasses import fields
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from trading.audit_session import PersistenceSettings
from trading.bot import BaseTradingBot
from trading.bot_services import audit_enabled, audit_settings
from trading.cli import app
from trading.config import parse_config
from trading.config_services import PersistenceSection
from trading.data import generate_ohlcv
from trading.events import Event, OrderEvent, OrderFill
from trading.persistence import (
    event_key,
    list_orders,
    list_trades,
    load_positions,
    make_engine,
    record_reconciliation,
    upgrade_database,
)
from trading.persistence.db import read_connection
from trading.persistence.spool import EventSpool
from trading.persistence.spool_location import default_spool_dir
from trading.persistence.writer import AuditWriter
from trading.positions import Position

REPO = Path(__file__).resolve().parents[2]
CONFIG = (REPO / "config" / "strategies" / "rsi_bb_atr.yaml").read_text()
SYMBOL = parse_config(CONFIG).bot.symbols[0]
TEN_DECIMALS = Decimal("1e-10")  # the scale of the database's quantities


@pytest.fixture(params=("sqlite", "postgresql"))
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with 300 hourly bars; the working directory of the runs."""
    bars = generate_ohlcv(300, seed=5, timeframe="1h", start="2022-06-01")
    bars.rename_axis("datetime").to_csv(tmp_path / "bars.csv")
    bars.iloc[:200].rename_axis("datetime").to_csv(tmp_path / "first.csv")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ATF_DATABASE_URL", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))  # PostgreSQL's spools
    return tmp_path


class Spy:
    """Every bot the CLI builds, with the events published on its bus."""

    def __init__(self) -> None:
        self.bots: list[BaseTradingBot] = []
        self.published: list[Counter[str]] = []

    @property
    def bot(self) -> BaseTradingBot:
        return self.bots[-1]

    @property
    def events(self) -> Counter[str]:
        return self.published[-1]


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    seen = Spy()
    original = BaseTradingBot.__init__

    def init(self: BaseTradingBot, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        counts: Counter[str] = Counter()

        def count(event: Event) -> None:
            counts["order_events"] += isinstance(event, OrderEvent)
            counts["fills"] += isinstance(event, OrderFill)

        assert self.bus is not None
        self.bus.subscribe(count, inline=True, name="test-count")
        seen.bots.append(self)
        seen.published.append(counts)

    monkeypatch.setattr(BaseTradingBot, "__init__", init)
    return seen


def paper(
    work: Path, persistence: str, *, bars: str = "bars.csv", output: str = "out", **env: str
) -> Result:
    """Run `atf paper` on `bars` with the `persistence:` YAML given; return the CLI result."""
    (work / "bot.yaml").write_text(CONFIG + "\npersistence:\n" + persistence)
    (work / "result.json").unlink(missing_ok=True)
    return CliRunner().invoke(
        app,
        [
            "paper",
            "bot.yaml",
            "--replay",
            bars,
            "--speed",
            "max",
            "-o",
            output,
            "--json",
            "result.json",
        ],
        env={"COLUMNS": "200", **env},
    )


def recorded(engine: Engine) -> list[str]:
    with read_connection(engine) as conn:
        return list(conn.execute(text("SELECT event_key FROM order_events")).scalars())


def count(engine: Engine, sql: str) -> int:
    with read_connection(engine) as conn:
        return int(conn.execute(text(sql)).scalar_one())


def test_atf_paper_records_every_order_event_fill_and_trade_the_bot_made(
    work: Path, db_url: str, spy: Spy, caplog: pytest.LogCaptureFixture
) -> None:
    upgrade_database(db_url)
    caplog.set_level(logging.DEBUG, logger="trading")
    run = paper(work, "  url: ${AUDIT_DB}\n  heartbeat_interval: 0.2\n", AUDIT_DB=db_url)
    assert run.exit_code == 0, run.output
    result = json.loads((work / "result.json").read_text())
    engine = make_engine(db_url)

    orders = spy.bot.order_manager.orders()
    assert len(orders) > 10 and count(engine, "SELECT count(*) FROM orders") == len(orders)
    assert {(o.client_order_id, o.status, o.filled_qty) for o in list_orders(engine)} == {
        (str(o.client_order_id), o.status.value, o.filled_qty.quantize(TEN_DECIMALS))
        for o in orders
    }
    events = "SELECT count(*) FROM order_events WHERE kind <> 'reconciliation'"
    assert count(engine, events) == spy.events["order_events"]
    assert count(engine, "SELECT count(*) FROM fills") == spy.events["fills"] > 0
    # every round trip of the result; one still open at the end is an open trade
    trades = list_trades(engine)
    assert len(trades) == len(result["trades"]) >= 3
    closed = sorted(t["exit_reason"] for t in result["trades"] if t["exit_reason"] != "end_of_data")
    assert sorted(str(t.exit_reason) for t in trades if t.status == "closed") == closed
    # each round trip keeps the entry mixins that opened it (the result's entry_tag), open ones too
    assert all(t["entry_tag"] for t in result["trades"])
    assert sorted(str(t.entry_tag) for t in trades) == sorted(t["entry_tag"] for t in result["trades"])
    held = {p.symbol: p.quantity for p in spy.bot.position_manager.open_positions()}
    assert {p.symbol: p.quantity for p in load_positions(engine, 1)} == {
        s: q.quantize(TEN_DECIMALS) for s, q in held.items()
    }
    with read_connection(engine) as conn:
        instance = conn.execute(text("SELECT status, stop_reason FROM bot_instances")).one()
    assert tuple(instance) == ("stopped", "end_of_data")
    audit = result["diagnostics"]["audit"]
    assert audit["all_written"] and audit["bot_instance_id"] == 1 and audit["refused"] is None
    assert audit["quarantined"] == 0 and audit["quarantine"] == audit["spool"] + ".quarantine"
    spool_dir = Path(audit["spool"]).parent  # the database's, not in the output folder
    assert spool_dir == default_spool_dir(db_url) and not spool_dir.is_relative_to(work / "out")
    assert (spool_dir / "audit-rsi_bb_atr-1.broker.json").stat().st_size > 0
    # the URL's password (PostgreSQL's) is in no output, result or log line
    password = make_engine(db_url).url.password
    if password:
        written = run.output + caplog.text + (work / "result.json").read_text()
        assert password not in written and "***" in audit["database"]
    engine.dispose()


@pytest.mark.parametrize("revision", [None, "0001"])
def test_a_database_not_at_head_refuses_to_start_and_says_to_run_atf_db_upgrade(
    work: Path, sqlite_url: str, spy: Spy, revision: str | None
) -> None:
    if revision is not None:
        upgrade_database(sqlite_url, revision)
    run = paper(work, f"  url: {sqlite_url}\n")
    assert run.exit_code == 1
    assert "atf db upgrade" in run.output and "refusing" not in run.output
    assert "started" not in run.output  # no BotStarted: the banner never printed
    assert spy.events["order_events"] == 0 and not (work / "result.json").exists()


def test_resume_false_registers_a_new_bot_instance_each_run(
    work: Path, sqlite_url: str, spy: Spy
) -> None:
    upgrade_database(sqlite_url)
    engine = make_engine(sqlite_url)
    assert paper(work, f"  url: {sqlite_url}\n").exit_code == 0
    orders = count(engine, "SELECT count(*) FROM orders")
    again = paper(work, f"  url: {sqlite_url}\n")  # resumes instance 1: nothing added twice
    assert again.exit_code == 0, again.output
    assert count(engine, "SELECT count(*) FROM bot_instances") == 1
    assert count(engine, "SELECT count(*) FROM orders") == orders
    fresh = paper(work, f"  url: {sqlite_url}\n  resume: false\n")
    assert fresh.exit_code == 0, fresh.output
    assert (
        json.loads((work / "result.json").read_text())["diagnostics"]["audit"]["bot_instance_id"]
        == 2
    )
    assert count(engine, "SELECT count(*) FROM bot_instances") == 2
    by_instance = "SELECT count(*) FROM orders WHERE bot_instance_id = {}"
    assert count(engine, by_instance.format(2)) == count(engine, by_instance.format(1)) == orders
    engine.dispose()


def test_a_reconciliation_mismatch_stops_atf_paper_with_the_list_and_a_failure_status(
    work: Path, sqlite_url: str, spy: Spy
) -> None:
    upgrade_database(sqlite_url)
    engine = make_engine(sqlite_url)
    first = paper(work, f"  url: {sqlite_url}\n", bars="first.csv")  # 200 of the 300 bars
    assert first.exit_code == 0, first.output
    last_order = count(engine, "SELECT count(*) FROM orders")
    # someone changed the recorded position: no event explains it
    record_reconciliation(
        engine,
        1,
        ts=spy.bot.order_manager.orders()[-1].updated_ts,
        reason="MANUAL_EDIT",
        symbol=SYMBOL,
        position=Position(SYMBOL, Decimal(3), Decimal(100)),
    )
    run = paper(work, f"  url: {sqlite_url}\n")  # the restart replays all 300 bars
    assert run.exit_code == 1
    assert "refusing to trade: 1 unexplained difference" in run.output
    assert f"POSITION_MISMATCH: symbol {SYMBOL}" in run.output and "database 3 @ 100" in run.output
    assert "persistence.resume: false" in run.output
    # stopped where the first run ended, before trading on the 100 new bars (which, run
    # to the end, place 3 more orders)
    assert spy.bot.stop_reason == "reconciliation_mismatch"
    assert spy.bot.result is not None and spy.bot.audit is not None
    assert spy.bot.result.diagnostics["audit"]["refused"] == str(spy.bot.audit.refusal)
    assert count(engine, "SELECT count(*) FROM orders") == last_order
    assert not (work / "result.json").exists()
    engine.dispose()


# --------------------------------------------------------------------------- the section


def test_the_section_defaults_are_the_writers_defaults() -> None:
    section = PersistenceSection()
    for f in fields(PersistenceSettings):
        assert getattr(section, f.name) == f.default, f.name


@pytest.mark.parametrize(
    ("yaml", "mode", "env", "expected"),
    [
        ("", "paper", None, False),  # no section, no ATF_DATABASE_URL: no audit trail
        ("persistence:\n", "paper", None, True),  # the section alone switches it on
        ("persistence: {batch_size: 10}\n", "live", None, True),
        ("persistence: {enabled: false}\n", "paper", None, False),
        ("", "paper", "sqlite:///x.db", True),  # ATF_DATABASE_URL names a database
        ("persistence: {enabled: false}\n", "paper", "sqlite:///x.db", False),
        ("persistence: {enabled: true}\n", "backtest", "sqlite:///x.db", False),  # never
    ],
)
def test_the_audit_trail_is_on_for_paper_and_live_with_the_section_or_atf_database_url(
    yaml: str, mode: str, env: str | None, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ATF_DATABASE_URL", raising=False)
    if env is not None:
        monkeypatch.setenv("ATF_DATABASE_URL", env)
    assert audit_enabled(parse_config(CONFIG + "\n" + yaml), mode) is expected


def test_the_spool_dir_never_depends_on_the_output_folder_and_the_url_falls_back_to_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = parse_config(CONFIG + "\ndatabase: {url: 'sqlite:///main.db'}\npersistence:\n")
    settings = audit_settings(cfg, tmp_path / "out")
    assert settings.spool_dir is None  # attach_audit takes the database's own folder
    assert settings.url == "sqlite:///main.db"
    assert default_spool_dir(settings.url) == tmp_path / "main.db-spool"
    relative = parse_config(CONFIG + "\npersistence: {spool_dir: state/spool}\n")
    for output in (tmp_path / "out", tmp_path / "other", None):  # from the working directory
        assert audit_settings(relative, output).spool_dir == str(tmp_path / "state" / "spool")
    absolute = parse_config(CONFIG + f"\npersistence: {{spool_dir: {tmp_path / 's'}}}\n")
    assert audit_settings(absolute, tmp_path / "out").spool_dir == str(tmp_path / "s")
    assert audit_settings(absolute, None).url is None  # then ATF_DATABASE_URL, then atf.db


def test_the_default_spool_dir_of_postgresql_is_in_the_users_state_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql+psycopg://atf:secret@db.example:5433/audit"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_spool_dir(url) == tmp_path / "atf" / "spool" / "postgresql-db.example-5433-audit"
    monkeypatch.delenv("XDG_STATE_HOME")
    home = Path.home() / ".local" / "state" / "atf" / "spool"
    assert default_spool_dir(url).parent == home and "secret" not in str(default_spool_dir(url))
    assert default_spool_dir("sqlite://").parent == home  # in memory: no file to sit beside


def test_a_restart_with_another_output_folder_replays_the_spool_a_crashed_run_left(
    work: Path, sqlite_url: str, spy: Spy, monkeypatch: pytest.MonkeyPatch
) -> None:
    upgrade_database(sqlite_url)
    write = AuditWriter._write
    writes = [0]

    def failing(self: AuditWriter, events: Any) -> None:  # the disk fails after 3 batches
        writes[0] += 1
        if writes[0] > 3:
            raise OperationalError("INSERT", {}, sqlite3.OperationalError("disk I/O error"))
        write(self, events)

    with monkeypatch.context() as patch:
        patch.setattr(AuditWriter, "_write", failing)
        first = paper(work, f"  url: {sqlite_url}\n", bars="first.csv", output="run-1")
    assert first.exit_code == 0, first.output
    crashed = json.loads((work / "result.json").read_text())["diagnostics"]["audit"]
    assert not crashed["all_written"]  # the instance stays "running": a crash, to the restart
    spool = Path(crashed["spool"])
    assert spool.parent == work / "audit.db-spool"
    left = len(EventSpool(spool))
    spooled = {
        event_key(e) for e in EventSpool(spool).peek(left).events if isinstance(e, OrderEvent)
    }
    engine = make_engine(sqlite_url)
    assert left > 0 and not spooled & set(recorded(engine))

    second = paper(work, f"  url: {sqlite_url}\n", bars="first.csv", output="run-2")
    assert second.exit_code == 0, second.output
    audit = json.loads((work / "result.json").read_text())["diagnostics"]["audit"]
    assert audit["all_written"] and audit["resumed"] and audit["refused"] is None
    assert Path(audit["spool"]) == spool and len(EventSpool(spool)) == 0
    assert spy.bot.audit is not None and spy.bot.audit.writer.replayed == left
    assert spooled and spooled <= set(recorded(engine))  # and those events are in the database
    assert not (work / "run-2" / "state").exists()  # nothing looked for inside --output
    engine.dispose()


def test_a_spool_in_the_old_default_folder_inside_output_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = tmp_path / "out" / "state" / "audit-spool"
    old.mkdir(parents=True)
    (old / "audit-rsi_bb_atr-1.jsonl").write_text('{"type": "x"}\n')
    db = tmp_path / "a.db"
    cfg = parse_config(CONFIG + f"\npersistence: {{url: 'sqlite:///{db}'}}\n")
    with caplog.at_level(logging.WARNING, logger="trading.bot_services"):
        audit_settings(cfg, tmp_path / "other")
        assert "spool folder of older atf versions" not in caplog.text
        audit_settings(cfg, tmp_path / "out")
    assert f"1 audit spool file(s) in {old}" in caplog.text
    assert str(tmp_path / "a.db-spool") in caplog.text


def test_a_misspelt_or_invalid_persistence_key_is_a_config_error_naming_it() -> None:
    from trading.exceptions import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_config(
            CONFIG + "\npersistence: {spool_directory: x, retry_initial: 5, retry_max: 1}\n"
        )
    assert "persistence.spool_directory: unknown key" in str(err.value)
    assert "did you mean 'spool_dir'" in str(err.value)
    with pytest.raises(ConfigError, match="retry_max .* must be at least retry_initial"):
        parse_config(CONFIG + "\npersistence: {retry_initial: 5, retry_max: 1}\n")


def test_the_persistence_package_exports_the_audit_api_without_importing_it_eagerly() -> None:
    import subprocess
    import sys

    code = (
        "import sys, trading.persistence as p\n"
        "assert 'trading.audit_session' not in sys.modules\n"
        "from trading.persistence import AuditSession, AuditWriter, EventSpool, "
        "PersistenceSettings, ReconciliationMismatch, attach_audit\n"
        "import trading.audit_session as s, trading.recovery as r\n"
        "assert (AuditSession, attach_audit) == (s.AuditSession, s.attach_audit)\n"
        "assert ReconciliationMismatch is r.ReconciliationMismatch\n"
        "assert set(p.__all__) <= set(dir(p)) | set(p._LAZY)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
