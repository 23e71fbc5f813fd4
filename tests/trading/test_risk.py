"""RiskController: each control denies with its reason code and warns at warn_at of its limit; halts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest
from pydantic import ValidationError

from trading.bus import EventBus
from trading.config import RiskSection
from trading.events import Event, Halted, Resumed, RiskDenied, RiskWarning
from trading.orders import ClientOrderId, OrderSide
from trading.positions import PositionManager
from trading.risk import Holding, OrderRequest, Portfolio, RiskController

T0 = datetime(2024, 7, 1, 9, 0, tzinfo=timezone.utc)
BUY, SELL = OrderSide.BUY, OrderSide.SELL
EQUITY = D(10_000)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def controller(**limits: object) -> tuple[RiskController, list[Event], Clock]:
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append, inline=True)
    clock = Clock()
    return RiskController(RiskSection(**limits), clock, bus), events, clock  # type: ignore[arg-type]


def buy(
    qty: int | str, symbol: str = "BTC", price: int = 100, stop: int | None = None
) -> OrderRequest:
    return OrderRequest(
        symbol, BUY, D(qty), D(price), None if stop is None else D(stop), ClientOrderId("c-1")
    )


def held(**positions: int) -> Portfolio:
    """Holdings of `qty` units marked at 100 each."""
    return Portfolio(EQUITY, {s: Holding(D(q), D(100)) for s, q in positions.items()})


# --------------------------------------------------------------------------- one denial and one warning per control

# control config, denied order and portfolio, warned order and portfolio (all hand-computed below)
CONTROLS = {
    # 21 * |100 - 90| = 210 > 2 % of 10 000 = 200; 17 * 10 = 170 >= 0.8 * 200
    "RISK_PER_TRADE": (
        {"risk_per_trade": 0.02},
        (buy(21, stop=90), held()),
        (buy(17, stop=90), held()),
    ),
    # 21 * 100 = 2 100 > 20 % of 10 000; 17 * 100 = 1 700 >= 0.8 * 2 000
    "MAX_POSITION_SIZE": ({"max_position_size": 0.2}, (buy(21), held()), (buy(17), held())),
    # a third symbol while two are open; a second symbol is 2 of 2 >= 0.8 * 2
    "MAX_POSITIONS": (
        {"max_positions": 2},
        (buy(1, "SOL"), held(BTC=1, ETH=1)),
        (buy(1, "SOL"), held(BTC=1)),
    ),
    # 1 500 / (1 000 + 1 500) = 0.6 > 0.5; 700 / 1 700 = 0.41 >= 0.4
    "POSITION_CONCENTRATION": (
        {"max_concentration": 0.5},
        (buy(15, "ETH"), held(BTC=10)),
        (buy(7, "ETH"), held(BTC=10)),
    ),
    # (10 000 + 10 100) / 10 000 = 2.01 > 2; 17 000 / 10 000 = 1.7 >= 1.6
    "LEVERAGE_LIMIT": (
        {"max_leverage": 2},
        (buy(101, "ETH"), held(BTC=100)),
        (buy(70, "ETH"), held(BTC=100)),
    ),
}


@pytest.mark.parametrize("code", list(CONTROLS))
def test_each_order_control_denies_beyond_its_limit_with_its_reason_code(code: str) -> None:
    limits, (order, portfolio), _ = CONTROLS[code]
    risk, events, _ = controller(**limits)
    decision = risk.check(order, portfolio)
    assert not decision and decision.reason == code
    (denied,) = events
    assert isinstance(denied, RiskDenied) and denied.reason == code
    assert denied.client_order_id == ClientOrderId("c-1") and denied.quantity == order.quantity


@pytest.mark.parametrize("code", list(CONTROLS))
def test_each_order_control_warns_at_warn_at_of_its_limit_and_allows(code: str) -> None:
    limits, _, (order, portfolio) = CONTROLS[code]
    risk, events, _ = controller(**limits)
    decision = risk.check(order, portfolio)
    assert decision.allowed and [w.control for w in decision.warnings] == [code]
    assert [type(e) for e in events] == [RiskWarning] and events[0] == decision.warnings[0]
    assert decision.warnings[0].fraction == decision.warnings[0].value / decision.warnings[0].limit


def test_no_warning_below_warn_at_and_none_when_warnings_are_off() -> None:
    risk, events, _ = controller(max_position_size=0.2)
    assert risk.check(buy(15), held()).warnings == ()  # 0.15 < 0.16
    quiet, quiet_events, _ = controller(max_position_size=0.2, warn_at=None)
    assert quiet.check(buy(19), held()).warnings == ()
    assert events == quiet_events == []


def test_an_entry_without_a_stop_is_denied_when_a_stop_is_required() -> None:
    risk, events, _ = controller(stop_loss_required=True)
    assert risk.check(buy(1), held()).reason == "STOP_LOSS_REQUIRED"
    assert risk.check(buy(1, stop=95), held()).allowed
    assert [e.reason for e in events if isinstance(e, RiskDenied)] == ["STOP_LOSS_REQUIRED"]


def test_risk_per_trade_without_a_stop_is_denied_because_the_risk_is_unbounded() -> None:
    risk, _, _ = controller(risk_per_trade=0.02)
    decision = risk.check(buy(1), held())
    assert decision.reason == "RISK_PER_TRADE" and "no stop" in decision.detail


def test_a_stop_on_the_wrong_side_of_the_price_is_denied() -> None:
    risk, _, _ = controller()
    assert risk.check(buy(1, stop=105), held()).reason == "INVALID_STOP_LOSS"
    sell = OrderRequest("BTC", SELL, D(1), D(100), D(95))
    assert risk.check(sell, held()).reason == "INVALID_STOP_LOSS"


def test_max_quantity_sizes_from_the_stop_distance_and_the_position_cap() -> None:
    risk, _, _ = controller(risk_per_trade=0.02, max_position_size=0.5)
    # 200 / |100 - 90| = 20 < 5 000 / 100 = 50
    assert risk.max_quantity(D(100), D(90), EQUITY) == D(20)
    # 200 / 2 = 100 > 50
    assert risk.max_quantity(D(100), D(98), EQUITY) == D(50)
    assert controller()[0].max_quantity(D(100), D(90), EQUITY) is None


def test_adding_to_an_open_symbol_does_not_count_as_another_position() -> None:
    risk, _, _ = controller(max_positions=2)
    assert risk.check(buy(1, "BTC"), held(BTC=1, ETH=1)).allowed


def test_reducing_and_closing_orders_pass_every_control_but_a_flip_does_not() -> None:
    risk, _, _ = controller(max_position_size=0.01, stop_loss_required=True, max_leverage=0.1)
    risk.halt()
    portfolio = held(BTC=50)
    assert risk.check(OrderRequest("BTC", SELL, D(50), D(100)), portfolio).allowed
    assert risk.check(OrderRequest("BTC", SELL, D(10), D(100)), portfolio).allowed
    assert risk.check(OrderRequest("BTC", SELL, D(51), D(100)), portfolio).reason == "HALTED"


def test_without_equity_every_entry_is_denied() -> None:
    risk, _, _ = controller()
    assert risk.check(buy(1), Portfolio(D(0))).reason == "NO_EQUITY"


# --------------------------------------------------------------------------- equity halts


def test_a_daily_loss_at_the_limit_halts_entries_until_the_next_utc_day() -> None:
    risk, events, clock = controller(max_daily_loss=0.05)
    risk.on_equity(T0, D(10_000))
    risk.on_equity(T0 + timedelta(hours=1), D(9_500))  # 5 % down on the day
    midnight = datetime(2024, 7, 2, tzinfo=timezone.utc)
    assert events[-1] == Halted(
        ts=T0 + timedelta(hours=1),
        reason="MAX_DAILY_LOSS",
        detail="day loss 0.0500",
        until=midnight,
    )
    assert risk.halted == "MAX_DAILY_LOSS"
    clock.now = T0 + timedelta(hours=14)
    assert risk.check(buy(1), held()).reason == "MAX_DAILY_LOSS"
    assert risk.check(
        OrderRequest("BTC", SELL, D(1), D(100)), held(BTC=1)
    ).allowed  # closing still allowed
    clock.now = midnight
    assert risk.check(buy(1), held()).allowed and risk.halted is None
    assert isinstance(events[-1], Resumed) and events[-1].reason == "NEW_TRADING_DAY"
    # The new day measures from its own first equity: 9 500 -> 9 100 is 4.2 %, no halt.
    risk.on_equity(midnight + timedelta(hours=1), D(9_500))
    risk.on_equity(midnight + timedelta(hours=2), D(9_100))
    assert risk.halted is None


def test_a_daily_loss_warns_once_at_warn_at_of_the_limit() -> None:
    risk, events, _ = controller(max_daily_loss=0.05)
    risk.on_equity(T0, D(10_000))
    risk.on_equity(T0 + timedelta(minutes=1), D(9_600))  # 4 % = 0.8 * 5 %
    risk.on_equity(T0 + timedelta(minutes=2), D(9_590))
    (warning,) = events
    assert isinstance(warning, RiskWarning) and warning.control == "MAX_DAILY_LOSS"
    assert warning.value == D("0.04") and warning.fraction == D("0.8") and risk.halted is None


def test_a_drawdown_at_the_limit_halts_until_an_explicit_resume() -> None:
    risk, events, clock = controller(max_drawdown=0.1)
    risk.on_equity(T0, D(10_000))
    risk.on_equity(T0 + timedelta(hours=1), D(12_000))
    risk.on_equity(T0 + timedelta(hours=2), D(10_800))  # (12 000 - 10 800) / 12 000 = 10 %
    halted = events[-1]
    assert isinstance(halted, Halted) and halted.reason == "MAX_DRAWDOWN" and halted.until is None
    clock.now = T0 + timedelta(days=3)  # a new day does not lift it
    assert risk.check(buy(1), held()).reason == "MAX_DRAWDOWN"
    assert risk.check(OrderRequest("BTC", SELL, D(1), D(100)), held(BTC=1)).allowed
    risk.resume()
    assert isinstance(events[-1], Resumed) and events[-1].reason == "RESUME_COMMAND"
    assert risk.check(buy(1), held()).allowed
    risk.on_equity(clock.now, D(10_500))  # measured from 10 800 now: 2.8 %, no new halt
    assert risk.halted is None


def test_a_drawdown_warns_at_warn_at_of_the_limit() -> None:
    risk, events, _ = controller(max_drawdown=0.1, warn_at=0.5)
    risk.on_equity(T0, D(10_000))
    risk.on_equity(T0, D(9_400))  # 6 % >= 0.5 * 10 %
    (warning,) = events
    assert (
        isinstance(warning, RiskWarning)
        and warning.control == "MAX_DRAWDOWN"
        and warning.value == D("0.06")
    )


def test_a_manual_halt_denies_entries_with_halted_until_resumed() -> None:
    risk, events, _ = controller()
    risk.halt(detail="emergency stop")
    assert risk.check(buy(1), held()).reason == "HALTED"
    risk.resume()
    assert risk.check(buy(1), held()).allowed
    assert [type(e) for e in events] == [Halted, RiskDenied, Resumed]


def test_a_portfolio_can_be_built_from_the_position_manager() -> None:
    pm = PositionManager()
    pm.apply_fill("BTC", BUY, D(2), D(100), ts=T0)
    pm.apply_fill("ETH", SELL, D(1), D(50), ts=T0)
    pf = Portfolio.from_positions(EQUITY, pm.open_positions(), {"BTC": D(110), "ETH": D(40)})
    assert pf.holdings == {"BTC": Holding(D(2), D(110)), "ETH": Holding(D(-1), D(40))}
    assert pf.holdings["ETH"].notional == D(40)


# --------------------------------------------------------------------------- config


def test_risk_section_accepts_the_new_keys_and_refuses_out_of_range_values() -> None:
    cfg = RiskSection(
        max_positions=3,
        max_concentration=0.5,
        max_leverage=2,
        max_daily_loss=0.05,
        max_drawdown=0.2,
    )
    assert cfg.warn_at == 0.8
    for bad in (
        {"max_positions": 0},
        {"max_drawdown": 1.0},
        {"max_daily_loss": 0},
        {"warn_at": 1.5},
        {"max_leverage": -1},
    ):
        with pytest.raises(ValidationError):
            RiskSection(**bad)  # type: ignore[arg-type]
    for name in (
        "max_positions",
        "max_concentration",
        "max_leverage",
        "max_daily_loss",
        "max_drawdown",
        "warn_at",
    ):
        assert RiskSection.model_fields[name].description
