"""Each event's message text, reports, unusual trades, and the config sections."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from notification.config import NotificationSettings, environ_with_dotenv, settings_from_mapping
from notification.messages import render, report_message, unusual_message
from notification.notifier import UnusualPnl, next_reports
from tests.notification.conftest import T0, TOKEN, closed, opened
from trading.events import (
    BotStarted,
    BotStopped,
    Event,
    Halted,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
    Resumed,
    RiskDenied,
    RiskWarning,
    TradeClosed,
)
from trading.orders import ClientOrderId, OrderSide, OrderType
from trading.positions import PositionSide
from trading.status import StatusTracker

COID = ClientOrderId("rsi-BTCUSDT-17")


@dataclass(frozen=True, kw_only=True)
class TradeClosedWithReason(TradeClosed):
    """TradeClosed as it will be once events.py carries the exit reason."""

    exit_reason: str = ""


@dataclass(frozen=True, kw_only=True)
class ConnectionLost(Event):
    venue: str
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class ConnectionRestored(Event):
    venue: str
    downtime: timedelta | None = None


EXPECTED: list[tuple[Event, str, str]] = [
    (opened(), "position_opened", "BTCUSDT 🟢 opened LONG 0.25 @ 42,150.50"),
    (opened("ETHUSDT", price="2250.75", qty="1.5", side=PositionSide.SHORT), "position_opened",
     "ETHUSDT 🔴 opened SHORT 1.5 @ 2,250.75"),
    (opened("DOGEUSDT", price="0.081234", qty="12000"), "position_opened", "DOGEUSDT 🟢 opened LONG 12,000 @ 0.08123"),
    (closed(), "position_closed", "BTCUSDT ✅ closed LONG +232.38 (+2.21%) · 42,150.50 → 43,120.00"),
    (closed("ETHUSDT", entry="2000", exit="1900", qty="2", fees="4"), "position_closed",
     "ETHUSDT ❌ closed LONG -204.00 (-5.10%) · 2,000.00 → 1,900.00"),
    (TradeClosedWithReason(ts=T0, trade_id="SOL-1", symbol="SOLUSDT", side=PositionSide.SHORT, quantity=Decimal(10),
                           entry_price=Decimal("101.5"), exit_price=Decimal(98), realised_pnl=Decimal(35),
                           fees=Decimal("0.4"), exit_reason="take_profit"), "position_closed",
     "SOLUSDT ✅ closed SHORT +34.60 (+3.41%) · take_profit · 101.50 → 98.00"),
    (OrderFilled(ts=T0, client_order_id=COID, symbol="BTCUSDT", side=OrderSide.BUY, last_qty=Decimal("0.25"),
                 last_price=Decimal("42150.5"), fee=Decimal("10.54"), filled_qty=Decimal("0.25"),
                 remaining_qty=Decimal(0), avg_price=Decimal("42150.5")), "order_filled",
     "BTCUSDT 💱 BUY filled 0.25 @ 42,150.50 · fee 10.54"),
    (OrderRejected(ts=T0, client_order_id=COID, symbol="BTCUSDT", reason="INSUFFICIENT_MARGIN"), "order_failed",
     "BTCUSDT ❌ order rejected: INSUFFICIENT_MARGIN · rsi-BTCUSDT-17"),
    (OrderExpired(ts=T0, client_order_id=COID, symbol="BTCUSDT", filled_qty=Decimal("0.1")), "order_failed",
     "BTCUSDT ⌛ order expired · rsi-BTCUSDT-17 · filled 0.1"),
    (RiskDenied(ts=T0, symbol="ETHUSDT", side=OrderSide.BUY, quantity=Decimal(2), reason="MAX_POSITIONS",
                detail="3 open, limit 3"), "risk_alerts", "ETHUSDT ⛔ BUY 2 refused: MAX_POSITIONS — 3 open, limit 3"),
    (RiskWarning(ts=T0, control="MAX_DRAWDOWN", value=Decimal("0.082"), limit=Decimal("0.1"),
                 fraction=Decimal("0.82")), "risk_alerts", "⚠️ MAX_DRAWDOWN at 82% of its limit (0.082 of 0.1)"),
    (RiskWarning(ts=T0, control="MAX_LEVERAGE", value=Decimal("1.7"), limit=Decimal(2), fraction=Decimal("0.85"),
                 symbol="BTCUSDT"), "risk_alerts", "BTCUSDT ⚠️ MAX_LEVERAGE at 85% of its limit (1.7 of 2)"),
    (Halted(ts=T0, reason="MAX_DAILY_LOSS", detail="day loss 0.0512", until=datetime(2024, 1, 3, tzinfo=UTC)),
     "risk_alerts", "🛑 trading halted: MAX_DAILY_LOSS — day loss 0.0512 · until 2024-01-03 00:00 UTC"),
    (Halted(ts=T0, reason="MAX_DRAWDOWN"), "risk_alerts", "🛑 trading halted: MAX_DRAWDOWN · until resumed"),
    (Resumed(ts=T0, reason="NEW_TRADING_DAY"), "risk_alerts", "▶️ trading resumed: NEW_TRADING_DAY"),
    (BotStarted(ts=T0, bot="rsi_bot", mode="paper"), "system_status", "🚀 rsi_bot started (paper)"),
    (BotStopped(ts=T0, bot="rsi_bot", reason="end_of_data"), "system_status", "⏹ rsi_bot stopped: end_of_data"),
    (ConnectionLost(ts=T0, venue="binance", detail="websocket closed"), "system_status",
     "📡 connection lost: binance — websocket closed"),
    (ConnectionRestored(ts=T0, venue="binance", downtime=timedelta(seconds=95)), "system_status",
     "📶 connection restored: binance after 1m35s"),
]


@pytest.mark.parametrize(("event", "category", "text"), EXPECTED, ids=[f"{type(e[0]).__name__}-{i}" for i, e in enumerate(EXPECTED)])
def test_each_event_renders_one_short_line_symbol_first(event: Event, category: str, text: str) -> None:
    assert render(event) == (category, text)
    assert "\n" not in text and len(text) < 120


def test_events_that_are_not_notified_render_nothing() -> None:
    sub = OrderSubmitted(ts=T0, client_order_id=COID, symbol="BTCUSDT", side=OrderSide.BUY,
                         order_type=OrderType.MARKET, quantity=Decimal(1))
    assert render(sub) is None


def test_unusual_trade_is_k_times_the_std_of_the_previous_window() -> None:
    det = UnusualPnl(k=3.0, window=20, min_trades=10)
    assert all(det.check(p) is None for p in [10.0, -10.0] * 5)  # learning: never unusual
    assert det.check(25.0) is None  # 25 < 3 * std (about 10.5)
    sigmas = det.check(-120.0)
    assert sigmas is not None and 9 < sigmas < 12
    text = unusual_message(closed("ETHUSDT", entry="2000", exit="1940", qty="2", fees="0"), sigmas, 12)
    assert text.startswith("ETHUSDT 🚨 unusual LOSS -120.00 (-3.00%) · ") and text.endswith("σ of the last 12 trades")


def test_daily_report_covers_the_period_and_carries_text_html_and_chart() -> None:
    tracker = StatusTracker(bot="rsi_bot", initial_cash=10_000.0)
    tracker.handle(BotStarted(ts=T0 - timedelta(days=2), bot="rsi_bot", mode="paper"))
    tracker.handle(opened("AAA", i=-30, price="100", qty="10"))
    tracker.handle(closed("AAA", i=-30, entry="100", exit="90", qty="10", fees="0"))  # the day before: not counted
    for i, (sym, exit_) in enumerate([("AAA", "110"), ("BBB", "95"), ("AAA", "104")]):
        tracker.handle(opened(sym, i=i, price="100", qty="10"))
        tracker.handle(closed(sym, i=i, entry="100", exit=exit_, qty="10", fees="1"))
    end = T0.replace(hour=0) + timedelta(days=1)
    msg = report_message("daily", tracker.snapshot(), end, chart=b"\x89PNG-chart")
    assert msg.text.splitlines() == [
        "📊 Daily report · rsi_bot · 2024-01-02",
        "PnL: +87.00 (+0.88%)",  # of the 9,900 the day started with
        "Trades: 3 (2W/1L)",
        "Balance: 9,987.00",
        "Open positions: 0",
        "Best / worst: AAA +99.00 / BBB -51.00",
        "Max drawdown: 0.51%",  # 9,999 -> 9,948
    ]
    assert "<table" in (msg.html or "") and "AAA +99.00 / BBB -51.00" in (msg.html or "")
    assert msg.photo == b"\x89PNG-chart" and not msg.mergeable and msg.subject == "[atf] daily report rsi_bot 2024-01-02"


def test_next_reports_follow_the_configured_times_and_timezone() -> None:
    times = NotificationSettings.model_validate(
        {"notifications": {"performance_reports": {"daily": "08:00", "weekly": "MON 08:00"}}}
    ).notifications.performance_reports
    sunday = datetime(2024, 1, 7, 9, 0, tzinfo=UTC)
    assert next_reports(times, sunday) == (["weekly", "daily"], datetime(2024, 1, 8, 8, 0, tzinfo=UTC))
    assert next_reports(times, datetime(2024, 1, 8, 8, 0, tzinfo=UTC)) == (["daily"], datetime(2024, 1, 9, 8, 0, tzinfo=UTC))
    ny = times.model_copy(update={"timezone": "America/New_York", "weekly": None})
    assert next_reports(ny, sunday) == (["daily"], datetime(2024, 1, 7, 13, 0, tzinfo=UTC))


YAML = """
telegram:
  enabled: true
  bot_token: "${TELEGRAM_BOT_TOKEN}"
  chat_id: "${TELEGRAM_CHAT_ID}"
email:
  enabled: true
  smtp_host: smtp.example.org
  smtp_port: 587
  username: bot@example.org
  password: "${SMTP_PASSWORD}"
  to: [me@example.org]
notifications:
  position_opened: on
  position_closed: silent
  order_failed: off
  risk_alerts: on
  system_status: on
  performance_reports: {daily: "08:00", weekly: "MON 08:00"}
"""


def test_config_reads_secrets_from_the_environment_and_never_shows_them() -> None:
    env = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_CHAT_ID": "111, -100222", "SMTP_PASSWORD": "s3cret-pass"}
    s = settings_from_mapping(yaml.safe_load(YAML), env)
    assert s.telegram.bot_token is not None and s.telegram.bot_token.get_secret_value() == TOKEN
    assert s.telegram.chat_id == [111, -100222]
    assert [s.notifications.route(c) for c in ("position_opened", "position_closed", "order_failed")] == \
        ["on", "silent", "off"]
    shown = repr(s) + str(s.model_dump()) + s.model_dump_json()
    assert TOKEN not in shown and "s3cret-pass" not in shown


def test_config_names_an_unset_variable_and_a_misspelt_key() -> None:
    with pytest.raises(ValueError, match=r"telegram.bot_token: \$\{TELEGRAM_BOT_TOKEN\}"):
        settings_from_mapping(yaml.safe_load(YAML), {"TELEGRAM_CHAT_ID": "1", "SMTP_PASSWORD": "x"})
    with pytest.raises(ValidationError, match="position_openned"):
        NotificationSettings.model_validate({"notifications": {"position_openned": "on"}})
    with pytest.raises(ValidationError, match="needs bot_token"):
        NotificationSettings.model_validate({"telegram": {"enabled": True, "chat_id": 1}})


def test_dotenv_file_fills_variables_the_environment_lacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\nSMTP_PASSWORD=from-file\n")
    monkeypatch.setenv("SMTP_PASSWORD", "from-env")
    env = environ_with_dotenv(tmp_path / ".env")
    assert env["TELEGRAM_BOT_TOKEN"] == TOKEN and env["SMTP_PASSWORD"] == "from-env"
