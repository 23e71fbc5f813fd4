"""Machine-learning building blocks of the HMM/LSTM entry mixin (the ``ml`` extra).

Importing this package needs only numpy: torch and hmmlearn are imported where a model is
fitted or loaded, so ``import strategy`` works without the extra.
"""

from __future__ import annotations

import importlib.util
import sys

ML_EXTRA_HINT = "pip install 'atf[ml]'"
_ML_MODULES = ("torch", "hmmlearn")


def missing_ml_modules() -> list[str]:
    """Return the modules of the ml extra that cannot be imported (without importing them)."""
    missing = []
    for name in _ML_MODULES:
        if name in sys.modules:
            if sys.modules[name] is None:  # an import was blocked on purpose
                missing.append(name)
        elif importlib.util.find_spec(name) is None:
            missing.append(name)
    return missing


def require_ml(what: str) -> None:
    """Raise ImportError naming the install command when the ml extra is missing."""
    missing = missing_ml_modules()
    if missing:
        raise ImportError(f"{what} needs {', '.join(missing)} from the ml extra: {ML_EXTRA_HINT}")
