"""The `optimize:` section of a bot file: parameter ranges, method, objective and constraints.

`load_study(path)` reads the bot YAML, validates everything except `optimize:` as a BotConfig
(line numbers are kept: the section is blanked, not removed) and the section itself as an
OptimizeSpec. Each parameter key resolves to a place in the config (`Target`); the ends of
every range are applied to the bot and validated up front, so a bad value is reported with
its file, line and key before any backtest runs.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trading.config import BotConfig, parse_config
from trading.config_errors import format_path, format_pydantic, line_index, where
from trading.exceptions import ConfigError
from trading.suggest import did_you_mean

Path_ = tuple[str | int, ...]
OBJECTIVES: dict[str, str] = {
    "sharpe": "sharpe_ratio",
    "sortino": "sortino_ratio",
    "calmar": "calmar_ratio",
    "profit_factor": "profit_factor",
    "total_pnl": "total_pnl",
    "sqn": "sqn",
}
# Parameters here would change the data or the bot's identity: data is loaded once per worker.
FIXED_SECTIONS = ("bot", "data", "database")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamRange(_Strict):
    """A range `{low, high, step?, log?}` or a list of `choices`."""

    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = Field(None, gt=0)
    log: bool = False
    choices: list[Any] | None = Field(None, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _list_is_choices(cls, data: Any) -> Any:
        return {"choices": data} if isinstance(data, list) else data

    @model_validator(mode="after")
    def _one_form(self) -> ParamRange:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.step is not None or self.log:
                raise ValueError(
                    "give either 'choices' or 'low'/'high' (with 'step' or 'log'), not both"
                )
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs 'low' and 'high' (or give 'choices')")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and self.step is not None:
            raise ValueError("'log' and 'step' exclude each other")
        if self.log and self.low <= 0:
            raise ValueError("a 'log' range needs low > 0")
        return self

    @property
    def kind(self) -> Literal["choice", "int", "float"]:
        if self.choices is not None:
            return "choice"
        ends = (self.low, self.high, self.step)
        return (
            "int"
            if all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in ends)
            else "float"
        )

    def grid_values(self) -> list[Any]:
        """Return the values a grid search tries, low to high (every choice, in order)."""
        if self.choices is not None:
            return list(self.choices)
        assert self.low is not None and self.high is not None
        if self.kind == "int":
            if self.log:
                raise ValueError("a grid cannot enumerate a 'log' range; give 'step' or 'choices'")
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            raise ValueError("a grid needs 'step' for a float range (or give 'choices')")
        n = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return [round(self.low + i * self.step, 12) for i in range(n)]

    def ends(self) -> list[Any]:
        """Return the values that bound the range (checked against the bot up front)."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]


class Constraints(_Strict):
    min_trades: int | None = Field(None, ge=0, description="Fewest closed trades a trial needs.")
    max_drawdown: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Largest drawdown allowed, a fraction of the peak (0.25 = 25 %).",
    )


class WalkForwardSpec(_Strict):
    train: str = Field("180d", description="In-sample window length: 180d, 12h, 4w, 90min.")
    test: str = Field("30d", description="Out-of-sample window length.")
    step: str | None = Field(None, description="Shift between windows; default: test.")

    @field_validator("train", "test", "step")
    @classmethod
    def _duration(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    def lengths(self) -> tuple[pd.Timedelta, pd.Timedelta, pd.Timedelta]:
        train, test = parse_duration(self.train), parse_duration(self.test)
        step = parse_duration(self.step) if self.step else test
        if step < test:
            raise ValueError(
                f"step ({self.step}) is shorter than test ({self.test}): out-of-sample windows would overlap"
            )
        return train, test, step


class OptimizeSpec(_Strict):
    method: Literal["grid", "optuna"] = "grid"
    trials: int = Field(100, ge=1, description="Optuna trials; a grid runs every combination.")
    seed: int = Field(42, description="Seed of the TPE sampler.")
    batch_size: int = Field(
        8,
        ge=1,
        description="Optuna trials asked per round; fixed so that a run is the same with any --jobs.",
    )
    objective: str = Field("sharpe", description="Built-in name or 'package.module:function'.")
    direction: Literal["maximize", "minimize"] = "maximize"
    constraints: Constraints = Field(default_factory=Constraints)
    parameters: dict[str, ParamRange] = Field(min_length=1)
    walk_forward: WalkForwardSpec | None = None

    @field_validator("objective")
    @classmethod
    def _objective(cls, v: str) -> str:
        if v in OBJECTIVES or re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", v):
            return v
        hint = did_you_mean(v, OBJECTIVES)
        raise ValueError(
            f"unknown objective {v!r}"
            + (f"; did you mean '{hint}'?" if hint else "")
            + f" (use one of {', '.join(OBJECTIVES)} or 'package.module:function')"
        )

    def grid_size(self) -> int:
        return math.prod(len(r.grid_values()) for r in self.parameters.values())


_UNITS = {"w": "W", "d": "D", "h": "h", "m": "min", "min": "min", "s": "s"}


def parse_duration(text: str) -> pd.Timedelta:
    """Parse '180d', '12h', '4w', '90min' (a number and a unit: w, d, h, m/min, s)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(w|d|h|min|m|s)\s*", str(text).lower())
    if m is None:
        raise ValueError(f"{text!r} is not a duration (a number and a unit: 180d, 12h, 4w, 90min)")
    value = pd.Timedelta(float(m.group(1)), unit=_UNITS[m.group(2)])
    if value <= pd.Timedelta(0):
        raise ValueError(f"{text!r} must be positive")
    return value


# ----------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Target:
    """Where a parameter lives in the bot config, and how its values are checked."""

    key: str  # as written under optimize.parameters
    path: Path_  # e.g. ("strategy", "entry_mixins", 0, "parameters", "e_rsi_period")


def resolve_target(key: str, cfg: BotConfig) -> Target:
    """Map a parameter key to its config path; raise ValueError with a hint if it names nothing.

    Keys: a mixin parameter (`e_rsi_period`), one qualified by its mixin
    (`AdvancedATRExitMixin.x_atr_period`) or a config path (`risk_management.risk_per_trade`,
    `strategy.exit_mixins[1].parameters.x_atr_period`).
    """
    owners = _mixin_params(cfg)
    head = re.split(r"[.\[]", key, maxsplit=1)[0]
    if head in BotConfig.model_fields and key != head:
        path = _parse_path(key)
        if head in FIXED_SECTIONS:
            raise ValueError(
                f"'{head}' settings cannot be optimised (data is loaded once per worker)"
            )
        _check_path(path, cfg, owners)
        return Target(key, path)
    if "." in key:
        mixin, _, param = key.rpartition(".")
        found = [(p, names) for p, (name, names) in owners.items() if name == mixin]
        if not found:
            hint = did_you_mean(mixin, {name for name, _ in owners.values()})
            raise ValueError(
                f"the bot has no mixin {mixin!r}" + (f"; did you mean '{hint}'?" if hint else "")
            )
        if len(found) > 1:
            raise ValueError(
                f"the bot lists {mixin} {len(found)} times; use a path like "
                f"'{format_path(found[1][0])}.parameters.{param}'"
            )
        where_, names = found[0]
        if param not in names:
            hint = did_you_mean(param, names)
            raise ValueError(
                f"{mixin} has no parameter {param!r}"
                + (f"; did you mean '{hint}'?" if hint else "")
            )
        return Target(key, (*where_, "parameters", param))
    holders = [p for p, (_, names) in owners.items() if key in names]
    if len(holders) == 1:
        return Target(key, (*holders[0], "parameters", key))
    if len(holders) > 1:
        either = " or ".join(f"'{owners[p][0]}.{key}'" for p in holders)
        raise ValueError(f"{key!r} belongs to {len(holders)} mixins of the bot; write {either}")
    every = sorted({n for _, names in owners.values() for n in names})
    hint = did_you_mean(key, every)
    raise ValueError(
        f"no mixin of the bot has a parameter {key!r}"
        + (f"; did you mean '{hint}'?" if hint else "")
        + " (or give a config path such as 'risk_management.risk_per_trade')"
    )


def _mixin_params(cfg: BotConfig) -> dict[Path_, tuple[str, list[str]]]:
    from strategy.registry import resolve_mixin

    out: dict[Path_, tuple[str, list[str]]] = {}
    for kind, key in (("entry", "entry_mixins"), ("exit", "exit_mixins")):
        for i, spec in enumerate(getattr(cfg.strategy, key)):
            cls: Any = resolve_mixin(spec.name, kind)  # type: ignore[arg-type]
            out[("strategy", key, i)] = (spec.name, list(cls.Params.model_fields))
    return out


def _parse_path(key: str) -> Path_:
    parts: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", key):
        parts.append(int(index) if index else name)
    return tuple(parts)


def _check_path(path: Path_, cfg: BotConfig, owners: dict[Path_, tuple[str, list[str]]]) -> None:
    if len(path) >= 5 and path[3] == "parameters" and path[:3] in owners:
        name, names = owners[path[:3]]
        if path[4] not in names:
            hint = did_you_mean(str(path[4]), names)
            raise ValueError(
                f"{name} has no parameter {path[4]!r}"
                + (f"; did you mean '{hint}'?" if hint else "")
            )
        return
    node: Any = cfg
    for part in path:
        if isinstance(part, int):
            if not isinstance(node, (list, tuple)) or part >= len(node):
                raise ValueError(f"{format_path(path)}: index [{part}] is out of range")
            node = node[part]
        elif isinstance(node, BaseModel):
            fields = list(type(node).model_fields)
            if part not in fields:
                hint = did_you_mean(part, fields)
                raise ValueError(
                    f"{format_path(path)}: no key {part!r}"
                    + (f"; did you mean '{hint}'?" if hint else "")
                )
            node = getattr(node, part)
        else:
            raise ValueError(f"{format_path(path)}: {part!r} is not a settable key")  # noqa: TRY004
    if isinstance(node, (BaseModel, list, dict)):
        raise ValueError(f"{format_path(path)} is a section, not a value")  # noqa: TRY004


def set_path(tree: dict[str, Any], path: Path_, value: Any) -> None:
    """Set `value` at `path` in a plain config tree, creating missing mappings."""
    node: Any = tree
    for part, nxt in itertools.pairwise(path):
        if isinstance(part, int):
            node = node[part]
            continue
        if node.get(part) is None:
            node[part] = [] if isinstance(nxt, int) else {}
        node = node[part]
    node[path[-1]] = value


class TrialConfigError(ConfigError):
    """A parameter set makes an invalid bot."""


def apply_params(
    tree: dict[str, Any], targets: dict[str, Target], params: dict[str, Any]
) -> BotConfig:
    """Return the bot `tree` (plain data) with `params` set, validated with every mixin's Params."""
    import copy

    from strategy.registry import resolve_mixin

    tree = copy.deepcopy(tree)
    for key, value in params.items():
        set_path(tree, targets[key].path, value)
    label = ", ".join(f"{k}={v!r}" for k, v in params.items())
    try:
        cfg = BotConfig.model_validate(tree)
    except ValidationError as exc:
        raise TrialConfigError(label, format_pydantic(exc, (), {}, BotConfig)) from None
    errors: list[str] = []
    for kind, key in (("entry", "entry_mixins"), ("exit", "exit_mixins")):
        for i, spec in enumerate(getattr(cfg.strategy, key)):
            try:
                mixin: Any = resolve_mixin(spec.name, kind)  # type: ignore[arg-type]
                mixin.Params.model_validate(spec.parameters)
            except ValidationError as exc:
                errors.extend(format_pydantic(exc, ("strategy", key, i, "parameters"), {}, None))
    if errors:
        raise TrialConfigError(label, errors)
    return cfg


# ----------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class Study:
    """A bot file with an `optimize:` section, parsed."""

    source: str
    config: BotConfig  # validated, variables interpolated
    raw: dict[str, Any]  # the file's tree without `optimize:`, variables kept as written
    spec: OptimizeSpec
    targets: dict[str, Target]

    def base_tree(self) -> dict[str, Any]:
        """Return the validated config as plain data, the base every trial modifies."""
        return self.config.model_dump(mode="python")


def load_study(path: str | Path) -> Study:
    """Read a bot file and its `optimize:` section; raise ConfigError naming file, line and key."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(p), [f"file not found: {p}"])
    text = p.read_text(encoding="utf-8")
    return parse_study(text, source=str(p))


def parse_study(text: str, *, source: str = "<string>") -> Study:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        parse_config(text, source=source)  # reports the YAML error with its line
        raise
    if not isinstance(raw, dict) or "optimize" not in raw:
        raise ConfigError(
            source,
            ["no 'optimize:' section: add one with at least 'parameters' (docs/optimize.md)"],
        )
    lines = line_index(node)
    cfg = parse_config(_blank_section(text, node, "optimize"), source=source)
    section = raw.pop("optimize")
    try:
        spec = OptimizeSpec.model_validate(section or {})
    except ValidationError as exc:
        raise ConfigError(
            source, format_pydantic(exc, ("optimize",), lines, OptimizeSpec)
        ) from None
    errors: list[str] = []
    targets: dict[str, Target] = {}
    for key, rng in spec.parameters.items():
        at = where(("optimize", "parameters", key), lines)
        try:
            targets[key] = resolve_target(key, cfg)
        except ValueError as exc:
            errors.append(at + str(exc))
            continue
        if spec.method == "grid":
            try:
                rng.grid_values()
            except ValueError as exc:
                errors.append(at + str(exc))
        for value in rng.ends():
            try:
                apply_params(cfg.model_dump(mode="python"), {key: targets[key]}, {key: value})
            except TrialConfigError as exc:
                errors.extend(f"{at}value {value!r} makes an invalid bot: {e}" for e in exc.errors)
    if spec.walk_forward is not None:
        try:
            spec.walk_forward.lengths()
        except ValueError as exc:
            errors.append(where(("optimize", "walk_forward"), lines) + str(exc))
    if errors:
        raise ConfigError(source, errors)
    return Study(source=source, config=cfg, raw=raw, spec=spec, targets=targets)


def _blank_section(text: str, node: yaml.Node, key: str) -> str:
    """Return `text` with the top-level `key:` and its value replaced by blank lines."""
    assert isinstance(node, yaml.MappingNode)
    for k, v in node.value:
        if k.value == key:
            first = k.start_mark.line
            last = v.end_mark.line - (1 if v.end_mark.column == 0 else 0)
            lines = text.splitlines(keepends=True)
            for i in range(first, min(last + 1, len(lines))):
                lines[i] = "\n"
            return "".join(lines)
    return text
