"""Where a live run's bars come from, read from the broker section (docs/live.md, docs/live-ibkr.md).

`atf live` trades at the venue named by ``broker.type`` (``binance``, any ccxt exchange id, or
``ibkr``) and reads its bars there. `atf paper` without ``--replay`` fills orders with the
SimBroker and reads live bars from ``broker.type`` when it is a venue, otherwise from the venue
its section names: ``broker.ccxt.exchange`` (public candles, no credentials) or ``broker.ibkr``.
This module imports nothing heavy: the config validates the sections with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from trading.exceptions import ATFError

PAPER = "paper"
IBKR = "ibkr"


class ModeUnavailable(ATFError):
    """The mode needs a feed or broker that this configuration or installation does not have."""


@dataclass(frozen=True)
class LiveSource:
    """The venue a live run reads bars from: ``ccxt`` (with the exchange id) or ``ibkr``."""

    kind: Literal["ccxt", "ibkr"]
    exchange: str


def check_venue_sections(broker: Any) -> None:
    """Refuse venue sections that do not fit the broker type; raise ValueError naming the key."""
    kind = broker.type.lower()
    if broker.ccxt is not None and broker.ibkr is not None:
        raise ValueError("give either 'ccxt' or 'ibkr', not both")
    if broker.ccxt is not None and kind == IBKR:
        raise ValueError("ccxt: the ccxt settings are for ccxt venues, but type is ibkr (use 'ibkr:')")
    if broker.ccxt is not None and kind == PAPER and not broker.ccxt.exchange:
        raise ValueError("ccxt.exchange: with type paper, name the ccxt exchange whose candles feed "
                         "paper runs (e.g. exchange: binance)")
    if broker.ibkr is None:
        return
    if kind not in (IBKR, PAPER):
        raise ValueError(f"ibkr: the Interactive Brokers settings need type: ibkr (type is {broker.type!r})")
    if "warmup_bars" in broker.ibkr.model_fields_set:
        raise ValueError("ibkr.warmup_bars: a bot's warm-up is data.warmup_bars (it applies to every live feed)")
    from trading.brokers.ibkr_config import IBKRSettings

    try:
        IBKRSettings.from_broker_config(broker)
    except ValidationError as exc:
        why = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise ValueError(f"ibkr: {why}") from None


def live_source(broker: Any) -> LiveSource:
    """Return where live bars come from for this broker section (see the module docstring)."""
    kind = broker.type.lower()
    if kind == IBKR or (kind == PAPER and broker.ibkr is not None):
        return LiveSource("ibkr", IBKR)
    exchange = broker.ccxt.exchange if broker.ccxt is not None else None
    if kind != PAPER:
        return LiveSource("ccxt", (exchange or kind).lower())
    if exchange:
        return LiveSource("ccxt", exchange.lower())
    raise ModeUnavailable(
        "paper trading without --replay reads live bars from a venue, and broker.type is paper: set "
        "broker.ccxt.exchange (e.g. binance: its public candles, no API key needed) or broker.ibkr "
        "(Interactive Brokers bars); offline, replay recorded bars with `atf paper CONFIG --replay FILE`"
    )


def is_venue(broker: Any) -> bool:
    """True when ``broker.type`` names a venue (a ccxt id or ibkr), not the SimBroker."""
    return broker.type.lower() != PAPER
