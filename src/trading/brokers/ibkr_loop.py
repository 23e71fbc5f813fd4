"""IBLoop: the asyncio event loop, on its own thread, where the IB socket and its callbacks live.

ib_async must be driven from the thread of its event loop. Cerebro runs elsewhere (its own
thread, blocking in the feeds), so every call into IB goes through `IBLoop.run` / `IBLoop.call`,
which run the work on the loop thread and wait for the result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class IBLoop:
    """An asyncio loop running forever on a daemon thread."""

    def __init__(self, name: str = "ibkr-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def in_loop(self) -> bool:
        """True when called from the loop's own thread."""
        return threading.current_thread() is self._thread

    def run(self, make: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Run the coroutine `make()` on the loop and return its result (from another thread)."""
        if self.in_loop():
            raise RuntimeError("IBLoop.run called from the loop thread: await the coroutine instead")

        async def main() -> T:
            return await make()

        future = asyncio.run_coroutine_threadsafe(main(), self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer from the IB loop within {timeout} s") from None

    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        """Call the plain function `fn(*args)` on the loop thread and return its result."""
        if self.in_loop():
            return fn(*args)

        async def main() -> T:
            return fn(*args)

        return self.run(main, timeout)

    def soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Schedule `fn(*args)` on the loop without waiting."""
        self.loop.call_soon_threadsafe(fn, *args)

    def close(self) -> None:
        """Stop the loop and its thread (pending tasks are cancelled)."""
        if not self.running:
            return

        async def cancel_all() -> None:
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(cancel_all, timeout=5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self.loop.close()
