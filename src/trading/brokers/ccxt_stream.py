"""Order updates by websocket: ccxt.pro ``watchOrders`` on a thread of its own, polling as the safety net.

`OrderStream` runs the async ccxt.pro client of the venue (same keys, sandbox and URL overrides
as the REST client, see `build_exchange`) on its own thread and asyncio loop. It subscribes to
the account's order updates (Binance spot: the user data stream of the WebSocket API,
``userDataStream.subscribe.signature``; USDⓈ-M futures: the listen-key stream; each
``executionReport`` / ``ORDER_TRADE_UPDATE`` carries the fill with its trade id and fee, which
ccxt.pro attaches to the order) and hands every update, as the ccxt order it is, to the
execution through a thread-safe queue. `StreamedOrders` (a mixin of
`CcxtExecution`) drains that queue at each pump and applies each update as a `VenueOrder`
through the same `_apply` as a poll: fills are deduplicated by trade id and cumulative
quantity, so an update a poll already saw (or a poll after an update) books nothing twice.

While the stream is up the venue is still polled, every `stream_poll_interval` seconds (the
safety net for an update the stream lost); while it is down, every `poll_interval`. A dropped
stream is logged, published as ConnectionLost / ConnectionRestored (venue ``<id> order
stream``), reconnected with the retry backoff (ccxt.pro dials again on the next watch call),
and the venue is polled at once when it is back, for what happened meanwhile.

Futures conditional orders (Binance's Algo Service) are not applied from the stream: their
``ALGO_UPDATE`` (triggered, finished...) and the update of the order a trigger placed make the
same pump poll, which follows the conditional order to its fills.

`websocket: auto` streams when ccxt.pro imports and the venue has ``watchOrders``, `on`
requires it (an error naming the option otherwise), `off` polls only.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from trading.brokers.ccxt_config import CcxtSettings, Credentials, import_ccxt_pro
from trading.brokers.ccxt_resilience import Scrubber, VenueUnavailable
from trading.events import ConnectionLost, ConnectionRestored

if TYPE_CHECKING:
    from trading.brokers.ccxt_orders import VenueOrder
    from trading.brokers.ccxt_protection import Tracked
    from trading.brokers.ccxt_venue import CcxtVenue

log = logging.getLogger(__name__)
OPTION = "broker.ccxt.websocket"


@dataclass(frozen=True)
class StreamDown:
    """The stream dropped (or could not connect); `was_up`: it had been up before."""

    detail: str
    was_up: bool


@dataclass(frozen=True)
class StreamUp:
    """The stream is subscribed; `downtime_s`: how long it was down (None: the first connection)."""

    downtime_s: float | None


def order_stream(settings: CcxtSettings, credentials: Credentials | None, venue: CcxtVenue) -> OrderStream | None:
    """The order stream the settings ask for, or None (polling only); `on` raises when it cannot be had."""
    if settings.websocket == "off":
        return None
    required = settings.websocket == "on"
    why = None
    if credentials is None:
        why = "the order stream needs the API credentials"
    if why is None:
        try:
            import_ccxt_pro(f"{OPTION}: on")
        except ImportError as exc:
            if required:
                raise
            why = f"ccxt.pro cannot be imported ({exc.__cause__ or exc})"
    if why is None:
        from trading.brokers.ccxt_venue import build_exchange

        client = build_exchange(settings, credentials, pro=True)
        if client.has.get("watchOrders"):
            return OrderStream(client, settings, venue.scrub)
        why = f"ccxt.pro {settings.ccxt_id} has no watchOrders"
    if required:
        raise ValueError(f"{OPTION}: on, but {why}; set {OPTION}: auto or off to poll the order state")
    log.info("%s: auto: %s; order state by polling every %ss", OPTION, why, settings.poll_interval)
    return None


class OrderStream:
    """The ccxt.pro client's order updates, from its own thread to a queue (see the module docstring)."""

    def __init__(self, client: Any, settings: CcxtSettings, scrub: Scrubber) -> None:
        self.client, self.settings, self._scrub = client, settings, scrub
        self.name = f"{client.id} order stream"
        self._queue: deque[dict[str, Any] | StreamDown | StreamUp] = deque()
        self._cond = threading.Condition()
        self._up = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # ------------------------------------------------------------------ owner's side (any thread)
    @property
    def up(self) -> bool:
        """True while subscribed (the safety-net polls are then `stream_poll_interval` apart)."""
        return self._up

    def start(self, rest: Any) -> None:
        """Start the thread; the markets and the clock offset are the REST client's (`rest`), loaded already."""
        if self._thread is not None:
            return
        self.client.set_markets_from_exchange(rest)
        self.client.options["timeDifference"] = rest.options.get("timeDifference", 0)
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the websocket and the ccxt.pro client, then end the thread (idempotent)."""
        with self._cond:
            self._stopping = True
            loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s: the thread did not end within %ss", self.name, timeout)

    def drain(self) -> list[dict[str, Any] | StreamDown | StreamUp]:
        """What arrived since the last call, in order: ccxt orders and the stream's ups and downs."""
        with self._cond:
            out = list(self._queue)
            self._queue.clear()
            return out

    def wait(self, timeout: float, *, up: bool | None = None) -> bool:
        """Wait until something is queued (or, with `up`, until the stream is up / down); False on timeout."""
        with self._cond:
            if up is None:
                return self._cond.wait_for(lambda: bool(self._queue), timeout)
            return self._cond.wait_for(lambda: self._up is up, timeout)

    def _put(self, item: dict[str, Any] | StreamDown | StreamUp, up: bool | None = None) -> None:
        with self._cond:
            self._queue.append(item)
            if up is not None:
                self._up = up
            self._cond.notify_all()

    # ------------------------------------------------------------------ the stream's thread
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            with self._cond:
                if self._stopping:
                    return
                self._loop = loop
                self._task = loop.create_task(self._main())
            loop.run_until_complete(asyncio.gather(self._task, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            with self._cond:
                self._loop = None
                self._up = False
            loop.close()

    async def _main(self) -> None:
        try:
            await self._watch()
        finally:
            try:
                await asyncio.shield(self.client.close())
            except BaseException as exc:  # noqa: BLE001 - never let the close hide how the stream ended
                log.debug("%s: close: %s", self.name, self._scrub(exc))

    async def _watch(self) -> None:
        retry = self.settings.retry
        failures, was_up, down_since = 0, False, time.monotonic()
        while not self._stopping:
            watching: asyncio.Future[Any] | None = None
            try:
                await self.client.authenticate()  # spot: subscribes the user data stream; futures: a listen key
                watching = asyncio.ensure_future(self.client.watch_orders())
                await self._connected(watching)
                downtime = time.monotonic() - down_since if was_up else None
                log.info("%s up%s", self.name, "" if downtime is None else f" again after {downtime:.1f}s")
                self._put(StreamUp(downtime), up=True)
                failures, was_up = 0, True
                while not self._stopping:
                    for order in await watching:
                        self._put(copy.deepcopy(order))  # ccxt.pro keeps mutating its cached orders
                    watching = asyncio.ensure_future(self.client.watch_orders())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: down, then dial again after a backoff
                detail = f"{type(exc).__name__}: {self._scrub(exc)}"
                if self._up or failures == 0:  # once per outage
                    log.warning("%s down (%s); polling every %ss until it is back",
                                self.name, detail, self.settings.poll_interval)
                    down_since = time.monotonic()
                    self._put(StreamDown(detail, was_up), up=False)
                failures += 1
                await asyncio.sleep(min(retry.max_delay, retry.base_delay * 2 ** min(failures - 1, 16)))
            finally:
                if watching is not None and not watching.done():
                    watching.cancel()

    async def _connected(self, watching: asyncio.Future[Any]) -> None:
        """Return once the user data stream's websocket is open (or raise how `watching` failed)."""
        ex = self.client
        if self.settings.futures:  # the listen key is in the URL: the websocket opens with the watch
            key = ex.safe_string(ex.options.get("linear") or {}, "listenKey")
            self._scrub.add([key])  # it lets anyone read the account's stream: never in a log
            url = ex.get_private_ws_url("linear", key)
        else:
            url = ex.urls["api"]["ws"]["ws-api"]["spot"]
        for _ in range(1000):  # the watch creates the client within its first steps
            if url in ex.clients or watching.done():
                break
            await asyncio.sleep(0)
        client = ex.clients.get(url)
        if client is not None and not watching.done():
            await asyncio.wait({watching, client.connected}, return_when=asyncio.FIRST_COMPLETED)
        if watching.done() and watching.exception() is not None:
            raise watching.exception()  # type: ignore[misc]


class StreamedOrders:
    """The stream half of `CcxtExecution` (a mixin: it uses the execution's state and `_apply`)."""

    venue: CcxtVenue
    _tracked: dict[Any, Tracked]
    _last_poll: float
    _clock: Callable[[], float]
    _poll_now = False  # an update the stream cannot apply by itself: poll in this pump
    positions: dict[str, Decimal]
    _settled_poll: float | None = None  # the poll (its time) after which the balances were last read
    _settled_positions: dict[str, Decimal] | None = None  # the positions then

    def _apply(self, t: Tracked, vo: VenueOrder) -> None:  # pragma: no cover - CcxtExecution's
        raise NotImplementedError

    def poll(self) -> None:  # pragma: no cover - CcxtExecution's
        raise NotImplementedError

    def refresh_balances(self) -> None:  # pragma: no cover - CcxtExecution's
        raise NotImplementedError

    def _publish(self, event: Any) -> None:  # pragma: no cover - CcxtExecution's
        raise NotImplementedError

    def poll_interval(self) -> float:
        """Seconds between two polls: the safety net's while the stream is up, `poll_interval` otherwise."""
        s, stream = self.venue.settings, self.venue.stream
        return s.stream_poll_interval if stream is not None and stream.up else s.poll_interval

    def apply_stream(self) -> None:
        """Apply what the stream delivered since the last pump; poll at once when it came back."""
        stream = self.venue.stream
        if stream is None:
            return
        items, catch_up = stream.drain(), False
        updates: list[tuple[Tracked, VenueOrder]] = []
        for item in items:
            if isinstance(item, StreamDown):
                if item.was_up:  # an outage (a stream that never came up was only logged)
                    self._publish(ConnectionLost(ts=datetime.now(UTC), venue=stream.name, detail=item.detail))
            elif isinstance(item, StreamUp):
                if item.downtime_s is not None:
                    catch_up = True
                    self._publish(ConnectionRestored(ts=datetime.now(UTC), venue=stream.name,
                                                     downtime_s=item.downtime_s))
            elif "aid" in (item.get("info") or {}):  # futures: an ALGO_UPDATE of a conditional order
                if item["info"].get("X") != "NEW":
                    self._poll_now = True  # the poll follows it to the order it placed, with the fills
            else:
                try:
                    vo = self.venue.parse(item)
                except (VenueUnavailable, self.venue.ccxt.BaseError, LookupError, ValueError, TypeError,
                        ArithmeticError) as exc:
                    log.warning("%s: an update of %s not read (%s); the next poll reads the order",
                                stream.name, item.get("clientOrderId") or item.get("id"), self.venue.scrub(exc))
                    self._poll_now = True
                    continue
                t = self._streamed_order(vo)
                if t is not None:
                    updates.append((t, vo))
        # Fills first, as a poll does: the fill of one OCO leg explains why the venue expired the other.
        for t, vo in sorted(updates, key=lambda p: p[1].filled <= p[0].reported):
            if t.state == "unconfirmed":
                t.state = "live"  # the placement's outcome was unknown: the venue has it
            self._apply(t, vo)
        if catch_up or self._poll_now:
            self._poll_now, self._last_poll = False, self._clock()
            try:
                self.poll()
            except Exception:
                self._last_poll = float("-inf")  # the next pump polls
                raise

    def settle_balances(self) -> None:
        """Read the balances after fills that no poll followed (streamed, or a market order's own).

        With polling only, the poll of the same pump reads them; with the stream up the next poll
        may be `stream_poll_interval` away, and a protective sell on spot needs the coins bought.
        """
        if self.venue.stream is None:
            return
        held = {s: q for s, q in self.positions.items() if q}
        if self._settled_poll != self._last_poll:  # a poll read them since the last call
            self._settled_poll, self._settled_positions = self._last_poll, held
        elif held != self._settled_positions:
            self.refresh_balances()
            self._settled_positions = held

    def _streamed_order(self, vo: VenueOrder) -> Tracked | None:
        """The order an update is about, while the execution still follows it at the venue.

        By venue id; by client order id while the venue id is unknown (an unconfirmed placement).
        An order under a followed client id but another venue id is the one a futures conditional
        order placed when it triggered: the next pump polls, which follows the conditional order.
        """
        for t in self._tracked.values():
            if t.state not in ("live", "unconfirmed"):
                continue
            if t.venue_id == vo.venue_id or (t.venue_id is None and str(t.order.client_order_id) == vo.client_id):
                return t
            if str(t.order.client_order_id) == vo.client_id:
                self._poll_now = True
        return None

    def close(self) -> None:
        """Stop the order stream (the broker's stop; REST calls still work afterwards)."""
        self.venue.close()


__all__ = ["OrderStream", "StreamDown", "StreamUp", "StreamedOrders", "order_stream"]
