"""How many past bars an indicator's value depends on: the rolling window of streamed bars.

When bars arrive one by one (paper and live), a mixin recomputes its indicators over the
last ``memory`` bars only, not over the whole history (see `EntryMixin.memory`). The value
at bar t computed from bars ``t-memory+1 .. t`` must equal the one computed from every bar.

* **Finite windows** (SMA, standard deviation, Bollinger bands, highest high, lowest low):
  the value at t reads bars ``t-period+1 .. t``, so the memory is the period. TA-Lib keeps
  running sums for SMA and STDDEV, whose rounding carries the whole history: a window
  agrees with the full run to about 1e-13 (relative), not to the last bit.
* **Recursive smoothers** (Wilder's RSI and ATR, EMA): ``s[t] = (1 - a) s[t-1] + a x[t]``
  with ``a >= 1/period``. A window starts from another seed than the full run; the seed's
  weight after k bars is ``(1 - a)^k <= exp(-k / period)``. `recursive_memory` waits
  `DECAY_PERIODS` periods: ``exp(-60) ~ 9e-27``, so the seed's trace is below double
  precision (2.2e-16) unless it differed from the value by more than ten orders of
  magnitude. Measured on generated and real BTCUSDT bars, TA-Lib's RSI, ATR and EMA from a
  late start become bit-identical to the full run after at most 43 periods (RSI, ATR) and
  20 (EMA); 60 leaves a margin of 17 periods, a factor of ``exp(17) ~ 2e7`` on the seed.
* **Path-dependent state** (SuperTrend's ratcheting bands, a running minimum) has no finite
  memory: such mixins carry their state from bar to bar instead (their own ``extend``).
"""

from __future__ import annotations

DECAY_PERIODS = 60


def recursive_memory(period: int) -> int:
    """Return the memory of a Wilder (RSI, ATR) or EMA smoother of `period` bars.

    One bar more than `DECAY_PERIODS` periods: RSI and ATR read the previous close.
    """
    return DECAY_PERIODS * period + 1
