"""Background retraining for streamed bars (paper and live): one worker, never in a bar's path.

When a new window is due, the mixin submits its training here and keeps serving the model
it has; it installs the new one at the first bar after the job is done. A thread rather
than a process: torch and numpy release the GIL while they compute, jobs share the model
caches, and nothing has to be pickled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

TrainFn = Callable[..., Any]


class BackgroundTrainer:
    """Run training jobs one at a time on a single daemon-like worker thread."""

    def __init__(self, train: TrainFn | None = None) -> None:
        from strategy.ml.walkforward import load_or_fit

        self._train = train or load_or_fit
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atf-ml-trainer")
        self.submitted = 0

    def submit(self, *args: Any) -> Future[Any]:
        """Queue one training job (arguments of `load_or_fit`); return its future."""
        self.submitted += 1
        return self._pool.submit(self._train, *args)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)


_default: BackgroundTrainer | None = None
_default_lock = threading.Lock()


def default_trainer() -> BackgroundTrainer:
    """Return the process-wide trainer (created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = BackgroundTrainer()
        return _default


def set_default_trainer(trainer: BackgroundTrainer | None) -> BackgroundTrainer | None:
    """Replace the process-wide trainer (None: create a fresh one on next use); return the old one."""
    global _default
    with _default_lock:
        old, _default = _default, trainer
        return old
