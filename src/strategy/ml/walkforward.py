"""Walk-forward windows: fit on ``train_bars`` bars, predict the next ``retrain_every``, slide.

Window k trains on bars ``[e_k - train_bars, e_k)`` with ``e_k = train_bars + k *
retrain_every`` and serves the decisions at the closes of bars ``e_k .. e_k + retrain_every
- 1``. Everything a model holds (features, scaler, HMM, labels, LSTM) comes from its
window's bars; a prediction for bar t reads bars up to t. So no decision depends on a later
bar, and bars before ``train_bars`` have no model and no entries.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from strategy.mixins.base import Bars
from strategy.ml.cache import ModelCache, model_key
from strategy.ml.features import HMM_COLUMNS, Scaler, compute_features, forward_up, lookback
from strategy.ml.hmm import HMMRegimes, fit_hmm
from strategy.ml.lstm import LSTMConfig, LSTMForecaster, TrainInfo, train_lstm

_MEMORY_LIMIT = 256
_memory: OrderedDict[str, WindowModel] = OrderedDict()
_lock = threading.Lock()
_trainings = 0


def training_count() -> int:
    """Return how many window models this process has trained (not loaded) so far."""
    return _trainings


def clear_memory() -> None:
    """Forget the models kept in memory (the disk cache stays)."""
    with _lock:
        _memory.clear()


@dataclass(frozen=True, slots=True)
class TrainSpec:
    """What a window model depends on besides its bars."""

    horizon: int
    feature_window: int
    seq_len: int
    hmm_states: int
    hmm_iter: int
    regime_by: str
    hidden: int
    epochs: int
    patience: int
    lr: float
    batch_size: int
    val_fraction: float
    seed: int

    @property
    def first_row(self) -> int:
        return lookback(self.feature_window)

    def min_train_bars(self) -> int:
        """Return the smallest window leaving ~30 labelled sequences to train and validate on."""
        return self.first_row + self.seq_len + self.horizon + 30


def window_ends(n: int, train_bars: int, retrain_every: int) -> list[int]:
    """Return e_k for every window whose first served bar e_k exists among n bars."""
    return list(range(train_bars, n, retrain_every))


@dataclass(slots=True)
class WindowModel:
    """One window's fitted scaler, HMM and LSTM, and how the fit went."""

    scaler: Scaler
    hmm: HMMRegimes
    lstm_state: dict[str, Any]
    info: TrainInfo
    up_share: float  # share of rising labels in the window: the naive forecast's base rate
    n_features: int
    hidden: int
    train_seconds: float
    _forecaster: LSTMForecaster | None = None

    def forecaster(self) -> LSTMForecaster:
        if self._forecaster is None:
            self._forecaster = LSTMForecaster(self.lstm_state, self.n_features, self.hidden)
        return self._forecaster

    def to_payload(self) -> dict[str, Any]:
        import torch

        def t(a: np.ndarray) -> Any:
            return torch.as_tensor(np.asarray(a, dtype=np.float64))

        h = self.hmm.to_arrays()
        return {
            "scaler_mean": t(self.scaler.mean),
            "scaler_std": t(self.scaler.std),
            "hmm": {**{k: t(h[k]) for k in ("startprob", "transmat", "means", "variances")},
                    "regimes": h["regimes"], "log_likelihood": h["log_likelihood"]},
            "lstm": self.lstm_state,
            "info": asdict(self.info),
            "up_share": self.up_share,
            "n_features": self.n_features,
            "hidden": self.hidden,
            "train_seconds": self.train_seconds,
        }

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> WindowModel:
        hmm = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in p["hmm"].items()}
        return cls(
            scaler=Scaler(p["scaler_mean"].numpy(), p["scaler_std"].numpy()),
            hmm=HMMRegimes.from_arrays(hmm),
            lstm_state=p["lstm"],
            info=TrainInfo(**p["info"]),
            up_share=float(p["up_share"]),
            n_features=int(p["n_features"]),
            hidden=int(p["hidden"]),
            train_seconds=float(p["train_seconds"]),
        )


def _features(bars: Bars, start: int, stop: int, spec: TrainSpec) -> np.ndarray:
    """Features of bars [start, stop), computed from those bars only (row 0 = bar start)."""
    s = slice(start, stop)
    return compute_features(bars.close[s], bars.high[s], bars.low[s], bars.volume[s], spec.feature_window)


def _sequences(x: np.ndarray, rows: np.ndarray, seq_len: int) -> np.ndarray:
    """Return x[r - seq_len + 1 .. r] for each row r, shape (len(rows), seq_len, f)."""
    view = np.lib.stride_tricks.sliding_window_view(x, seq_len, axis=0)  # (n - L + 1, f, L)
    return np.ascontiguousarray(view[rows - seq_len + 1].transpose(0, 2, 1))


def fit_window(bars: Bars, start: int, end: int, spec: TrainSpec) -> WindowModel:
    """Fit the scaler, the HMM and the LSTM on bars [start, end) alone."""
    began = time.perf_counter()
    raw = _features(bars, start, end, spec)
    first = spec.first_row
    scaler = Scaler.fit(raw[first:])
    x = scaler.transform(np.nan_to_num(raw))
    hmm = fit_hmm(
        x[first:, list(HMM_COLUMNS)],
        n_states=spec.hmm_states,
        n_iter=spec.hmm_iter,
        seed=spec.seed,
        regime_by=spec.regime_by,
    )
    labels = forward_up(bars.close[start:end], spec.horizon)  # the last `horizon` are NaN
    rows = np.arange(first + spec.seq_len - 1, end - start)
    rows = rows[np.isfinite(labels[rows])]
    y = labels[rows]
    cfg = LSTMConfig(
        hidden=spec.hidden,
        epochs=spec.epochs,
        patience=spec.patience,
        lr=spec.lr,
        batch_size=spec.batch_size,
        val_fraction=spec.val_fraction,
        purge=spec.horizon,
        seed=spec.seed,
    )
    state, info = train_lstm(_sequences(x, rows, spec.seq_len), y, cfg)
    return WindowModel(
        scaler=scaler,
        hmm=hmm,
        lstm_state=state,
        info=info,
        up_share=float(y.mean()),
        n_features=x.shape[1],
        hidden=spec.hidden,
        train_seconds=time.perf_counter() - began,
    )


def window_key(bars: Bars, start: int, end: int, spec: TrainSpec) -> str:
    """Return the cache key of window [start, end): parameters, bars and bounds."""
    s = slice(start, end)
    arrays = [bars.time[s].astype("datetime64[ns]").view("int64"), bars.open[s], bars.high[s],
              bars.low[s], bars.close[s], bars.volume[s]]
    bounds = (bars.time[start], bars.time[end - 1], end - start)
    return model_key(asdict(spec), arrays, bounds)


def load_or_fit(
    bars: Bars, start: int, end: int, spec: TrainSpec, cache: ModelCache | None
) -> tuple[WindowModel, str]:
    """Return the window's model and where it came from: memory, disk or trained."""
    global _trainings
    key = window_key(bars, start, end, spec)
    with _lock:
        model = _memory.get(key)
        if model is not None:
            _memory.move_to_end(key)
            return model, "memory"
    source = "disk"
    payload = cache.get(key) if cache is not None else None
    if payload is not None:
        model = WindowModel.from_payload(payload)
    else:
        model = fit_window(bars, start, end, spec)
        source = "trained"
        with _lock:
            _trainings += 1
        if cache is not None:
            meta = {
                "model": "HMMLSTMEntryMixin",
                "train_start": str(np.datetime64(bars.time[start], "m")),
                "train_end": str(np.datetime64(bars.time[end - 1], "m")),
                "bars": end - start,
                "params": asdict(spec),
                "val_loss": model.info.val_loss,
                "created": time.time(),
            }
            cache.put(key, model.to_payload(), meta)
    with _lock:
        _memory[key] = model
        while len(_memory) > _MEMORY_LIMIT:
            _memory.popitem(last=False)
    return model, source


def predict_block(
    model: WindowModel, bars: Bars, start: int, t0: int, t1: int, spec: TrainSpec
) -> tuple[np.ndarray, np.ndarray]:
    """Return P(up) and the filtered HMM state distribution for bars t0..t1-1.

    The model was fitted on the window starting at `start`; features and the HMM filter run
    from there to t1 - 1, so bar t's values read bars start..t only.
    """
    raw = _features(bars, start, t1, spec)
    x = model.scaler.transform(np.nan_to_num(raw))
    first = spec.first_row
    states, _ = model.hmm.filter(x[first:, list(HMM_COLUMNS)])
    rows = np.arange(t0 - start, t1 - start)
    prob = model.forecaster().predict(_sequences(x, rows, spec.seq_len))
    return prob, states[rows - first]
