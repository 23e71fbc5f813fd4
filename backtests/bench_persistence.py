"""Benchmark: audit trail write latency and throughput on SQLite and PostgreSQL.

The events of realistic round trips (submit, accept, fill, trade opened, protective orders,
stop moves, exit fill, cancel, trade closed) are published on an `EventBus` to an
`AuditWriter` (its default settings: batches of up to 500, no batch delay):

* **latency**: publish -> committed, p50 / p99 / max, with the events paced at each of
  --rates events per second (a bar's burst of --bar-events at a time: 100/s is a busy bot,
  1,000/s the throughput target); `publish()` itself, p99 (what the bar path pays);
* **throughput**: --burst events published as fast as possible; events/s until the last
  one is committed.

The baseline, in the same run on a fresh database: the same writer thread and queue, but
each batch is one raw ``executemany`` INSERT of the same ``order_events`` rows (prepared
beforehand): the floor of what the database costs. Ratios are writer ÷ baseline.
Targets (SQLite): p99 < 10 ms, >= 1,000 events/s. PostgreSQL is a throwaway server started
like the test fixture's (or --pg-url; its database must be at head). Results (JSON and a
markdown table) go to results/bench_persistence/.

    OMP_NUM_THREADS=1 .venv/bin/python backtests/bench_persistence.py
    OMP_NUM_THREADS=1 .venv/bin/python backtests/bench_persistence.py --no-postgres --burst 5000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from backtests.bench_backtest import _machine
from trading.bus import EventBus
from trading.events import (
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderModified,
    OrderPendingCancel,
    OrderSubmitted,
    TradeClosed,
    TradeOpened,
)
from trading.orders import ClientOrderId, OrderSide, OrderType
from trading.persistence import (
    event_key,
    make_engine,
    register_bot_instance,
    upgrade_database,
)
from trading.persistence.audit import event_payload
from trading.persistence.models import OrderEventRecord, table
from trading.persistence.spool import EventSpool
from trading.persistence.writer import AuditWriter
from trading.positions import PositionSide

OUT = ROOT / "results" / "bench_persistence"
EVENTS = table(OrderEventRecord)
T0 = datetime(2024, 1, 1, tzinfo=UTC)
D = Decimal


# --------------------------------------------------------------------------- events


def round_trip(n: int, symbol: str) -> list[Event]:
    """The 14 events of one long round trip (bracketed, stop moved twice, take profit hit)."""
    ts = T0 + timedelta(hours=n)

    def cid(leg: str) -> ClientOrderId:
        return ClientOrderId.for_signal("bench", symbol, ts, leg)

    qty, entry, tp, sl = D("0.123456789"), D("100.5"), D("104.25"), D("98.1")
    e, s, t = cid("entry"), cid("sl"), cid("tp")
    fill: dict[str, Any] = {
        "symbol": symbol,
        "fee": D("0.0124"),
        "remaining_qty": D(0),
        "filled_qty": qty,
    }
    return [
        OrderSubmitted(
            ts=ts,
            client_order_id=e,
            symbol=symbol,
            side=OrderSide.BUY,
            order_type=OrderType.MARKET,
            quantity=qty,
            tag="entry",
        ),
        OrderAccepted(ts=ts, client_order_id=e, symbol=symbol, venue_order_id=f"v{n}e"),
        OrderFilled(
            ts=ts,
            client_order_id=e,
            side=OrderSide.BUY,
            last_qty=qty,
            last_price=entry,
            avg_price=entry,
            trade_id=f"x{n}e",
            **fill,
        ),
        TradeOpened(
            ts=ts,
            trade_id=str(e),
            symbol=symbol,
            side=PositionSide.LONG,
            quantity=qty,
            entry_price=entry,
        ),
        OrderSubmitted(
            ts=ts,
            client_order_id=s,
            symbol=symbol,
            side=OrderSide.SELL,
            order_type=OrderType.STOP,
            quantity=qty,
            stop_price=sl,
            parent_id=e,
            oco_id=t,
        ),
        OrderAccepted(ts=ts, client_order_id=s, symbol=symbol, venue_order_id=f"v{n}s"),
        OrderSubmitted(
            ts=ts,
            client_order_id=t,
            symbol=symbol,
            side=OrderSide.SELL,
            order_type=OrderType.LIMIT,
            quantity=qty,
            price=tp,
            parent_id=e,
            oco_id=s,
        ),
        OrderAccepted(ts=ts, client_order_id=t, symbol=symbol, venue_order_id=f"v{n}t"),
        OrderModified(
            ts=ts + timedelta(minutes=10),
            client_order_id=s,
            symbol=symbol,
            quantity=qty,
            stop_price=sl + 1,
        ),
        OrderModified(
            ts=ts + timedelta(minutes=20),
            client_order_id=s,
            symbol=symbol,
            quantity=qty,
            stop_price=sl + 2,
        ),
        OrderFilled(
            ts=ts + timedelta(minutes=30),
            client_order_id=t,
            side=OrderSide.SELL,
            last_qty=qty,
            last_price=tp,
            avg_price=tp,
            trade_id=f"x{n}t",
            **fill,
        ),
        OrderPendingCancel(
            ts=ts + timedelta(minutes=30), client_order_id=s, symbol=symbol, reason="OCO"
        ),
        OrderCancelled(
            ts=ts + timedelta(minutes=30), client_order_id=s, symbol=symbol, reason="OCO"
        ),
        TradeClosed(
            ts=ts + timedelta(minutes=30),
            trade_id=str(e),
            symbol=symbol,
            side=PositionSide.LONG,
            quantity=qty,
            entry_price=entry,
            exit_price=tp,
            realised_pnl=qty * (tp - entry),
            fees=D("0.0248"),
        ),
    ]


def make_events(n: int, start: int = 0) -> list[Event]:
    out: list[Event] = []
    trip = start
    while len(out) < n:
        out += round_trip(trip, ("BTC/USDT", "ETH/USDT", "SOL/USDT")[trip % 3])
        trip += 1
    return out[:n]


# --------------------------------------------------------------------------- writers


class RawInsertWriter(AuditWriter):
    """The baseline: the same queue and thread, one executemany of prepared rows per batch."""

    rows: dict[int, dict[str, Any]]

    def _write(self, events: Sequence[Event]) -> None:
        rows = [self.rows[id(e)] for e in events if id(e) in self.rows]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(EVENTS), rows)


def prepare_rows(events: Sequence[Event], bot: int) -> dict[int, dict[str, Any]]:
    now = datetime.now(UTC)
    return {
        id(e): {
            "bot_instance_id": bot,
            "seq": i + 1,
            "event_key": event_key(e),
            "client_order_id": str(getattr(e, "client_order_id", "")) or None,
            "symbol": getattr(e, "symbol", None),
            "event_type": type(e).__name__,
            "kind": "entry",
            "status": None,
            "ts": e.ts,
            "recorded_at": now,
            "payload": event_payload(e),
        }
        for i, e in enumerate(events)
    }


def pct(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def publish_all(
    bus: EventBus, events: Sequence[Event], rate: float | None, burst: int
) -> list[float]:
    """Publish `events`, `burst` at a time at `rate` events/s (None: at once); publish() times."""
    publish_s: list[float] = []
    t0 = time.perf_counter()
    for i in range(0, len(events), burst):
        if rate is not None:
            due = t0 + i / rate
            while (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
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
    cls = RawInsertWriter if kind == "baseline" else AuditWriter
    writer = cls(engine, bot, EventSpool(spool), heartbeat_interval=None)
    if isinstance(writer, RawInsertWriter):
        writer.rows = prepare_rows(events, bot)
    bus = EventBus()
    writer.subscribe(bus)
    writer.start()
    t0 = time.perf_counter()
    publish_s = publish_all(bus, events, rate, args.bar_events)
    published = time.perf_counter()
    assert writer.wait_written(timeout=900), f"{kind}: not written"
    done = time.perf_counter()
    writer.close()
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
    }


def run_variant(url: str, kind: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Latency at each paced rate, then the burst's throughput, of one kind of writer."""
    engine = make_engine(url)
    start = 0
    out: dict[str, Any] = {"paced": []}
    try:
        for rate in args.rates:
            n = int(rate * args.seconds)
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
    finally:
        engine.dispose()
    return out


@contextmanager
def databases(
    args: argparse.Namespace, workdir: Path
) -> Iterator[list[tuple[str, Callable[[], str]]]]:
    """Yield (backend, make a fresh database URL at head) pairs."""
    counter = iter(range(1000))

    def sqlite() -> str:
        url = f"sqlite:///{workdir / f'bench-{next(counter)}.db'}"
        upgrade_database(url)
        return url

    out: list[tuple[str, Callable[[], str]]] = [("sqlite", sqlite)]
    server = None
    if args.pg_url:
        upgrade_database(args.pg_url)
        out.append(("postgresql", lambda: args.pg_url))
    elif not args.no_postgres:
        from tests.trading.persistence.pg_server import PostgresUnavailable, start_server

        try:
            server = start_server()
        except PostgresUnavailable as exc:
            print(f"PostgreSQL skipped: {exc}", file=sys.stderr)
        else:

            def postgres() -> str:
                url = server.create_database("bench")
                upgrade_database(url)
                return url

            out.append(("postgresql", postgres))
    try:
        yield out
    finally:
        if server is not None:
            server.destroy()


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


# --------------------------------------------------------------------------- report


def render(res: dict[str, Any]) -> str:
    lines = [
        "| backend | writer | paced events/s | p50 ms | p99 ms | max ms | publish() p99 µs | p99 ÷ baseline |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for b in res["backends"]:
        for w, base in zip(b["writer"]["paced"], b["baseline"]["paced"], strict=True):
            for r, name in ((w, WRITER), (base, BASELINE)):
                ratio = f"{w['p99_ms'] / base['p99_ms']:.1f}×" if r is w else ""
                lines.append(
                    f"| {b['backend']} | {name} | {r['rate']:,.0f} | {r['p50_ms']:.2f} | "
                    f"{r['p99_ms']:.2f} | {r['max_ms']:.1f} | {r['publish_p99_us']:.0f} | {ratio} |"
                )
    lines += [
        "",
        "| backend | writer | burst events | events/s (publish to committed) | ÷ baseline |",
        "|---|---|---:|---:|---:|",
    ]
    for b in res["backends"]:
        w, base = b["writer"]["burst"], b["baseline"]["burst"]
        for r, name in ((w, WRITER), (base, BASELINE)):
            ratio = f"{w['events_per_s'] / base['events_per_s']:.2f}×" if r is w else ""
            lines.append(
                f"| {b['backend']} | {name} | {r['events']:,} | {r['events_per_s']:,.0f} | {ratio} |"
            )
    t = res["targets"]
    lines += [
        "",
        (
            f"SQLite targets: p99 < 10 ms at {t['rate']:,} events/s: "
            f"**{'met' if t['p99_ok'] else 'missed'}** ({t['p99_ms']:.2f} ms); sustained >= 1,000 "
            f"events/s: **{'met' if t['rate_ok'] else 'missed'}** ({t['events_per_s']:,.0f}/s)."
        ),
        "",
        (
            f"Spool alone (database down): fsynced appends of 100 events: "
            f"{res['spool']['append_events_per_s']:,.0f} events/s; replay reads "
            f"{res['spool']['read_events_per_s']:,.0f} events/s."
        ),
        "",
        (
            f"Machine: {res['machine'].get('cpu_model', '?')}, {os.cpu_count()} cores, load average "
            f"{res['machine']['loadavg_before'][0]:.2f} before / {res['machine']['loadavg_after'][0]:.2f} "
            "after (shared with other engineers' jobs: absolute numbers vary, ratios less)."
        ),
    ]
    return "\n".join(lines)


WRITER, BASELINE = "AuditWriter (apply_events)", "baseline: raw executemany"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--rates",
        type=lambda v: [float(x) for x in v.split(",")],
        default=[100.0, 1000.0],
        help="paced events per second, comma-separated (default: 100,1000)",
    )
    ap.add_argument("--seconds", type=float, default=6.0, help="length of each paced phase")
    ap.add_argument("--bar-events", type=int, default=7, help="events published together (a bar)")
    ap.add_argument("--burst", type=int, default=20000, help="events of the burst phase")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--pg-url", default=None, help="use this PostgreSQL database (at head)")
    args = ap.parse_args()

    started = datetime.now(UTC).isoformat(timespec="seconds")
    load = os.getloadavg()
    res: dict[str, Any] = {"backends": []}
    with (
        tempfile.TemporaryDirectory(prefix="bench-persistence-") as tmp,
        databases(args, Path(tmp)) as dbs,
    ):
        for backend, fresh in dbs:
            row: dict[str, Any] = {"backend": backend}
            for kind in ("writer", "baseline"):
                row[kind] = run_variant(fresh(), kind, args, Path(tmp))
            res["backends"].append(row)
        res["spool"] = spool_rates(Path(tmp), 20_000)
    lite = next(b["writer"] for b in res["backends"] if b["backend"] == "sqlite")
    top = max(lite["paced"], key=lambda r: r["rate"])
    res["targets"] = {
        "rate": top["rate"],
        "p99_ms": top["p99_ms"],
        "p99_ok": top["p99_ms"] < 10.0,
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
