"""The mixin registry: names in YAML resolve to entry and exit mixin classes.

Built-in mixins register themselves with `@register`; a user's own class is named in YAML as
``"package.module:ClassName"`` and imported on demand.
"""

from __future__ import annotations

import importlib
from typing import Literal, TypeVar

from trading.exceptions import ATFError
from trading.suggest import did_you_mean

Kind = Literal["entry", "exit"]
_REGISTRY: dict[Kind, dict[str, type]] = {"entry": {}, "exit": {}}
T = TypeVar("T", bound=type)


class MixinLookupError(ATFError, LookupError):
    """A mixin name does not resolve to a class of the requested kind."""


def register(cls: T) -> T:
    """Register a mixin class under its class name, by its `kind` attribute."""
    kind: Kind = cls.kind  # type: ignore[attr-defined]
    name = cls.__name__
    existing = _REGISTRY[kind].get(name)
    if existing is not None and existing is not cls:
        raise ValueError(f"{kind} mixin {name!r} is already registered by {existing.__module__}")
    _REGISTRY[kind][name] = cls
    return cls


def available(kind: Kind) -> dict[str, type]:
    """Return the registered mixins of one kind by name."""
    _load_builtins()
    return dict(sorted(_REGISTRY[kind].items()))


def resolve_mixin(name: str, kind: Kind) -> type:
    """Return the mixin class for a YAML name; raise MixinLookupError with a hint otherwise."""
    _load_builtins()
    if ":" in name:
        return _import_custom(name, kind)
    cls = _REGISTRY[kind].get(name)
    if cls is not None:
        return cls
    other: Kind = "exit" if kind == "entry" else "entry"
    if name in _REGISTRY[other]:
        raise MixinLookupError(f"{name!r} is an {other} mixin, not an {kind} mixin")
    hint = did_you_mean(name, _REGISTRY[kind])
    msg = f"unknown {kind} mixin {name!r}"
    msg += f"; did you mean '{hint}'?" if hint else f" (available: {', '.join(sorted(_REGISTRY[kind]))})"
    raise MixinLookupError(msg)


def _import_custom(ref: str, kind: Kind) -> type:
    from strategy.mixins.base import EntryMixin, ExitMixin

    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MixinLookupError(f"cannot import module {module_name!r} for mixin {ref!r}: {exc}") from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise MixinLookupError(f"module {module_name!r} has no attribute {attr!r}")
    base = EntryMixin if kind == "entry" else ExitMixin
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise MixinLookupError(f"{ref!r} is not a subclass of {base.__name__}")
    return cls


_loaded = False


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        importlib.import_module("strategy.mixins.entry")
        importlib.import_module("strategy.mixins.exit")


def describe(cls: type) -> dict[str, object]:
    """Return a mixin's name, kind, description and parameters (type, default, constraints, help)."""
    import inspect

    params = []
    for name, field in cls.Params.model_fields.items():  # type: ignore[attr-defined]
        limits = []
        for meta in field.metadata:
            for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                value = getattr(meta, attr, None)
                if value is not None:
                    limits.append(f"{sign} {value}")
        annotation = field.annotation
        type_name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
        params.append(
            {
                "name": name,
                "type": type_name,
                "default": None if field.is_required() else field.get_default(call_default_factory=True),
                "required": field.is_required(),
                "constraints": ", ".join(limits),
                "description": field.description or "",
            }
        )
    doc = inspect.getdoc(cls) or ""
    return {
        "name": cls.__name__,
        "kind": cls.kind,  # type: ignore[attr-defined]
        "module": cls.__module__,
        "description": getattr(cls, "description", "") or doc.split("\n", 1)[0],
        "doc": doc,
        "parameters": params,
    }
