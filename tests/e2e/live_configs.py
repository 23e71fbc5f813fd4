"""Bot configs for live runs against the fakes: the rsi_bb_atr bot on 1-minute candles.

The fake Binance runs its clock `SPEED` times faster than real time (one 1m candle every 0.1 s),
so the live feed is told to look at the exchange's clock often (`data.poll_seconds`) and the
broker to poll the venue on every pass (`broker.ccxt.poll_interval: 0`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.fakes.fake_exchange import API_KEY, API_SECRET, FakeExchange

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "strategies" / "rsi_bb_atr.yaml"
SPEED = 600.0  # exchange milliseconds per real millisecond
WARMUP = 60
MINUTE_MS = 60_000
VENUE_ENV = {"BINANCE_API_KEY": API_KEY, "BINANCE_API_SECRET": API_SECRET}


def fast_exchange(**kwargs: Any) -> FakeExchange:
    """The fake Binance on a fast clock (not started)."""
    return FakeExchange(check_timestamp=False, seed=1, speed=SPEED, **kwargs)


def ccxt_knobs(fake: FakeExchange) -> dict[str, Any]:
    """The broker.ccxt settings that point ccxt at the fake, with quick retries."""
    knobs = {"urls": fake.api_urls(), "poll_interval": 0.0, "rate_limit_ms": 1, "timeout_ms": 1000,
             "retry": {"attempts": 4, "base_delay": 0.01, "max_delay": 0.05}}
    if fake.ws is None:  # a REST-only fake: poll, rather than reach for Binance's real websocket host
        knobs["websocket"] = "off"
    return knobs


def bot_config(fake: FakeExchange, *, mode: str = "live", **sections: Any) -> dict[str, Any]:
    """The rsi_bb_atr bot on the fake: `mode` live trades there, paper reads its public candles."""
    raw = yaml.safe_load(CONFIG.read_text())
    raw["bot"]["timeframe"] = "1m"
    raw["data"] = {"warmup_bars": WARMUP, "poll_seconds": 0.01}
    if mode == "live":
        raw["broker"].update(type="binance", trading_mode="live", testnet=False, ccxt=ccxt_knobs(fake))
    else:
        raw["broker"]["ccxt"] = {"exchange": "binance", **ccxt_knobs(fake)}
    raw.update(sections)
    return raw


def bot_yaml(fake: FakeExchange, *, mode: str = "live", **sections: Any) -> str:
    return yaml.safe_dump(bot_config(fake, mode=mode, **sections), sort_keys=False)
