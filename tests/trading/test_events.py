"""Trading events: immutable, UTC, and lossless through the JSON codec."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from trading.events import (
    BotError,
    BotStarted,
    BotStopped,
    ConnectionLost,
    ConnectionRestored,
    Event,
    Halted,
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderModified,
    OrderPartiallyFilled,
    OrderPendingCancel,
    OrderRejected,
    OrderSubmitted,
    Resumed,
    RiskDenied,
    RiskWarning,
    TradeClosed,
    TradeOpened,
    decode_event,
    encode_event,
)
from trading.orders import ClientOrderId, OrderSide, OrderType
from trading.positions import PositionSide

T = datetime(2024, 3, 1, 12, 30, tzinfo=UTC)
ID = ClientOrderId("atf-abc-entry-0")


def fill_fields() -> dict:
    return {
        "ts": T,
        "client_order_id": ID,
        "symbol": "BTCUSDT",
        "side": OrderSide.BUY,
        "last_qty": Decimal("0.5"),
        "last_price": Decimal("42000.10"),
        "fee": Decimal("0.021"),
        "filled_qty": Decimal("0.5"),
        "remaining_qty": Decimal("0.5"),
        "avg_price": Decimal("42000.10"),
        "trade_id": "t-1",
    }


EXAMPLES: list[Event] = [
    OrderSubmitted(
        ts=T,
        client_order_id=ID,
        symbol="BTCUSDT",
        side=OrderSide.SELL,
        order_type=OrderType.STOP_LIMIT,
        quantity=Decimal("1.25"),
        price=Decimal("99.5"),
        stop_price=Decimal(100),
        parent_id=ClientOrderId("p-1"),
        oco_id=None,
        tag="stop_loss",
    ),
    OrderAccepted(ts=T, client_order_id=ID, symbol="BTCUSDT", venue_order_id="V123"),
    OrderPartiallyFilled(**fill_fields()),
    OrderFilled(**{**fill_fields(), "remaining_qty": Decimal(0)}),
    OrderPendingCancel(ts=T, client_order_id=ID, symbol="BTCUSDT", reason="OCO"),
    OrderCancelled(
        ts=T, client_order_id=ID, symbol="BTCUSDT", reason="user", filled_qty=Decimal("0.3")
    ),
    OrderModified(
        ts=T, client_order_id=ID, symbol="BTCUSDT", quantity=Decimal(2), stop_price=Decimal("95.5")
    ),
    OrderRejected(ts=T, client_order_id=ID, symbol="BTCUSDT", reason="INSUFFICIENT_FUNDS"),
    OrderExpired(ts=T, client_order_id=ID, symbol="BTCUSDT"),
    TradeOpened(
        ts=T,
        trade_id="t",
        symbol="ETH",
        side=PositionSide.SHORT,
        quantity=Decimal(3),
        entry_price=Decimal(2000),
    ),
    TradeClosed(
        ts=T,
        trade_id="t",
        symbol="ETH",
        side=PositionSide.LONG,
        quantity=Decimal(3),
        entry_price=Decimal(2000),
        exit_price=Decimal(2100),
        realised_pnl=Decimal(300),
        fees=Decimal("1.5"),
    ),
    TradeClosed(
        ts=T,
        trade_id="u",
        symbol="ETH",
        side=PositionSide.SHORT,
        quantity=Decimal(3),
        entry_price=Decimal(2000),
        exit_price=Decimal(2100),
        realised_pnl=Decimal(-300),
        fees=Decimal("1.5"),
        exit_reason="trailing_stop",
        entry_tag="RSIOrBBEntryMixin",
    ),
    RiskDenied(
        ts=T,
        symbol="ETH",
        side=OrderSide.BUY,
        quantity=Decimal(1),
        reason="MAX_POSITIONS",
        detail="3 > 2",
    ),
    RiskWarning(
        ts=T,
        control="LEVERAGE_LIMIT",
        value=Decimal("1.7"),
        limit=Decimal(2),
        fraction=Decimal("0.85"),
        symbol="ETH",
    ),
    Halted(ts=T, reason="MAX_DAILY_LOSS", until=T + timedelta(hours=11, minutes=30)),
    Resumed(ts=T, reason="RESUME_COMMAND"),
    BotStarted(ts=T, bot="rsi_bb_atr", mode="paper"),
    BotStopped(ts=T, bot="rsi_bb_atr", reason="signal"),
    BotError(ts=T, error="ValueError: bad bar"),
    ConnectionLost(ts=T, venue="binance", detail="websocket closed"),
    ConnectionRestored(ts=T, venue="binance", downtime_s=95.5),
    OrderFilled(  # with every detail a fill may carry
        **fill_fields(),
        fee_currency="USDT",
        bid=Decimal("41999.5"),
        ask=Decimal("42000.25"),
        correlation_id="rsi-20240301T123000",
        strategy_names=("trend", "carry"),
        strategy_weights=(Decimal("0.75"), Decimal("0.25")),
    ),
]


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_every_event_survives_a_json_round_trip_unchanged(event: Event) -> None:
    text = json.dumps(encode_event(event))
    back = decode_event(json.loads(text))
    assert back == event and type(back) is type(event)


def test_decimal_values_are_encoded_as_exact_strings() -> None:
    data = encode_event(EXAMPLES[2])
    assert data["type"] == "OrderPartiallyFilled"
    assert data["last_price"] == "42000.10" and data["client_order_id"] == "atf-abc-entry-0"
    assert data["side"] == "buy" and data["ts"] == "2024-03-01T12:30:00+00:00"


def test_events_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        EXAMPLES[1].symbol = "ETH"  # type: ignore[misc]


@pytest.mark.parametrize(
    "ts", [datetime(2024, 1, 1), datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=2)))]
)
def test_an_event_refuses_a_naive_or_non_utc_timestamp(ts: datetime) -> None:
    with pytest.raises(ValueError, match="UTC"):
        BotStarted(ts=ts, bot="b", mode="paper")


def test_a_closed_trade_carries_its_exit_reason_and_entry_tag_and_defaults_to_empty() -> None:
    data = encode_event(EXAMPLES[11])
    assert (data["exit_reason"], data["entry_tag"]) == ("trailing_stop", "RSIOrBBEntryMixin")
    plain = EXAMPLES[10]
    assert isinstance(plain, TradeClosed) and (plain.exit_reason, plain.entry_tag) == ("", "")
    # A record written before the fields existed still decodes.
    old = {k: v for k, v in encode_event(plain).items() if k not in ("exit_reason", "entry_tag")}
    assert decode_event(old) == plain


def test_connection_restored_gives_its_downtime_as_a_timedelta_too() -> None:
    event = ConnectionRestored(ts=T, venue="ibkr", downtime_s=95.5)
    assert event.downtime == timedelta(seconds=95.5)
    assert "downtime" not in encode_event(event)  # derived, not stored


def test_a_same_named_event_class_defined_elsewhere_never_shadows_the_real_one() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class ConnectionLost(OrderEvent):  # a double under another event class, found after ours
        venue: str

    real = EXAMPLES[-2]
    back = decode_event(encode_event(real))
    assert type(back) is type(real) and type(back) is not ConnectionLost and back == real


def test_decoding_an_unknown_type_raises() -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        decode_event({"type": "OrderTeleported", "ts": T.isoformat()})


def test_the_details_of_a_fill_default_to_none_and_survive_the_spool(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from trading.persistence.spool import EventSpool

    bare = OrderPartiallyFilled(**fill_fields())
    assert (bare.fee_currency, bare.bid, bare.ask, bare.correlation_id) == (None, None, None, None)
    assert (bare.strategy_names, bare.strategy_weights) == (None, None)
    detailed = dataclasses.replace(
        bare, fee_currency="BNB", bid=Decimal("1.10"), ask=None, strategy_names=("a",),
        strategy_weights=(Decimal("1.0"),), correlation_id="run-1",
    )
    encoded = encode_event(detailed)
    assert encoded["bid"] == "1.10" and encoded["ask"] is None and encoded["strategy_weights"] == ["1.0"]
    # A fill spooled by an older atf has none of the fields: they decode as None.
    old = {k: v for k, v in encode_event(bare).items() if k not in ("fee_currency", "bid", "ask",
                                                                     "correlation_id", "strategy_names",
                                                                     "strategy_weights")}
    assert decode_event(old) == bare
    spool = EventSpool(tmp_path / "spool.jsonl")
    spool.append([bare, detailed])
    back = EventSpool(tmp_path / "spool.jsonl").peek(10).events
    assert back == [bare, detailed]
    assert isinstance(back[1].strategy_weights, tuple) and back[1].strategy_weights[0] == Decimal("1.0")
