"""On-disk cache of trained window models: ``<key>.pt`` (torch.save) beside ``<key>.json``.

The key hashes the training parameters, the window's bars (times and OHLCV bytes) and its
bounds, so a rerun, or an optimisation that only changes the threshold or the allowed
regimes, loads instead of training. Writes go to a temporary file renamed into place: a
crash never leaves a half-written model, and the JSON (written last) marks a complete entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "ATF_MODEL_CACHE"
# Bump when the features, the models or the payload change: old entries are then ignored.
FORMAT_VERSION = "hmm-lstm-1"


def cache_dir() -> Path:
    """Return the cache folder: $ATF_MODEL_CACHE, else ~/.cache/atf/models."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "atf" / "models"


def model_key(params: Mapping[str, Any], arrays: Sequence[np.ndarray], bounds: Sequence[Any]) -> str:
    """Return the hex key of one window model."""
    h = hashlib.sha256()
    h.update(FORMAT_VERSION.encode())
    h.update(json.dumps(dict(params), sort_keys=True, default=str).encode())
    h.update(json.dumps([str(b) for b in bounds]).encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class CacheEntry:
    key: str
    meta: dict[str, Any]
    size_bytes: int
    modified: float  # unix time


class ModelCache:
    """A folder of models keyed by `model_key`."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else cache_dir()

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.pt", self.root / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """Return the stored payload, or None when absent or unreadable."""
        import torch

        pt, meta = self._paths(key)
        if not meta.exists() or not pt.exists():
            return None
        try:
            # weights_only: a cache folder is not a place to run pickled code from.
            return dict(torch.load(pt, map_location="cpu", weights_only=True))
        except Exception:  # a corrupt or foreign file is a miss, not a failure
            return None

    def put(self, key: str, payload: dict[str, Any], meta: dict[str, Any]) -> None:
        """Store a payload (tensors, lists, numbers, strings) and its JSON metadata atomically."""
        import torch

        self.root.mkdir(parents=True, exist_ok=True)
        pt, meta_path = self._paths(key)
        self._atomic(pt, lambda f: torch.save(payload, f))
        text = json.dumps({**meta, "key": key, "format": FORMAT_VERSION}, indent=1, default=str)
        self._atomic(meta_path, lambda f: f.write(text.encode()))

    def _atomic(self, path: Path, write: Any) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def entries(self) -> Iterator[CacheEntry]:
        """Yield every complete entry, oldest first."""
        if not self.root.is_dir():
            return
        found = []
        for meta_path in self.root.glob("*.json"):
            pt = meta_path.with_suffix(".pt")
            try:
                meta = json.loads(meta_path.read_text())
                size = meta_path.stat().st_size + (pt.stat().st_size if pt.exists() else 0)
                found.append(CacheEntry(meta_path.stem, meta, size, meta_path.stat().st_mtime))
            except (OSError, ValueError):
                continue
        yield from sorted(found, key=lambda e: e.modified)

    def clear(self, older_than_days: float | None = None) -> int:
        """Delete entries (those older than the given age only); return how many were removed."""
        cutoff = None if older_than_days is None else time.time() - older_than_days * 86_400
        removed = 0
        for entry in list(self.entries()):
            if cutoff is not None and entry.modified >= cutoff:
                continue
            for p in self._paths(entry.key):
                p.unlink(missing_ok=True)
            removed += 1
        if cutoff is None and self.root.is_dir():
            for stray in self.root.glob(".*.tmp"):  # left by a killed writer
                stray.unlink(missing_ok=True)
        return removed
