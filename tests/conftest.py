"""Suite-wide test setup: keep trained ML models out of the user's cache folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point $ATF_MODEL_CACHE at a fresh folder for the whole session (models are reused within it)."""
    path = tmp_path_factory.mktemp("atf-models")
    old = os.environ.get("ATF_MODEL_CACHE")
    os.environ["ATF_MODEL_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("ATF_MODEL_CACHE", None)
    else:
        os.environ["ATF_MODEL_CACHE"] = old
