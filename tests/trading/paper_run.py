"""The paper replay several tests run: an RSI/BB entry, ATR exit bot on AAA 1h, and its bars.

`paper_config` gives the bot's config with the broker section a test wants; `write_replay_bars`
writes the 400 synthetic hourly bars it replays (seed 11, from 2021-03-01).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from trading.config import BotConfig, parse_config
from trading.data import generate_ohlcv

REPLAY_BARS = 400

STRATEGY: dict[str, Any] = {
    "entry_mixins": [
        {
            "name": "RSIOrBBEntryMixin",
            "parameters": {
                "e_rsi_period": 14,
                "e_rsi_oversold": 35,
                "e_bb_period": 20,
                "e_bb_dev": 1.8,
                "e_cooldown_bars": 2,
            },
        }
    ],
    "exit_mixins": [
        {
            "name": "AdvancedATRExitMixin",
            "parameters": {
                "x_atr_period": 14,
                "x_sl_multiplier": 1.5,
                "x_tp_multiplier": 2.0,
                "x_trailing_enabled": True,
            },
        }
    ],
    "position_size": 0.2,
}


def paper_config(bot: str, broker: Mapping[str, Any], *, strategy: str = "t") -> BotConfig:
    """Return the replay bot's config named `bot`, with `broker` as its broker section."""
    doc = {
        "bot": {"name": bot, "symbols": ["AAA"], "timeframe": "1h"},
        "data": {"source": "synthetic", "bars": REPLAY_BARS, "seed": 7},
        "strategy": {"name": strategy, **STRATEGY},
        "broker": dict(broker),
        "risk_management": {"stop_loss_required": True},
    }
    return parse_config(yaml.safe_dump(doc, sort_keys=False))


def write_replay_bars(path: Path, bars: int = REPLAY_BARS) -> Path:
    """Write the synthetic AAA bars a paper replay reads to the CSV `path` and return it."""
    frame = generate_ohlcv(bars, seed=11, timeframe="1h", start="2021-03-01")
    frame.rename_axis("datetime").to_csv(path)
    return path
