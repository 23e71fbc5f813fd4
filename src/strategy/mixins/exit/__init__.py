"""Built-in exit mixins; importing this package registers them."""

from strategy.mixins.exit.advanced_atr import AdvancedATRExitMixin
from strategy.mixins.exit.atr import ATRExitMixin
from strategy.mixins.exit.fixed_ratio import FixedRatioExitMixin
from strategy.mixins.exit.ma_crossover import MACrossoverExitMixin
from strategy.mixins.exit.time_based import TimeBasedExitMixin
from strategy.mixins.exit.trailing_stop import TrailingStopExitMixin

__all__ = [
    "ATRExitMixin",
    "AdvancedATRExitMixin",
    "FixedRatioExitMixin",
    "MACrossoverExitMixin",
    "TimeBasedExitMixin",
    "TrailingStopExitMixin",
]
