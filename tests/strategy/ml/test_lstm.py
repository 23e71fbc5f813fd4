"""The LSTM learns a pattern out of sample that a naive forecast cannot."""

from __future__ import annotations

import numpy as np
import torch

from strategy.ml.lstm import LSTMConfig, LSTMForecaster, train_lstm


def test_lstm_beats_naive_forecasts_out_of_sample() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rng = np.random.default_rng(4)
    # Returns follow + + - - ...: the next sign depends on the phase, which the last
    # return alone does not give, so neither the majority class nor persistence can use it.
    n, seq = 1600, 8
    pattern = np.tile([1.0, 1.0, -1.0, -1.0], n // 4)
    r = 0.5 * pattern + rng.normal(0.0, 0.35, n)
    x = np.stack([np.lib.stride_tricks.sliding_window_view(r, seq)[:-1]], axis=2)  # (n-seq, seq, 1)
    y = (r[seq:] > 0).astype(np.float64)
    split = 1000
    cfg = LSTMConfig(hidden=8, epochs=30, patience=5, lr=0.02, batch_size=64, val_fraction=0.2, purge=1, seed=1)
    state, info = train_lstm(x[:split], y[:split], cfg)
    prob = LSTMForecaster(state, 1, 8).predict(x[split:])
    truth = y[split:] > 0.5
    hit = np.mean((prob > 0.5) == truth)
    majority = np.mean(truth == (y[:split].mean() >= 0.5))
    persistence = np.mean((x[split:, -1, 0] > 0) == truth)
    assert hit > majority + 0.15 and hit > persistence + 0.15, (hit, majority, persistence)
    assert info.val_loss < 0.6


def test_training_is_reproducible_and_prediction_ignores_batch_neighbours() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, (300, 6, 3))
    y = (x[:, -1, 0] > 0).astype(np.float64)
    cfg = LSTMConfig(hidden=4, epochs=3, patience=2, lr=0.01, batch_size=32, val_fraction=0.2, purge=2, seed=9)
    a, _ = train_lstm(x, y, cfg)
    b, _ = train_lstm(x, y, cfg)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    f = LSTMForecaster(a, 3, 4)
    full = f.predict(x)
    # Fewer rows, or other rows after them, give the same bits for the rows kept.
    np.testing.assert_array_equal(f.predict(x[:37]), full[:37])
    other = np.concatenate([x[:37], rng.normal(0.0, 5.0, (50, 6, 3))])
    np.testing.assert_array_equal(f.predict(other)[:37], full[:37])
