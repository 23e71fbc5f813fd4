"""Small causal helpers over boolean series."""

from __future__ import annotations

import numpy as np


def true_within(x: np.ndarray, bars: int) -> np.ndarray:
    """Return True at t when x was True on any of bars t-bars+1..t (reads nothing after t)."""
    cs = np.concatenate([[0], np.cumsum(x, dtype=np.int64)])
    start = np.maximum(np.arange(len(x)) + 1 - bars, 0)
    return cs[1:] - cs[start] > 0
