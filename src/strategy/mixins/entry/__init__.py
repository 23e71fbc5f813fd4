"""Built-in entry mixins; importing this package registers them."""

from strategy.mixins.entry.rsi_bb import RSIOrBBEntryMixin

__all__ = ["RSIOrBBEntryMixin"]
