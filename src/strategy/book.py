"""Per-symbol book of a composed strategy, and the spec it is built from.

`StrategySpec` is what BaseStrategy needs from a BotConfig (the resolved mixin classes and
parameters, sizing and risk); `Book` holds one symbol's mixin instances, prepared bar
arrays, the open trade and its resting orders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import backtrader as bt
import numpy as np

from strategy.mixins.base import Bars, EntryMixin, ExitMixin, OpenTrade, Side

_NO_EXIT_YET = -(10**9)


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
        )

    @property
    def sides(self) -> tuple[Side, ...]:
        return {"long": (Side.LONG,), "short": (Side.SHORT,), "both": (Side.LONG, Side.SHORT)}[self.direction]


class Book:
    """Per-symbol state: mixin instances, the open trade and its resting orders."""

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
        self.entry_fee = 0.0
        self.last_exit = _NO_EXIT_YET
        self.high: list[float] = []
        self.low: list[float] = []
        self.close: list[float] = []
        self.times: np.ndarray = np.array([], dtype="datetime64[ns]")

    def prepare(self, n: int) -> None:
        """Compute indicators over the first n bars of the feed (all preloaded bars in a backtest)."""
        d = self.data
        # Preloaded line arrays hold every bar; streamed ones grow as bars arrive.
        arr = {k: np.asarray(getattr(d.lines, k).array[:n], dtype=np.float64)
               for k in ("datetime", "open", "high", "low", "close", "volume")}
        # Day numbers carry ~10 us of float error: round to the millisecond.
        ms = np.round((arr["datetime"] - 719163.0) * 86_400_000).astype("int64")
        times = ms.astype("datetime64[ms]").astype("datetime64[ns]")
        bars = Bars(times, arr["open"], arr["high"], arr["low"], arr["close"], arr["volume"])
        for m in (*self.entries, *self.exits):
            m.prepare(bars)
        self.warmup = max((m.warmup() for m in (*self.entries, *self.exits)), default=0)
        self.candidates = {side: self._candidates(side, n) for side in Side}
        self.high, self.low, self.close = bars.high.tolist(), bars.low.tolist(), bars.close.tolist()
        self.times = times
        self.prepared = n

    def _candidates(self, side: Side, n: int) -> list[bool] | None:
        """Bars where the entry rule can fire at all (before cooldown), or None if unknown."""
        arrays = [m.signal_array(side) for m in self.entries]
        if any(a is None for a in arrays):
            return None
        stacked = np.asarray(arrays, dtype=bool).reshape(len(arrays), n)
        combined = stacked.any(axis=0) if self.logic == "any" else stacked.all(axis=0)
        return combined.tolist()
