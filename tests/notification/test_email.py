"""Email through aiosmtplib against aiosmtpd (STARTTLS + login, self-signed CA), and the report schedule."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from notification.clock import ManualClock
from tests.fakes.smtp import FakeSMTPServer, SilentServer, free_port
from tests.notification.conftest import CHAT, T0, closed, opened, settings
from trading.events import BotStarted, RiskDenied
from trading.orders import OrderSide

USER, PASSWORD = "bot@example.org", "smtp-Pa55word-xyz"
TO = ["trader@example.org", "risk@example.org"]


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[FakeSMTPServer]:
    server = FakeSMTPServer(USER, PASSWORD, tmp_path).start()
    yield server
    server.stop()


def email_cfg(port: int, ca_file: Path | None = None, **kw: Any) -> dict[str, Any]:
    return {"enabled": True, "smtp_host": "127.0.0.1", "smtp_port": port, "username": USER, "password": PASSWORD,
            "to": TO, "ca_file": str(ca_file) if ca_file else None, "timeout": 2.0, "max_attempts": 2,
            "backoff": 0.05, "min_interval": 0.0, **kw}


def parts(msg: Any) -> dict[str, Any]:
    return {p.get_content_type(): p for p in msg.walk() if not p.is_multipart()}


def test_report_email_has_text_html_and_the_equity_png_over_starttls_with_login(smtp, make_notifier) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    n = make_notifier(settings(email=email_cfg(smtp.port, smtp.ca_file)), bot="rsi_bot", initial_cash=10_000.0)
    n.publish(BotStarted(ts=T0, bot="rsi_bot", mode="paper"))
    n.publish(opened("AAA", price="100", qty="10"))
    n.publish(closed("AAA", entry="100", exit="112", qty="10", fees="2"))
    end = T0.replace(hour=0) + timedelta(days=1)
    asyncio.run_coroutine_threadsafe(n.send_report("daily", end), n._loop).result(30)  # type: ignore[arg-type]
    got = smtp.wait_received(2)  # the BotStarted status email, then the report
    report = next(r for r in got if "daily report" in r.message["Subject"])
    assert report.rcpt_tos == TO and report.mail_from == USER and report.login == USER and report.tls
    assert report.message["Subject"] == "[atf] daily report rsi_bot 2024-01-02"
    assert report.message["To"] == ", ".join(TO)
    p = parts(report.message)
    assert set(p) == {"text/plain", "text/html", "image/png"}
    text = p["text/plain"].get_content()
    assert "PnL: +118.00 (+1.18%)" in text and "Trades: 1 (1W/0L)" in text
    assert "<table" in p["text/html"].get_content() and "+118.00 (+1.18%)" in p["text/html"].get_content()
    png = p["image/png"].get_content()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000
    assert p["image/png"].get_filename() == "equity.png"
    status = next(r for r in got if r is not report)
    assert status.message["Subject"] == "[atf rsi_bot] 🚀 rsi_bot started (paper)"
    assert not any("opened" in r.message["Subject"] for r in got)  # position_opened is not an email category


def test_alerts_that_arrive_together_merge_into_one_email(smtp, make_notifier) -> None:  # type: ignore[no-untyped-def]
    n = make_notifier(settings(email=email_cfg(smtp.port, smtp.ca_file, min_interval=1.0)))
    for i in range(5):
        n.publish(RiskDenied(ts=T0, symbol=f"S{i}", side=OrderSide.BUY, quantity=Decimal(1), reason="MAX_POSITIONS"))
    assert n.wait_delivered(20)
    got = smtp.received
    body = "\n".join(parts(r.message)["text/plain"].get_content() for r in got)
    assert [line.split()[0] for line in body.splitlines() if line] == [f"S{i}" for i in range(5)]
    assert len(got) <= 2  # the first goes at once; the rest waited min_interval and went together
    assert got[-1].message["Subject"].startswith("[atf] 4 notifications: S1 ⛔") or len(got) == 1


def test_a_wrong_password_is_dropped_after_the_attempts_and_never_logged(smtp, make_notifier, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    cfg = email_cfg(smtp.port, smtp.ca_file, password="wrong-password-123")
    n = make_notifier(settings(email=cfg))
    n.publish(BotStarted(ts=T0, bot="b", mode="paper"))
    assert n.wait_delivered(20)
    box = n.channels[0].outbox  # type: ignore[attr-defined]
    assert (box.stats.dropped, box.stats.failed_attempts) == (1, 2)
    assert smtp.received == [] and smtp.logins and all(login == (USER, False) for login in smtp.logins)
    assert "SMTPAuthenticationError" in caplog.text
    assert "wrong-password-123" not in caplog.text


@pytest.mark.parametrize("server", ["down", "hanging"])
def test_an_unreachable_or_hanging_smtp_server_costs_the_publisher_nothing(server: str, make_notifier, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING)
    silent = SilentServer().start() if server == "hanging" else None
    port = silent.port if silent else free_port()
    try:
        n = make_notifier(settings(email=email_cfg(port, timeout=0.3, max_attempts=2)))
        t0 = time.perf_counter()
        n.publish(BotStarted(ts=T0, bot="b", mode="paper"))
        assert time.perf_counter() - t0 < 0.25  # a send on this thread would wait its 0.3 s timeout
        assert n.wait_delivered(20)
        box = n.channels[0].outbox  # type: ignore[attr-defined]
        assert (box.stats.delivered, box.stats.dropped, box.stats.failed_attempts) == (0, 1, 2)
        assert "dropped 1 message(s) after 2 failed attempts" in caplog.text
        if silent:
            assert silent.accepted >= 1 and "no answer within 0.3 s" in caplog.text
        assert PASSWORD not in caplog.text
    finally:
        if silent:
            silent.stop()


def test_reports_go_out_at_the_configured_times_on_the_injected_clock(tg, smtp, make_notifier) -> None:  # type: ignore[no-untyped-def]
    monday_0759 = datetime(2024, 1, 8, 7, 59, tzinfo=UTC)
    clock = ManualClock(monday_0759)
    s = settings(tg.base_url, email=email_cfg(smtp.port, smtp.ca_file), system_status="off",
                 performance_reports={"daily": "08:00", "weekly": "MON 08:00"})
    n = make_notifier(s, bot="rsi_bot", initial_cash=1000.0, clock=clock)
    n.publish(opened("AAA", ts=monday_0759 - timedelta(hours=12)))  # Sunday evening
    n.publish(closed("AAA", entry="100", exit="101", qty="1", fees="0", ts=monday_0759 - timedelta(hours=11)))
    n.publish(opened("BBB", ts=monday_0759 - timedelta(hours=2)))  # Monday: in neither report
    n.publish(closed("BBB", entry="100", exit="90", qty="1", fees="0", ts=monday_0759 - timedelta(hours=1)))
    _wait(lambda: clock.sleepers == 1)
    assert n.reports_sent == [] and tg.count("sendPhoto") == 0
    clock.set(datetime(2024, 1, 8, 8, 0, tzinfo=UTC))
    photos = tg.wait_for(lambda sent: sum(x.method == "sendPhoto" for x in sent) == 2)
    reports = [x for x in photos if x.method == "sendPhoto"]
    assert [r.text.splitlines()[0] for r in reports] == [
        "📊 Weekly report · rsi_bot · 2024-01-01 – 2024-01-07", "📊 Daily report · rsi_bot · 2024-01-07"]
    assert all(r.file is not None and r.file.startswith(b"\x89PNG") and r.chat_id == CHAT for r in reports)
    assert "PnL: +1.00 (+0.10%)" in reports[0].text and "PnL: +1.00 (+0.10%)" in reports[1].text
    subjects = [r.message["Subject"] for r in smtp.wait_received(2)]
    assert subjects == ["[atf] weekly report rsi_bot 2024-01-01 – 2024-01-07",
                        "[atf] daily report rsi_bot 2024-01-07"]
    _wait(lambda: clock.sleepers == 1)  # asleep until Tuesday 08:00: nothing more today
    assert n.reports_sent == ["weekly", "daily"]


def _wait(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
