"""Per-window summaries of the HMM/LSTM mixin for the result JSON (small: no per-bar arrays).

The regime per bar goes out run-length encoded (``[time, regime]`` at each change), which
is what the HTML report draws as a band under the price.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from strategy.ml.features import FEATURE_NAMES, HMM_COLUMNS, forward_up


def _num(v: float) -> float | None:
    v = float(v)
    return float(f"{v:.6g}") if math.isfinite(v) else None


def _iso(t: Any) -> str:
    return str(np.datetime64(t, "s")) + "Z"


def _hit_rates(prob: np.ndarray, realised: np.ndarray, up_share: float) -> dict[str, Any]:
    """Hit rate of the forecast (P > 0.5 means up) and of the naive one (the window's majority)."""
    known = np.isfinite(realised) & np.isfinite(prob)
    m = int(known.sum())
    if not m:
        return {"bars": 0, "hit_rate": None, "naive_hit_rate": None}
    real = realised[known] > 0.5
    hit = float(np.mean((prob[known] > 0.5) == real))
    naive = float(np.mean(real == (up_share >= 0.5)))
    return {"bars": m, "hit_rate": _num(hit), "naive_hit_rate": _num(naive)}


def _states(model: Any) -> list[dict[str, Any]]:
    """HMM states in feature units (the scaler undone), with their regime."""
    cols = list(HMM_COLUMNS)
    mu, sd = model.scaler.mean[cols], model.scaler.std[cols]
    names = [FEATURE_NAMES[c] for c in cols]
    out = []
    for i, regime in enumerate(model.hmm.regimes):
        means = model.hmm.means[i] * sd + mu
        var = model.hmm.variances[i] * sd * sd
        out.append(
            {
                "state": i,
                "regime": regime,
                "mean": {n: _num(v) for n, v in zip(names, means, strict=True)},
                "variance": {n: _num(v) for n, v in zip(names, var, strict=True)},
            }
        )
    return out


def summarise(mixin: Any) -> dict[str, Any]:
    """Return the mixin's diagnostics dict (JSON-ready)."""
    bars, p = mixin.bars, mixin.p
    times, n = bars.time, len(bars)
    realised = forward_up(bars.close, p.e_horizon)  # known only where t + h < n
    windows = []
    for k in sorted(mixin.windows):
        w = mixin.windows[k]
        model, s, e = w["model"], w["start"], w["end"]
        served = np.flatnonzero(mixin.served_by == k)
        info = model.info
        windows.append(
            {
                "window": k,
                "train_start": _iso(times[s]) if s >= 0 and s < n else None,
                "train_end": _iso(times[e - 1]) if e - 1 < n else None,
                "predict_start": _iso(times[served[0]]) if len(served) else None,
                "predict_end": _iso(times[served[-1]]) if len(served) else None,
                "source": w["source"],
                "train_seconds": _num(model.train_seconds),
                "hmm": {"log_likelihood": _num(model.hmm.log_likelihood), "states": _states(model)},
                "lstm": {
                    "train_loss": _num(info.train_loss),
                    "val_loss": _num(info.val_loss),
                    "epochs_run": info.epochs_run,
                    "best_epoch": info.best_epoch,
                    "train_samples": info.train_samples,
                    "val_samples": info.val_samples,
                },
                "oos": _hit_rates(mixin.prob[served], realised[served], model.up_share),
            }
        )
    modelled = mixin.regime >= 0
    changes = []
    prev = -1
    for t in np.flatnonzero(modelled):
        code = int(mixin.regime[t])
        if code != prev or (t > 0 and not modelled[t - 1]):
            changes.append([_iso(times[t]), mixin.names[code]])
        prev = code
    oos_bars = sum(w["oos"]["bars"] for w in windows)
    weighted = [(w["oos"]["bars"], w["oos"]["hit_rate"], w["oos"]["naive_hit_rate"]) for w in windows
                if w["oos"]["bars"]]
    return {
        "regime_by": p.e_regime_by,
        "windows_fitted": len(windows),
        "trained": sum(w["source"] == "trained" for w in windows),
        "from_cache": sum(w["source"] != "trained" for w in windows),
        "oos_bars": oos_bars,
        "oos_hit_rate": _num(sum(b * h for b, h, _ in weighted) / oos_bars) if oos_bars else None,
        "oos_naive_hit_rate": _num(sum(b * h for b, _, h in weighted) / oos_bars) if oos_bars else None,
        "regime_share": {
            name: _num(np.mean(mixin.regime[modelled] == i)) if modelled.any() else None
            for i, name in enumerate(mixin.names)
        },
        "pending_windows": sorted(mixin.pending),
        "errors": list(mixin.errors),
        "windows": windows,
        "regime_changes": changes,
    }
