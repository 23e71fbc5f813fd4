"""Where a configuration error is: YAML line numbers, key paths, pydantic messages with hints."""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from trading.suggest import did_you_mean


def line_index(node: yaml.Node | None) -> dict[tuple[Any, ...], int]:
    """Map every key path of the YAML tree to its 1-based line."""
    out: dict[tuple[Any, ...], int] = {}

    def walk(n: yaml.Node, path: tuple[Any, ...]) -> None:
        out[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = k.value
                out[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
                out[path + (key,)] = k.start_mark.line + 1
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, path + (i,))

    if node is not None:
        walk(node, ())
    return out


def format_path(path: tuple[Any, ...]) -> str:
    """Render ('strategy', 'exit_mixins', 0, 'parameters') as strategy.exit_mixins[0].parameters."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


def where(path: tuple[Any, ...], lines: dict) -> str:
    line = None
    for i in range(len(path), -1, -1):
        line = lines.get(tuple(path[:i]))
        if line is not None:
            break
    return f"line {line}: {format_path(path)}: " if line else f"{format_path(path)}: "


def format_pydantic(
    exc: ValidationError,
    prefix: tuple[Any, ...],
    lines: dict,
    model: type[BaseModel] | None,
    skip: set[tuple[Any, ...]] | None = None,
) -> list[str]:
    out: list[str] = []
    for err in exc.errors():
        loc = prefix + tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        if skip and loc in skip:
            continue
        typ = err["type"]
        if typ == "extra_forbidden":
            key = loc[-1]
            valid = fields_at(model, loc[len(prefix):-1]) if model else []
            hint = did_you_mean(str(key), valid)
            msg = f"unknown key '{key}'" + (f"; did you mean '{hint}'?" if hint else "")
            if valid and not hint:
                msg += f" (valid keys: {', '.join(valid)})"
        elif typ == "literal_error":
            expected = str(err.get("ctx", {}).get("expected", ""))
            options = re.findall(r"'([^']*)'", expected)
            hint = did_you_mean(str(err.get("input")), options)
            msg = f"{err['input']!r} is not allowed; use one of {expected}" + (
                f" (did you mean '{hint}'?)" if hint else ""
            )
        elif typ == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"]
            if typ.startswith(("value_error", "assertion_error")):
                msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
            elif "input" in err and not isinstance(err["input"], (dict, list)):
                msg = f"{msg} (got {err['input']!r})"
        out.append(where(loc, lines) + msg)
    return out


def fields_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """Return the field names of the model found by following loc from `model`."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def model_in(annotation: Any) -> Any:
    """Find a BaseModel class inside an annotation like `list[X]` or `X | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = model_in(arg)
        if found is not None:
            return found
    return None
