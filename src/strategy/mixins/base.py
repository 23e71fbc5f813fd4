"""The contract of entry and exit mixins.

A mixin owns its parameters (a frozen pydantic model named ``Params``), computes its
indicators vectorised in `prepare` from the bars seen so far, and answers one question per
bar. BaseStrategy calls, per symbol and per bar index ``i`` (0 = oldest bar):

* entry: ``prepare(bars)`` once (backtest) or whenever new bars arrive (live), then
  ``should_enter(i, side, bars_since_exit)``;
* exit: ``prepare(bars)``, then ``on_entry(trade, i)`` when an entry signal is acted on (at
  bar ``i``, before the fill) and ``on_bar(trade, i)`` at the close of every bar while the
  position is open. Both return an `ExitPlan`.

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

    def prepare(self, bars: Bars) -> None:
        """Compute indicators for all of `bars` (vectorised); keep arrays on self."""
        self.bars = bars

    def warmup(self) -> int:
        """Return the number of bars before this mixin's decisions are valid."""
        return 0

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
