"""What SQLite itself charges the audit writer on this disk, for `bench_persistence`.

* `commit_floor`: a bare ``sqlite3`` loop (no SQLAlchemy, no writer) paced like the writer's
  batches: BEGIN IMMEDIATE, one executemany of a bar's rows, COMMIT; with
  ``synchronous=NORMAL`` (atf's: a WAL commit is not fsynced) and ``FULL`` (an fsync per
  commit).
* `BatchTimes`: a writer mixin timing each batch (wall, CPU) and its COMMIT.
* `checkpoint_ab` (``python backtests/sqlite_costs.py``): the checkpointer's settings A/B,
  variants interleaved in each round, on fresh databases, medians over the rounds; the
  checkpointer of a git ref (``head``) runs in a child process, SQLite's own (``auto``) too.

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
    batch_spans: list[tuple[float, float, list[float], list[int]]]
    bar_of: dict[int, int]  # id(event) -> its bar's index (set by the benchmark)
    _commit_at: float

    def watch(self, engine: Engine) -> Callable[[], None]:
        """Time the commits of `engine` (the writer's); return the function that stops it."""
        self.batch_times = []
        self.batch_spans = []
        self.bar_of = {}
        self._commit_at = 0.0

        def committing(_conn: Any) -> None:
            self._commit_at = time.perf_counter()

        event.listen(engine, "commit", committing)
        return lambda: event.remove(engine, "commit", committing)

    def _handle(self, batch: list[tuple[float, Any]]) -> None:
        """Record the batch: when it started and ended (writer's clock), its events' enqueue
        times and which bar (`bar_of`, set by the benchmark) each event belongs to."""
        start = self._clock()  # type: ignore[attr-defined]
        super()._handle(batch)  # type: ignore[misc]
        bars = [self.bar_of.get(id(e), -1) for _, e in batch]
        self.batch_spans.append((start, self._clock(), [t for t, _ in batch], bars))  # type: ignore[attr-defined]

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
            **decompose(self.batch_spans),
        }


def decompose(spans: Sequence[tuple[float, float, list[float], list[int]]]) -> dict[str, float]:
    """Each event's latency = (a) wait before its batch started + (b) its batch's duration.

    Returns p50/p99 of (a) and (b) over events, their means over the events at or above the
    latency's p99 (what the tail is made of), batches per bar and the share of bars split.
    """
    rows = [(s - t, e - s) for s, e, ts, _ in spans for t in ts]  # (wait, batch) per event
    if not rows:
        return {}
    lat = sorted(w + b for w, b in rows)
    cut = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    tail = [(w, b) for w, b in rows if w + b >= cut]
    per_bar: dict[int, int] = {}
    for *_, bars in spans:
        for bar in set(bars) - {-1}:
            per_bar[bar] = per_bar.get(bar, 0) + 1
    waits, durs = sorted(w for w, _ in rows), sorted(b for _, b in rows)
    return {
        "wait_p50_ms": statistics.median(waits) * 1000,
        "wait_p99_ms": pct(waits, 0.99) * 1000,
        "in_batch_p50_ms": statistics.median(durs) * 1000,
        "in_batch_p99_ms": pct(durs, 0.99) * 1000,
        "tail_wait_ms": statistics.fmean(w for w, _ in tail) * 1000,
        "tail_batch_ms": statistics.fmean(b for _, b in tail) * 1000,
        "batches_per_bar": statistics.fmean(per_bar.values()) if per_bar else 0.0,
        "bars_split_pct": 100 * sum(n > 1 for n in per_bar.values()) / max(len(per_bar), 1),
    }


#: The checkpointer settings `checkpoint_ab` compares (WalCheckpointer attributes; MB).
#: (4MB/16MB and 4MB/64MB, compared with 16MB/64MB before the tail copy existed, lost at
#: 1,000/s: docs/persistence.md, "Checkpoint settings".)
_NEVER = 1_000_000  # MB: a threshold the log never reaches
VARIANTS: dict[str, dict[str, float]] = {
    "tail copy": {},  # the defaults: 16 MB, tail 256 KB, backstop 64 MB
    "no tail copy": {"restart_bytes": _NEVER},  # the previous policy
    "no writer checkpoint": {
        "restart_bytes": _NEVER,
        "force_bytes": _NEVER,
        "journal_size_limit": 64,
    },
}


def checkpoint_ab(args: Any) -> dict[str, Any]:
    """Run every variant (and `args.ref`'s writer, and SQLite's own) per round; medians."""
    import tempfile

    import backtests.bench_persistence as bench

    mb = 1024 * 1024
    for name, attrs in VARIANTS.items():
        bench.CHECKPOINT_VARIANTS[name] = {k: int(v * mb) for k, v in attrs.items()}
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="checkpoint-ab-") as tmp:
        work = Path(tmp)
        old = bench.checkout_src(args.ref, work)
        for i in range(args.rounds):
            fresh = iter(work / f"r{i}-{n}.db" for n in range(100))
            out: dict[str, Any] = {}
            kinds = ["head", *VARIANTS, "auto"]
            for kind in kinds[i % len(kinds) :] + kinds[: i % len(kinds)]:  # rotate the order
                url = f"sqlite:///{next(fresh)}"
                if kind == "head":
                    out[kind] = bench.run_before(url, args, old, work)
                else:
                    out[kind] = bench.run_variant(bench.at_head(url), kind, args, work)
            rounds.append(out)
    return bench.median_of(rounds)  # type: ignore[no-any-return]


#: The writer settings `batching_ab` compares (AuditWriter attributes; "switch" is
#: `sys.setswitchinterval` around the variant's phases, process-wide, default 5 ms; "gc"
#: 0 disables the cyclic garbage collector around them).
BATCHING: dict[str, dict[str, float]] = {
    "head": {},
    "switch 1ms": {"switch": 0.001},
    "gc off": {"gc": 0},  # gc.disable() around the variant's phases: the collector's pauses
}


def batching_ab(args: Any) -> dict[str, Any]:
    """Run every `BATCHING` variant of this ``src/``'s writer per round, order rotated; medians."""
    import gc
    import sys
    import tempfile

    import backtests.bench_persistence as bench

    rounds: list[dict[str, Any]] = []
    default_switch = sys.getswitchinterval()
    with tempfile.TemporaryDirectory(prefix="batching-ab-") as tmp:
        work = Path(tmp)
        for i in range(args.rounds):
            fresh = iter(work / f"r{i}-{n}.db" for n in range(100))
            out: dict[str, Any] = {}
            kinds = [k for k in BATCHING if not args.variants or k in args.variants]
            for kind in kinds[i % len(kinds) :] + kinds[: i % len(kinds)]:
                attrs = dict(BATCHING[kind])
                sys.setswitchinterval(attrs.pop("switch", default_switch))
                if not attrs.pop("gc", 1):
                    gc.disable()
                bench.WRITER_VARIANTS[kind] = attrs
                try:
                    url = bench.at_head(f"sqlite:///{next(fresh)}")
                    out[kind] = bench.run_variant(url, kind, args, work)
                finally:
                    sys.setswitchinterval(default_switch)
                    gc.enable()
            rounds.append(out)
    return bench.median_of(rounds)  # type: ignore[no-any-return]


def _table(res: dict[str, Any], header: str, cells: Callable[[dict[str, Any]], str]) -> str:
    """A markdown table: a row per variant and phase (paced rates, then the burst)."""
    names = [h.strip() for h in header.strip("|").split("|")]
    lines = [header, "|---|" + "---:|" * (len(names) - 1)]
    for kind, r in res.items():
        for p in [*r["paced"], r["burst"]]:
            rate = f"{p['rate']:,.0f}/s" if p["rate"] else f"burst {p['events_per_s']:,.0f}/s"
            lines.append(f"| {kind} | {rate} | {cells(p)} |")
    return "\n".join(lines)


def _batching_table(res: dict[str, Any]) -> str:
    return _table(
        res,
        "| variant | rate | p50 ms | p99 ms | wait p50 / p99 ms | in batch p50 / p99 ms | p99 tail: wait + batch ms | batch CPU p50 / p99 ms | batches per bar | bars split % |",
        lambda p: (
            f"{p['p50_ms']:.2f} | {p['p99_ms']:.2f} | "
            f"{p['wait_p50_ms']:.2f} / {p['wait_p99_ms']:.2f} | "
            f"{p['in_batch_p50_ms']:.2f} / {p['in_batch_p99_ms']:.2f} | "
            f"{p['tail_wait_ms']:.2f} + {p['tail_batch_ms']:.2f} | "
            f"{p['batch_cpu_p50_ms']:.2f} / {p['batch_cpu_p99_ms']:.2f} | "
            f"{p['batches_per_bar']:.2f} | {p['bars_split_pct']:.1f}"
        ),
    )


def _ab_table(res: dict[str, Any]) -> str:
    return _table(
        res,
        "| variant | rate | p50 ms | p99 ms | max ms | COMMIT p99 ms | checkpoints | tail copies | forced | woken | WAL MB |",
        lambda p: (
            f"{p['p50_ms']:.2f} | {p['p99_ms']:.2f} | {p['max_ms']:.1f} | "
            f"{p['commit_p99_ms']:.2f} | {p.get('checkpoints', 0):.0f} | "
            f"{p.get('restarts', 0):.0f} | {p.get('checkpoints_forced', 0):.0f} | "
            f"{p.get('woken', 0):.0f} | {p.get('wal_mb', 0):.1f}"
        ),
    )


if __name__ == "__main__":
    import argparse
    import os

    ap = argparse.ArgumentParser(description="A/B of the WAL checkpointer's settings")
    ap.add_argument(
        "--rates", type=lambda v: [float(x) for x in v.split(",")], default=[100.0, 1000.0]
    )
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--min-events", type=int, default=2000, help="events per paced phase, at least")
    ap.add_argument("--bar-events", type=int, default=7)
    ap.add_argument("--burst", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ref", default="HEAD", help="git ref of the 'head' writer's src/")
    ap.add_argument("--batching", action="store_true", help="the batching A/B (BATCHING)")
    ap.add_argument(
        "--variants", type=lambda v: v.split(","), default=[], help="BATCHING names (all)"
    )
    args = ap.parse_args()
    load = os.getloadavg()[0]
    table = _batching_table(batching_ab(args)) if args.batching else _ab_table(checkpoint_ab(args))
    print(table)
    print(
        f"\n{args.rounds} rounds, medians; load average {load:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after"
    )
