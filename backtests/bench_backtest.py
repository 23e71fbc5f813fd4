"""Benchmark: the rsi_bb_atr bot on atf against the same rules in plain backtrader.

For each data set both engines run on the same bars, each run in a fresh process so that
its peak memory (ru_maxrss) is its own. Rounds alternate the engines (plain first on even
rounds, atf first on odd ones) so that load from other work on the machine hits both
alike; the table keeps each engine's fastest run and the range of the per-round ratios
shows the noise. Both engines must produce the same trades (hash of entry/exit times,
prices to 1e-8, quantities and exit reasons, every run); the script exits 1 if they differ.

Timing starts once the bars are in memory (generation, CSV loading and imports excluded)
and covers building and running cerebro; for atf it also covers the trade records, the
equity curve and the metrics (atf's full `run_backtest`). Wall time is the headline;
process CPU time is recorded too, as a check against a busy machine.

    python backtests/bench_backtest.py                        # synthetic 1h bars: 10k, 100k, 1M
    python backtests/bench_backtest.py --repeat 3 --real      # + BTCUSDT 5m from ../shared/data
    python backtests/bench_backtest.py --sizes 10000 --repeat 5

Output: a markdown table on stdout; every run and the machine in backtests/results/
bench_backtest.json (git-ignored).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = ROOT / "config" / "strategies" / "rsi_bb_atr.yaml"
# Three entries and three exits: the cost of composing mixins (atf only; no plain twin).
CONFIG_3X3 = ROOT / "config" / "strategies" / "three_by_three.yaml"
# The team's shared real-data folder sits next to the repository.
REAL_DATA = ROOT.parent / "shared" / "data" / "binance_btcusdt_5m.csv"
ENGINES = ("plain", "atf")


def _load_bars(case: str) -> Any:
    """Return the bars of a case: 'synthetic:N' (seeded 1h bars) or 'real:PATH' (CSV as is)."""
    from trading.data import generate_ohlcv, load_csv

    kind, _, arg = case.partition(":")
    if kind == "real":
        return load_csv(arg)  # 5m bars, not resampled: the rules count bars, not hours
    return generate_ohlcv(int(arg), seed=7, timeframe="1h")


def _digest(rows: list[tuple[Any, ...]]) -> str:
    text = "\n".join(
        "|".join(f"{x:.8f}" if isinstance(x, float) else str(x) for x in r) for r in rows
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(engine: str, case: str) -> dict[str, Any]:
    """Run one engine on one case in this process; return timings, memory and the trade hash."""
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT))
    import backtrader as bt
    import pandas as pd

    import trading.analytics.metrics  # noqa: F401  (imported here so that timing excludes it)
    from backtests.baseline import PlainRsiBbAtr
    from trading.brokers.sim import SimBroker, configure_broker
    from trading.config import load_config
    from trading.engine import run_backtest

    cfg = load_config(CONFIG_3X3 if engine == "atf3x3" else CONFIG)
    df = _load_bars(case)
    naive = df.tz_localize(None)  # PandasData wants naive UTC times; prepared outside the timing
    mb_before = _peak_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    if engine in ("atf", "atf3x3"):
        res = run_backtest(cfg, {"BTCUSDT": df})
        end = time.perf_counter(), time.process_time()
        # The end-of-data close is a mark-to-market, not an order: the baseline has none.
        rows = [
            (
                pd.Timestamp(t.entry_time).isoformat(),
                pd.Timestamp(t.exit_time).isoformat(),
                t.entry_price,
                t.exit_price,
                t.quantity,
                t.exit_reason,
            )
            for t in res.trades
            if t.exit_reason != "end_of_data"
        ]
    elif engine == "plain":
        ptc = cfg.broker.paper_trading_config
        cerebro = bt.Cerebro(stdstats=False, preload=True, runonce=True)
        broker = SimBroker()
        configure_broker(
            broker,
            cash=cfg.broker.cash,
            commission_rate=cfg.broker.commission_rate,
            slippage_model=ptc.slippage_model,
            base_slippage=ptc.base_slippage,
        )
        cerebro.broker = broker
        cerebro.adddata(bt.feeds.PandasData(dataname=naive))
        cerebro.addstrategy(PlainRsiBbAtr, **PlainRsiBbAtr.params_from(cfg))
        strat = cerebro.run()[0]
        end = time.perf_counter(), time.process_time()
        idx = df.index
        rows = [
            (idx[e].isoformat(), idx[x].isoformat(), ep, xp, q, r)
            for (e, x, ep, xp, q, r) in strat.trades_out
        ]
    else:
        raise ValueError(f"unknown engine {engine!r}")
    wall, cpu = end[0] - t0, end[1] - c0
    return {
        "engine": engine,
        "case": case,
        "bars": len(df),
        "seconds": wall,
        "cpu_seconds": cpu,
        "bars_per_s": len(df) / wall,
        "peak_rss_mb": _peak_mb(),
        "rss_before_run_mb": mb_before,
        "trades": len(rows),
        "digest": _digest(rows),
    }


def run_child(engine: str, case: str) -> dict[str, Any]:
    """Run `worker` in a fresh interpreter (own peak memory, no warm caches)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", engine, case],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"{engine} run on {case} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _machine() -> dict[str, Any]:
    from importlib.metadata import version

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: version(p) for p in ("backtrader", "numpy", "pandas", "TA-Lib")},
        "git_commit": git("rev-parse", "--short", "HEAD"),
        # Other work in a shared tree can leave files modified: name them with the result.
        "git_modified": git(
            "status", "--porcelain", "--", "src", "backtests", "config"
        ).splitlines(),
    }


def _bench_case(case: str, label: str, repeat: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {e: [] for e in ENGINES}
    ratios, cpu_ratios = [], []
    for r in range(repeat):
        order = ENGINES if r % 2 == 0 else ENGINES[::-1]
        got = {e: run_child(e, case) for e in order}
        for e in ENGINES:
            runs[e].append(got[e])
        ratios.append(got["plain"]["seconds"] / got["atf"]["seconds"])
        cpu_ratios.append(got["plain"]["cpu_seconds"] / got["atf"]["cpu_seconds"])
        print(
            f"  {label} round {r + 1}/{repeat}: plain {got['plain']['seconds']:.2f} s, "
            f"atf {got['atf']['seconds']:.2f} s, x{ratios[-1]:.2f}",
            file=sys.stderr,
            flush=True,
        )
    composed = [run_child("atf3x3", case) for _ in range(repeat)]
    best3 = min(composed, key=lambda x: x["seconds"])
    best = {e: min(runs[e], key=lambda x: x["seconds"]) for e in ENGINES}
    best_cpu = {e: min(x["cpu_seconds"] for x in runs[e]) for e in ENGINES}
    digests = {x["digest"] for e in ENGINES for x in runs[e]}
    return {
        "data": label,
        "bars": best["atf"]["bars"],
        "plain_bars_per_s": best["plain"]["bars_per_s"],
        "atf_bars_per_s": best["atf"]["bars_per_s"],
        "speedup": best["plain"]["seconds"] / best["atf"]["seconds"],
        "speedup_rounds": ratios,
        "speedup_cpu": best_cpu["plain"] / best_cpu["atf"],
        "speedup_cpu_rounds": cpu_ratios,
        "plain_peak_mb": max(x["peak_rss_mb"] for x in runs["plain"]),
        "atf_peak_mb": max(x["peak_rss_mb"] for x in runs["atf"]),
        "plain_trades": best["plain"]["trades"],
        "atf_trades": best["atf"]["trades"],
        "same_trades": len(digests) == 1,
        "atf3x3_bars_per_s": best3["bars_per_s"],
        "atf3x3_trades": best3["trades"],
        # Per trade, not per mixin, dominates: both-sided 3+3 trades about twice as often.
        "atf3x3_us_per_trade_over_1x1": (
            (best3["seconds"] - best["atf"]["seconds"]) / max(1, best3["trades"] - best["atf"]["trades"]) * 1e6
        ),
        "runs": {**runs, "atf3x3": composed},
    }


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        (
            "| data | bars | plain backtrader bars/s | atf bars/s | speed-up | per-round range "
            "| speed-up (CPU time) | plain peak MB | atf peak MB | trades | same trades |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        rng = f"{min(r['speedup_rounds']):.2f}–{max(r['speedup_rounds']):.2f}×"
        trades = (
            f"{r['atf_trades']:,}"
            if r["atf_trades"] == r["plain_trades"]
            else (f"{r['plain_trades']:,} / {r['atf_trades']:,}")
        )
        lines.append(
            f"| {r['data']} | {r['bars']:,} | {r['plain_bars_per_s']:,.0f} | {r['atf_bars_per_s']:,.0f} | "
            f"**{r['speedup']:.2f}×** | {rng} | {r['speedup_cpu']:.2f}× | {r['plain_peak_mb']:,.0f} | "
            f"{r['atf_peak_mb']:,.0f} | {trades} | {'yes' if r['same_trades'] else 'NO'} |"
        )
    return "\n".join(lines)


def _composition_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| data | bars | rsi_bb_atr (1+1 mixins) bars/s | trades | three_by_three (3+3) bars/s | trades "
        "| extra time per extra trade |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['data']} | {r['bars']:,} | {r['atf_bars_per_s']:,.0f} | {r['atf_trades']:,} | "
            f"{r['atf3x3_bars_per_s']:,.0f} | {r['atf3x3_trades']:,} | {r['atf3x3_us_per_trade_over_1x1']:,.0f} µs |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--sizes",
        type=int,
        nargs="*",
        default=[10_000, 100_000, 1_000_000],
        help="synthetic bar counts (none: real data only)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds per data set (default 1; 3 for published numbers)",
    )
    ap.add_argument(
        "--real", action="store_true", help=f"add a row on real bars (default file: {REAL_DATA})"
    )
    ap.add_argument(
        "--real-file", type=Path, default=REAL_DATA, help="the real-data CSV for --real"
    )
    ap.add_argument("--worker", nargs=2, metavar=("ENGINE", "CASE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0

    cases = [(f"synthetic:{n}", f"synthetic 1h × {n:,}") for n in args.sizes]
    if args.real:
        path = args.real_file.resolve()
        if not path.is_file():
            print(
                f"--real: real-data file not found: {path}\n"
                f"  expected binance_btcusdt_5m.csv in ../shared/data next to the repository "
                f"({REAL_DATA.parent}), or pass --real-file PATH.",
                file=sys.stderr,
            )
            return 2
        cases.append((f"real:{path}", f"real: {path.stem} (5m bars)"))
    if not cases:
        ap.error("nothing to run: give --sizes and/or --real")

    machine = _machine()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load = [os.getloadavg()[0]]
    rows = []
    for case, label in cases:
        rows.append(_bench_case(case, label, max(1, args.repeat)))
        load.append(os.getloadavg()[0])
    machine["load_avg_1min"] = load  # at the start and after each data set

    print(_table(rows))
    print("\n" + _composition_table(rows))
    print(
        f"\n{machine['cpus']} CPUs ({machine['cpu_model']}), Python {machine['python']}, "
        f"backtrader {machine['versions']['backtrader']}, commit {machine['git_commit']}"
        f"{' + modified files' if machine['git_modified'] else ''}, {args.repeat} round(s), "
        f"1-min load average {', '.join(f'{x:.1f}' for x in load)}"
    )
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    result = {"started": started, "repeat": args.repeat, "machine": machine, "rows": rows}
    (out / "bench_backtest.json").write_text(json.dumps(result, indent=2))
    if not all(r["same_trades"] for r in rows):
        print("FAILED: atf and plain backtrader produced different trades", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
