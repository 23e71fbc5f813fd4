"""Per-symbol book of a composed strategy, and the spec it is built from.

`StrategySpec` is what BaseStrategy needs from a BotConfig (the resolved mixin classes and
parameters, sizing and risk); `Book` holds one symbol's mixin instances, prepared bar
arrays, the open trade and its resting orders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import backtrader as bt
import numpy as np

from strategy.mixins.base import Bars, EntryMixin, ExitMixin, OpenTrade, Side

_NO_EXIT_YET = -(10**9)
_COLUMNS = ("datetime", "open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class StrategySpec:
    """Everything BaseStrategy needs, resolved from a BotConfig."""

    name: str
    direction: str  # long | short | both
    entry_logic: str  # any | all
    entries: tuple[tuple[type[EntryMixin], Any], ...]
    exits: tuple[tuple[type[ExitMixin], Any], ...]
    sizing: Any  # trading.config.SizingConfig
    risk: Any  # trading.config.RiskSection
    scale_in: Any = None  # trading.config.ScaleInConfig (`strategy.scale_in`); None: off

    @classmethod
    def from_config(cls, cfg: Any) -> StrategySpec:
        from strategy.registry import resolve_mixin

        s = cfg.strategy

        def build(specs: Sequence[Any], kind: str) -> tuple[tuple[type, Any], ...]:
            out = []
            for spec in specs:
                mixin_cls = resolve_mixin(spec.name, kind)  # type: ignore[arg-type]
                out.append((mixin_cls, mixin_cls.Params.model_validate(spec.parameters)))
            return tuple(out)

        return cls(
            name=s.name,
            direction=s.direction,
            entry_logic=s.entry_logic,
            entries=build(s.entry_mixins, "entry"),
            exits=build(s.exit_mixins, "exit"),
            sizing=s.resolved_sizing(),
            risk=cfg.risk_management,
            scale_in=s.scale_in,
        )

    @property
    def sides(self) -> tuple[Side, ...]:
        return {"long": (Side.LONG,), "short": (Side.SHORT,), "both": (Side.LONG, Side.SHORT)}[self.direction]


class Book:
    """Per-symbol state: mixin instances, the open trade and its resting orders.

    Preloaded bars (backtest) are prepared once. Streamed bars (paper, live) arrive one by
    one: each call extends the bar arrays and every mixin's values by the new bars, each
    mixin recomputing over its own rolling window (`EntryMixin.memory`, `extend`).
    """

    # False: recompute every mixin over all bars seen on each streamed bar (the behaviour
    # before the rolling window; the reference the tests and bench_latency compare with).
    rolling: ClassVar[bool] = True

    def __init__(self, data: bt.feeds.DataBase, spec: StrategySpec) -> None:
        self.data = data
        self.clock = data.lines.datetime  # its lencount is len(data), read without overhead
        self.symbol: str = data._name or f"data{id(data)}"
        self.entries = [c(p) for c, p in spec.entries]
        self.logic = spec.entry_logic
        self.exits = [c(p) for c, p in spec.exits]
        self.prepared = 0  # number of bars the mixins' indicators cover
        self.total = 0  # bars known to exist (preloaded) or 0 when streaming
        self.warmup = 0
        self.trade: OpenTrade | None = None
        self.entry_ref: int | None = None  # the entry order while it is working
        self.entry_ordered = 0.0  # quantity the entry asked for
        self.entry_filled = 0.0  # quantity of it filled so far (partial fills add up)
        self.exit_seen: dict[int, float] = {}  # exit order ref -> quantity already recorded
        self.stop_order: bt.Order | None = None  # resting exit legs (live objects)
        self.tp_order: bt.Order | None = None
        self.partial_order: bt.Order | None = None
        self.resize_exits = False
        self.exit_ref: int | None = None
        self.exit_reason: str | None = None
        # Exit orders cancelled but not yet reported done: ref -> the exit reason a fill books.
        self.retired: dict[int, str] = {}
        self.entry_fee = 0.0
        self.last_exit = _NO_EXIT_YET
        self.high: list[float] = []
        self.low: list[float] = []
        self.close: list[float] = []
        self.times: np.ndarray = np.array([], dtype="datetime64[ns]")
        self.candidates: dict[Side, list[bool] | None] = {}
        # Bar columns (_COLUMNS) and times (ns) with spare room: streamed bars are appended.
        self._cols = np.empty((len(_COLUMNS), 0))
        self._ns = np.empty(0, dtype=np.int64)

    def prepare(self, n: int) -> None:
        """Prepare the first n bars of the feed (all preloaded bars in a backtest)."""
        start = self.prepared
        if self.rolling and 0 < start < n:
            self._extend(start, n)
        else:
            self._prepare_all(n)
        self.prepared = n

    def _prepare_all(self, n: int) -> None:
        self._reserve(0, n)
        lines, cols = self.data.lines, self._cols
        for k, name in enumerate(_COLUMNS):
            # Preloaded line arrays hold every bar; streamed ones grow as bars arrive.
            cols[k, :n] = getattr(lines, name).array[:n]
        # Day numbers carry ~10 us of float error: round to the millisecond (half to even,
        # as Python's round in _extend).
        self._ns[:n] = np.round((cols[0, :n] - 719163.0) * 86_400_000).astype(np.int64) * 1_000_000
        bars = self._bars(n)
        for m in (*self.entries, *self.exits):
            m.prepare(bars)
        self.warmup = max((m.warmup() for m in (*self.entries, *self.exits)), default=0)
        self.candidates = {side: self._candidates(side, n) for side in Side}
        self.high, self.low, self.close = bars.high.tolist(), bars.low.tolist(), bars.close.tolist()

    def _extend(self, start: int, n: int) -> None:
        self._reserve(start, n)
        lines, cols, ns = self.data.lines, self._cols, self._ns
        source = [getattr(lines, name).array for name in _COLUMNS]
        for i in range(start, n):  # a bar or a few: plain Python beats numpy's call overhead
            row = [a[i] for a in source]
            cols[:, i] = row
            ns[i] = round((row[0] - 719163.0) * 86_400_000) * 1_000_000
            self.high.append(row[2])
            self.low.append(row[3])
            self.close.append(row[4])
        bars = self._bars(n)
        for m in (*self.entries, *self.exits):
            m.extend(bars, start)
        pick = any if self.logic == "any" else all
        for side, cand in self.candidates.items():
            if cand is None:
                continue
            arrays = [m.signal_array(side) for m in self.entries]
            if len(arrays) == 1:
                cand.extend(arrays[0][start:n])  # type: ignore[index]
            else:
                cand.extend(pick(a[i] for a in arrays) for i in range(start, n))  # type: ignore[index]

    def _reserve(self, start: int, n: int) -> None:
        """Make room for n bars, keeping the first `start`; doubling keeps appends O(1)."""
        if n <= self._cols.shape[1]:
            return
        room = max(n, 2 * self._cols.shape[1]) if start else n
        cols = np.empty((len(_COLUMNS), room))
        cols[:, :start] = self._cols[:, :start]
        ns = np.empty(room, dtype=np.int64)
        ns[:start] = self._ns[:start]
        self._cols, self._ns = cols, ns

    def _bars(self, n: int) -> Bars:
        """Return bars 0..n-1 as views of the buffers (nothing past n is visible)."""
        c = self._cols
        self.times = self._ns[:n].view("datetime64[ns]")
        return Bars(self.times, c[1, :n], c[2, :n], c[3, :n], c[4, :n], c[5, :n])

    def _candidates(self, side: Side, n: int) -> list[bool] | None:
        """Bars where the entry rule can fire at all (before cooldown), or None if unknown."""
        arrays = [m.signal_array(side) for m in self.entries]
        if any(a is None for a in arrays):
            return None
        stacked = np.asarray(arrays, dtype=bool).reshape(len(arrays), n)
        combined = stacked.any(axis=0) if self.logic == "any" else stacked.all(axis=0)
        return combined.tolist()
