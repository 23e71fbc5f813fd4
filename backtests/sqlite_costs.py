"""What SQLite itself charges the audit writer on this disk, for `bench_persistence`.

* `commit_floor`: a bare ``sqlite3`` loop (no SQLAlchemy, no writer) paced like the writer's
  batches: BEGIN IMMEDIATE, one executemany of a bar's rows, COMMIT; with
  ``synchronous=NORMAL`` (atf's: a WAL commit is not fsynced) and ``FULL`` (an fsync per
  commit).
* `BatchTimes`: a writer mixin timing each batch (wall, CPU) and its COMMIT.

(The experiment that moved WAL checkpoints off the writer's commits is now the product's
`trading.persistence.checkpointer`; the benchmark compares it with SQLite's own checkpoints.)
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from backtests.persistence_workload import make_events
from trading.persistence import event_key
from trading.persistence.audit import event_payload


def pct(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def pace(t0: float, due: float) -> None:
    """Sleep until `due` seconds after `t0`."""
    while (wait := t0 + due - time.perf_counter()) > 0:
        time.sleep(wait)


def commit_floor(
    workdir: Path, synchronous: str, rate: float, seconds: float, bar_events: int
) -> dict[str, Any]:
    """A bare sqlite3 commit loop paced like the writer's batches; per commit p50/p99/max ms."""
    path = workdir / f"floor-{synchronous}-{time.monotonic_ns()}.db"  # fresh each round
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(f"PRAGMA synchronous={synchronous}")
    con.execute(
        "CREATE TABLE ev (id INTEGER PRIMARY KEY, bot INTEGER, seq INTEGER, key TEXT, "
        "ts TEXT, payload TEXT, UNIQUE (bot, key), UNIQUE (bot, seq))"
    )
    events = make_events(int(rate * seconds), start=30_000_000)
    rows = [
        (1, i, event_key(e), e.ts.isoformat(), json.dumps(event_payload(e)))
        for i, e in enumerate(events)
    ]
    times: list[float] = []
    t0 = time.perf_counter()
    for i in range(0, len(rows), bar_events):
        pace(t0, i / rate)
        t = time.perf_counter()
        con.execute("BEGIN IMMEDIATE")
        con.executemany(
            "INSERT INTO ev (bot, seq, key, ts, payload) VALUES (?, ?, ?, ?, ?)",
            rows[i : i + bar_events],
        )
        con.execute("COMMIT")
        times.append((time.perf_counter() - t) * 1000)
    con.close()
    return {
        "synchronous": synchronous,
        "commits_per_s": rate / bar_events,
        "p50_ms": statistics.median(times),
        "p99_ms": pct(times, 0.99),
        "max_ms": max(times),
    }


class BatchTimes:
    """Writer mixin: per batch, the wall and CPU time of `_write` and the time its COMMIT took.

    The CPU time is the writer thread's (Python and SQLite's C code); wall minus CPU is
    time spent waiting: for the disk, or for a core on a busy machine.
    """

    batch_times: list[tuple[float, float, float]]
    _commit_at: float

    def watch(self, engine: Engine) -> Callable[[], None]:
        """Time the commits of `engine` (the writer's); return the function that stops it."""
        self.batch_times = []
        self._commit_at = 0.0

        def committing(_conn: Any) -> None:
            self._commit_at = time.perf_counter()

        event.listen(engine, "commit", committing)
        return lambda: event.remove(engine, "commit", committing)

    def _write(self, events: Sequence[Any]) -> None:
        t, cpu = time.perf_counter(), time.thread_time()
        super()._write(events)  # type: ignore[misc]
        end = time.perf_counter()
        self.batch_times.append((end - t, time.thread_time() - cpu, end - self._commit_at))

    def summary(self) -> dict[str, float]:
        wall, cpu, commit = (sorted(x * 1000 for x in col) for col in zip(*self.batch_times))
        return {
            "batch_p50_ms": statistics.median(wall),
            "batch_p99_ms": pct(wall, 0.99),
            "batch_cpu_p50_ms": statistics.median(cpu),
            "batch_cpu_p99_ms": pct(cpu, 0.99),
            "commit_p99_ms": pct(commit, 0.99),
            "commit_max_ms": commit[-1],
            "batches": len(wall),
        }
