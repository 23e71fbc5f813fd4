"""Settings of the ccxt venue adapter, and its credentials from the environment.

The broker section of a bot names the venue (`type: binance`, or any ccxt exchange id) and
the mode; the adapter's own knobs sit under `broker.ccxt`::

    broker:
      type: binance
      trading_mode: paper        # paper: the venue's testnet; live: real money
      testnet: true              # default: trading_mode == paper
      ccxt: {poll_interval: 2.0, requests_per_minute: 600}

USDⓈ-M futures (linear perpetuals): ``ccxt: {market: future, leverage: 3, margin_mode:
isolated}`` with ``type: binance`` (or ``type: binanceusdm``, where `market` defaults to
future). ccxt then talks to ``binanceusdm``; the sandbox of Binance futures is its demo
trading (ccxt no longer signs requests for the retired futures testnet).

Credentials never come from the YAML: they are read from ``<PREFIX>_API_KEY`` and
``<PREFIX>_API_SECRET`` (``<PREFIX>_TESTNET_API_KEY`` / ``..._SECRET`` on the testnet,
``<PREFIX>_DEMO_...`` on Binance demo trading, plus ``..._API_PASSWORD`` for venues that need a
passphrase), where PREFIX is `env_prefix` or the exchange id in upper case (``BINANCE``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from trading.exceptions import ConfigError
from trading.suggest import did_you_mean

LIVE_EXTRA = "pip install 'atf[live]'"
FUTURES_IDS = ("binanceusdm",)  # ccxt ids whose every market is a USDⓈ-M contract
INVERSE_IDS = ("binancecoinm",)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrySettings(_Strict):
    """Retries of a failed request (network error, timeout, 429, 5xx): exponential backoff."""

    attempts: int = Field(4, ge=1, le=20, description="Tries per request, the first included.")
    base_delay: float = Field(0.5, gt=0, description="Seconds before the first retry; doubles each time.")
    max_delay: float = Field(10.0, gt=0, description="Longest wait between two tries, in seconds.")


class BreakerSettings(_Strict):
    """The circuit breaker: halt new entries after `failures` failed requests in a row."""

    failures: int = Field(5, ge=1, description="Consecutive failed requests that open the breaker.")
    cooldown: float = Field(300.0, ge=0, description="Seconds before entries are tried again.")


class CcxtOptions(_Strict):
    """The ``broker.ccxt`` section of a bot: the adapter's knobs (mode and testnet sit beside it)."""

    exchange: str | None = Field(
        None, description="ccxt exchange id; default: broker.type. With broker.type paper: the exchange whose "
        "public candles feed `atf paper` without --replay.",
    )
    env_prefix: str | None = Field(None, description="Prefix of the credential variables; default: exchange id.")
    market: Literal["spot", "future"] | None = Field(
        None, description="spot, or future: USDⓈ-M linear perpetuals (Binance: the binanceusdm client); "
        "default: future for binanceusdm, spot otherwise.",
    )
    sandbox: Literal["auto", "testnet", "demo"] = Field(
        "auto", description="What testnet: true connects to; auto: the testnet on spot, demo trading on "
        "Binance futures.",
    )
    leverage: int | None = Field(
        None, ge=1, le=125, description="Futures: leverage set on every traded symbol at start."
    )
    margin_mode: Literal["cross", "isolated"] | None = Field(
        None, description="Futures: margin mode set on every traded symbol at start (before the leverage)."
    )
    close_position: bool = Field(
        False, description="Futures: protective stops and targets close the whole position (closePosition) "
        "instead of their own quantity (reduceOnly).",
    )
    timeout_ms: int = Field(10_000, ge=100, description="HTTP timeout of one request, in ms.")
    requests_per_minute: int = Field(600, ge=1, description="Our own request budget on top of ccxt's limiter.")
    rate_limit_ms: int | None = Field(
        None, ge=0, description="ccxt's least spacing of two requests, in ms; default: the venue's own."
    )
    poll_interval: float = Field(2.0, ge=0, description="Seconds between two polls of the venue's order state.")
    websocket: Literal["auto", "on", "off"] = Field(
        "auto", description="Order updates by websocket (ccxt.pro watchOrders): auto: when ccxt.pro and the "
        "venue have it; on: required (an error otherwise); off: polling only.",
    )
    stream_poll_interval: float = Field(
        30.0, ge=0, description="Seconds between two safety-net polls while the order stream is up "
        "(poll_interval applies while it is down).",
    )
    stop_limit_offset: float = Field(
        0.005, ge=0, lt=0.5, description="Limit of a stop-limit sent for a stop: this fraction beyond the trigger."
    )
    oco: Literal["auto", "native", "emulated"] = Field(
        "auto", description="auto: the venue's OCO where it has one, emulated otherwise."
    )
    quote_at_fill: bool = Field(
        True, description="Record the venue's best bid and ask with each fill: the ticker read for the order "
        "moments before, else one fetch_ticker when the fill is seen (not retried; a failure leaves them null "
        "and never holds the fill back). false: no extra request, bid and ask stay null.",
    )
    retry: RetrySettings = Field(default_factory=RetrySettings)
    circuit_breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    urls: dict[str, str | dict[str, Any]] | None = Field(
        None, description="Override of the venue's API base URLs (proxies, tests); under `ws`, of ccxt.pro's "
        "websocket URLs (merged into urls['api']['ws'], e.g. {spot: ..., ws-api: {spot: ...}}).",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Extra ccxt exchange options.")


class CcxtSettings(CcxtOptions):
    """Everything the ccxt adapter needs but the credentials."""

    exchange: str = Field(description="ccxt exchange id, e.g. binance, binanceusdm, kraken.")
    trading_mode: Literal["paper", "live"] = "paper"
    testnet: bool = Field(description="Use the venue's sandbox (ccxt set_sandbox_mode).")

    @model_validator(mode="after")
    def _paper_is_testnet(self) -> CcxtSettings:
        if self.trading_mode == "paper" and not self.testnet:
            raise ValueError(
                "trading_mode paper trades on the venue's testnet: set testnet: true, "
                "or trading_mode: live to trade with real money"
            )
        if self.exchange in INVERSE_IDS:
            raise ValueError(f"{self.exchange}: COIN-M (inverse) futures are not supported; "
                             "use USDⓈ-M (binanceusdm)")
        if self.exchange in FUTURES_IDS and self.market == "spot":
            raise ValueError(f"{self.exchange} trades USDⓈ-M futures only: set market: future (or type: binance)")
        nested = [k for k, v in (self.urls or {}).items() if not isinstance(v, str) and k != "ws"]
        if nested or not isinstance((self.urls or {}).get("ws", {}), dict):
            raise ValueError("urls: every entry is a base URL, but `ws`: a mapping of websocket URLs")
        if not self.futures:
            knobs = [k for k in ("leverage", "margin_mode") if getattr(self, k) is not None]
            knobs += ["close_position"] if self.close_position else []
            if knobs:
                raise ValueError(f"{', '.join(knobs)}: futures only; set market: future")
        return self

    @property
    def futures(self) -> bool:
        """USDⓈ-M futures: `market: future`, or a futures-only exchange id."""
        return self.market == "future" or (self.market is None and self.exchange in FUTURES_IDS)

    @property
    def ccxt_id(self) -> str:
        """The ccxt class to build: Binance futures is `binanceusdm`."""
        return "binanceusdm" if self.futures and self.exchange == "binance" else self.exchange

    @property
    def sandbox_kind(self) -> str:
        """testnet or demo: what `testnet: true` connects to."""
        if self.sandbox != "auto":
            return self.sandbox
        return "demo" if self.ccxt_id in FUTURES_IDS else "testnet"

    @property
    def prefix(self) -> str:
        return (self.env_prefix or self.exchange).upper()


def settings_from_broker(broker_type: str, section: Any) -> CcxtSettings:
    """Build CcxtSettings from a broker section (config model or mapping); errors name the key."""
    plain = _plain(section)
    own = dict(plain.get("ccxt") or {})
    mode = plain.get("trading_mode", "paper")
    testnet = plain.get("testnet")
    data = {
        **own,
        "exchange": (own.get("exchange") or broker_type).lower(),
        "trading_mode": mode,
        "testnet": own.get("testnet", mode == "paper") if testnet is None else testnet,
    }
    try:
        return CcxtSettings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            key = f"broker.{loc}" if loc in ("trading_mode", "testnet") else f"broker.ccxt.{loc}" if loc else "broker"
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                hint = did_you_mean(str(err["loc"][-1]), CcxtSettings.model_fields)
                msg = "unknown key" + (f"; did you mean {hint!r}?" if hint else "")
            problems.append(f"{key}: {msg}")
        raise ConfigError("broker", problems) from None


def _plain(section: Any) -> dict[str, Any]:
    if hasattr(section, "model_dump"):
        plain = dict(section.model_dump())
        extra = getattr(section, "model_extra", None) or {}
        return {**plain, **extra}
    if isinstance(section, Mapping):
        return dict(section)
    raise TypeError(f"a broker config must be a mapping or a config model, got {type(section).__name__}")


@dataclass(frozen=True)
class Credentials:
    """API credentials read from the environment; `repr` never shows them."""

    api_key: SecretStr
    secret: SecretStr
    password: SecretStr | None = None

    def values(self) -> list[str]:
        """The secret strings, for scrubbing logs and messages."""
        out = [self.api_key.get_secret_value(), self.secret.get_secret_value()]
        if self.password is not None:
            out.append(self.password.get_secret_value())
        return [v for v in out if v]


def env_names(settings: CcxtSettings) -> tuple[str, str, str]:
    """The variables holding the key, the secret and the password for these settings."""
    base = settings.prefix
    if settings.testnet:
        base += "_DEMO" if settings.sandbox_kind == "demo" else "_TESTNET"
    return f"{base}_API_KEY", f"{base}_API_SECRET", f"{base}_API_PASSWORD"


def credentials_from_env(settings: CcxtSettings, environ: Mapping[str, str] | None = None) -> Credentials:
    """Read the credentials for the venue the settings connect to; name a missing variable."""
    env = os.environ if environ is None else environ
    key_name, secret_name, password_name = env_names(settings)
    missing = {role: n for role, n in (("api_key", key_name), ("secret", secret_name)) if not env.get(n)}
    if missing:
        where = ("demo trading" if settings.sandbox_kind == "demo" else "testnet") if settings.testnet else "live"
        roles = " and ".join(missing)
        raise ValueError(
            f"broker {settings.exchange!r} ({where}) needs its {roles} in the environment variable(s) "
            f"{', '.join(missing.values())}: set the API key and secret there, never in the YAML"
        )
    password = env.get(password_name)
    return Credentials(
        SecretStr(env[key_name]), SecretStr(env[secret_name]), SecretStr(password) if password else None
    )


def import_ccxt_pro(why: str) -> Any:
    """Import ccxt.pro (part of ccxt since 1.95) or say what needs it."""
    try:
        pro = importlib.import_module("ccxt.pro")  # honours a None in sys.modules (a missing ccxt.pro)
    except ImportError as exc:
        raise ImportError(f"{why} needs ccxt.pro (ccxt >= 1.95: {LIVE_EXTRA}), which cannot be imported: {exc}") from exc
    return pro


def import_ccxt() -> Any:
    """Import ccxt or say which extra installs it."""
    try:
        import ccxt
    except ImportError as exc:  # pragma: no cover - the test extra installs ccxt
        raise ImportError(f"the ccxt broker and feed need ccxt: {LIVE_EXTRA}") from exc
    return ccxt
