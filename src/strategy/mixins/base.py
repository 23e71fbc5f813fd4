"""The contract of entry and exit mixins.

A mixin owns its parameters (a frozen pydantic model named ``Params``), computes its
indicators vectorised in `prepare` from the bars seen so far, and answers one question per
bar. BaseStrategy calls, per symbol and per bar index ``i`` (0 = oldest bar):

* entry: ``prepare(bars)`` once (backtest) or ``extend(bars, start)`` whenever new bars
  arrive (paper, live), then ``should_enter(i, side, bars_since_exit)``;
* exit: ``prepare(bars)`` / ``extend(bars, start)``, then ``on_entry(trade, i)`` when an
  entry signal is acted on (at bar ``i``, before the fill) and ``on_bar(trade, i)`` at the
  close of every bar while the position is open. Both return an `ExitPlan`.

Indicators: a mixin either returns its per-bar values from ``compute(bars)`` (arrays, index i =
bar i; `prepare` stores each as a list attribute of that name) or overrides `prepare`.

Streamed bars (the rolling window): when the values at bar t depend only on the last
``memory()`` bars, `extend` runs ``compute`` over those bars only and appends the new bars'
values, so a bar costs O(memory), not O(bars seen). A mixin with path-dependent state
overrides `extend` and carries the state. Without a memory (the default) or a ``compute``,
`extend` falls back to `prepare` over every bar: correct, and O(bars seen) per bar.

Nothing may read ``bars`` beyond index ``i``: indicators must be causal (TA-Lib's are), and
per-bar logic only indexes ``[i]`` or earlier. The lookahead tests enforce this.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class Side(enum.Enum):
    """Direction of a position."""

    LONG = "long"
    SHORT = "short"

    @property
    def sign(self) -> int:
        return 1 if self is Side.LONG else -1


@dataclass(slots=True)
class Bars:
    """OHLCV arrays of one symbol, oldest first, all the same length."""

    time: np.ndarray  # datetime64[ns], UTC
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return len(self.close)

    def tail(self, start: int) -> Bars:
        """Return bars[start:] (views, no copy)."""
        return Bars(
            self.time[start:],
            self.open[start:],
            self.high[start:],
            self.low[start:],
            self.close[start:],
            self.volume[start:],
        )


@dataclass(slots=True)
class OpenTrade:
    """What exit mixins know about the position they manage."""

    symbol: str
    side: Side
    signal_index: int  # bar whose close triggered the entry
    ref_price: float  # that bar's close: initial levels are anchored here
    entry_tag: str
    quantity: float = 0.0
    entry_index: int | None = None  # bar of the entry fill
    entry_price: float | None = None  # average fill price
    best_price: float = float("nan")  # highest high (long) / lowest low (short) since entry
    worst_price: float = float("nan")  # lowest low (long) / highest high (short) since entry
    stop: float | None = None
    stop_reason: str = "stop_loss"
    take_profit: float | None = None
    take_profit_reason: str = "take_profit"
    partial_target: float | None = None  # first target for part of the position
    partial_fraction: float = 0.0
    partial_reason: str = "partial_take_profit"
    partial_done: bool = False

    @property
    def is_filled(self) -> bool:
        return self.entry_price is not None


@dataclass(slots=True)
class ExitPlan:
    """An exit mixin's answer: protective levels, or an exit at the next open."""

    stop: float | None = None
    stop_reason: str = "stop_loss"
    take_profit: float | None = None
    take_profit_reason: str = "take_profit"
    exit_now: str | None = None  # reason; the position is closed at the next bar's open
    # Close `partial_fraction` of the position at `partial_target` (set in on_entry only).
    partial_target: float | None = None
    partial_fraction: float = 0.0
    partial_reason: str = "partial_take_profit"


class MixinParams(BaseModel):
    """Base of every mixin's Params: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EntryParams(MixinParams):
    e_cooldown_bars: int = Field(0, ge=0, description="Bars to wait after an exit before this mixin may fire again.")


class ExitParams(MixinParams):
    pass


class _Mixin:
    kind: ClassVar[Literal["entry", "exit"]]
    Params: ClassVar[type[MixinParams]]
    description: ClassVar[str] = ""

    def __init__(self, params: MixinParams | dict[str, Any] | None = None) -> None:
        if params is None or isinstance(params, dict):
            params = self.Params.model_validate(params or {})
        self.p = params

    @property
    def name(self) -> str:
        return type(self).__name__

    def compute(self, bars: Bars) -> dict[str, np.ndarray] | None:
        """Return the per-bar values over `bars` by attribute name (vectorised), or None."""
        return None

    def prepare(self, bars: Bars) -> None:
        """Compute indicators for all of `bars`; keep per-bar lists on self."""
        self.bars = bars
        # Lists index faster than arrays in the per-bar loop.
        for name, values in (self.compute(bars) or {}).items():
            setattr(self, name, values.tolist())

    def warmup(self) -> int:
        """Return the number of bars before this mixin's decisions are valid."""
        return 0

    def memory(self) -> int | None:
        """Return M such that the values at bar t follow from bars t-M+1..t alone, or None.

        None (the default): unknown, so streamed bars are prepared over every bar seen.
        See `strategy.indicators.memory` for the rules (periods, recursive smoothers).
        """
        return None

    def extend(self, bars: Bars, start: int) -> None:
        """Prepare `bars` whose first `start` bars are prepared already (streamed bars).

        With a memory M, `compute` runs over the last M - 1 prepared bars and the new ones;
        the new bars' values are appended. Otherwise `prepare` runs over all of `bars`.
        """
        memory = self.memory()
        lo = start - memory + 1 if memory is not None else 0
        computed = self.compute(bars.tail(lo)) if lo > 0 else None
        if computed is None:
            self.prepare(bars)
            return
        self.bars = bars
        new = len(bars) - start
        for name, values in computed.items():
            getattr(self, name).extend(values[len(values) - new :].tolist())

    def diagnostics(self) -> dict[str, Any] | None:
        """Return a small JSON-ready summary for the result's diagnostics, or None (the default)."""
        return None


class EntryMixin(_Mixin):
    """Decides whether to open a position at the close of bar i."""

    kind = "entry"
    Params = EntryParams
    sides: ClassVar[frozenset[Side]] = frozenset({Side.LONG, Side.SHORT})

    def should_enter(self, i: int, side: Side, bars_since_exit: int) -> bool:
        """Apply the cooldown, then the mixin's own `signal`."""
        if bars_since_exit < self.p.e_cooldown_bars:  # type: ignore[attr-defined]
            return False
        return self.signal(i, side)

    def signal(self, i: int, side: Side) -> bool:
        """Return True when the rule fires for `side` at bar i."""
        raise NotImplementedError

    def signal_array(self, side: Side) -> list[bool] | None:
        """Return the rule evaluated for every prepared bar, or None if it is path-dependent.

        Optional: a mixin whose rule is a pure function of past bars can return it here
        (computed vectorised in `prepare`) and BaseStrategy skips bars where it is False
        without calling `should_enter`. It must equal `signal(i, side)` for every i.
        """
        return None


class ExitMixin(_Mixin):
    """Manages an open position: protective levels and discretionary exits."""

    kind = "exit"
    Params = ExitParams

    def on_entry(self, trade: OpenTrade, i: int) -> ExitPlan:
        """Return the initial levels for a trade signalled at bar i (before the fill)."""
        return ExitPlan()

    def on_bar(self, trade: OpenTrade, i: int) -> ExitPlan:
        """Return the levels (or an exit) after the close of bar i, with the position open."""
        return ExitPlan(trade.stop, trade.stop_reason, trade.take_profit, trade.take_profit_reason)


def combine(plans: list[ExitPlan], side: Side) -> ExitPlan:
    """Merge exit plans: the most protective stop, the nearest target, the first market exit."""
    if len(plans) == 1:
        return plans[0]
    out = ExitPlan()
    sign = side.sign
    for plan in plans:
        if plan.exit_now and out.exit_now is None:
            out.exit_now = plan.exit_now
        if plan.stop is not None and (out.stop is None or sign * plan.stop > sign * out.stop):
            out.stop, out.stop_reason = plan.stop, plan.stop_reason
        if plan.take_profit is not None and (
            out.take_profit is None or sign * plan.take_profit < sign * out.take_profit
        ):
            out.take_profit, out.take_profit_reason = plan.take_profit, plan.take_profit_reason
        if plan.partial_target is not None and (
            out.partial_target is None or sign * plan.partial_target < sign * out.partial_target
        ):
            out.partial_target, out.partial_fraction = plan.partial_target, plan.partial_fraction
            out.partial_reason = plan.partial_reason
    return out
