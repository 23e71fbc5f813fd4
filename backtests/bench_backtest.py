"""Benchmark: the rsi_bb_atr bot on atf vs the same rules in plain backtrader.

Each (engine, size) runs in a fresh process so that peak memory (ru_maxrss) belongs to that
run alone. Both engines get the same generated bars and must produce the same trades
(compared by a hash of entry/exit times, prices, quantities and reasons); the script exits
non-zero if they differ. Timing covers building and running cerebro plus, for atf, the
metrics; data generation is excluded.

    python backtests/bench_backtest.py                 # 10k, 100k, 1M bars
    python backtests/bench_backtest.py --sizes 10000 100000 --repeat 3

Results: a markdown table on stdout and backtests/results/bench_backtest.json.
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = ROOT / "config" / "strategies" / "rsi_bb_atr.yaml"
REAL_DATA = ROOT.parent / "shared" / "data" / "binance_btcusdt_5m.csv"


def _frame(size: int, real: bool):  # type: ignore[no-untyped-def]
    from trading.data import generate_ohlcv, load_csv

    if real:
        return load_csv(REAL_DATA)
    return generate_ohlcv(size, seed=7, timeframe="1h")


def _digest(rows: list[tuple]) -> str:
    text = "\n".join("|".join(f"{x:.8f}" if isinstance(x, float) else str(x) for x in r) for r in rows)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def worker(engine: str, size: int, real: bool) -> dict:
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT))
    import backtrader as bt
    import pandas as pd

    from trading.config import load_config

    from backtests.baseline import PlainRsiBbAtr
    from trading.brokers.sim import SimBroker, configure_broker
    from trading.engine import run_backtest

    cfg = load_config(CONFIG)
    df = _frame(size, real)
    t0 = time.perf_counter()
    if engine == "atf":
        res = run_backtest(cfg, {"BTCUSDT": df})
        rows = [
            (pd.Timestamp(t.entry_time).isoformat(), pd.Timestamp(t.exit_time).isoformat(), t.entry_price,
             t.exit_price, t.quantity, t.exit_reason)
            for t in res.trades if t.exit_reason != "end_of_data"
        ]
    else:
        ptc = cfg.broker.paper_trading_config
        cerebro = bt.Cerebro(stdstats=False)
        broker = SimBroker()
        configure_broker(broker, cash=cfg.broker.cash, commission_rate=cfg.broker.commission_rate,
                         slippage_model=ptc.slippage_model, base_slippage=ptc.base_slippage)
        cerebro.broker = broker
        cerebro.adddata(bt.feeds.PandasData(dataname=df.tz_localize(None)))
        cerebro.addstrategy(PlainRsiBbAtr)
        strat = cerebro.run()[0]
        idx = df.index
        rows = [
            (idx[e].isoformat(), idx[x].isoformat(), ep, xp, q, r) for (e, x, ep, xp, q, r) in strat.trades_out
        ]
    elapsed = time.perf_counter() - t0
    return {
        "engine": engine,
        "bars": len(df),
        "seconds": elapsed,
        "bars_per_s": len(df) / elapsed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trades": len(rows),
        "digest": _digest(rows),
    }


def run_child(engine: str, size: int, real: bool) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    out = subprocess.run(
        [sys.executable, __file__, "--worker", engine, str(size)] + (["--real"] if real else []),
        capture_output=True, text=True, env=env, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=1, help="runs per cell; the fastest is kept")
    ap.add_argument("--worker", nargs=2, metavar=("ENGINE", "SIZE"), help=argparse.SUPPRESS)
    ap.add_argument("--real", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.real)))
        return 0

    cases = [(n, False) for n in args.sizes] + ([(0, True)] if REAL_DATA.exists() else [])
    rows, ok = [], True
    for size, real in cases:
        cell = {}
        for engine in ("plain", "atf"):
            runs = [run_child(engine, size, real) for _ in range(args.repeat)]
            cell[engine] = min(runs, key=lambda r: r["seconds"])
        same = cell["atf"]["digest"] == cell["plain"]["digest"] and cell["atf"]["trades"] == cell["plain"]["trades"]
        ok &= same
        rows.append({
            "data": "binance BTCUSDT 5m (real)" if real else f"synthetic 1h x {size:,}",
            "bars": cell["atf"]["bars"],
            "plain_bars_per_s": cell["plain"]["bars_per_s"],
            "atf_bars_per_s": cell["atf"]["bars_per_s"],
            "speedup": cell["plain"]["seconds"] / cell["atf"]["seconds"],
            "plain_peak_mb": cell["plain"]["peak_rss_mb"],
            "atf_peak_mb": cell["atf"]["peak_rss_mb"],
            "trades": cell["atf"]["trades"],
            "same_trades": same,
        })
        r = rows[-1]
        print(f"{r['data']}: plain {r['plain_bars_per_s']:,.0f} bars/s, atf {r['atf_bars_per_s']:,.0f} bars/s, "
              f"x{r['speedup']:.2f}, trades {r['trades']} same={same}", file=sys.stderr)

    print("| data | bars | plain backtrader bars/s | atf bars/s | speed-up | plain peak MB | atf peak MB "
          "| trades | same trades |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['data']} | {r['bars']:,} | {r['plain_bars_per_s']:,.0f} | {r['atf_bars_per_s']:,.0f} | "
              f"{r['speedup']:.2f}× | {r['plain_peak_mb']:,.0f} | {r['atf_peak_mb']:,.0f} | {r['trades']:,} | "
              f"{'yes' if r['same_trades'] else 'NO'} |")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    meta = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    (out / "bench_backtest.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
