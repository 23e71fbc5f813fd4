"""Lookahead analysis: does anything the bot decided at bar t change when bars after t are removed?

Re-running on data cut at a bar ``t`` can only reveal a peek at bars just after ``t``: every
earlier bar still has its future. So, like freqtrade's lookahead-analysis, the cuts go where
something happened:

* **signals**: each entry mixin is prepared on the full bars and on the bars up to ``t``, for
  bars ``t`` where its full-data signal fired (sampled up to `signal_checks`) and for some
  where it did not; ``signal(t, side)`` must agree. A few evenly spaced cuts also compare
  every bar up to ``t``. A mismatch names the mixin.
* **decisions and trades**: the whole bot is re-run on data cut at bars where it decided
  something (sampled up to `decision_cuts`) and at evenly spaced bars. Every decision before
  the cut (an exit decision on the cut bar too: it needs no next bar), and every trade closed
  before the cut bar, must equal the full run. This covers exit mixins and the strategy.

Bars are only removed at the end, so a bar index means the same bar in both runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from strategy.base import BaseStrategy, StrategySpec
from strategy.mixins.base import Bars, Side
from trading.config import BotConfig


@dataclass(frozen=True, slots=True)
class Finding:
    """One value that differs between the full run and a run cut at `cut`."""

    check: str  # signal | decision | trade
    source: str  # the mixin name, or "strategy"
    symbol: str
    bar: int
    time: str
    cut: int  # last bar index of the truncated data
    full: str
    truncated: str


@dataclass(slots=True)
class LookaheadReport:
    cuts: list[int]
    signals_checked: int = 0
    decisions_checked: int = 0
    trades_checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def biased_sources(self) -> list[str]:
        return sorted({f.source for f in self.findings})

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "cuts": self.cuts,
            "signals_checked": self.signals_checked,
            "decisions_checked": self.decisions_checked,
            "trades_checked": self.trades_checked,
            "biased_sources": self.biased_sources,
            "findings": [asdict(f) for f in self.findings],
        }


def frame_bars(df: pd.DataFrame) -> Bars:
    """Return the Bars of a canonical OHLCV frame (UTC index)."""
    idx = df.index.tz_convert("UTC").tz_localize(None) if df.index.tz is not None else df.index
    col = {c: df[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close", "volume")}
    return Bars(idx.to_numpy(dtype="datetime64[ns]"), col["open"], col["high"], col["low"], col["close"], col["volume"])


def cut_points(n: int, warmup: int, count: int) -> list[int]:
    """Return up to `count` distinct last-bar indices spread over (warmup, n - 2]."""
    lo, hi = min(max(warmup + 1, n // 10), n - 2), n - 2
    if hi < lo or count <= 0:
        return []
    return sorted({int(round(x)) for x in np.linspace(lo, hi, count)})


def _sample(items: list[int], count: int) -> list[int]:
    """Return up to `count` items spread evenly over `items` (deterministic)."""
    if len(items) <= count:
        return list(items)
    return [items[int(k)] for k in np.linspace(0, len(items) - 1, count).round()]


def analyse(
    cfg: BotConfig,
    frames: Mapping[str, pd.DataFrame],
    *,
    cuts: int = 8,
    decision_cuts: int = 12,
    signal_checks: int = 200,
) -> LookaheadReport:
    """Run both checks and return every difference found."""
    spec = StrategySpec.from_config(cfg)
    first = next(iter(frames))
    n = len(frames[first])
    warmup = max((c(p).warmup() for c, p in (*spec.entries, *spec.exits)), default=0)
    even = cut_points(n, warmup, cuts)
    report = LookaheadReport(cuts=even)
    for sym, df in frames.items():
        _check_signals(spec, sym, df, even, warmup, signal_checks, report)
    full = _run(cfg, frames)
    at_decisions = _sample(sorted({(d[0], d[1]) for d in full.decisions if d[1] > 0}, key=lambda x: (x[1], x[0])),
                           decision_cuts)  # type: ignore[arg-type]
    for sym, t in sorted({*((first, t) for t in even), *at_decisions}, key=lambda x: (x[1], x[0])):
        cut_time = frames[sym].index[t]
        cut = {s: df[df.index <= cut_time] for s, df in frames.items()}
        if any(len(df) < 2 for df in cut.values()):
            continue
        _compare_runs(full, _run(cfg, cut), cut, t, report)
    report.cuts = sorted({*even, *(t for _, t in at_decisions)})
    return report


def _run(cfg: BotConfig, frames: Mapping[str, pd.DataFrame]) -> BaseStrategy:
    from trading.engine import build_cerebro

    cerebro, _ = build_cerebro(cfg, frames)
    return cerebro.run()[0]


def _check_signals(spec: StrategySpec, sym: str, df: pd.DataFrame, even: list[int], warmup: int,
                   signal_checks: int, report: LookaheadReport) -> None:
    bars = frame_bars(df)
    n = len(bars)

    def head(t: int) -> Bars:
        return Bars(*(getattr(bars, k)[: t + 1] for k in ("time", "open", "high", "low", "close", "volume")))

    for cls, params in spec.entries:
        full = cls(params)
        full.prepare(bars)
        fired = [i for i in range(warmup, n) if any(full.signal(i, s) for s in Side)]
        fired_set = set(fired)
        quiet = [i for i in range(warmup, n) if i not in fired_set]
        checks = {t: (t,) for t in (*_sample(fired, signal_checks), *_sample(quiet, signal_checks // 4))}
        checks.update({t: tuple(range(t + 1)) for t in even})  # whole prefixes at the even cuts
        for t, bars_to_compare in sorted(checks.items()):
            part = cls(params)
            part.prepare(head(t))
            for side in Side:
                for i in bars_to_compare:
                    a, b = bool(full.signal(i, side)), bool(part.signal(i, side))
                    if a != b:
                        report.findings.append(Finding("signal", cls.__name__, sym, i, _iso(df.index[i]), t,
                                                       f"{side.value}={a}", f"{side.value}={b}"))
                        break  # the first difference per side and cut is enough
                report.signals_checked += len(bars_to_compare)


def _compare_runs(full: BaseStrategy, part: BaseStrategy, cut: Mapping[str, pd.DataFrame], t: int,
                  report: LookaheadReport) -> None:
    last = {s: len(df) - 1 for s, df in cut.items()}
    # No entry is taken on a symbol's last bar (nothing to fill on); an exit decision there is fine.
    def comparable(d: tuple) -> bool:
        return d[0] in last and (d[1] < last[d[0]] or (d[1] == last[d[0]] and d[2] == "exit"))

    full_dec = [d for d in full.decisions if comparable(d)]
    part_dec = [d for d in part.decisions if comparable(d)]
    report.decisions_checked += len(full_dec)
    _first_difference(full_dec, part_dec, "decision", cut, t, report, lambda d: (d[0], d[1], f"{d[2]} {d[3]}"))

    def closed_before_end(rec) -> bool:  # type: ignore[no-untyped-def]
        return pd.Timestamp(rec.exit_time) < cut[rec.symbol].index[last[rec.symbol]]

    full_tr = sorted((_trade_key(r) for r in full.trade_records if closed_before_end(r)), key=str)
    part_tr = sorted((_trade_key(r) for r in part.trade_records if closed_before_end(r)), key=str)
    report.trades_checked += len(full_tr)
    _first_difference(full_tr, part_tr, "trade", cut, t, report, lambda k: (k[0], k[1], " ".join(map(str, k[2:]))))


def _trade_key(r) -> tuple:  # type: ignore[no-untyped-def]
    return (r.symbol, r.entry_time, r.side, r.exit_time, round(r.entry_price, 10), round(r.exit_price, 10),
            round(r.quantity, 10), r.exit_reason, r.entry_tag)


def _first_difference(a: list, b: list, check: str, cut: Mapping[str, pd.DataFrame], t: int,
                      report: LookaheadReport, show) -> None:  # type: ignore[no-untyped-def]
    for k in range(max(len(a), len(b))):
        x = a[k] if k < len(a) else None
        y = b[k] if k < len(b) else None
        if x != y:
            ref = x if x is not None else y
            sym, where, _ = show(ref)
            if isinstance(where, int):
                bar, time = where, _iso(cut[sym].index[where])
            else:
                time = _iso(where)
                bar = int(cut[sym].index.get_indexer([pd.Timestamp(where)])[0])
            report.findings.append(Finding(check, "strategy", sym, bar, time, t,
                                           show(x)[2] if x is not None else "(none)",
                                           show(y)[2] if y is not None else "(none)"))
            return


def _iso(ts: object) -> str:
    return pd.Timestamp(ts).isoformat()
