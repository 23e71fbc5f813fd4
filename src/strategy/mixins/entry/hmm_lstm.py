"""HMMLSTMEntryMixin: enter when an HMM regime allows it and an LSTM forecast is confident.

Needs the ``ml`` extra (torch, hmmlearn); this module imports without it, and validating
its parameters without it fails with the install command. See docs/ml.md.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from strategy.mixins.base import Bars, EntryMixin, EntryParams, Side
from strategy.ml import ML_EXTRA_HINT, missing_ml_modules
from strategy.ml.features import lookback
from strategy.ml.hmm import regime_names
from strategy.registry import register

# Parameters that only read a model's output: changing them reuses every cached model.
_DECISION_ONLY = {"e_threshold", "e_allowed_regimes", "e_short_regimes", "e_cooldown_bars", "e_cache",
                  "e_train_bars", "e_retrain_every"}


def _iso(t: Any) -> str:
    return str(np.datetime64(t, "s")) + "Z"


@register
class HMMLSTMEntryMixin(EntryMixin):
    """Long when P(up over e_horizon bars) > e_threshold in an allowed regime; short mirrored.

    Walk-forward: a model fitted on the last e_train_bars bars serves the next
    e_retrain_every bars. No entries before the first model (warm-up = e_train_bars).
    """

    description = "HMM regime filter + LSTM direction forecast, trained walk-forward (needs atf[ml])."

    class Params(EntryParams):
        e_train_bars: int = Field(1000, ge=50, description="Bars in each training window.")
        e_retrain_every: int = Field(250, ge=1, description="Bars each model serves before the next window is fitted.")
        e_horizon: int = Field(5, ge=1, description="Forecast horizon in bars (label: close[t+h] > close[t]).")
        e_threshold: float = Field(0.55, ge=0.5, lt=1.0, description="Enter when the forecast probability of the trade direction exceeds this.")
        e_allowed_regimes: tuple[str, ...] | None = Field(None, description="Regimes a long may enter in (None: all).")
        e_short_regimes: tuple[str, ...] | None = Field(None, description="Regimes a short may enter in (None: as e_allowed_regimes).")
        e_regime_by: Literal["trend", "volatility"] = Field("trend", description="HMM states named bull/range/bear by mean return, or low_vol/mid_vol/high_vol.")
        e_hmm_states: int = Field(3, ge=2, le=5, description="HMM hidden states.")
        e_hmm_iter: int = Field(30, ge=1, description="HMM EM iterations at most.")
        e_feature_window: int = Field(20, ge=2, description="Rolling window of the return, volatility and z-score features.")
        e_seq_len: int = Field(24, ge=2, description="Bars of features in each LSTM input sequence.")
        e_hidden: int = Field(16, ge=1, description="LSTM hidden units.")
        e_epochs: int = Field(15, ge=1, description="LSTM training epochs at most.")
        e_patience: int = Field(3, ge=1, description="Stop after this many epochs without a better validation loss.")
        e_lr: float = Field(0.01, gt=0, description="Adam learning rate.")
        e_batch_size: int = Field(64, ge=1, description="LSTM minibatch size.")
        e_val_fraction: float = Field(0.2, gt=0, lt=0.5, description="Last share of each window's samples used for validation.")
        e_seed: int = Field(7, ge=0, description="Seed of the HMM and the LSTM.")
        e_cache: bool = Field(True, description="Keep trained models on disk ($ATF_MODEL_CACHE or ~/.cache/atf/models).")

        @model_validator(mode="after")
        def _check(self) -> HMMLSTMEntryMixin.Params:
            missing = missing_ml_modules()
            if missing:
                raise ValueError(f"HMMLSTMEntryMixin needs the ml extra ({', '.join(missing)} missing): {ML_EXTRA_HINT}")
            names = regime_names(self.e_regime_by)
            for field in ("e_allowed_regimes", "e_short_regimes"):
                bad = [r for r in getattr(self, field) or () if r not in names]
                if bad:
                    raise ValueError(f"{field}: unknown regime(s) {bad} for e_regime_by={self.e_regime_by!r}; use {list(names)}")
            need = lookback(self.e_feature_window) + self.e_seq_len + self.e_horizon + 30
            if self.e_train_bars < need:
                raise ValueError(f"e_train_bars must be >= {need} (feature window + sequence + horizon + 30 samples)")
            return self

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._n = 0
        self._last_time: Any = None
        self.long_signal: list[bool] = []
        self.short_signal: list[bool] = []

    # ------------------------------------------------------------------ setup
    def _spec(self) -> Any:
        from strategy.ml.walkforward import TrainSpec

        p = self.p
        return TrainSpec(
            horizon=p.e_horizon, feature_window=p.e_feature_window, seq_len=p.e_seq_len,
            hmm_states=p.e_hmm_states, hmm_iter=p.e_hmm_iter, regime_by=p.e_regime_by,
            hidden=p.e_hidden, epochs=p.e_epochs, patience=p.e_patience, lr=p.e_lr,
            batch_size=p.e_batch_size, val_fraction=p.e_val_fraction, seed=p.e_seed,
        )

    def _reset(self, n: int) -> None:
        from strategy.ml.cache import ModelCache

        self.spec = self._spec()
        self.cache = ModelCache() if self.p.e_cache else None
        self.names = regime_names(self.p.e_regime_by)
        self.prob = np.full(n, np.nan)
        self.regime = np.full(n, -1, dtype=np.int64)  # index into self.names; -1: no model
        self.served_by = np.full(n, -1, dtype=np.int64)  # window serving each bar
        self.windows: dict[int, dict[str, Any]] = {}  # window index -> model, bounds, source
        self.pending: dict[int, Future[Any]] = {}
        self.errors: list[str] = []

    # ------------------------------------------------------------------ prepare
    def prepare(self, bars: Bars) -> None:
        """Fit every window synchronously, or, on bars extending the last call, stream."""
        from strategy.ml import require_ml

        require_ml("HMMLSTMEntryMixin")
        n = len(bars)
        if 0 < self._n < n and bars.time[self._n - 1] == self._last_time:
            self._stream(bars)
        else:
            self._backtest(bars)
        self.bars = bars
        self._n, self._last_time = n, bars.time[n - 1] if n else None
        self._signals()

    def _backtest(self, bars: Bars) -> None:
        from strategy.ml.walkforward import load_or_fit, predict_block, window_ends

        n, p = len(bars), self.p
        self._reset(n)
        for k, e in enumerate(window_ends(n, p.e_train_bars, p.e_retrain_every)):
            s, t1 = e - p.e_train_bars, min(e + p.e_retrain_every, n)
            model, source = load_or_fit(bars, s, e, self.spec, self.cache)
            self._install(k, model, source, s, e)
            prob, states = predict_block(model, bars, s, e, t1, self.spec)
            self._store(k, e, t1, prob, states)

    def _stream(self, bars: Bars) -> None:
        """Serve the new bars with the newest ready model; submit a due window in the background."""
        from strategy.ml.trainer import default_trainer
        from strategy.ml.walkforward import predict_block, window_ends

        old, n, p = self._n, len(bars), self.p
        grow = n - old
        self.prob = np.concatenate([self.prob, np.full(grow, np.nan)])
        self.regime = np.concatenate([self.regime, np.full(grow, -1, dtype=np.int64)])
        self.served_by = np.concatenate([self.served_by, np.full(grow, -1, dtype=np.int64)])
        for k, fut in list(self.pending.items()):
            if fut.done():
                del self.pending[k]
                try:
                    model, source = fut.result()
                except Exception as exc:  # keep serving the previous model
                    self.errors.append(f"window {k}: {type(exc).__name__}: {exc}")
                    continue
                e = p.e_train_bars + k * p.e_retrain_every
                self._install(k, model, source, e - p.e_train_bars, e)
        ends = window_ends(n, p.e_train_bars, p.e_retrain_every)
        if ends:
            k = len(ends) - 1  # only the newest due window matters; older ones are superseded
            if k not in self.windows and k not in self.pending:
                e = ends[k]
                window = Bars(*(np.array(getattr(bars, f)[e - p.e_train_bars : e]) for f in
                                ("time", "open", "high", "low", "close", "volume")))
                self.pending[k] = default_trainer().submit(window, 0, p.e_train_bars, self.spec, self.cache)
        if not self.windows:
            return
        k = max(self.windows)
        model, s = self.windows[k]["model"], self.windows[k]["start"]
        for t in range(old, n):
            prob, states = predict_block(model, bars, s, t, t + 1, self.spec)
            self._store(k, t, t + 1, prob, states)

    def _install(self, k: int, model: Any, source: str, start: int, end: int) -> None:
        self.windows[k] = {"model": model, "source": source, "start": start, "end": end}

    def _store(self, k: int, t0: int, t1: int, prob: np.ndarray, states: np.ndarray) -> None:
        model = self.windows[k]["model"]
        code = np.array([self.names.index(r) for r in model.hmm.regimes])
        self.prob[t0:t1] = prob
        self.regime[t0:t1] = code[states.argmax(axis=1)]
        self.served_by[t0:t1] = k

    def _signals(self) -> None:
        p = self.p
        long_ok = np.isin(self.regime, [self.names.index(r) for r in (p.e_allowed_regimes or self.names)])
        short_names = p.e_short_regimes or p.e_allowed_regimes or self.names
        short_ok = np.isin(self.regime, [self.names.index(r) for r in short_names])
        with np.errstate(invalid="ignore"):  # NaN (no model yet) compares False
            self.long_signal = (long_ok & (self.prob > p.e_threshold)).tolist()
            self.short_signal = (short_ok & (1.0 - self.prob > p.e_threshold)).tolist()

    # ------------------------------------------------------------------ contract
    def warmup(self) -> int:
        return self.p.e_train_bars

    def signal(self, i: int, side: Side) -> bool:
        return self.long_signal[i] if side is Side.LONG else self.short_signal[i]

    def signal_array(self, side: Side) -> list[bool]:
        return self.long_signal if side is Side.LONG else self.short_signal

    def diagnostics(self) -> dict[str, Any] | None:
        """Summarise each window (range, HMM states, losses, out-of-sample hit rate) and the regimes."""
        from strategy.ml.diagnostics import summarise

        if not self._n:
            return None
        return summarise(self)
