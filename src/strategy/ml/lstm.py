"""A small LSTM that forecasts P(close rises over the next `horizon` bars) from feature sequences.

Training is reproducible without touching torch's global random state: the weights are
initialised and the batches shuffled from a local generator seeded by the caller, so a
background training thread and the main thread never disturb each other's draws.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

# Predictions run in batches of this fixed size (the last one padded): a row's output then
# never depends on how many other rows share its batch, so a cut series predicts the same.
PREDICT_BATCH = 128
_THREADS_SET = False


def _torch() -> Any:
    import torch

    global _THREADS_SET
    if not _THREADS_SET:
        # The networks are tiny: one thread is faster than a pool and gives the same bits
        # on every machine.
        torch.set_num_threads(1)
        _THREADS_SET = True
    return torch


@dataclass(frozen=True, slots=True)
class LSTMConfig:
    hidden: int
    epochs: int
    patience: int
    lr: float
    batch_size: int
    val_fraction: float
    purge: int  # samples dropped between the training and validation parts (label overlap)
    seed: int


@dataclass(slots=True)
class TrainInfo:
    train_loss: float
    val_loss: float
    epochs_run: int
    best_epoch: int
    train_samples: int
    val_samples: int


def _build(n_features: int, hidden: int) -> Any:
    torch = _torch()
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(n_features, hidden, batch_first=True)
            self.head = nn.Linear(hidden, 1)

        def forward(self, x: Any) -> Any:
            out, _ = self.lstm(x)
            return self.head(out[:, -1, :]).squeeze(-1)

    return Net()


class _Adam:
    """Adam (Kingma & Ba), the textbook update.

    torch.optim would do, but its first use imports torch._dynamo (about 3.5 s), longer
    than training a whole window of this network.
    """

    def __init__(self, params: list[Any], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        torch = _torch()
        self.params, self.lr, self.betas, self.eps, self.t = params, lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        torch = _torch()
        b1, b2 = self.betas
        self.t += 1
        step = self.lr * (1 - b2**self.t) ** 0.5 / (1 - b1**self.t)
        with torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v, strict=True):
                if p.grad is None:
                    continue
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                p.addcdiv_(m, v.sqrt().add_(self.eps), value=-step)


def train_lstm(x: np.ndarray, y: np.ndarray, cfg: LSTMConfig) -> tuple[dict[str, Any], TrainInfo]:
    """Fit on time-ordered sequences x (n, seq_len, f) and labels y (n,); return the best state.

    The last `val_fraction` of the samples (after a purge gap) is the validation split;
    training stops after `patience` epochs without a better validation loss.
    """
    torch = _torch()
    n = len(x)
    n_val = max(1, int(round(n * cfg.val_fraction)))
    n_train = n - n_val - cfg.purge
    if n_train < 8:
        raise ValueError(f"only {n} labelled sequences in the training window: too few to fit the LSTM")
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    x_tr, y_tr = xt[:n_train], yt[:n_train]
    x_va, y_va = xt[n - n_val :], yt[n - n_val :]

    gen = torch.Generator().manual_seed(cfg.seed)
    net = _build(x.shape[2], cfg.hidden)
    bound = 1.0 / np.sqrt(cfg.hidden)
    with torch.no_grad():
        for p in net.parameters():
            p.uniform_(-bound, bound, generator=gen)
    opt = _Adam(list(net.parameters()), lr=cfg.lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    best = (float("inf"), 0, copy.deepcopy(net.state_dict()), float("nan"))
    epochs_run = 0
    for epoch in range(1, cfg.epochs + 1):
        epochs_run = epoch
        net.train()
        order = torch.randperm(n_train, generator=gen)
        total = 0.0
        for k in range(0, n_train, cfg.batch_size):
            idx = order[k : k + cfg.batch_size]
            opt.zero_grad()
            loss = loss_fn(net(x_tr[idx]), y_tr[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        net.eval()
        with torch.no_grad():
            val = float(loss_fn(net(x_va), y_va))
        if val < best[0] - 1e-6:
            best = (val, epoch, copy.deepcopy(net.state_dict()), total / n_train)
        elif epoch - best[1] >= cfg.patience:
            break
    val_loss, best_epoch, state, train_loss = best
    info = TrainInfo(train_loss, val_loss, epochs_run, best_epoch, n_train, n_val)
    return state, info


class LSTMForecaster:
    """A trained network ready to predict."""

    def __init__(self, state: dict[str, Any], n_features: int, hidden: int) -> None:
        torch = _torch()
        self._torch = torch
        self.net = _build(n_features, hidden)
        self.net.load_state_dict(state)
        self.net.eval()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Return P(up) for every sequence in x (n, seq_len, f)."""
        torch = self._torch
        out = np.empty(len(x), dtype=np.float64)
        with torch.no_grad():
            for k in range(0, len(x), PREDICT_BATCH):
                chunk = x[k : k + PREDICT_BATCH]
                m = len(chunk)
                if m < PREDICT_BATCH:
                    chunk = np.concatenate([chunk, np.zeros((PREDICT_BATCH - m, *x.shape[1:]))])
                logits = self.net(torch.as_tensor(chunk, dtype=torch.float32))
                out[k : k + m] = torch.sigmoid(logits).double().numpy()[:m]
        return out
