"""Benchmark: a walk-forward HMMLSTMEntryMixin backtest, cold (training) and warm (disk cache).

5,000 synthetic hourly bars, windows of 1,000 bars refitted every 500 (8 windows), the
mixin's default network (LSTM 16 units, up to 15 epochs, sequences of 24 bars). Each run is
a fresh process, so "warm" means models read from the disk cache, not from memory. Timing
covers `run_backtest` (bars in memory); the process time, imports of torch and hmmlearn
included, is recorded too. The two runs must give the same trades.

    OMP_NUM_THREADS=1 python backtests/bench_ml.py [--bars 5000] [--every 500] [--repeat 1]

Output: a markdown table on stdout; the runs in backtests/results/bench_ml.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

_CHILD = """
import hashlib, json, sys, time
t0 = time.perf_counter()
from tests.strategy.conftest import SYMBOL, make_config
from trading.data import generate_ohlcv
from trading.engine import run_backtest
from strategy.ml import walkforward
import torch, hmmlearn.hmm, sklearn.cluster  # imported here so that "run_s" times the backtest alone
bars, every = int(sys.argv[1]), int(sys.argv[2])
frame = generate_ohlcv(bars, seed=42, timeframe="1h", symbol=SYMBOL)
cfg = make_config({"strategy": {"direction": "long",
    "entry_mixins": [{"name": "HMMLSTMEntryMixin", "parameters": {"e_train_bars": 1000, "e_retrain_every": every}}],
    "exit_mixins": [{"name": "ATRExitMixin", "parameters": {"x_atr_period": 14, "x_atr_multiplier": 2.0}}]}})
t1 = time.perf_counter()
result = run_backtest(cfg, {SYMBOL: frame})
t2 = time.perf_counter()
d = result.diagnostics["mixins"][SYMBOL]["HMMLSTMEntryMixin"]
trades = hashlib.sha256(json.dumps([t.to_dict() for t in result.trades]).encode()).hexdigest()[:16]
print(json.dumps({"run_s": t2 - t1, "process_s": t2 - t0, "trained": walkforward.training_count(),
                  "windows": d["windows_fitted"], "trades": len(result.trades), "trades_hash": trades,
                  "oos_hit_rate": d["oos_hit_rate"], "oos_naive_hit_rate": d["oos_naive_hit_rate"]}))
"""


def run(bars: int, every: int, cache: str) -> dict:
    env = {**os.environ, "ATF_MODEL_CACHE": cache, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(bars), str(every)], env=env, cwd=HERE.parent,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bars", type=int, default=5000)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    rows = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="atf-bench-ml-") as cache:
            cold = run(args.bars, args.every, cache)
            warm = run(args.bars, args.every, cache)
        if cold["trades_hash"] != warm["trades_hash"]:
            print("cold and warm runs gave different trades", file=sys.stderr)
            return 1
        rows.append({"cold": cold, "warm": warm})
    best = {k: min(rows, key=lambda r: r[k]["run_s"])[k] for k in ("cold", "warm")}
    print(f"walk-forward HMM+LSTM backtest, {args.bars} bars, retrain every {args.every}, "
          f"{best['cold']['windows']} windows, {best['cold']['trades']} trades\n")
    print("| run | backtest s | process s (with imports) | windows trained |")
    print("|---|---:|---:|---:|")
    for k in ("cold", "warm"):
        r = best[k]
        print(f"| {k} | {r['run_s']:.2f} | {r['process_s']:.2f} | {r['trained']} |")
    print(f"\ncold / warm: {best['cold']['run_s'] / best['warm']['run_s']:.1f}x; out-of-sample hit rate "
          f"{best['cold']['oos_hit_rate']} (naive {best['cold']['oos_naive_hit_rate']})")
    out = HERE / "results" / "bench_ml.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "cpus": os.cpu_count(), "runs": rows,
                               "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
