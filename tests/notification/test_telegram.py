"""Telegram through python-telegram-bot against the fake Bot API: routing, commands, failures, bursts."""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from datetime import timedelta

import pytest

from notification.clock import ManualClock
from notification.commands import HELP
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.notification.conftest import (
    CHAT,
    OTHER_CHAT,
    STRANGER,
    T0,
    TOKEN,
    closed,
    opened,
    settings,
)
from trading.bus import EventBus
from trading.events import BotStarted, OrderRejected
from trading.orders import ClientOrderId
from trading.status import answer

# PTB 22 warns about the int form of retry_after when it builds RetryAfter itself.
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")


class FullControl:
    """A bot with every optional capability; records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def request_stop(self, reason: str = "stop") -> None:
        self.calls.append(("stop", reason))

    def request_emergency_stop(self) -> None:
        self.calls.append(("emergency_stop", None))

    def request_stop_entries(self) -> None:
        self.calls.append(("stop_entries", None))

    def request_resume(self) -> None:
        self.calls.append(("resume", None))

    def request_force_exit(self, symbol: str | None) -> None:
        self.calls.append(("force_exit", symbol))


class BasicControl:
    """What BaseTradingBot offers today: stop and emergency stop."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def request_stop(self, reason: str = "stop") -> None:
        self.calls.append("stop")

    def request_emergency_stop(self) -> None:
        self.calls.append("emergency_stop")


def lines(sent: list) -> list[str]:  # type: ignore[type-arg]
    return [line for s in sent for line in s.text.splitlines()]


def test_routes_on_silent_and_off_per_event_type(tg: FakeTelegramAPI, make_notifier) -> None:  # type: ignore[no-untyped-def]
    n = make_notifier(settings(tg.base_url, chats=(CHAT, OTHER_CHAT), position_closed="silent", order_failed="off"))
    n.publish(BotStarted(ts=T0, bot="rsi_bot", mode="paper"))
    n.publish(OrderRejected(ts=T0, client_order_id=ClientOrderId("x-1"), symbol="BTCUSDT", reason="NO_MARGIN"))
    n.publish(opened())
    loud = tg.wait_for(lambda s: sum("opened" in x.text for x in s) == 2)
    for chat in (CHAT, OTHER_CHAT):
        assert lines([s for s in loud if s.chat_id == chat]) == ["🚀 rsi_bot started (paper)",
                                                                  "BTCUSDT 🟢 opened LONG 0.25 @ 42,150.50"]
    assert not any(s.silent for s in loud)
    n.publish(closed())
    quiet = [s for s in tg.wait_sent(len(loud) + 2)[len(loud):]]
    assert {s.chat_id for s in quiet} == {CHAT, OTHER_CHAT}
    assert all(s.silent and s.text.startswith("BTCUSDT ✅ closed LONG +232.38") for s in quiet)
    assert not any("NO_MARGIN" in s.text for s in tg.sent)


def test_events_a_restart_retells_send_nothing_but_count_in_status_and_unusual_history(
    tg: FakeTelegramAPI, make_notifier  # type: ignore[no-untyped-def]
) -> None:
    n = make_notifier(settings(tg.base_url), bot="rsi_bot", initial_cash=10_000.0)
    bus = EventBus()
    old = [closed("AAA", i=i, entry="100", exit=exit_, qty="1", fees="0")
           for i, exit_ in enumerate(["110", "90"] * 6)]  # +10 / -10: a std of about 10
    retold = {id(e) for e in old}
    n.attach(bus, told=lambda e: id(e) in retold)
    bus.publish(BotStarted(ts=T0, bot="rsi_bot", mode="paper"))
    for e in old:  # what the restarted run re-produces from the first run's record
        bus.publish(e)
    bus.publish(closed("BBB", i=20, entry="100", exit="40", qty="1", fees="0"))  # new, and unusual
    tg.wait_for(lambda s: any("unusual" in x.text for x in s))  # the last message: in order, so
    texts = lines(tg.to(CHAT))  # anything published before it has gone out too
    assert not any(t.startswith("AAA") for t in texts)  # nothing the first run told, again
    assert texts[0] == "🚀 rsi_bot started (paper)" and texts[1].startswith("BBB ❌ closed LONG -60.00")
    # the retold trades are the history that makes -60 unusual (12 seen before it)
    assert texts[2].startswith("BBB 🚨 unusual LOSS -60.00") and texts[2].endswith("of the last 12 trades")
    assert len(texts) == 3
    assert "closed trades: 13" in answer("status", n.status.snapshot(), wall=T0 + timedelta(days=1))


def test_every_command_through_real_polling_agrees_with_the_query_layer(tg: FakeTelegramAPI, make_notifier) -> None:  # type: ignore[no-untyped-def]
    control = FullControl()
    clock = ManualClock(T0 + timedelta(days=1))
    n = make_notifier(settings(tg.base_url, position_opened="off", position_closed="off", system_status="off"),
                      bot="rsi_bot", initial_cash=10_000.0, control=control, clock=clock)
    n.publish(BotStarted(ts=T0, bot="rsi_bot", mode="paper"))
    for i, (sym, exit_) in enumerate([("AAA", "110"), ("BBB", "95"), ("AAA", "104")]):
        n.publish(opened(sym, i=i, price="100", qty="10"))
        n.publish(closed(sym, i=i, entry="100", exit=exit_, qty="10", fees="1"))
    n.publish(opened("CCC", i=5, price="20", qty="50"))
    snap = n.status.snapshot()
    now = clock.now()
    queries = {
        "/status": answer("status", snap, wall=now), "/positions": answer("positions", snap, wall=now),
        "/balance": answer("balance", snap, wall=now), "/profit": answer("profit", snap, wall=now),
        "/daily 3": answer("daily", snap, wall=now, n=3), "/weekly": answer("weekly", snap, wall=now),
        "/trades 2": answer("trades", snap, wall=now, n=2), "/performance": answer("performance", snap, wall=now),
        "/help": HELP,
    }
    for command, expected in queries.items():
        before = len(tg.to(CHAT))
        tg.push_command(CHAT, command)
        assert tg.wait_sent(before + 1, chat_id=CHAT)[-1].text == expected, command
    # The answers say what the trades were, not only that the two fronts agree.
    assert "rsi_bot · paper · running" in queries["/status"] and "closed trades: 3" in queries["/status"]
    assert queries["/positions"] == "Open positions (1):\nCCC LONG 50 @ 20.00 · since 01-02 15:00"
    assert "Profit: +87.00 over 3 trades" in queries["/profit"] and "Win rate: 66.7% (2W/1L)" in queries["/profit"]
    # A paper bot lives at its bars' time: days count back from its last event, not the wall clock.
    assert queries["/daily 3"].splitlines()[1:] == ["2024-01-02      +87.00    3 tr  2W",
                                                    "2024-01-01       +0.00    0 tr",
                                                    "2023-12-31       +0.00    0 tr"]
    assert queries["/trades 2"].splitlines()[1].startswith("AAA LONG +39.00 (+3.90%)")
    assert queries["/performance"].splitlines()[1:] == ["1. AAA +138.00 (2 tr, 100% win)", "2. BBB -51.00 (1 tr, 0% win)"]

    controls = {
        "/stop": ("⏹ Stopping after the current bar", ("stop", "telegram /stop")),
        "/stopentry": ("⏸ No new entries", ("stop_entries", None)),
        "/start": ("▶️ Entries allowed again.", ("resume", None)),
        "/forceexit ccc": ("Closing CCC at the next bar.", ("force_exit", "CCC")),
        "/forceexit all": ("Closing every position at the next bar.", ("force_exit", None)),
    }
    for command, (reply, call) in controls.items():
        before = len(tg.to(CHAT))
        tg.push_command(CHAT, command)
        assert tg.wait_sent(before + 1, chat_id=CHAT)[-1].text.startswith(reply), command
        assert control.calls[-1] == call
    tg.push_command(CHAT, "/forceexit DOGE")
    assert tg.wait_sent(len(tg.to(CHAT)) + 1, chat_id=CHAT)[-1].text == "No open position in DOGE (open: CCC)."
    assert len(control.calls) == len(controls)


def test_commands_the_bot_cannot_do_yet_say_so_and_forceexit_all_is_an_emergency_stop(tg, make_notifier) -> None:  # type: ignore[no-untyped-def]
    control = BasicControl()
    n = make_notifier(settings(tg.base_url), control=control)
    n.publish(opened("AAA"))
    tg.wait_sent(1)
    replies = {}
    for command in ("/stopentry", "/start", "/forceexit AAA", "/forceexit all", "/trades 999", "/nonsense"):
        before = len(tg.to(CHAT))
        tg.push_command(CHAT, command)
        replies[command] = tg.wait_sent(before + 1, chat_id=CHAT)[-1].text
    assert replies["/stopentry"] == "/stopentry is not available: this bot cannot pause entries yet."
    assert replies["/start"] == "/start is not available: this bot cannot resume entries yet."
    assert replies["/forceexit AAA"].startswith("/forceexit SYMBOL is not available")
    assert replies["/forceexit all"].startswith("🛑 Emergency stop")
    assert replies["/trades 999"] == "Usage: /trades [n], n from 1 to 50"
    assert replies["/nonsense"].startswith("Unknown command /nonsense.")
    assert control.calls == ["emergency_stop"]


def test_a_chat_that_is_not_configured_is_refused_and_logged(tg, make_notifier, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO)
    control = FullControl()
    n = make_notifier(settings(tg.base_url), control=control)
    tg.push_command(STRANGER, "/stop")
    tg.push_command(STRANGER, "/balance")
    tg.push_command(CHAT, "/help")  # updates are handled in order: once this is answered, the others were seen
    assert tg.wait_sent(1)[0].chat_id == CHAT
    assert tg.to(STRANGER) == [] and control.calls == []
    assert n.router.refused == 2
    refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "refused" in r.getMessage()]
    assert refusals == [f"refused /stop from chat {STRANGER} (user u{STRANGER}): not a configured telegram.chat_id",
                        f"refused /balance from chat {STRANGER} (user u{STRANGER}): not a configured telegram.chat_id"]


def test_a_429_waits_retry_after_then_delivers(tg, make_notifier) -> None:  # type: ignore[no-untyped-def]
    tg.too_many_requests(1, retry_after=1)
    n = make_notifier(settings(tg.base_url))
    start = time.monotonic()
    n.publish(opened())
    sent = tg.wait_sent(1)
    assert sent[0].text == "BTCUSDT 🟢 opened LONG 0.25 @ 42,150.50"
    assert sent[0].at - start >= 0.95  # waited what the server asked
    assert n.wait_delivered(5) and n.channels[0].outboxes[CHAT].stats.failed_attempts == 1  # type: ignore[attr-defined]


def test_server_down_messages_are_dropped_after_the_attempts_and_the_token_never_shows(make_notifier, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    dead = FakeTelegramAPI(TOKEN).start()
    url = dead.base_url
    dead.stop()  # the port now refuses connections
    n = make_notifier(settings(url, attempts=3, backoff=0.05))
    t0 = time.perf_counter()
    for i in range(3):
        n.publish(opened(f"S{i}", i=i))
    assert time.perf_counter() - t0 < 0.25  # publishing does not wait for the dead server
    assert n.wait_delivered(10)
    stats = n.channels[0].outboxes[CHAT].stats  # type: ignore[attr-defined]
    # Messages queued while a send is failing go out together: usually all three in one send,
    # but under load the first can leave alone. Each send is tried exactly 3 times, then dropped.
    drops = [re.search(r"dropped (\d+) message\(s\) after 3 failed attempts", r.getMessage())
             for r in caplog.records]
    sizes = [int(m.group(1)) for m in drops if m]
    assert sum(sizes) == 3 and sizes, caplog.text[-2000:]
    assert (stats.delivered, stats.dropped, stats.failed_attempts) == (0, 3, 3 * len(sizes))
    assert any("telegram not reachable" in r.getMessage() for r in caplog.records)
    assert TOKEN not in caplog.text and TOKEN.split(":")[1] not in caplog.text


def test_a_rejected_token_is_logged_scrubbed(make_notifier, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    other = FakeTelegramAPI("999:another-token-the-server-expects").start()
    try:
        n = make_notifier(settings(other.base_url, attempts=1))
        n.publish(opened())
        assert n.wait_delivered(10)
        deadline = time.monotonic() + 10
        while not any("telegram not reachable" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        other.stop()
    assert "rejected" in caplog.text or "Unauthorized" in caplog.text
    assert TOKEN not in caplog.text and TOKEN.split(":")[1] not in caplog.text
    assert TOKEN not in repr(n.channels[0]) and TOKEN not in repr(n.settings)


def test_a_hanging_server_times_out_drops_and_recovers_when_it_answers_again(tg, make_notifier, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING)
    tg.hang()
    n = make_notifier(settings(tg.base_url, timeout=0.3, attempts=2, backoff=0.05))
    t0 = time.perf_counter()
    n.publish(opened("AAA"))
    assert time.perf_counter() - t0 < 0.25  # a send on this thread would wait its 0.3 s timeout
    assert n.wait_delivered(10)
    box = n.channels[0].outboxes[CHAT]  # type: ignore[attr-defined]
    assert box.stats.dropped == 1 and box.stats.failed_attempts == 2
    assert any("no answer within 0.3 s" in r.getMessage() for r in caplog.records)
    tg.hang(False)
    n.publish(opened("BBB"))
    assert [s.text for s in tg.wait_sent(1)] == ["BBB 🟢 opened LONG 0.25 @ 42,150.50"]


def test_a_burst_of_100_events_is_merged_rate_limited_and_nothing_is_lost(tg, make_notifier) -> None:  # type: ignore[no-untyped-def]
    rate = 5.0
    n = make_notifier(settings(tg.base_url, rate=rate, chats=(CHAT, OTHER_CHAT)))
    symbols = [f"S{i:03d}" for i in range(100)]

    def burst() -> None:  # from another thread, as the bar thread publishes
        for i, sym in enumerate(symbols):
            n.publish(closed(sym, i=i, entry="100", exit="101", qty="1", fees="0"))

    t0 = time.perf_counter()
    th = threading.Thread(target=burst)
    th.start()
    th.join()
    publish_time = time.perf_counter() - t0
    assert n.wait_delivered(30)
    for chat in (CHAT, OTHER_CHAT):
        sent = tg.to(chat)
        got = [line.split()[0] for line in lines(sent)]
        assert got == symbols  # every event once, in order
        assert all(len(s.text) <= 4000 for s in sent)
        assert 2 <= len(sent) <= 10  # merged: a few sends, not 100
        gaps = [b.at - a.at for a, b in itertools.pairwise(sent)]
        assert min(gaps) >= 0.8 / rate  # at most `rate` messages per second per chat
        stats = n.channels[0].outboxes[chat].stats  # type: ignore[attr-defined]
        assert (stats.delivered, stats.dropped, stats.sends) == (100, 0, len(sent))
    assert publish_time < 0.5
    assert n.status.snapshot().realised_pnl == pytest.approx(100.0)
