"""Benchmark: a 64-trial grid of the rsi_bb_atr bot on 1 and 2 workers, local pool and Dask.

The baseline is the same grid run trial by trial in this process, measured in the same run.
Each configuration starts its workers, ships the bars (pool initializer / Dask scatter),
runs the 64 backtests and shuts down; wall time covers all of that, because a user pays
for it. Reported per configuration:

- backtests/s and aggregate bars/s (64 x bars / wall);
- speedup over the in-process baseline, and scaling efficiency of 2 workers against 1 of
  the same kind: (t1 / t2) / 2;
- the share of worker time spent outside the backtests: 1 - sum(backtest seconds) /
  (wall x workers): start-up, shipping data and tasks, scheduling, idle tails;
- the CPU share inside the backtests: their CPU time / their wall time. Below 100 % the
  workers waited for a core: other work on the machine, not atf, limited the scaling.

Every configuration must reproduce the baseline's trial values exactly; the script exits 1
otherwise. Rounds alternate the order of the configurations, so that load from other work
on the machine spreads over all of them; the table keeps each configuration's fastest run.

    python backtests/bench_optimize.py                  # 8760 hourly bars, 1 round
    python backtests/bench_optimize.py --bars 4000 --repeat 3

Output: a markdown table on stdout; every run and the machine in
results/bench_optimize/bench_optimize.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "optimize" / "rsi_bb_atr.yaml"
OUT = ROOT / "results" / "bench_optimize"
CONFIGS = (("serial", 1), ("pool", 1), ("pool", 2), ("dask", 1), ("dask", 2))


def _runner(kind: str, workers: int) -> Any:
    from trading.optimize import DaskRunner, PoolRunner, Runner

    if kind == "serial":
        return Runner()
    if kind == "pool":
        return PoolRunner(workers)
    return DaskRunner(None, workers)


def run_once(kind: str, workers: int, study: Any, frames: Any) -> dict[str, Any]:
    from trading.optimize import Workload, run_grid

    t0 = time.perf_counter()
    with _runner(kind, workers) as runner:
        runner.start(Workload.from_study(study, frames))
        t_started = time.perf_counter()
        res = run_grid(study.spec, runner)
        t_swept = time.perf_counter()
    wall = time.perf_counter() - t0
    inside = sum(o.seconds for o in res.trials)
    cpu = sum(o.cpu_seconds for o in res.trials)
    n, bars = len(res.trials), res.trials[0].bars
    return {
        "kind": kind,
        "workers": workers,
        "trials": n,
        "bars_per_trial": bars,
        "wall_s": wall,
        "startup_s": t_started - t0,
        "sweep_s": t_swept - t_started,
        "backtest_s": inside,
        "backtests_per_s": n / wall,
        "bars_per_s": n * bars / wall,
        "outside_share": 1.0 - inside / (wall * workers),
        "cpu_share": cpu / inside,
        "values": [o.value for o in res.trials],
        "processes": len({o.worker for o in res.trials}),
    }


def _machine() -> dict[str, Any]:
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
    }


def table(best: dict[tuple[str, int], dict[str, Any]]) -> str:
    base = best[("serial", 1)]["wall_s"]
    lines = [
        "| runner | workers | wall s | start-up s | backtests/s | bars/s | vs baseline | efficiency | outside backtests | CPU share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (kind, w), r in best.items():
        one = best.get((kind, 1))
        eff = f"{one['wall_s'] / r['wall_s'] / w:.0%}" if one and w > 1 else "—"
        label = (
            "in-process (baseline)"
            if kind == "serial"
            else ("process pool" if kind == "pool" else "Dask LocalCluster")
        )
        lines.append(
            f"| {label} | {w} | {r['wall_s']:.1f} | {r['startup_s']:.1f} | {r['backtests_per_s']:.2f} | "
            f"{r['bars_per_s']:,.0f} | {base / r['wall_s']:.2f}x | {eff} | {r['outside_share']:.0%} | {r['cpu_share']:.0%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--bars", type=int, default=8760, help="Synthetic hourly bars per backtest.")
    ap.add_argument(
        "--repeat", type=int, default=1, help="Rounds (the fastest run of each is kept)."
    )
    args = ap.parse_args(argv)

    from trading.engine import load_bars
    from trading.optimize import load_study

    study = load_study(CONFIG)
    cfg = study.config.model_copy(
        update={"data": study.config.data.model_copy(update={"bars": args.bars})}
    )
    study = replace(study, config=cfg)
    frames = load_bars(cfg)
    assert study.spec.grid_size() == 64

    machine = _machine()
    runs: list[dict[str, Any]] = []
    for rnd in range(args.repeat):
        order = CONFIGS if rnd % 2 == 0 else tuple(reversed(CONFIGS))
        for kind, workers in order:
            r = run_once(kind, workers, study, frames)
            r["round"] = rnd
            runs.append(r)
            print(f"round {rnd}: {kind} x{workers}: {r['wall_s']:.1f} s", file=sys.stderr)
    machine["loadavg_end"] = os.getloadavg()

    reference = next(r["values"] for r in runs if r["kind"] == "serial")
    bad = [f"{r['kind']} x{r['workers']}" for r in runs if r["values"] != reference]
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for kind, workers in CONFIGS:
        mine = [r for r in runs if (r["kind"], r["workers"]) == (kind, workers)]
        best[(kind, workers)] = min(mine, key=lambda r: r["wall_s"])

    print(
        f"64-trial grid, {args.bars:,} bars per backtest, {args.repeat} round(s), {machine['cpus']} cpus, "
        f"load average {machine['loadavg_start'][0]:.1f} -> {machine['loadavg_end'][0]:.1f}\n"
    )
    print(table(best))
    OUT.mkdir(parents=True, exist_ok=True)
    doc = {
        "machine": machine,
        "bars": args.bars,
        "repeat": args.repeat,
        "mismatches": bad,
        "runs": [{k: v for k, v in r.items() if k != "values"} for r in runs],
    }
    (OUT / "bench_optimize.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {OUT / 'bench_optimize.json'}")
    if bad:
        print(f"results differ from the in-process baseline: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
