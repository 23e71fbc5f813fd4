"""Outbox rules on their own: backoff, retry_after, drop after N attempts, overflow, merging limits."""

from __future__ import annotations

import asyncio
import itertools
import sys
import time

import pytest

from notification.config import EmailConfig, TelegramConfig
from notification.messages import Message
from notification.outbox import ChannelError, Outbox, RetryLater
from tests.notification.conftest import TOKEN


def msg(text: str, mergeable: bool = True) -> Message:
    return Message(text=text, category="t", mergeable=mergeable)


def outbox(send, **kw) -> Outbox:  # type: ignore[no-untyped-def]
    opts = {"min_interval": 0.0, "timeout": 1.0, "max_attempts": 3, "backoff": 0.05, "backoff_max": 1.0, **kw}
    return Outbox("test", send, **opts)


def test_failures_back_off_doubling_up_to_the_cap_then_the_message_is_dropped() -> None:
    attempts: list[float] = []

    async def send(m: Message) -> None:
        attempts.append(time.monotonic())
        raise ChannelError("refused")

    async def main() -> Outbox:
        box = outbox(send, max_attempts=4, backoff=0.05, backoff_max=0.1)
        box.start()
        box.put(msg("a"))
        await asyncio.wait_for(box.wait_idle(), 5)
        return box

    box = asyncio.run(main())
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(attempts) == 4
    assert all(g >= w - 0.005 for g, w in zip(gaps, [0.05, 0.1, 0.1], strict=True))
    assert gaps[1] >= 1.8 * 0.05  # doubled
    assert (box.stats.failed_attempts, box.stats.dropped, box.stats.delivered) == (4, 1, 0)


def test_retry_after_waits_what_the_server_asked_then_delivers() -> None:
    attempts: list[float] = []

    async def send(m: Message) -> None:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise RetryLater(0.3)

    async def main() -> Outbox:
        box = outbox(send, backoff=0.01)
        box.start()
        box.put(msg("a"))
        await asyncio.wait_for(box.wait_idle(), 5)
        return box

    box = asyncio.run(main())
    assert attempts[1] - attempts[0] >= 0.3
    assert (box.stats.delivered, box.stats.dropped) == (1, 0)


def test_a_full_queue_drops_the_oldest_waiting_message_and_counts_it() -> None:
    gate = None
    sent: list[str] = []

    async def send(m: Message) -> None:
        assert gate is not None
        await gate.wait()
        sent.append(m.text)

    async def main() -> Outbox:
        nonlocal gate
        gate = asyncio.Event()
        box = outbox(send, queue_size=2, timeout=5.0)
        box.start()
        box.put(msg("1", mergeable=False))
        await asyncio.sleep(0)  # "1" is now being sent
        for t in "2345":
            box.put(msg(t, mergeable=False))
        gate.set()
        await asyncio.wait_for(box.wait_idle(), 5)
        return box

    box = asyncio.run(main())
    assert sent == ["1", "4", "5"]
    assert (box.stats.dropped, box.stats.delivered) == (2, 3)


def test_merging_keeps_order_never_splits_a_line_and_leaves_replies_alone() -> None:
    sent: list[Message] = []

    async def send(m: Message) -> None:
        sent.append(m)

    async def main() -> None:
        box = outbox(send, min_interval=0.2, max_chars=25)
        box.start()
        box.put(msg("first"))
        await asyncio.sleep(0)
        for t in ("aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc", "reply"):
            box.put(msg(t, mergeable=t != "reply"))
        box.put(msg("dddddddddd"))
        await asyncio.wait_for(box.wait_idle(), 5)

    asyncio.run(main())
    assert [m.text for m in sent] == ["first", "aaaaaaaaaa\nbbbbbbbbbb", "cccccccccc", "reply", "dddddddddd"]


def test_close_counts_what_was_never_delivered() -> None:
    async def send(m: Message) -> None:
        await asyncio.Event().wait()  # hangs

    async def main() -> Outbox:
        box = outbox(send, timeout=30.0)
        box.start()
        box.put(msg("a", mergeable=False))
        box.put(msg("b", mergeable=False))
        await asyncio.sleep(0.05)
        await box.close()
        return box

    box = asyncio.run(main())
    assert (box.stats.dropped, box.stats.delivered) == (2, 0)


@pytest.mark.parametrize(("module", "channel"), [("telegram", "notification.telegram"), ("aiosmtplib", "notification.email")])
def test_a_missing_notify_extra_is_named(module: str, channel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, f"{module}.ext", None)
    if channel == "notification.telegram":
        from notification.telegram import TelegramChannel

        with pytest.raises(ImportError, match=r"pip install 'atf\[notify\]'"):
            TelegramChannel(TelegramConfig(enabled=True, bot_token=TOKEN, chat_id=[1]))
    else:
        from notification.email import EmailChannel

        with pytest.raises(ImportError, match=r"pip install 'atf\[notify\]'"):
            EmailChannel(EmailConfig(enabled=True, smtp_host="h", to=["a@b.c"], sender="x@y.z"))
