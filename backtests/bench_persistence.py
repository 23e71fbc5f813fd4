"""Benchmark: audit trail write latency and throughput on SQLite and PostgreSQL.

The events of realistic round trips (`persistence_workload`: submit, accept, fill, trade
opened, protective orders, stop moves, exit fill, cancel, trade closed) are published on an
`EventBus` to an `AuditWriter` (its default settings: batches of up to 500, no batch delay):

* **latency**: publish -> committed, p50 / p99 / max, with the events paced at each of
  --rates events per second (a bar's burst of --bar-events at a time: 100/s is a busy bot,
  1,000/s the throughput target) for --seconds, or --min-events if that is more (at 100/s,
  6 s are 600 events in 86 bars: their p99 is the worst bar's, whatever happened to it);
  `publish()` itself, p99 (what the bar path pays);
* **throughput**: --burst events published as fast as possible; events/s until the last
  one is committed, and SQL statements per event.

In the same run, on fresh databases:

* **before**: the same phases with the ``src/`` of --before (a git ref, default the first
  WAL checkpointer's commit), in a child process;
* **auto** (SQLite): this ``src/``'s writer with ``checkpoint_interval=None``, i.e. SQLite's
  automatic checkpoint in the commit: the same code as "after" but for the checkpoints;
* **baseline**: the same writer thread and queue (and checkpointer), but each batch is one
  raw ``executemany`` INSERT of the same ``order_events`` rows (prepared beforehand): the
  floor of what the database costs;
* **commit floor** (SQLite): a bare ``sqlite3`` loop, no SQLAlchemy and no writer, paced
  like the writer's batches: BEGIN IMMEDIATE, one executemany of a bar's rows, COMMIT, with
  ``synchronous=NORMAL`` (atf's setting: WAL commits without fsync) and ``FULL`` (an fsync
  per commit): what the disk charges per commit.

Targets (SQLite): p99 < 10 ms, >= 1,000 events/s. PostgreSQL is a throwaway server started
like the test fixture's (or --pg-url; its database must be at head). Results (JSON and a
markdown table) go to results/bench_persistence/.

    OMP_NUM_THREADS=1 .venv/bin/python backtests/bench_persistence.py
    OMP_NUM_THREADS=1 .venv/bin/python backtests/bench_persistence.py --no-postgres --before none
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: The ``src`` benchmarked: this checkout's, or an older one's in the "before" child process.
SRC = Path(os.environ.get("ATF_BENCH_SRC") or ROOT / "src")
sys.path[:0] = [str(SRC), str(ROOT)]

from sqlalchemy import event
from sqlalchemy.engine import Engine

from backtests.persistence_workload import RawInsertWriter, make_events, prepare_rows
from backtests.sqlite_costs import BatchTimes, commit_floor, pace, pct
from trading.bus import EventBus
from trading.events import Event
from trading.persistence import make_engine, register_bot_instance, sql, upgrade_database
from trading.persistence.spool import EventSpool
from trading.persistence.writer import AuditWriter

OUT = ROOT / "results" / "bench_persistence"
#: The first WAL checkpointer (woken after every commit past a 4 MB WAL file); fa08ca7 is
#: the last writer that let SQLite checkpoint in its commits, c5990d7 the last row by row.
BEFORE_REF = "c46f8a0"
#: Writer kinds with WalCheckpointer attributes of their own (`sqlite_costs.checkpoint_ab`).
CHECKPOINT_VARIANTS: dict[str, dict[str, int]] = {}
#: Writer kinds with AuditWriter attributes of their own (`sqlite_costs.batching_ab`).
WRITER_VARIANTS: dict[str, dict[str, Any]] = {}


# --------------------------------------------------------------------------- writers


class TimedAuditWriter(BatchTimes, AuditWriter):
    pass


class TimedRawWriter(BatchTimes, RawInsertWriter):
    pass


def publish_all(
    bus: EventBus, events: Sequence[Event], rate: float | None, burst: int
) -> list[float]:
    """Publish `events`, `burst` at a time at `rate` events/s (None: at once); publish() times."""
    publish_s: list[float] = []
    t0 = time.perf_counter()
    for i in range(0, len(events), burst):
        if rate is not None:
            pace(t0, i / rate)
        for e in events[i : i + burst]:
            t = time.perf_counter()
            bus.publish(e)
            publish_s.append(time.perf_counter() - t)
    return publish_s


def run_phase(
    engine: Engine,
    kind: str,
    events: list[Event],
    rate: float | None,
    args: argparse.Namespace,
    spool: Path,
) -> dict[str, Any]:
    """Publish `events` to a fresh writer on a fresh bot instance; time it until committed."""
    bot = register_bot_instance(engine, f"bench-{kind}-{rate}", "paper", resume=False).id
    cls = TimedRawWriter if kind == "baseline" else TimedAuditWriter
    kw: dict[str, Any] = {"checkpoint_interval": None} if kind == "auto" else {}
    writer = cls(engine, bot, EventSpool(spool), heartbeat_interval=None, **kw)
    for name, value in CHECKPOINT_VARIANTS.get(kind, {}).items():  # sqlite_costs' A/B
        setattr(writer.checkpointer, name, value)
    for name, value in WRITER_VARIANTS.get(kind, {}).items():  # sqlite_costs' batching A/B
        setattr(writer, name, value)
    if isinstance(writer, RawInsertWriter):
        writer.rows = prepare_rows(events, bot)
    unwatch = writer.watch(engine)
    writer.bar_of = {id(e): i // args.bar_events for i, e in enumerate(events)}
    statements = [0]

    def count(*_: Any) -> None:
        statements[0] += 1  # an executemany counts once

    # statements run on the driver directly bypass the event: sql.sent counts them (a
    # --before src/ may predate it)
    direct = getattr(sql, "sent", lambda _engine: {})
    direct_before = sum(direct(engine).values())
    event.listen(engine, "before_cursor_execute", count)
    bus = EventBus()
    writer.subscribe(bus)
    writer.start()
    t0 = time.perf_counter()
    publish_s = publish_all(bus, events, rate, args.bar_events)
    published = time.perf_counter()
    assert writer.wait_written(timeout=900), f"{kind}: not written"
    done = time.perf_counter()
    wal = checkpoint_stats(writer)
    writer.close()
    unwatch()
    event.remove(engine, "before_cursor_execute", count)
    statements[0] += sum(direct(engine).values()) - direct_before
    assert writer.failures == 0 and writer.spooled == 0, writer.health()
    lat = [x * 1000 for x in writer.latencies]
    return {
        "events": len(events),
        "rate": rate,
        "p50_ms": statistics.median(lat),
        "p99_ms": pct(lat, 0.99),
        "max_ms": max(lat),
        "publish_p99_us": pct(publish_s, 0.99) * 1e6,
        "catch_up_s": done - published,
        "events_per_s": len(events) / (done - t0),
        "statements_per_event": statements[0] / len(events),
        **writer.summary(),
        **wal,
    }


def checkpoint_stats(writer: AuditWriter) -> dict[str, float]:
    """The WAL file's size at the end of a phase and the checkpointer's counts (if any)."""
    ckpt = getattr(writer, "checkpointer", None)  # none in an older src/, or on PostgreSQL
    if ckpt is None:
        return {}
    return {
        "wal_mb": ckpt.wal_size() / 1e6,
        "checkpoints": ckpt.complete,
        "checkpoints_incomplete": ckpt.incomplete,
        "checkpoints_forced": ckpt.forced,
        "woken": getattr(ckpt, "woken", 0),
        "restarts": getattr(ckpt, "restarts", 0),
        "checkpoint_failures": ckpt.failures,
    }


def run_variant(url: str, kind: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Latency at each paced rate, then the burst's throughput, of one kind of writer."""
    engine = make_engine(url)
    start = 0
    out: dict[str, Any] = {"paced": []}
    with ExitStack() as stack:
        stack.callback(engine.dispose)
        # Untimed: the engine's first batch compiles every statement (about 10 ms of CPU),
        # which alone was the 100/s phase's p99 (its worst batch of 86).
        run_phase(
            engine,
            kind,
            make_events(70, start=50_000_000),
            None,
            args,
            workdir / f"{kind}-warm.jsonl",
        )
        for rate in args.rates:
            n = max(int(rate * args.seconds), args.min_events)
            events = make_events(n, start=start)
            start += n
            out["paced"].append(
                run_phase(engine, kind, events, rate, args, workdir / f"{kind}-{rate}.jsonl")
            )
        out["burst"] = run_phase(
            engine,
            kind,
            make_events(args.burst, start=start),
            None,
            args,
            workdir / f"{kind}-burst.jsonl",
        )
    return out


def run_before(url: str, args: argparse.Namespace, src: Path, workdir: Path) -> dict[str, Any]:
    """Run the writer phases with the older `src` in a child process (it migrates `url`)."""
    out = workdir / f"before-{time.monotonic_ns()}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-url", url]
    cmd += ["--child-out", str(out), "--rates", ",".join(map(str, args.rates))]
    cmd += ["--seconds", str(args.seconds), "--bar-events", str(args.bar_events)]
    cmd += ["--min-events", str(args.min_events)]
    cmd += ["--burst", str(args.burst)]
    subprocess.run(cmd, env={**os.environ, "ATF_BENCH_SRC": str(src)}, check=True)
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def checkout_src(ref: str, workdir: Path) -> Path:
    """Extract ``src/`` at git `ref` into `workdir` (``git archive``: the tree is not touched)."""
    tar = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "src"],
        capture_output=True,
        check=True,
    ).stdout
    dest = workdir / f"src-{ref}"
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(dest, filter="data")
    return dest / "src"


@contextmanager
def databases(
    args: argparse.Namespace, workdir: Path
) -> Iterator[list[tuple[str, Callable[[], str]]]]:
    """Yield (backend, make the URL of a fresh, empty database) pairs."""
    counter = iter(range(1000))

    def sqlite() -> str:
        return f"sqlite:///{workdir / f'bench-{next(counter)}.db'}"

    out: list[tuple[str, Callable[[], str]]] = [("sqlite", sqlite)]
    server = None
    if args.pg_url:
        out.append(("postgresql", lambda: args.pg_url))
    elif not args.no_postgres:
        from tests.trading.persistence.pg_server import PostgresUnavailable, start_server

        try:
            server = start_server()
        except PostgresUnavailable as exc:
            print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
        else:
            out.append(("postgresql", lambda: server.create_database("bench")))
    try:
        yield out
    finally:
        if server is not None:
            server.destroy()


def at_head(url: str) -> str:
    upgrade_database(url)
    return url


def spool_rates(workdir: Path, n: int) -> dict[str, float]:
    """The spool alone (the database down): fsynced appends of 100 events, then reading back."""
    events = make_events(n, start=20_000_000)
    spool = EventSpool(workdir / "rates.jsonl")
    t0 = time.perf_counter()
    for i in range(0, n, 100):
        spool.append(events[i : i + 100])
    t1 = time.perf_counter()
    got = 0
    while len(spool):
        chunk = spool.peek(500)
        got += len(chunk.events)
        spool.consume(chunk)
    t2 = time.perf_counter()
    assert got == n
    return {"append_events_per_s": n / (t1 - t0), "read_events_per_s": n / (t2 - t1)}


def median_of(runs: Sequence[Any]) -> Any:
    """Merge the results of several rounds: the median of each number, key by key."""
    first = runs[0]
    if isinstance(first, dict):
        return {k: median_of([r[k] for r in runs]) for k in first}
    if isinstance(first, list):
        return [median_of(items) for items in zip(*runs, strict=True)]
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return statistics.median(runs)
    return first


# --------------------------------------------------------------------------- report

WRITERS = (
    ("before", "before: --before's src/ (checkpoints in the commit)"),
    ("writer", "AuditWriter (checkpoints off the commit)"),
    ("auto", "AuditWriter, checkpoint_interval=None (in the commit)"),
    ("baseline", "baseline: raw executemany"),
)


def _ratio(a: float, b: float, digits: int = 1) -> str:
    return f"{a / b:.{digits}f}×" if b else ""


def render(res: dict[str, Any]) -> str:
    lines = [
        "| backend | writer | paced events/s | p50 ms | p99 ms | max ms | p99 after ÷ before | p99 ÷ baseline | batch p50 / p99 ms | batch CPU p50 / p99 ms | COMMIT p99 / max ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in res["backends"]:
        for i, w in enumerate(b["writer"]["paced"]):
            before = b["before"]["paced"][i] if "before" in b else None
            for kind, name in WRITERS:
                if kind not in b:
                    continue
                r = b[kind]["paced"][i]
                vs_before = _ratio(w["p99_ms"], before["p99_ms"], 2) if before and r is w else ""
                vs_base = _ratio(r["p99_ms"], b["baseline"]["paced"][i]["p99_ms"])
                lines.append(
                    f"| {b['backend']} | {name} | {r['rate']:,.0f} | {r['p50_ms']:.2f} | "
                    f"{r['p99_ms']:.2f} | {r['max_ms']:.1f} | {vs_before} | "
                    f"{vs_base if kind != 'baseline' else ''} | "
                    f"{r['batch_p50_ms']:.2f} / {r['batch_p99_ms']:.2f} | "
                    f"{r['batch_cpu_p50_ms']:.2f} / {r['batch_cpu_p99_ms']:.2f} | "
                    f"{r['commit_p99_ms']:.2f} / {r['commit_max_ms']:.1f} |"
                )
    lines += [
        "",
        "| backend | writer | burst events | events/s (publish to committed) | SQL statements per event | after ÷ before | ÷ baseline |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for b in res["backends"]:
        w = b["writer"]["burst"]
        for kind, name in WRITERS:
            if kind not in b:
                continue
            r = b[kind]["burst"]
            vs_before = (
                _ratio(w["events_per_s"], b["before"]["burst"]["events_per_s"], 2)
                if "before" in b and r is w
                else ""
            )
            vs_base = _ratio(r["events_per_s"], b["baseline"]["burst"]["events_per_s"], 2)
            lines.append(
                f"| {b['backend']} | {name} | {r['events']:,} | {r['events_per_s']:,.0f} | "
                f"{r['statements_per_event']:.2f} | {vs_before} | "
                f"{vs_base if kind != 'baseline' else ''} |"
            )
    lines += [
        "",
        "| SQLite writer | phase | WAL MB at the end | checkpoints complete / incomplete | tail copies on the writer's thread (log restarts) | forced on the writer's thread | failures |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for b in res["backends"]:
        for kind, name in WRITERS:
            phases = b.get(kind, {}).get("paced", []) + [b.get(kind, {}).get("burst", {})]
            for r in phases:
                if "wal_mb" not in r:
                    continue
                phase = f"{r['rate']:,.0f}/s" if r["rate"] else f"burst of {r['events']:,}"
                lines.append(
                    f"| {name} | {phase} | {r['wal_mb']:.2f} | {r['checkpoints']:.0f} / "
                    f"{r['checkpoints_incomplete']:.0f} | {r.get('restarts', 0):.0f} | "
                    f"{r['checkpoints_forced']:.0f} | "
                    f"{r['checkpoint_failures']:.0f} |"
                )
    lines += [
        "",
        "| SQLite commit floor (bare sqlite3, WAL) | commits/s | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for f in res["floor"]:
        lines.append(
            f"| synchronous={f['synchronous']} | {f['commits_per_s']:,.0f} | "
            f"{f['p50_ms']:.3f} | {f['p99_ms']:.3f} | {f['max_ms']:.1f} |"
        )
    t = res["targets"]
    p99s = ", ".join(f"{r:,.0f}/s: {p:.2f} ms" for r, p in t["p99_ms"].items())
    publish = max(r["publish_p99_us"] for b in res["backends"] for r in b["writer"]["paced"])
    lines += [
        "",
        f"`publish()` p99 (what the bar path pays), worst phase: {publish:.0f} µs.",
        "",
        (
            f"SQLite targets: p99 < 10 ms: **{'met' if t['p99_ok'] else 'missed'}** ({p99s}); "
            f"sustained >= 1,000 events/s: **{'met' if t['rate_ok'] else 'missed'}** "
            f"({t['events_per_s']:,.0f}/s)."
        ),
        "",
        (
            f"Spool alone (database down): fsynced appends of 100 events: "
            f"{res['spool']['append_events_per_s']:,.0f} events/s; replay reads "
            f"{res['spool']['read_events_per_s']:,.0f} events/s."
        ),
        "",
        (
            f"{res['rounds']} round(s), medians. Before: `src/` at {res['before_ref']}. Machine: "
            f"{res['machine'].get('cpu_model', '?')}, {os.cpu_count()} cores, load average "
            f"{res['machine']['loadavg_before'][0]:.2f} before / "
            f"{res['machine']['loadavg_after'][0]:.2f} after (shared with other engineers' "
            "jobs: absolute numbers vary, ratios less)."
        ),
    ]
    return "\n".join(lines)


def run_round(
    args: argparse.Namespace, dbs: list[tuple[str, Callable[[], str]]], workdir: Path
) -> dict[str, Any]:
    """One round: per backend, before (child process), after, (SQLite) after with SQLite's
    own checkpoints, and baseline, each on a fresh database; then SQLite's commit floor."""
    old_src = checkout_src(args.before, workdir) if args.before != "none" else None
    backends = []
    for backend, fresh in dbs:
        row: dict[str, Any] = {"backend": backend}
        if old_src is not None:
            row["before"] = run_before(fresh(), args, old_src, workdir)
        kinds = ("writer", "auto", "baseline") if backend == "sqlite" else ("writer", "baseline")
        for kind in kinds:
            row[kind] = run_variant(at_head(fresh()), kind, args, workdir)
        backends.append(row)
    floor = [
        commit_floor(workdir, sync, args.rates[0], args.seconds, args.bar_events)
        for sync in ("NORMAL", "FULL")
    ]
    return {"backends": backends, "floor": floor}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--rates",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[100.0, 1000.0],
        help="paced events per second, comma-separated (default: 100,1000)",
    )
    ap.add_argument("--seconds", type=float, default=6.0, help="length of each paced phase")
    ap.add_argument(
        "--min-events",
        type=int,
        default=2000,
        help="events of each paced phase at least (a p99 of 600 is the 6th worst, one bar)",
    )
    ap.add_argument("--bar-events", type=int, default=7, help="events published together (a bar)")
    ap.add_argument("--burst", type=int, default=20000, help="events of the burst phase")
    ap.add_argument("--rounds", type=int, default=1, help="repeat everything; report medians")
    ap.add_argument(
        "--before", default=BEFORE_REF, help=f"git ref of the 'before' src/, or none ({BEFORE_REF})"
    )
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--pg-url", default=None, help="use this PostgreSQL database (at head)")
    ap.add_argument("--child-url", help=argparse.SUPPRESS)  # run_before's child process
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child_url:
        with tempfile.TemporaryDirectory(prefix="bench-persistence-child-") as tmp:
            result = run_variant(at_head(args.child_url), "writer", args, Path(tmp))
        Path(args.child_out).write_text(json.dumps(result))
        return 0

    from backtests.bench_backtest import _machine

    started = datetime.now(UTC).isoformat(timespec="seconds")
    load = os.getloadavg()
    res: dict[str, Any] = {"rounds": args.rounds, "before_ref": args.before}
    with (
        tempfile.TemporaryDirectory(prefix="bench-persistence-") as tmp,
        databases(args, Path(tmp)) as dbs,
    ):
        res.update(median_of([run_round(args, dbs, Path(tmp)) for _ in range(args.rounds)]))
        res["spool"] = spool_rates(Path(tmp), 20_000)
    lite = next(b["writer"] for b in res["backends"] if b["backend"] == "sqlite")
    p99 = {r["rate"]: r["p99_ms"] for r in lite["paced"]}
    res["targets"] = {
        "p99_ms": p99,
        "p99_ok": all(v < 10.0 for v in p99.values()),
        "events_per_s": lite["burst"]["events_per_s"],
        "rate_ok": lite["burst"]["events_per_s"] >= 1000,
    }
    res["machine"] = {
        **_machine(),
        "started": started,
        "loadavg_before": load,
        "loadavg_after": os.getloadavg(),
    }
    text = render(res)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_persistence.json").write_text(json.dumps(res, indent=2, default=str))
    (OUT / "bench_persistence.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
