"""Resilience of venue requests: our request budget, retries with backoff, the circuit breaker.

* `RequestBudget`: a token bucket on top of ccxt's own limiter (`enableRateLimit`), so a bug
  or a burst of polls can never hammer the venue into a ban.
* `Caller`: one request under the budget; transient failures (network errors, timeouts,
  429, 5xx, unknown venue errors) are retried with exponential backoff, a clock drift
  (-1021, `InvalidNonce`) resynchronises the clock first. `retry=False` sends once: placing an
  order is never retried blindly (see `CcxtVenue.place`).
* `CircuitBreaker`: after N failed requests in a row it opens (new entries are refused) and
  calls `on_open`; the first success after the cooldown closes it and calls `on_close`.
  `failing_since` is when the current run of failures began; `last_downtime` is how long the
  last outage lasted (from its first failure to the success that closed the breaker).
* `Scrubber`: every message that leaves the adapter (exceptions, logs, rejection reasons that
  end in the database) is cleaned of signatures and credentials; ccxt puts both in URLs,
  headers and error texts.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from trading.brokers.ccxt_config import RetrySettings, import_ccxt
from trading.exceptions import ATFError

T = TypeVar("T")
log = logging.getLogger(__name__)

_SIGNATURE = re.compile(r"(?i)(signature=)[^&\s'\"]+")
_KEY_FIELDS = re.compile(r"(?i)(['\"]?(?:x-mbx-apikey|apikey|api-key|secret|password)['\"]?\s*[:=]\s*['\"]?)[^,'\"}&\s]+")


class VenueUnavailable(ATFError):
    """The venue could not be reached after every retry (the message is scrubbed)."""


class Scrubber:
    """Replace signatures and known secret values with ``***`` in any text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    @property
    def secrets(self) -> list[str]:
        return list(self._secrets)

    def add(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted(set(self._secrets) | {s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: object) -> str:
        out = _SIGNATURE.sub(r"\1***", str(text))
        out = _KEY_FIELDS.sub(r"\1***", out)
        for secret in self._secrets:
            out = out.replace(secret, "***")
        return out


class ScrubFilter(logging.Filter):
    """A logging filter that scrubs the message of every record it sees (ccxt logs URLs and headers)."""

    def __init__(self, scrub: Scrubber) -> None:
        super().__init__()
        self.scrub = scrub

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.scrub(record.getMessage())
        record.args = None
        return True


class RequestBudget:
    """At most `per_minute` requests a minute (token bucket with that burst); `acquire` waits."""

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._tokens = self.capacity
        self._clock, self._sleep = clock, sleep
        self._last = clock()
        self._lock = threading.Lock()
        self.waited = 0.0  # seconds spent waiting, for diagnostics

    def acquire(self, cost: float = 1.0) -> float:
        """Take `cost` tokens, sleeping until they are there; return the seconds waited."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= cost
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
            self.waited += wait
        return wait


class CircuitBreaker:
    """Open after `failures` consecutive failures; allow entries again after `cooldown` seconds."""

    def __init__(
        self,
        failures: int,
        cooldown: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_open: Callable[[str], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.threshold, self.cooldown = failures, cooldown
        self._clock = clock
        self.on_open, self.on_close = on_open, on_close
        self.consecutive = 0
        self.is_open = False
        self.opened_at: float | None = None
        self.failing_since: float | None = None  # the first failure of the current run
        self.last_downtime = 0.0  # seconds, of the outage the last closing ended
        self.last_failure = ""
        self._lock = threading.Lock()

    def allows_entries(self) -> bool:
        """True while closed, and once the cooldown has passed (the next request decides)."""
        with self._lock:
            return not self.is_open or self._clock() - (self.opened_at or 0.0) >= self.cooldown

    def record_success(self) -> None:
        with self._lock:
            self.consecutive = 0
            was_open, self.is_open = self.is_open, False
            if was_open:
                since = self.failing_since if self.failing_since is not None else self.opened_at
                self.last_downtime = max(0.0, self._clock() - (since if since is not None else self._clock()))
            self.failing_since = None
        if was_open:
            log.warning("venue reachable again: circuit breaker closed")
            if self.on_close is not None:
                self.on_close()

    def record_failure(self, detail: str) -> None:
        with self._lock:
            self.consecutive += 1
            if self.failing_since is None:
                self.failing_since = self._clock()
            self.last_failure = detail
            trip = self.consecutive >= self.threshold and (
                not self.is_open or self._clock() - (self.opened_at or 0.0) >= self.cooldown
            )
            if trip:
                self.is_open, self.opened_at = True, self._clock()
        if trip:
            message = f"{self.consecutive} consecutive venue failures; last: {detail}"
            log.error("circuit breaker open: %s", message)
            if self.on_open is not None:
                self.on_open(message)


class Caller:
    """Run venue requests under the budget, with retries and the breaker (see the module docstring)."""

    def __init__(
        self,
        retry: RetrySettings,
        budget: RequestBudget,
        breaker: CircuitBreaker,
        scrub: Scrubber,
        *,
        resync: Callable[[], None] | None = None,
        retry_after: Callable[[], float | None] = lambda: None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.retry, self.budget, self.breaker, self.scrub = retry, budget, breaker, scrub
        self.resync, self.retry_after, self._sleep = resync, retry_after, sleep
        self.retries = 0  # retries done so far, for diagnostics

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number `attempt` (1-based): base * 2**(attempt-1), capped."""
        return min(self.retry.max_delay, self.retry.base_delay * 2 ** (attempt - 1))

    def __call__(self, what: str, fn: Callable[..., T], *args: Any, retry: bool = True, **kwargs: Any) -> T:
        ccxt = import_ccxt()
        attempts = self.retry.attempts if retry else 1
        resynced = False
        attempt = 0
        while True:
            attempt += 1
            self.budget.acquire()
            try:
                result = fn(*args, **kwargs)
            except ccxt.InvalidNonce as exc:
                self.breaker.record_failure(self.scrub(exc))
                if resynced or self.resync is None:
                    raise VenueUnavailable(f"{what}: {self.scrub(exc)}") from None
                resynced = True
                attempt -= 1  # a clock resync is not a retry of the request
                log.warning("%s: clock drift, resynchronising with the venue's time", what)
                self.resync()
                continue
            except ccxt.OperationFailed as exc:  # network errors, timeouts, 429, 5xx
                detail = self.scrub(exc)
                self.breaker.record_failure(detail)
                if attempt >= attempts:
                    raise VenueUnavailable(f"{what}: {detail}") from None
                wait = self.delay(attempt)
                if isinstance(exc, ccxt.DDoSProtection):
                    wait = max(wait, self.retry_after() or 0.0)
                log.warning("%s failed (%s); retry %d/%d in %.2fs", what, detail, attempt, attempts - 1, wait)
                self.retries += 1
                self._sleep(wait)
                continue
            except ccxt.BaseError as exc:
                # The venue answered (a refusal, not an outage): it is reachable.
                self.breaker.record_success()
                raise type(exc)(self.scrub(exc)) from None
            self.breaker.record_success()
            return result
