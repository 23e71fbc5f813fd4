"""Built-in exit mixins; importing this package registers them."""

from strategy.mixins.exit.advanced_atr import AdvancedATRExitMixin

__all__ = ["AdvancedATRExitMixin"]
