"""EventBus: publish never waits or raises; slow and failing consumers are isolated; overflow is spooled."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from trading.bus import EventBus
from trading.events import BotStarted, BotStopped, Event, Resumed

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def ev(i: int) -> Resumed:
    return Resumed(ts=T0 + timedelta(seconds=i), reason=f"r{i}")


def reasons(events: list[Event]) -> list[str]:
    return [e.reason for e in events]  # type: ignore[attr-defined]


def test_publish_returns_before_a_consumer_sleeping_one_second_per_event_has_processed(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        bus = EventBus(tmp_path)
        inline: list[Event] = []
        slow_seen: list[Event] = []
        fast_seen: list[Event] = []
        fast_done = asyncio.Event()

        def slow(e: Event) -> None:
            time.sleep(1)
            slow_seen.append(e)

        async def fast(e: Event) -> None:
            fast_seen.append(e)
            if len(fast_seen) == 2:
                fast_done.set()

        slow_sub = bus.subscribe(slow, name="slow")
        bus.subscribe(fast, name="fast")
        bus.subscribe(inline.append, inline=True, name="inline")
        await bus.start()
        bus.publish(ev(1))
        bus.publish(ev(2))
        # Both publish calls are back; the slow consumer has not finished even one event.
        assert reasons(inline) == ["r1", "r2"]
        assert slow_sub.processed == 0 and slow_seen == []
        # The fast consumer is not held up behind the slow one.
        await asyncio.wait_for(fast_done.wait(), 5)
        assert reasons(fast_seen) == ["r1", "r2"]
        assert len(slow_seen) < 2
        await bus.drain()
        assert reasons(slow_seen) == ["r1", "r2"] and slow_sub.processed == 2
        await bus.close()

    asyncio.run(main())


def test_a_failing_handler_neither_raises_into_publish_nor_starves_other_subscribers(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        bus = EventBus(tmp_path)
        got_inline: list[Event] = []
        got_queued: list[Event] = []

        def bad_inline(e: Event) -> None:
            raise RuntimeError("inline boom")

        async def bad_queued(e: Event) -> None:
            raise RuntimeError("queued boom")

        async def good(e: Event) -> None:
            got_queued.append(e)

        bad1 = bus.subscribe(bad_inline, inline=True, name="bad_inline")
        bus.subscribe(got_inline.append, inline=True, name="good_inline")
        bad2 = bus.subscribe(bad_queued, name="bad_queued")
        bus.subscribe(good, name="good")
        await bus.start()
        for i in range(3):
            bus.publish(ev(i))  # must not raise
        await bus.drain()
        assert reasons(got_inline) == reasons(got_queued) == ["r0", "r1", "r2"]
        assert bad1.failed == 3 and bad2.failed == 3
        assert {f.subscriber for f in bus.failures} == {"bad_inline", "bad_queued"}
        assert "queued boom" in next(f.error for f in bus.failures if f.subscriber == "bad_queued")
        await bus.close()

    asyncio.run(main())


def test_subscribers_receive_only_the_event_types_they_asked_for(tmp_path: Path) -> None:
    bus = EventBus()
    starts: list[Event] = []
    bus.subscribe(starts.append, BotStarted, inline=True)
    bus.publish(BotStarted(ts=T0, bot="b", mode="paper"))
    bus.publish(BotStopped(ts=T0, bot="b"))
    assert [type(e) for e in starts] == [BotStarted]


def test_an_overflowing_queue_spills_to_the_spool_and_is_replayed_in_order(tmp_path: Path) -> None:
    async def main() -> None:
        bus = EventBus(tmp_path, queue_size=2)
        gate = asyncio.Event()
        seen: list[Event] = []

        async def gated(e: Event) -> None:
            await gate.wait()
            seen.append(e)

        sub = bus.subscribe(gated, name="gated")
        await bus.start()
        for i in range(10):
            bus.publish(ev(i))
        spool = tmp_path / "gated.jsonl"
        assert sub.spilled == 8
        assert len(spool.read_text().splitlines()) == 8
        gate.set()
        await bus.drain()
        assert reasons(seen) == [f"r{i}" for i in range(10)]
        assert not spool.exists()  # fully replayed
        # Back under the bound, events go through memory again.
        bus.publish(ev(10))
        await bus.drain()
        assert reasons(seen)[-1] == "r10" and sub.spilled == 8
        await bus.close()

    asyncio.run(main())


def test_events_published_during_replay_stay_behind_the_spooled_ones(tmp_path: Path) -> None:
    async def main() -> None:
        bus = EventBus(tmp_path, queue_size=1)
        seen: list[Event] = []

        async def handler(e: Event) -> None:
            seen.append(e)
            if len(seen) <= 3:
                bus.publish(ev(100 + len(seen)))  # published while older events are still spooled
            await asyncio.sleep(0)

        bus.subscribe(handler, name="replay")
        await bus.start()
        for i in range(4):
            bus.publish(ev(i))
        await bus.drain()
        assert reasons(seen) == ["r0", "r1", "r2", "r3", "r101", "r102", "r103"]
        await bus.close()

    asyncio.run(main())


def test_closing_with_a_stuck_consumer_keeps_its_backlog_in_order_for_the_next_process(
    tmp_path: Path,
) -> None:
    async def first_process() -> None:
        bus = EventBus(tmp_path, queue_size=2)

        async def stuck(e: Event) -> None:
            await asyncio.Event().wait()  # never returns

        bus.subscribe(stuck, name="writer")
        await bus.start()
        for i in range(5):
            bus.publish(ev(i))
        await asyncio.sleep(0.05)  # the consumer takes r0 and hangs on it
        await bus.close(timeout=0.1)
        bus.publish(ev(5))  # after close: straight to the spool

    async def second_process() -> list[Event]:
        bus = EventBus(tmp_path, queue_size=2)
        seen: list[Event] = []

        async def writer(e: Event) -> None:
            seen.append(e)

        bus.subscribe(writer, name="writer")
        await bus.start()
        bus.publish(ev(6))
        await bus.drain()
        await bus.close()
        return seen

    asyncio.run(first_process())
    seen = asyncio.run(second_process())
    assert reasons(seen) == [f"r{i}" for i in range(7)]


def test_events_published_from_another_thread_are_delivered(tmp_path: Path) -> None:
    async def main() -> None:
        bus = EventBus(tmp_path)
        seen: list[Event] = []

        async def handler(e: Event) -> None:
            seen.append(e)

        bus.subscribe(handler, name="h")
        await bus.start()
        worker = threading.Thread(target=lambda: [bus.publish(ev(i)) for i in range(50)])
        worker.start()
        await asyncio.to_thread(worker.join)
        await bus.drain(timeout=5)
        assert reasons(seen) == [f"r{i}" for i in range(50)]
        await bus.close()

    asyncio.run(main())


def test_events_published_before_start_wait_for_the_consumer(tmp_path: Path) -> None:
    async def main() -> None:
        bus = EventBus(tmp_path)
        seen: list[Event] = []
        bus.subscribe(seen.append, name="sync")
        bus.publish(ev(1))
        await bus.drain()
        assert reasons(seen) == ["r1"]
        await bus.close()

    asyncio.run(main())


def test_a_queued_subscriber_needs_a_spool_dir_and_an_inline_one_must_be_sync() -> None:
    bus = EventBus()

    async def handler(e: Event) -> None:
        pass

    with pytest.raises(ValueError, match="spool_dir"):
        bus.subscribe(handler)
    with pytest.raises(TypeError, match="synchronous"):
        bus.subscribe(handler, inline=True)


def test_two_subscribers_cannot_share_a_spool_name(tmp_path: Path) -> None:
    bus = EventBus(tmp_path)
    bus.subscribe(print, name="x")
    with pytest.raises(ValueError, match="distinct name"):
        bus.subscribe(print, name="x")
