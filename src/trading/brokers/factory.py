"""BrokerFactory: create a broker by type from its config, once, with the order logger injected.

Broker types are registered by name (`BrokerFactory.register`); `paper` is built in. A type
may be resolved dynamically too (`register_resolver`). The live venues are registered lazily:
asking for `ibkr` imports the IB broker (ib_async is imported only when it connects), `binance`
or any other ccxt exchange id imports the ccxt broker; without the extra that installs its
client, the error names the extra.

A factory keeps the brokers it made: asking again for the same type and the same config
(equal content, secrets included) returns the same instance, so two parts of one process
share one venue connection. A SimBroker belongs to one Cerebro: a run that builds a Cerebro
uses its own factory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from trading.suggest import did_you_mean

if TYPE_CHECKING:
    from trading.order_logger import OrderLogger

Builder = Callable[[Any], Any]
Resolver = Callable[[str], "BrokerSpec | None"]

_SECRET_KEY = re.compile(r"(?i)(secret|password|passwd|token|api_?key|private_?key)")


@dataclass(frozen=True)
class BrokerSpec:
    """How to build one broker type: `build(config)` and the config keys it cannot do without."""

    name: str
    build: Builder
    required: tuple[str, ...] = ()


def _section(config: Any) -> Any:
    """Return the broker section of a whole BotConfig; any other config as it is."""
    if hasattr(config, "broker") and hasattr(config, "model_dump"):
        return config.broker
    return config


def _plain(config: Any) -> dict[str, Any]:
    """Return the config as a plain dict."""
    if hasattr(config, "model_dump"):
        return dict(config.model_dump())
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(f"a broker config must be a mapping or a config model, got {type(config).__name__}")


def _reveal(value: Any) -> Any:
    # SecretStr dumps as '**********': two different keys must not look like the same account.
    getter = getattr(value, "get_secret_value", None)
    return getter() if callable(getter) else str(value)


def _fingerprint(plain: Mapping[str, Any]) -> str:
    text = json.dumps(plain, sort_keys=True, default=_reveal)
    return hashlib.sha256(text.encode()).hexdigest()


def _secret_values(obj: Any, secret: bool = False) -> Iterable[str]:
    """Yield the values under secret-looking keys, at any depth."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _secret_values(v, secret or bool(_SECRET_KEY.search(str(k))))
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _secret_values(v, secret)
    elif secret and obj is not None:
        yield str(_reveal(obj)) if not isinstance(obj, str) else obj


class BrokerFactory:
    """Create brokers by type, validate their config, reuse them, and give each the order logger."""

    _registry: ClassVar[dict[str, BrokerSpec]] = {}
    _resolvers: ClassVar[list[Resolver]] = []

    def __init__(self, order_logger: OrderLogger | None = None) -> None:
        self.order_logger = order_logger
        self._brokers: dict[tuple[str, str], Any] = {}

    # ------------------------------------------------------------------ registry
    @classmethod
    def register(cls, name: str, build: Builder, *, required: Iterable[str] = ()) -> BrokerSpec:
        """Register (or replace) a broker type; `required` keys must be set in its config."""
        spec = BrokerSpec(name=name.lower(), build=build, required=tuple(required))
        cls._registry[spec.name] = spec
        return spec

    @classmethod
    def unregister(cls, name: str) -> None:
        cls._registry.pop(name.lower(), None)

    @classmethod
    def register_resolver(cls, resolver: Resolver) -> None:
        """Add a lookup for types not registered by name (e.g. every ccxt exchange id)."""
        cls._resolvers.append(resolver)

    @classmethod
    def types(cls) -> list[str]:
        return sorted(set(cls._registry) | set(_LAZY))

    @classmethod
    def spec(cls, broker_type: str) -> BrokerSpec:
        """Return how to build `broker_type`; raise ValueError with a did-you-mean hint if unknown."""
        name = broker_type.lower()
        spec = cls._registry.get(name)
        for resolve in cls._resolvers:
            if spec is not None:
                break
            spec = resolve(name)
        if spec is None:
            spec = _lazy_spec(name)
        if spec is None:
            hint = did_you_mean(name, cls.types())
            known = ", ".join(cls.types())
            raise ValueError(
                f"unknown broker type {broker_type!r}"
                + (f"; did you mean {hint!r}?" if hint else "")
                + f" (known: {known})"
            )
        return spec

    # ------------------------------------------------------------------ creating
    def create_broker(self, broker_type: str, config: Any) -> Any:
        """Return the broker of this type for this config, built once; its `order_logger` is set.

        `config` is the broker section (a config model or a mapping) or a whole BotConfig.
        A missing required key raises ValueError naming the key (never its value).
        """
        spec = self.spec(broker_type)
        config = _section(config)
        plain = _plain(config)
        missing = [k for k in spec.required if plain.get(k) in (None, "")]
        if missing:
            raise ValueError(
                f"broker {spec.name!r} config is missing required key(s): {', '.join(missing)}"
            )
        key = (spec.name, _fingerprint(plain))
        broker = self._brokers.get(key)
        if broker is not None:
            return broker
        broker = spec.build(config)
        broker.order_logger = self.order_logger
        if self.order_logger is not None:
            self.order_logger.add_secrets(_secret_values(plain))
        self._brokers[key] = broker
        return broker

    def clear(self) -> None:
        """Forget the brokers made so far (the next create builds new ones)."""
        self._brokers.clear()


# --------------------------------------------------------------------------- paper


def build_paper_broker(config: Any) -> Any:
    """Build the SimBroker with the config's fill model, as the backtest engine does."""
    from trading.brokers.fill_model import FillModel
    from trading.brokers.sim import SimBroker, configure_broker
    from trading.config import BrokerSection

    section = config if isinstance(config, BrokerSection) else BrokerSection.model_validate(config)
    ptc = section.paper_trading_config
    fill_model = FillModel.from_config(
        ptc,
        commission_rate=section.commission_rate,
        commission_per_share=section.commission_per_share,
        commission_minimum=section.commission_minimum,
    )
    broker = SimBroker()
    configure_broker(
        broker,
        cash=section.cash,
        commission_rate=section.commission_rate,
        slippage_model=ptc.slippage_model,
        base_slippage=ptc.base_slippage,
        fill_model=fill_model,
        currency=section.currency,
    )
    return broker


BrokerFactory.register("paper", build_paper_broker)

# --------------------------------------------------------------------------- live venues, lazily

LIVE_EXTRA = "pip install 'atf[live]'"
_LAZY = ("binance", "ibkr")  # built-in venue types, imported on first use


class MissingExtra(ImportError):
    """A broker type whose client library is not installed; the message names the extra."""


def _require(name: str, package: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise MissingExtra(f"broker type {name!r} needs {package}: {LIVE_EXTRA}")


def _lazy_spec(name: str) -> BrokerSpec | None:
    """Return the spec of a live venue type, importing its broker on first use (None: no venue)."""
    if name == "ibkr":
        _require(name, "ib_async")
        from trading.brokers.ibkr_broker import build_ibkr_broker

        return BrokerSpec(name, build_ibkr_broker)
    if importlib.util.find_spec("ccxt") is None:
        if name == "binance":
            _require(name, "ccxt")
        return None
    from trading.brokers.ccxt_broker import resolve_ccxt_type

    return resolve_ccxt_type(name)  # binance, or any other ccxt exchange id
