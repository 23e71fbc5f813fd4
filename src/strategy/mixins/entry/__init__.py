"""Built-in entry mixins; importing this package registers them."""

from strategy.mixins.entry.hmm_lstm import HMMLSTMEntryMixin
from strategy.mixins.entry.rsi_bb import RSIOrBBEntryMixin
from strategy.mixins.entry.rsi_bb_volume import RSIBBVolumeEntryMixin
from strategy.mixins.entry.rsi_ichimoku import RSIIchimokuEntryMixin
from strategy.mixins.entry.rsi_volume_supertrend import RSIVolumeSuperTrendEntryMixin

__all__ = [
    "HMMLSTMEntryMixin",
    "RSIBBVolumeEntryMixin",
    "RSIIchimokuEntryMixin",
    "RSIOrBBEntryMixin",
    "RSIVolumeSuperTrendEntryMixin",
]
