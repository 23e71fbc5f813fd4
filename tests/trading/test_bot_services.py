"""Bot services from the YAML: which run in which mode, where they write, how they start and stop."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

import strategy.base
from tests.trading.test_bot import bot_yaml, write_csv
from trading.bot import BaseTradingBot
from trading.bot_services import ServicePlan, correlation_id, plan_services, resolve_location
from trading.bus import EventBus
from trading.config import parse_config
from trading.data import generate_ohlcv
from trading.engine import load_bars
from trading.events import BotError, BotStopped, Event, OrderEvent, OrderFill, TradeClosed
from trading.ledger import TradeLedger
from trading.order_logger import LOGGER_NAME, read_records


@pytest.fixture(autouse=True)
def _no_order_log_left_open() -> Iterator[None]:
    yield
    handlers = [h for h in logging.getLogger(LOGGER_NAME).handlers if isinstance(h, logging.FileHandler)]
    assert handlers == [], "the bot left its order log open"


@pytest.fixture(scope="module")
def csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bars = generate_ohlcv(400, seed=11, timeframe="1h", start="2021-03-01")
    return write_csv(bars, tmp_path_factory.mktemp("bars") / "aaa.csv")


def config(extra: str = ""):  # type: ignore[no-untyped-def]
    return parse_config(bot_yaml(["AAA"]) + extra)


def run(bot: BaseTradingBot):  # type: ignore[no-untyped-def]
    return asyncio.run(bot.start_trading())


# --------------------------------------------------------------------------- which services


@pytest.mark.parametrize(
    ("mode", "output", "extra", "plan"),
    [
        ("backtest", True, "", ServicePlan()),
        ("paper", True, "", ServicePlan(order_log=True, ledger=True)),
        ("live", True, "", ServicePlan(order_log=True, ledger=True)),
        ("paper", False, "", ServicePlan()),  # no output folder: no files unless asked
        ("backtest", True, "ledger: {enabled: true}\n", ServicePlan(ledger=True)),
        ("paper", True, "logging: {order_log: {enabled: false}}\nledger: {enabled: false}\n", ServicePlan()),
        ("backtest", False, "telegram: {enabled: true, bot_token: t0k3n, chat_id: 1}\n", ServicePlan(notifier=True)),
    ],
)
def test_the_mode_and_the_yaml_decide_which_services_run(mode: str, output: bool, extra: str, plan: ServicePlan) -> None:
    assert plan_services(config(extra), mode, Path("out") if output else None) == plan


def test_relative_locations_are_inside_the_output_folder_and_urls_and_absolute_paths_are_kept() -> None:
    out = Path("/srv/bot-run")
    assert resolve_location("logs", out) == "/srv/bot-run/logs"
    assert resolve_location("./ledgers", out) == "/srv/bot-run/ledgers"
    assert resolve_location("/var/log/atf", out) == "/var/log/atf"
    assert resolve_location("s3://bucket/atf", out) == "s3://bucket/atf"
    assert resolve_location("file:///tmp/x", out) == "file:///tmp/x"
    assert resolve_location("logs", None) == "logs"
    assert correlation_id("rsi", datetime(2024, 5, 6, 14, 0, 1, tzinfo=UTC)) == "rsi-20240506T140001"
    assert len(correlation_id("b" * 80, datetime(2024, 5, 6, tzinfo=UTC))) <= 64


def test_a_backtest_makes_no_bus_and_writes_nothing(csv: Path, tmp_path: Path) -> None:
    cfg = config()
    bot = BaseTradingBot(cfg, frames=load_bars(cfg, data_file=csv), state_dir=tmp_path)
    result = run(bot)
    assert bot.bus is None and result.trades
    assert "ledger" not in result.diagnostics and "order_log" not in result.diagnostics
    assert not (tmp_path / "logs").exists() and not (tmp_path / "ledgers").exists()


# --------------------------------------------------------------------------- a paper run


def test_a_paper_run_logs_every_order_event_and_exports_a_ledger_of_its_fills(csv: Path, tmp_path: Path) -> None:
    bot = BaseTradingBot(config(), mode="paper", replay=csv, speed="max", state_dir=tmp_path)
    assert bot.bus is not None and bot.services.owns_bus
    seen: list[Event] = []
    bot.bus.subscribe(seen.append, inline=True, name="truth")
    started = datetime.now(UTC).replace(microsecond=0)
    result = run(bot)

    # The order log was written on its own thread and is complete when start_trading returns.
    records = list(read_records(tmp_path / "logs"))
    order_events = [e for e in seen if isinstance(e, OrderEvent)]
    closed = [e for e in seen if isinstance(e, TradeClosed)]
    assert order_events and len(records) == len(order_events) + len(closed)
    assert {r["broker"] for r in records} == {"paper"}
    assert result.diagnostics["order_log"] == str(tmp_path / "logs")
    assert bot.bus._closed  # the bot's own bus is closed at the end of the run

    # The ledger: one entry per fill, exported inside the output folder, named by the run.
    info = result.diagnostics["ledger"]
    assert Path(info["url"]).is_file() and Path(info["url"]).is_relative_to(tmp_path / "ledgers" / "trade-ledgers")
    assert info["correlation_id"].startswith("replay_test-")
    assert datetime.strptime(info["correlation_id"].split("-", 1)[1], "%Y%m%dT%H%M%S").replace(tzinfo=UTC) >= started
    ledger = TradeLedger.load(info["url"])
    fills = [e for e in seen if isinstance(e, OrderFill)]
    assert info["entries"] == ledger.total_entries == len(fills) > 0
    assert [(e.order_id, e.filled_qty, e.fill_price, e.fee) for e in ledger.get_ledger()] == [
        (str(f.client_order_id), f.last_qty, f.last_price, f.fee) for f in fills]
    assert all(e.correlation_id == info["correlation_id"] for e in ledger.get_ledger())
    # result.json carries where the files went (diagnostics is plain JSON).
    assert json.loads(json.dumps(result.diagnostics))["ledger"] == info


def test_a_given_bus_is_drained_and_left_open_and_an_unspooled_bus_logs_inline(csv: Path, tmp_path: Path) -> None:
    bus = EventBus()  # no spool folder: the order log cannot queue, so it writes inside publish
    bot = BaseTradingBot(config(), mode="paper", replay=csv, speed="max", bus=bus, state_dir=tmp_path)
    assert bot.bus is bus and not bot.services.owns_bus
    run(bot)
    assert not bus._closed
    assert list(read_records(tmp_path / "logs"))


def test_ledger_attribution_and_an_fsspec_url_come_from_the_yaml(csv: Path, tmp_path: Path) -> None:
    where = f"atf-ledgers-{tmp_path.name}"
    extra = f'ledger: {{export_url: "memory://{where}", attribution: {{"*": {{rsi: 0.75, bb: 0.25}}}}}}\n'
    result = run(BaseTradingBot(config(extra), mode="paper", replay=csv, speed="max", state_dir=tmp_path))
    url = result.diagnostics["ledger"]["url"]
    assert url.startswith((f"memory://{where}/trade-ledgers/", f"memory:///{where}/trade-ledgers/"))
    entries = TradeLedger.load(url).get_ledger()
    assert entries and all(e.attribution == {"rsi": Decimal("0.75"), "bb": Decimal("0.25")} for e in entries)


def test_a_failed_ledger_export_is_logged_and_the_run_still_returns(
    csv: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the export folder should be")
    extra = f"ledger: {{export_url: '{blocker}/ledgers'}}\n"
    with caplog.at_level(logging.ERROR, logger="trading.bot_services"):
        result = run(BaseTradingBot(config(extra), mode="paper", replay=csv, speed="max", state_dir=tmp_path))
    info = result.diagnostics["ledger"]
    assert "url" not in info and info["entries"] > 0 and info["error"]
    assert any("trade ledger export" in r.getMessage() and str(blocker) in r.getMessage() for r in caplog.records)
    assert result.trades and (tmp_path / "state.json").is_file()


def test_a_run_that_fails_publishes_bot_error_and_still_stops_every_service(
    csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_next = strategy.base.BaseStrategy.next

    def next_until_bar_100(self):  # type: ignore[no-untyped-def]
        if len(self) == 100:
            raise RuntimeError("feed broke at bar 100")
        real_next(self)

    monkeypatch.setattr(strategy.base.BaseStrategy, "next", next_until_bar_100)
    bot = BaseTradingBot(config(), mode="paper", replay=csv, speed="max", state_dir=tmp_path)
    seen: list[Event] = []
    assert bot.bus is not None
    bot.bus.subscribe(seen.append, BotError, BotStopped, inline=True, name="truth")
    with pytest.raises(RuntimeError, match="feed broke"):
        run(bot)
    assert [type(e).__name__ for e in seen] == ["BotError", "BotStopped"]
    assert seen[0].error == "RuntimeError: feed broke at bar 100"  # type: ignore[attr-defined]
    assert seen[1].reason == "error"  # type: ignore[attr-defined]
    # The fills up to the failure are in the exported ledger; the order log was closed (fixture).
    [ledger_file] = list((tmp_path / "ledgers").rglob("*.json"))
    assert TradeLedger.load(str(ledger_file)).total_entries > 0
    assert bot.bus._closed
    failed_at = pd.Timestamp(pd.read_csv(csv, index_col=0, parse_dates=True).index[99])
    assert pd.Timestamp(max(r["ts"] for r in read_records(tmp_path / "logs"))) <= failed_at


def test_the_services_example_of_docs_modes_is_a_valid_bot_with_every_service_on() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "modes.md").read_text()
    example = text.split("A bot with every service:")[1].split("```yaml")[1].split("```")[0]
    cfg = parse_config(example, env={"TELEGRAM_BOT_TOKEN": "1:x", "TELEGRAM_CHAT_ID": "5", "SMTP_PASSWORD": "pw"})
    assert plan_services(cfg, "backtest", None) == ServicePlan(order_log=True, ledger=True, notifier=True)
    assert plan_services(cfg, "paper", None).audit and cfg.persistence.url == "sqlite:///atf.db"
