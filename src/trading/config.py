"""Bot configuration: pydantic models for the YAML file, loading and error reporting.

`load_config(path)` reads YAML, interpolates ``${VAR}`` / ``${VAR:-default}`` from the
environment, validates the whole tree (structure, then every mixin and its parameters
against the registry) and raises one `ConfigError` listing every problem with its file,
line, key path and, for misspelt names, the closest valid one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from notification.config import (
    EmailConfig,
    NotificationsConfig,
    TelegramConfig,
    environ_with_dotenv,
)
from trading.brokers.ccxt_config import CcxtOptions
from trading.brokers.ibkr_config import IBKRSection
from trading.config_errors import format_pydantic, line_index, where
from trading.config_services import LedgerSection, LoggingSection, PersistenceSection, StrictModel
from trading.data.timeframes import parse_timeframe
from trading.exceptions import ConfigError
from trading.live_sources import check_venue_sections


class BotSection(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$", description="Bot name, used in reports and the run database.")
    symbols: list[str] = Field(min_length=1, description="Symbols this bot trades, one feed each.")
    timeframe: str = Field("1h", description="Bar size: 1m, 5m, 15m, 1h, 4h, 1d, ...")
    mode: Literal["backtest", "paper", "live"] = Field(
        "backtest", description="How BaseTradingBot runs the bot (docs/modes.md); the atf command chosen overrides it."
    )

    @field_validator("timeframe")
    @classmethod
    def _check_timeframe(cls, v: str) -> str:
        parse_timeframe(v)
        return v.lower()

    @field_validator("symbols")
    @classmethod
    def _unique_symbols(cls, v: list[str]) -> list[str]:
        dupes = sorted({s for s in v if v.count(s) > 1})
        if dupes:
            raise ValueError(f"duplicate symbols: {', '.join(dupes)}")
        return v


class DataSection(StrictModel):
    source: Literal["synthetic", "csv"] = Field("synthetic", description="Where bars come from.")
    path: str | None = Field(None, description="CSV file (csv source, single symbol).")
    paths: dict[str, str] | None = Field(None, description="CSV file per symbol (csv source).")
    tz: str = Field("UTC", description="Time zone of naive timestamps in CSV files.")
    bars: int = Field(5000, ge=50, description="Number of synthetic bars per symbol.")
    seed: int = Field(42, description="Seed of the synthetic generator.")
    start: str | None = Field(None, description="First bar to use (inclusive, ISO date).")
    end: str | None = Field(None, description="Last bar to use (inclusive, ISO date).")
    warmup_bars: int = Field(200, ge=0, description="Live feeds: closed bars of history delivered first (never traded).")
    poll_seconds: float = Field(
        30.0, gt=0, description="Live ccxt feed: longest wait between two reads of the exchange's clock."
    )

    @model_validator(mode="after")
    def _csv_needs_path(self) -> DataSection:
        if self.source == "csv" and not (self.path or self.paths):
            raise ValueError("source 'csv' needs 'path' (one symbol) or 'paths' (symbol: file)")
        if self.path and self.paths:
            raise ValueError("give either 'path' or 'paths', not both")
        return self


class MixinSpec(StrictModel):
    name: str = Field(description="Registered mixin name or 'package.module:ClassName'.")
    parameters: dict[str, Any] = Field(default_factory=dict)


class SizingConfig(StrictModel):
    method: Literal["fixed", "percent_equity", "risk_per_trade"]
    quantity: float | None = Field(None, gt=0, description="Units per trade (fixed).")
    percent: float | None = Field(None, gt=0, le=1, description="Fraction of equity per trade (percent_equity).")
    risk: float | None = Field(None, gt=0, le=1, description="Fraction of equity lost at the stop (risk_per_trade).")
    max_percent: float = Field(1.0, gt=0, le=10, description="Cap on notional as a fraction of equity.")
    lot_size: float | None = Field(None, gt=0, description="Round quantities down to a multiple of this.")

    @model_validator(mode="after")
    def _needs_its_value(self) -> SizingConfig:
        need = {"fixed": "quantity", "percent_equity": "percent", "risk_per_trade": "risk"}[self.method]
        if getattr(self, need) is None:
            raise ValueError(f"sizing method '{self.method}' needs '{need}'")
        return self


class ScaleInConfig(StrictModel):
    """Add to an open position when the entry rule fires again in its direction (pyramiding).

    Each add is sized by the sizing rule at its signal (times `size_fraction`), passes every risk
    check against the position it adds to, and the protective stop and target are resized to
    the whole position.
    """

    max_entries: int = Field(description="Most entries per position, the first included (2 or more).")
    size_fraction: float = Field(
        1.0, gt=0, le=1, description="Each add's quantity as a fraction of what the sizing rule gives at its signal."
    )
    min_bars_between: int = Field(1, ge=1, description="Bars from one entry signal to the next add.")

    @field_validator("max_entries")
    @classmethod
    def _at_least_two(cls, v: int) -> int:
        if v < 2:
            raise ValueError(
                f"max_entries must be at least 2 (the first entry counts), got {v}; "
                "leave scale_in out for one entry per position"
            )
        return v


class StrategySection(StrictModel):
    name: str = Field(description="Strategy name (free text).")
    direction: Literal["long", "short", "both"] = "long"
    entry_logic: Literal["any", "all"] = "any"
    entry_mixins: list[MixinSpec] = Field(min_length=1)
    exit_mixins: list[MixinSpec] = Field(min_length=1)
    position_size: float | None = Field(
        None, gt=0, le=1, description="Shorthand for sizing: {method: percent_equity, percent: X}."
    )
    sizing: SizingConfig | None = None
    scale_in: ScaleInConfig | None = Field(
        None, description="Let a repeated entry signal add to the open position; null: one entry per position."
    )

    @model_validator(mode="after")
    def _one_sizing(self) -> StrategySection:
        if self.position_size is not None and self.sizing is not None:
            raise ValueError("give either 'position_size' or 'sizing', not both")
        return self

    def resolved_sizing(self) -> SizingConfig:
        """Return the sizing rule, defaulting to 10 % of equity."""
        if self.sizing is not None:
            return self.sizing
        return SizingConfig(method="percent_equity", percent=self.position_size or 0.1)


class PaperTradingConfig(StrictModel):
    """The fill model (docs/fill-model.md); keys left out take the mode's defaults."""

    # Defaults each mode gives to the keys the YAML leaves out. `realistic` (the default mode,
    # used by every shipped bot) adds only the volume cap, so existing backtests keep their fills.
    MODE_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {
        "basic": {"market_impact_enabled": False, "max_volume_share": None, "latency_simulation": False,
                  "partial_fill_probability": 0.0, "reject_probability": 0.0},
        "realistic": {"market_impact_enabled": False, "max_volume_share": 1.0, "latency_simulation": False,
                      "partial_fill_probability": 0.0, "reject_probability": 0.0},
        "advanced": {"market_impact_enabled": True, "max_volume_share": 0.25, "latency_simulation": True,
                     "partial_fill_probability": 0.1, "reject_probability": 0.01},
    }

    mode: Literal["basic", "realistic", "advanced"] = Field(
        "realistic", description="Defaults for the keys left out: basic (costs only), realistic (+ volume cap), "
        "advanced (+ market impact, latency, random partial fills and rejections).",
    )
    slippage_model: Literal["percent", "fixed", "linear", "sqrt"] = Field(
        "percent",
        description="percent: base_slippage x price; fixed: base_slippage in price units; "
        "linear: base_slippage x (1 + q/V) x price; sqrt: base_slippage x (1 + sqrt(q/V)) x price "
        "(q: fill quantity, V: bar volume).",
    )
    base_slippage: float = Field(0.0, ge=0, description="Slippage per fill (see slippage_model).")
    market_impact_enabled: bool = Field(False, description="Add market_impact_factor x q/V x price against the order.")
    market_impact_factor: float = Field(0.1, ge=0, description="Impact of an order as large as the bar volume, "
                                        "as a fraction of price.")
    max_volume_share: float | None = Field(
        None, gt=0, le=1, description="Most of a bar's volume one order may fill on that bar; null: no cap."
    )
    latency_simulation: bool = Field(False, description="Orders reach the market only after a random latency.")
    min_latency_ms: float = Field(50.0, ge=0, description="Shortest order latency (ms).")
    max_latency_ms: float = Field(250.0, ge=0, description="Longest order latency (ms).")
    partial_fill_probability: float = Field(
        0.0, ge=0, le=1, description="Chance per order and bar that only part of what the bar allows fills."
    )
    reject_probability: float = Field(0.0, ge=0, lt=1, description="Chance that the venue rejects a new entry order.")
    seed: int = Field(0, description="Seed of the fill model's random draws (latency, partial fills, rejections).")

    @model_validator(mode="before")
    @classmethod
    def _mode_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        mode = data.get("mode", "realistic")
        defaults = cls.MODE_DEFAULTS.get(mode) if isinstance(mode, str) else None
        if defaults is None:
            return data  # the Literal check reports the bad mode
        # A value set for a feature switched off is a mistake; a value equal to the default is
        # not (a dumped config, with every key, must validate again).
        off = {"latency_simulation": ("min_latency_ms", "max_latency_ms"), "market_impact_enabled": ("market_impact_factor",)}
        for switch, keys in off.items():
            if data.get(switch, defaults[switch]) is False:
                for key in keys:
                    if key in data and data[key] != cls.model_fields[key].default:
                        raise ValueError(f"{key} has no effect unless {switch} is true")
        return {**defaults, **data}

    @model_validator(mode="after")
    def _check_combinations(self) -> PaperTradingConfig:
        if self.min_latency_ms > self.max_latency_ms:
            raise ValueError(
                f"min_latency_ms ({self.min_latency_ms:g}) is larger than max_latency_ms ({self.max_latency_ms:g})"
            )
        if self.slippage_model != "fixed" and self.base_slippage >= 1:
            raise ValueError(
                f"base_slippage {self.base_slippage:g} is a fraction of price for slippage_model "
                f"'{self.slippage_model}' and must be below 1 (0.0005 = 5 bp); use 'fixed' for price units"
            )
        return self


class BrokerSection(StrictModel):
    type: str = Field("paper", description="paper (the SimBroker), binance or any ccxt exchange id, or ibkr.")
    trading_mode: Literal["paper", "live"] = "paper"
    testnet: bool | None = Field(None, description="ccxt venues: trade on the sandbox; default: trading_mode is paper.")
    ccxt: CcxtOptions | None = Field(None, description="The ccxt adapter's settings (docs/live.md).")
    ibkr: IBKRSection | None = Field(None, description="Interactive Brokers connection and contracts (docs/live-ibkr.md).")
    cash: float = Field(10_000.0, gt=0)
    currency: str | None = Field(
        None, min_length=1, max_length=16, pattern=r"^[A-Za-z0-9]+$",
        description="paper: the account currency (cash and commissions), recorded as the fee currency of "
        "fills whose symbol does not name its quote (BTCUSDT; BTC/USDT gives USDT); null: unknown.",
    )
    commission_rate: float = Field(0.001, ge=0, lt=0.1, description="Fraction of notional per fill.")
    commission_per_share: float | None = Field(
        None, ge=0, description="Commission per unit traded, instead of commission_rate."
    )
    commission_minimum: float = Field(0.0, ge=0, description="Least commission charged on one fill.")
    paper_trading_config: PaperTradingConfig = Field(default_factory=PaperTradingConfig)

    @model_validator(mode="before")
    @classmethod
    def _one_commission(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("commission_per_share") is not None:
            if data.get("commission_rate"):
                raise ValueError("give either 'commission_rate' or 'commission_per_share', not both")
            data = {**data, "commission_rate": 0.0}
        return data

    @model_validator(mode="after")
    def _venue_sections(self) -> BrokerSection:
        check_venue_sections(self)
        return self


class RiskSection(StrictModel):
    max_position_size: float | None = Field(
        None, gt=0, le=10, description="Cap on one position's notional as a fraction of equity."
    )
    stop_loss_required: bool = Field(False, description="Refuse entries for which no exit mixin sets a stop.")
    risk_per_trade: float | None = Field(
        None, gt=0, le=1, description="Cap on the loss at the stop as a fraction of equity."
    )
    max_positions: int | None = Field(
        None, ge=1, description="Most symbols with an open position at once; an entry in another symbol is refused."
    )
    max_concentration: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Cap on one symbol's share of the gross exposure, checked once two or more "
        "positions would be open (set it at or above 1 / max_positions).",
    )
    max_leverage: float | None = Field(
        None, gt=0, le=100, description="Cap on gross exposure (sum of position notionals) divided by equity."
    )
    max_daily_loss: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Loss since the UTC day's first equity, as a fraction of it, that halts new entries "
        "until the next UTC day.",
    )
    max_drawdown: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Fall from the equity peak, as a fraction of the peak, that halts the bot until an "
        "explicit resume.",
    )
    warn_at: float | None = Field(
        0.8, gt=0, le=1, description="Publish a RiskWarning when a value reaches this fraction of its limit; null: never."
    )


class LiveSection(StrictModel):
    on_restart: Literal["adopt", "refuse"] = Field(
        "adopt",
        description="A resumed live bot (persistence) whose earlier run left a position with its stop and "
        "target at the venue: adopt them and keep managing the trade, or refuse to start (docs/live.md).",
    )


class DatabaseSection(StrictModel):
    enabled: bool = True
    url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///atf.db (or ATF_DATABASE_URL).")


class AnalyticsSection(StrictModel):
    periods_per_year: int | None = Field(
        None, gt=0, description="Annualisation of daily returns; default 365 for 24/7 data, else 252."
    )


class BotConfig(StrictModel):
    bot: BotSection
    data: DataSection = Field(default_factory=DataSection)
    strategy: StrategySection
    broker: BrokerSection = Field(default_factory=BrokerSection)
    risk_management: RiskSection = Field(default_factory=RiskSection)
    database: DatabaseSection = Field(default_factory=DatabaseSection)
    analytics: AnalyticsSection = Field(default_factory=AnalyticsSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)
    ledger: LedgerSection = Field(default_factory=LedgerSection)
    persistence: PersistenceSection = Field(default_factory=PersistenceSection)
    live: LiveSection = Field(default_factory=LiveSection)
    telegram: TelegramConfig = Field(default_factory=TelegramConfig)
    email: EmailConfig = Field(default_factory=EmailConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)

    def redacted(self) -> dict[str, Any]:
        """Return the resolved config as plain data with secrets replaced by '***'."""
        return redact(self.model_dump(mode="json"))


# --------------------------------------------------------------------------- loading

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_KEY = re.compile(r"(secret|password|passwd|token|api_key|apikey|private_key)", re.IGNORECASE)


def redact(obj: Any) -> Any:
    """Replace the values of secret-looking keys, and passwords inside URLs, with '***'."""
    if isinstance(obj, Mapping):
        return {k: ("***" if _SECRET_KEY.search(str(k)) and v not in (None, "") else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", obj)
    return obj


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> BotConfig:
    """Load, interpolate and validate a bot YAML file; raise ConfigError listing every problem.

    Without `env`, ``${VAR}`` comes from the environment, then from a ``.env`` file next to
    the config (the environment wins).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(p), [f"file not found: {p}"])
    if env is None:
        try:
            env = environ_with_dotenv(p.parent / ".env")
        except ImportError as exc:
            raise ConfigError(str(p.parent / ".env"), [str(exc)]) from None
    return parse_config(p.read_text(encoding="utf-8"), source=str(p), env=env)


def parse_config(text: str, *, source: str = "<string>", env: Mapping[str, str] | None = None) -> BotConfig:
    """Validate YAML text; see load_config."""
    env = os.environ if env is None else env
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(source, [f"{at}invalid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError(source, ["the file must contain a mapping with at least 'bot' and 'strategy'"])
    lines = line_index(node)
    unset: dict[tuple[Any, ...], str] = {}
    raw = _interpolate(raw, (), env, unset)
    errors = [f"{where(path, lines)}environment variable {name} is not set" for path, name in unset.items()]

    cfg: BotConfig | None = None
    try:
        cfg = BotConfig.model_validate(raw)
    except ValidationError as exc:
        # A value left empty by an unset variable is already reported once.
        errors.extend(format_pydantic(exc, (), lines, BotConfig, skip=set(unset)))
    errors.extend(_check_mixins(raw, lines))
    if errors:
        raise ConfigError(source, errors)
    assert cfg is not None
    return cfg


def _interpolate(obj: Any, path: tuple[Any, ...], env: Mapping[str, str], unset: dict) -> Any:
    """Replace ${VAR} and ${VAR:-default}; record unset variables by key path."""
    if isinstance(obj, dict):
        return {k: _interpolate(v, path + (k,), env, unset) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_interpolate(v, path + (i,), env, unset) for i, v in enumerate(obj)]
    if not isinstance(obj, str) or "${" not in obj:
        return obj

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        unset[path] = name
        return ""

    value = _ENV.sub(sub, obj)
    # A whole-value reference keeps YAML typing: "${CASH}" with CASH=5000 becomes 5000.0.
    if _ENV.fullmatch(obj) and value != "":
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    return value


def _check_mixins(raw: dict[str, Any], lines: dict) -> list[str]:
    """Validate mixin names and parameters against the registry (works on the raw tree)."""
    from strategy.registry import MixinLookupError, resolve_mixin

    errors: list[str] = []
    strategy = raw.get("strategy")
    if not isinstance(strategy, dict):
        return errors
    for kind, key in (("entry", "entry_mixins"), ("exit", "exit_mixins")):
        specs = strategy.get(key)
        if not isinstance(specs, list):
            continue
        for i, spec in enumerate(specs):
            path = ("strategy", key, i)
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                continue  # structural error already reported by pydantic
            try:
                cls = resolve_mixin(spec["name"], kind)
            except MixinLookupError as exc:
                errors.append(where(path + ("name",), lines) + str(exc))
                continue
            params = spec.get("parameters") or {}
            if not isinstance(params, dict):
                continue
            try:
                cls.Params.model_validate(params)
            except ValidationError as exc:
                errors.extend(format_pydantic(exc, path + ("parameters",), lines, cls.Params))
    return errors


def json_schema() -> dict[str, Any]:
    """Return the JSON Schema of the bot YAML (mixin parameters are open objects)."""
    schema = BotConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "atf bot configuration"
    return schema
