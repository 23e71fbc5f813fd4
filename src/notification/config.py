"""Config models of the ``telegram``, ``email`` and ``notifications`` YAML sections.

Secrets (`bot_token`, `password`) are `SecretStr`: they print as ``**********`` in reprs,
logs and `model_dump`; write them as ``${VAR}`` in the YAML and set the variable in the
environment or in a ``.env`` file (`environ_with_dotenv`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

Route = Literal["on", "off", "silent"]
CATEGORIES = ("position_opened", "position_closed", "order_filled", "order_failed", "risk_alerts",
              "system_status", "unusual_trades", "performance_reports")
_DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _route(v: Any) -> Any:
    # YAML 1.1 reads bare on/off as booleans.
    if v is True:
        return "on"
    if v is False:
        return "off"
    return v.lower() if isinstance(v, str) else v


RouteField = Annotated[Route, BeforeValidator(_route)]


class ChannelLimits(_Strict):
    """Delivery rules shared by every channel (docs/notifications.md, reliability)."""

    timeout: float = Field(10.0, gt=0, description="Seconds one send may take before it counts as failed.")
    max_attempts: int = Field(5, ge=1, description="Attempts per message before it is dropped and logged.")
    backoff: float = Field(1.0, gt=0, description="Wait after the first failure; doubles on each retry.")
    backoff_max: float = Field(60.0, gt=0, description="Longest wait between two attempts.")
    queue_size: int = Field(1000, ge=1, description="Messages waiting per channel; beyond it the oldest are dropped.")


class TelegramConfig(ChannelLimits):
    enabled: bool = False
    bot_token: SecretStr | None = Field(None, description='From the environment: "${TELEGRAM_BOT_TOKEN}".')
    chat_id: list[int] = Field(default_factory=list, description="Chat ids that receive messages and may command; "
                               "one id, a list, or a comma-separated string.")
    base_url: str = Field("https://api.telegram.org/bot", description="Bot API root; the token is appended.")
    commands: bool = Field(True, description="Poll for and answer commands from the configured chats.")
    rate_per_second: float = Field(1.0, gt=0, le=30, description="Most messages per second to one chat.")
    max_chars: int = Field(4000, ge=200, le=4096, description="Longest merged message (Telegram allows 4096).")
    poll_timeout: int = Field(10, ge=0, le=50, description="Long-polling timeout of getUpdates (s).")

    @field_validator("chat_id", mode="before")
    @classmethod
    def _ids(cls, v: Any) -> Any:
        if v is None or v == "":
            return []
        if isinstance(v, int | str):
            v = [v]
        out: list[Any] = []
        for item in v:
            out.extend(p.strip() for p in item.split(",") if p.strip()) if isinstance(item, str) else out.append(item)
        return out

    @model_validator(mode="after")
    def _needs_token(self) -> TelegramConfig:
        if self.enabled and (self.bot_token is None or not self.bot_token.get_secret_value()):
            raise ValueError("telegram.enabled needs bot_token (set it from the environment: ${TELEGRAM_BOT_TOKEN})")
        if self.enabled and not self.chat_id:
            raise ValueError("telegram.enabled needs chat_id (${TELEGRAM_CHAT_ID})")
        return self


class EmailConfig(ChannelLimits):
    enabled: bool = False
    smtp_host: str | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls (port 587), tls (implicit, port 465), none (local relays only).")
    username: str | None = None
    password: SecretStr | None = Field(None, description='From the environment: "${SMTP_PASSWORD}".')
    sender: str | None = Field(None, description="From address; default: username.")
    to: list[str] = Field(default_factory=list)
    ca_file: str | None = Field(None, description="Extra CA certificate (PEM) to trust, e.g. a private relay's.")
    timeout: float = Field(30.0, gt=0)
    min_interval: float = Field(60.0, ge=0, description="Least seconds between two emails; bursts merge into one.")
    categories: list[str] = Field(
        default_factory=lambda: ["performance_reports", "risk_alerts", "unusual_trades", "system_status"],
        description="Notification categories also sent by email (reports come with the equity chart).")

    @field_validator("categories")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if c not in CATEGORIES]
        if bad:
            raise ValueError(f"unknown categories {bad}; choose from {', '.join(CATEGORIES)}")
        return v

    @model_validator(mode="after")
    def _complete(self) -> EmailConfig:
        if self.enabled:
            missing = [k for k in ("smtp_host", "to") if not getattr(self, k)]
            if self.username and self.password is None:
                missing.append("password (${SMTP_PASSWORD})")
            if not (self.sender or self.username):
                missing.append("sender or username")
            if missing:
                raise ValueError(f"email.enabled needs {', '.join(missing)}")
        return self


class ReportTimes(_Strict):
    daily: str | None = Field("08:00", description='"HH:MM"; null: no daily report.')
    weekly: str | None = Field("MON 08:00", description='"DAY HH:MM"; null: no weekly report.')
    timezone: str = Field("UTC", description="Time zone of the report times (IANA name).")

    @field_validator("daily")
    @classmethod
    def _hhmm(cls, v: str | None) -> str | None:
        if v is not None:
            parse_hhmm(v)
        return v

    @field_validator("weekly")
    @classmethod
    def _day_hhmm(cls, v: str | None) -> str | None:
        if v is not None:
            parse_weekly(v)
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo

        ZoneInfo(v)
        return v


class UnusualTrades(_Strict):
    """A closed trade is unusual when |net pnl| > k × std of the previous `window` trades."""

    k: float = Field(3.0, gt=0)
    window: int = Field(50, ge=3)
    min_trades: int = Field(10, ge=3, description="Trades seen before any is called unusual.")


class NotificationsConfig(_Strict):
    position_opened: RouteField = "on"
    position_closed: RouteField = "on"
    order_filled: RouteField = Field("off", description="Every fill; off by default: trades already say it.")
    order_failed: RouteField = "on"
    risk_alerts: RouteField = "on"
    system_status: RouteField = "on"
    unusual_trades: RouteField = "on"
    performance_reports: ReportTimes | Literal["off"] = Field(default_factory=ReportTimes)
    unusual: UnusualTrades = Field(default_factory=UnusualTrades)
    risk_warning_cooldown: float = Field(3600.0, ge=0, description="Seconds before the same risk warning repeats.")

    @field_validator("performance_reports", mode="before")
    @classmethod
    def _off(cls, v: Any) -> Any:
        return "off" if v is False or v == "off" else v

    def route(self, category: str) -> Route:
        if category == "performance_reports":
            return "off" if self.performance_reports == "off" else "on"
        return getattr(self, category)  # type: ignore[no-any-return]


class NotificationSettings(_Strict):
    """The three sections together, as they sit at the top level of a bot YAML."""

    telegram: TelegramConfig = Field(default_factory=TelegramConfig)
    email: EmailConfig = Field(default_factory=EmailConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)


def parse_hhmm(v: str) -> time:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", v.strip())
    if not m or int(m[1]) > 23 or int(m[2]) > 59:
        raise ValueError(f'time {v!r} is not "HH:MM"')
    return time(int(m[1]), int(m[2]))


def parse_weekly(v: str) -> tuple[int, time]:
    parts = v.strip().split()
    if len(parts) != 2 or parts[0].upper()[:3] not in _DAYS:
        raise ValueError(f'weekly {v!r} is not "DAY HH:MM" (DAY one of {", ".join(_DAYS)})')
    return _DAYS.index(parts[0].upper()[:3]), parse_hhmm(parts[1])


def environ_with_dotenv(path: str | Path = ".env") -> dict[str, str]:
    """Return the environment, plus the variables of a ``.env`` file that it does not set."""
    env = dict(os.environ)
    if Path(path).is_file():
        try:
            from dotenv import dotenv_values
        except ImportError as exc:
            raise ImportError("reading .env needs python-dotenv: pip install 'atf[notify]'") from exc
        env = {**{k: v for k, v in dotenv_values(path).items() if v is not None}, **env}
    return env


def settings_from_mapping(raw: Mapping[str, Any], env: Mapping[str, str] | None = None) -> NotificationSettings:
    """Validate the three sections of a parsed YAML mapping, interpolating ``${VAR}``."""
    from trading.config import (
        _interpolate,  # the same ${VAR} / ${VAR:-default} rules as the bot config
    )

    unset: dict[tuple[Any, ...], str] = {}
    keys = ("telegram", "email", "notifications")
    data = _interpolate({k: raw[k] for k in keys if k in raw}, (), os.environ if env is None else env, unset)
    if unset:
        names = ", ".join(f"{'.'.join(map(str, p))}: ${{{n}}}" for p, n in unset.items())
        raise ValueError(f"environment variables not set: {names}")
    return NotificationSettings.model_validate(data)
