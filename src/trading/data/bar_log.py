"""BarLog: which closed candles a paper bot on live bars was given, so a restart re-runs them.

A paper bot on a ccxt exchange's live candles (`atf paper` without ``--replay``, with a
``persistence:`` section) recovers from a crash the way a paper replay does: it re-runs its
bars from the start through the same SimBroker and strategy, and `trading.recovery`'s
`CrashRecovery` checks the re-run where the earlier run stopped. Closed candles do not change
at the exchange, so the restarted feed fetches them again; what it must also know is what the
earlier run made of them, since a candle can be history (never traded) or live:

* ``first_open``: the open time (epoch ms) of the first warm-up candle, where the re-run starts;
* ``warmup_end``: the open of the last warm-up candle (history up to there);
* ``last_open``: the open of the last candle handed to the strategy;
* ``stale``: ranges ``[from, to]`` of later candles delivered as history (caught up after an
  outage or while the bot was down, all but the newest: see `trading.data.ccxt_feed`);
* ``skipped``: ranges of times after ``warmup_end`` the feed passed over without a candle
  (the exchange had none then), left out of a re-run too.

The file is written (atomically: write, fsync, rename) *before* the candles it names reach
the strategy, so a kill -9 never leaves a bar the strategy saw out of it. It lives next to the
spool and the saved paper broker state: ``<spool_dir>/audit-<bot>-<id>.bars.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from trading.atomic_io import atomic_write_bytes

log = logging.getLogger(__name__)
VERSION = 1
SUFFIX = ".bars.json"


def bar_log_path(state_path: str | Path) -> Path:
    """The bar log beside a saved paper broker state (``audit-<bot>-<id>.broker.json``)."""
    path = Path(state_path)
    return path.with_name(path.name.removesuffix(".broker.json") + SUFFIX)


class BarLog:
    """The candles of one paper bot instance on live bars; see the module docstring."""

    def __init__(self, path: str | Path, timeframe_ms: int, *, fresh: bool = False) -> None:
        self.path = Path(path)
        self.tf_ms = int(timeframe_ms)
        self.first_open: int | None = None
        self.warmup_end: int | None = None
        self.last_open: int | None = None
        self.stale: list[list[int]] = []
        self.skipped: list[list[int]] = []
        if not fresh and self.path.exists():
            self._read(json.loads(self.path.read_text()))

    # ------------------------------------------------------------------ reading
    def _read(self, doc: dict[str, Any]) -> None:
        if int(doc.get("timeframe_ms", self.tf_ms)) != self.tf_ms:
            log.warning("bar log %s is of another timeframe (%s ms, the bot's is %d ms): not re-run",
                        self.path, doc.get("timeframe_ms"), self.tf_ms)
            return
        self.first_open, self.warmup_end = doc.get("first_open"), doc.get("warmup_end")
        self.last_open = doc.get("last_open")
        self.stale = [list(map(int, r)) for r in doc.get("stale", [])]
        self.skipped = [list(map(int, r)) for r in doc.get("skipped", [])]

    @property
    def anchored(self) -> bool:
        """True once the earlier run's warm-up is recorded (a restart re-runs from it)."""
        return self.first_open is not None and self.warmup_end is not None and self.last_open is not None

    def flag(self, t: int) -> bool | None:
        """What the earlier run made of the candle opening at `t` (at or before `last_open`):
        True history, False live, None not delivered (skipped)."""
        assert self.warmup_end is not None
        if t <= self.warmup_end:
            return True
        if _within(t, self.skipped):
            return None
        return _within(t, self.stale)

    # ------------------------------------------------------------------ writing
    def anchor(self, first_open: int, warmup_end: int) -> None:
        """Record a first run's warm-up (candles `first_open`..`warmup_end`, all history)."""
        self.first_open, self.warmup_end, self.last_open = int(first_open), int(warmup_end), int(warmup_end)
        self.stale, self.skipped = [], []
        self.save()

    def record(self, steps: Sequence[tuple[int, bool]]) -> None:
        """Record candles delivered after `last_open`: (open ms, history?) in time order. Saved at once."""
        assert self.last_open is not None
        changed = False
        for t, history in steps:
            if t <= self.last_open:
                continue
            if t > self.last_open + self.tf_ms:
                _add(self.skipped, self.last_open + self.tf_ms, t - self.tf_ms, self.tf_ms)
            if history:
                _add(self.stale, t, t, self.tf_ms)
            self.last_open, changed = t, True
        if changed:
            self.save()

    def to_json(self) -> dict[str, Any]:
        return {"version": VERSION, "timeframe_ms": self.tf_ms, "first_open": self.first_open,
                "warmup_end": self.warmup_end, "last_open": self.last_open, "stale": self.stale,
                "skipped": self.skipped}

    def save(self) -> None:
        atomic_write_bytes(self.path, (json.dumps(self.to_json(), separators=(",", ":")) + "\n").encode())


def _within(t: int, ranges: Iterable[list[int]]) -> bool:
    return any(a <= t <= b for a, b in ranges)


def _add(ranges: list[list[int]], a: int, b: int, step: int) -> None:
    """Add [a, b] to time-ordered `ranges`, joining it to the last one when they touch."""
    if ranges and a <= ranges[-1][1] + step:
        ranges[-1][1] = max(ranges[-1][1], b)
    else:
        ranges.append([a, b])
