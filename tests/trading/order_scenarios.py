"""Hand-written candle scenarios for the order stream: an entry mixin we control and helpers.

Every scenario uses the layout of tests/strategy/test_advanced_atr_exit.py: bars 0..4 are
quiet (100, 101, 99, 100), so with ``x_atr_period: 3`` the ATR at bar 4 is 2 and its close
100; `FireAtBars` fires at the bars given. For a long from a signal at bar 4 the AdvancedATR
stop is 100 - 2 x 2 = 96 and the target 100 + 3 x 2 = 106; the entry fills at bar 5's open.
Short scenarios mirror the candles around 100 (`mirror`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from strategy.mixins.base import EntryMixin, EntryParams, ExitMixin, Side
from tests.strategy.conftest import SYMBOL, Candle, flat_candles, make_config, make_frame
from tests.trading.order_book_checks import run_checked
from trading.bus import EventBus
from trading.events import Event, OrderEvent, OrderSubmitted

FIRE = f"{__name__}:FireAtBars"
NO_PROTECTION = f"{__name__}:NoProtectionExit"
PRE: list[Candle] = flat_candles(5)  # bars 0..4
ISOLATED = {"x_trailing_enabled": False, "x_breakeven_enabled": False}
ATR = {"x_atr_period": 3, "x_sl_multiplier": 2.0, "x_tp_multiplier": 3.0}


class FireAtBars(EntryMixin):
    """Fires at the listed bar indices, for every side the bot's `direction` allows."""

    description = "test double: fire at fixed bars"

    class Params(EntryParams):
        e_fire_at: tuple[int, ...] = ()

    def signal(self, i: int, side: Side) -> bool:
        return i in self.p.e_fire_at  # type: ignore[attr-defined]


class NoProtectionExit(ExitMixin):
    """Gives neither a stop nor a target."""

    description = "test double: no stop, no target"


def mirror(candles: Sequence[Candle], axis: float = 100.0) -> list[Candle]:
    """Reflect bars around `axis` (p -> 2 axis - p, high and low swap): a long case becomes a short one."""
    m = 2 * axis
    return [(m - o, m - lo, m - h, m - c) for (o, h, lo, c) in candles]


def scenario_config(
    *,
    side: str = "long",
    fire_at: Sequence[int] = (4,),
    exit_mixin: str = "AdvancedATRExitMixin",
    exit_params: dict[str, Any] | None = None,
    quantity: float = 1.0,
    strategy: dict[str, Any] | None = None,
    **overrides: Any,
) -> Any:
    """A bot with FireAtBars entries, one exit mixin, a fixed quantity and no costs."""
    params = {**ATR, **ISOLATED} if exit_mixin == "AdvancedATRExitMixin" else {}
    params.update(exit_params or {})
    strat = {
        "direction": side,
        "entry_mixins": [{"name": FIRE, "parameters": {"e_fire_at": list(fire_at)}}],
        "exit_mixins": [{"name": exit_mixin, "parameters": params}],
        "sizing": {"method": "fixed", "quantity": quantity},
        **(strategy or {}),
    }
    return make_config({"strategy": strat, **overrides})


def run_scenario(cfg: Any, candles: Sequence[Candle], *, volumes: dict[int, float] | None = None,
                 volume: float = 1_000.0) -> tuple[Any, list[Event], pd.DataFrame]:
    """Run the candles (records checked against the broker at every bar); return strategy, events, frame."""
    frame = make_frame(candles, volume=volume)
    for k, v in (volumes or {}).items():
        frame.iloc[k, frame.columns.get_loc("volume")] = v
    bus, events = EventBus(), []
    bus.subscribe(events.append, inline=True, name="all")
    strat = run_checked(cfg, {SYMBOL: frame}, bus=bus)
    return strat, events, frame


def of(events: list[Event], kind: type, cid: Any = None) -> list[Any]:
    """The events of a type, optionally of one client order id."""
    return [e for e in events if isinstance(e, kind) and (cid is None or getattr(e, "client_order_id", None) == cid)]


def submitted(events: list[Event], tag: str) -> list[OrderSubmitted]:
    return [e for e in events if isinstance(e, OrderSubmitted) and e.tag == tag]


def history(events: list[Event], cid: Any) -> list[str]:
    """The names of one order's events, in order."""
    return [type(e).__name__ for e in events if isinstance(e, OrderEvent) and e.client_order_id == cid]
