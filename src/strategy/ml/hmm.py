"""Gaussian HMM regimes: fit on one training window, name the states, filter causally.

Mapping of states to regimes (``regime_by``):

* ``trend``: states sorted by their mean of the rolling mean return; the highest is
  ``bull``, the lowest ``bear``, any state in between ``range`` (two states: bull, bear);
* ``volatility``: states sorted by their mean log volatility; the lowest is ``low_vol``, the
  highest ``high_vol``, any in between ``mid_vol``.

The regime of bar t is the most probable state given observations up to t (the forward
filter), never the Viterbi path or the smoothed posterior: both read observations after t.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

REGIMES: dict[str, tuple[str, str, str]] = {
    "trend": ("bear", "range", "bull"),
    "volatility": ("low_vol", "mid_vol", "high_vol"),
}


def regime_names(regime_by: str) -> tuple[str, ...]:
    """Return the regime names one mapping can produce."""
    return REGIMES[regime_by]


def _map_states(means: np.ndarray, regime_by: str) -> list[str]:
    """Return the regime name of each state (see the module docstring)."""
    low, mid, high = REGIMES[regime_by]
    key = means[:, 0] if regime_by == "trend" else means[:, 1]
    order = np.argsort(key, kind="stable")
    names = [mid] * len(means)
    names[int(order[0])] = low
    names[int(order[-1])] = high
    return names


@dataclass(frozen=True, slots=True)
class HMMRegimes:
    """A fitted HMM in the scaled feature space and the regime name of each state."""

    startprob: np.ndarray  # (k,)
    transmat: np.ndarray  # (k, k)
    means: np.ndarray  # (k, f)
    variances: np.ndarray  # (k, f) diagonal covariances
    regimes: tuple[str, ...]  # per state
    log_likelihood: float

    def to_arrays(self) -> dict[str, Any]:
        return {
            "startprob": self.startprob,
            "transmat": self.transmat,
            "means": self.means,
            "variances": self.variances,
            "regimes": list(self.regimes),
            "log_likelihood": self.log_likelihood,
        }

    @classmethod
    def from_arrays(cls, d: dict[str, Any]) -> HMMRegimes:
        arr = {k: np.asarray(d[k], dtype=np.float64) for k in ("startprob", "transmat", "means", "variances")}
        return cls(**arr, regimes=tuple(d["regimes"]), log_likelihood=float(d["log_likelihood"]))

    def log_emissions(self, obs: np.ndarray) -> np.ndarray:
        """Return log N(obs[t] | state) for every row and state, shape (n, k)."""
        diff = obs[:, None, :] - self.means[None, :, :]
        return -0.5 * (np.log(2.0 * np.pi * self.variances)[None] + diff * diff / self.variances[None]).sum(axis=2)

    def filter(self, obs: np.ndarray, alpha: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return P(state_t | obs_0..t) for every row, and the last row to continue from.

        `alpha` is the filtered distribution of the row before `obs[0]`; None starts
        from the fitted initial distribution.
        """
        log_b = self.log_emissions(obs)
        b = np.exp(log_b - log_b.max(axis=1, keepdims=True))
        out = np.empty_like(b)
        prior = self.startprob if alpha is None else alpha @ self.transmat
        for t in range(len(b)):
            a = prior * b[t]
            total = a.sum()
            a = a / total if total > 0 else np.full(len(a), 1.0 / len(a))
            out[t] = a
            prior = a @ self.transmat
        last = out[-1] if len(out) else (alpha if alpha is not None else self.startprob)
        return out, last


def fit_hmm(obs: np.ndarray, *, n_states: int, n_iter: int, seed: int, regime_by: str) -> HMMRegimes:
    """Fit a diagonal-covariance Gaussian HMM on one window's (scaled) observations."""
    from hmmlearn.hmm import GaussianHMM
    from sklearn.cluster import KMeans

    model = GaussianHMM(
        n_components=n_states,
        covariance_type="diag",
        n_iter=n_iter,
        tol=1e-3,
        min_covar=1e-3,
        random_state=seed,
        init_params="",
    )
    # Start EM from k-means clusters with their own spread and sticky transitions. With
    # hmmlearn's default start (every state as wide as the whole data) the states often
    # collapse onto one another in the first iterations.
    km = KMeans(n_clusters=n_states, n_init=4, random_state=seed).fit(obs)
    labels = km.labels_
    model.n_features = obs.shape[1]
    model.means_ = km.cluster_centers_
    model.covars_ = np.array([
        obs[labels == k].var(axis=0) + 1e-3 if np.sum(labels == k) > 1 else obs.var(axis=0) + 1e-3
        for k in range(n_states)
    ])
    model.startprob_ = np.full(n_states, 1.0 / n_states)
    stay = 0.95
    model.transmat_ = np.full((n_states, n_states), (1.0 - stay) / (n_states - 1))
    np.fill_diagonal(model.transmat_, stay)
    # A short window may stop before convergence; the fit is still usable, so keep quiet.
    logger = logging.getLogger("hmmlearn.base")
    level = logger.level
    logger.setLevel(logging.ERROR)
    start = (model.startprob_.copy(), model.transmat_.copy(), model.means_.copy(), model._covars_.copy())
    try:
        model.fit(obs)
    except ValueError:
        # EM emptied a state (a short, quiet window): keep the k-means start instead.
        model.startprob_, model.transmat_, model.means_, model._covars_ = start
    finally:
        logger.setLevel(level)
    means = np.asarray(model.means_, dtype=np.float64)
    variances = np.diagonal(np.asarray(model.covars_, dtype=np.float64), axis1=1, axis2=2).copy()
    startprob = np.asarray(model.startprob_, dtype=np.float64)
    # A state never visited in the window leaves a NaN or zero row; make it uniform instead.
    transmat = np.where(np.isfinite(model.transmat_), model.transmat_, 0.0)
    rows = transmat.sum(axis=1, keepdims=True)
    transmat = np.where(rows > 0, transmat / np.where(rows > 0, rows, 1.0), 1.0 / n_states)
    startprob = np.where(np.isfinite(startprob), startprob, 0.0)
    startprob = startprob / startprob.sum() if startprob.sum() > 0 else np.full(n_states, 1.0 / n_states)
    return HMMRegimes(
        startprob=startprob,
        transmat=transmat,
        means=means,
        variances=variances,
        regimes=tuple(_map_states(means, regime_by)),
        log_likelihood=_log_likelihood(model, obs),
    )


def _log_likelihood(model: object, obs: np.ndarray) -> float:
    """Return the fitted model's log-likelihood of the window (NaN if it cannot be scored)."""
    try:
        return float(model.score(obs))  # type: ignore[attr-defined]
    except ValueError:
        return float("nan")
