"""IBKRSettings: how a bot reaches Interactive Brokers (gateway port, client id, contracts, retries).

The port follows from `trading_mode` and `app` unless given: TWS 7497 (paper) / 7496 (live),
IB Gateway 4002 (paper) / 4001 (live). A known live port with `trading_mode: paper` (or the
reverse) is a configuration error, and in paper mode the adapter refuses an account that is not
a paper account (IB paper account ids start with ``D``, e.g. ``DU1234567``).

Account ids are never logged in full: see `mask_account`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trading.exceptions import ATFError

PORTS: dict[tuple[str, str], int] = {
    ("tws", "paper"): 7497,
    ("tws", "live"): 7496,
    ("gateway", "paper"): 4002,
    ("gateway", "live"): 4001,
}
_MODE_OF_PORT = {port: mode for (_, mode), port in PORTS.items()}
MISSING_EXTRA = "Interactive Brokers support needs ib_async: pip install 'atf[live]'"


class IBKRError(ATFError):
    """Interactive Brokers refused a request, or the connection to it failed."""


class IBKRConnectionError(IBKRError, ConnectionError):
    """No API connection to TWS / IB Gateway (refused, timed out, or the wrong account)."""


def require_ib_async() -> Any:
    """Import and return the ib_async module; raise ImportError naming the extra if missing."""
    try:
        import ib_async
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(MISSING_EXTRA) from exc
    return ib_async


def mask_account(account: str | None) -> str:
    """Return an account id fit for logs: the first two and last two characters (``DU***67``)."""
    if not account:
        return "?"
    if len(account) <= 4:
        return "***"
    return f"{account[:2]}***{account[-2:]}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReconnectPolicy(_Strict):
    """Exponential backoff between reconnection attempts."""

    initial_delay: float = Field(1.0, gt=0, description="Seconds before the first retry.")
    factor: float = Field(2.0, ge=1, description="Each delay is the previous one times this.")
    max_delay: float = Field(60.0, gt=0, description="Longest wait between two attempts.")
    max_attempts: int | None = Field(None, ge=1, description="Give up after this many attempts; null: never.")

    def delays(self) -> Iterator[float]:
        """Yield the wait before each attempt: initial, initial x factor, ... capped at max_delay."""
        delay, n = self.initial_delay, 0
        while self.max_attempts is None or n < self.max_attempts:
            yield min(delay, self.max_delay)
            delay *= self.factor
            n += 1


class IBKRSection(_Strict):
    """The ``broker.ibkr`` section of a bot: connection, contracts, bars and retries (the mode sits beside it)."""

    host: str = Field("127.0.0.1", description="Host of TWS or IB Gateway.")
    app: Literal["gateway", "tws"] = Field("gateway", description="Which application listens: its default ports differ.")
    port: int | None = Field(None, ge=1, le=65535, description="API port; default from app and trading_mode.")
    client_id: int = Field(1, ge=0, description="API client id; one connection per id. Orders are bound to it.")
    account: str | None = Field(None, description="Account to trade when the login manages several.")
    contracts: dict[str, str] = Field(
        default_factory=dict,
        description="Bot symbol -> contract spec, e.g. AAPL: 'AAPL:STK:SMART:USD', EURUSD: 'EURUSD:CASH', "
        "ES: 'ES:FUT:CME:202612' (see docs/live-ibkr.md).",
    )
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to wait for the API handshake and first sync.")
    request_timeout: float = Field(30.0, gt=0, description="Seconds to wait for a request (contracts, bars).")
    reconnect: ReconnectPolicy = Field(default_factory=ReconnectPolicy)
    what_to_show: Literal["TRADES", "MIDPOINT", "BID", "ASK"] | None = Field(
        None, description="Bar source; default TRADES, MIDPOINT for forex."
    )
    use_rth: bool = Field(False, description="Only bars inside regular trading hours.")
    warmup_bars: int = Field(300, ge=0, description="Closed bars fetched before the first live bar.")
    live_bars: Literal["keep_up_to_date", "realtime"] = Field(
        "keep_up_to_date",
        description="keep_up_to_date: historical bars kept up to date by IB; realtime: 5-second bars aggregated here.",
    )
    commission_wait: float = Field(
        5.0, gt=0, description="Seconds to wait for a fill's commission report before reporting the fill without it."
    )
    require_paper_account: bool = Field(True, description="In paper mode, refuse an account id not starting with D.")


class IBKRSettings(IBKRSection):
    """Everything the IB adapter needs: the ``broker.ibkr`` section and the account's trading mode."""

    trading_mode: Literal["paper", "live"] = Field("paper", description="Paper or live account (from broker.trading_mode).")

    @model_validator(mode="after")
    def _port_matches_mode(self) -> IBKRSettings:
        mode = _MODE_OF_PORT.get(self.port) if self.port is not None else None
        if mode is not None and mode != self.trading_mode:
            raise ValueError(
                f"port {self.port} is a {mode} trading port but trading_mode is {self.trading_mode}"
            )
        return self

    @property
    def resolved_port(self) -> int:
        return self.port if self.port is not None else PORTS[(self.app, self.trading_mode)]

    def bars_source(self, sec_type: str) -> str:
        """Return what the bars show for a contract of `sec_type` (forex has no trades)."""
        if self.what_to_show is not None:
            return self.what_to_show
        return "MIDPOINT" if sec_type == "CASH" else "TRADES"

    @classmethod
    def from_broker_config(cls, config: Any) -> IBKRSettings:
        """Build the settings from a broker section (model or mapping) or a whole bot config.

        Reads ``trading_mode`` from the section and the rest from its ``ibkr`` mapping (flat
        keys next to ``type`` are accepted too, for a plain mapping).
        """
        if hasattr(config, "broker") and hasattr(config, "model_dump"):
            config = config.broker
        plain: Mapping[str, Any] = config.model_dump() if hasattr(config, "model_dump") else dict(config)
        nested = plain.get("ibkr") or {}
        if isinstance(nested, BaseModel):
            nested = nested.model_dump(exclude_unset=True)
        flat = {k: v for k, v in plain.items() if k in cls.model_fields and k != "trading_mode"}
        values = {**flat, **dict(nested)}
        values.setdefault("trading_mode", plain.get("trading_mode", "paper"))
        return cls.model_validate(values)
