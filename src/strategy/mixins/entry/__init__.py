"""Built-in entry mixins; importing this package registers them."""

from strategy.mixins.entry.rsi_bb import RSIOrBBEntryMixin
from strategy.mixins.entry.rsi_bb_volume import RSIBBVolumeEntryMixin

__all__ = ["RSIBBVolumeEntryMixin", "RSIOrBBEntryMixin"]
