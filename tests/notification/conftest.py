"""Shared setup: the fake Telegram Bot API, settings pointing at it, notifiers that get closed, events."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from notification.config import NotificationSettings
from notification.notifier import Notifier
from tests.fakes.telegram_api import FakeTelegramAPI
from trading.events import TradeClosed, TradeOpened
from trading.positions import PositionSide

TOKEN = "123456789:AAFakeTokenForTests_abcdefghijklmnop"
CHAT, OTHER_CHAT, STRANGER = 111, 222, 999
T0 = datetime(2024, 1, 2, 10, 0, tzinfo=UTC)


def settings(
    base_url: str | None = None,
    *,
    chats: tuple[int, ...] = (CHAT,),
    rate: float = 20.0,
    timeout: float = 2.0,
    attempts: int = 3,
    backoff: float = 0.05,
    email: dict[str, Any] | None = None,
    **notifications: Any,
) -> NotificationSettings:
    tg = {"enabled": base_url is not None, "bot_token": TOKEN, "chat_id": list(chats), "base_url": base_url
          or "http://127.0.0.1:9/bot", "rate_per_second": rate, "timeout": timeout, "max_attempts": attempts,
          "backoff": backoff, "backoff_max": 1.0, "poll_timeout": 1}
    notifications.setdefault("performance_reports", "off")
    return NotificationSettings.model_validate({"telegram": tg, "email": email or {}, "notifications": notifications})


@pytest.fixture
def tg() -> Iterator[FakeTelegramAPI]:
    server = FakeTelegramAPI(TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def make_notifier() -> Iterator[Callable[..., Notifier]]:
    made: list[Notifier] = []

    def make(s: NotificationSettings, **kw: Any) -> Notifier:
        n = Notifier(s, **kw)
        n.start()
        made.append(n)
        return n

    yield make
    for n in made:
        n.close(timeout=2.0)


def opened(symbol: str = "BTCUSDT", *, i: int = 0, price: str = "42150.5", qty: str = "0.25",
           side: PositionSide = PositionSide.LONG, ts: datetime | None = None) -> TradeOpened:
    return TradeOpened(ts=ts or T0 + timedelta(hours=i), trade_id=f"{symbol}-{i}", symbol=symbol, side=side,
                       quantity=Decimal(qty), entry_price=Decimal(price))


def closed(symbol: str = "BTCUSDT", *, i: int = 0, entry: str = "42150.5", exit: str = "43120", qty: str = "0.25",
           fees: str = "10", side: PositionSide = PositionSide.LONG, ts: datetime | None = None) -> TradeClosed:
    sign = 1 if side is PositionSide.LONG else -1
    pnl = (Decimal(exit) - Decimal(entry)) * Decimal(qty) * sign
    return TradeClosed(ts=ts or T0 + timedelta(hours=i, minutes=30), trade_id=f"{symbol}-{i}", symbol=symbol,
                       side=side, quantity=Decimal(qty), entry_price=Decimal(entry), exit_price=Decimal(exit),
                       realised_pnl=pnl, fees=Decimal(fees))
