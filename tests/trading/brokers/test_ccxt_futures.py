"""USDⓈ-M futures through the ccxt adapter against the fake Binance /fapi (real ccxt binanceusdm over
HTTP): set-up at start, long and short round trips with stop-market and take-profit-market legs, the
emulated bracket, reduce-only, positions and unrealised pnl, idempotent placement, refusals."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.fakes.fake_exchange import FakeExchange
from tests.fakes.fake_exchange_engine import FakeMarket
from tests.trading.brokers.ccxt_harness import Rig, build
from trading.brokers.ccxt_futures import FuturesSetupError
from trading.brokers.ccxt_view import CcxtBrokerView
from trading.events import OrderCancelled, OrderExpired, OrderFilled, OrderRejected
from trading.orders import OrderSide, OrderStatus, OrderType

BUY, SELL = OrderSide.BUY, OrderSide.SELL
D = Decimal
PERP = "BTC/USDT:USDT"
ALGO, ORDER = "/fapi/v1/algoOrder", "/fapi/v1/order"


@pytest.fixture
def fake() -> FakeExchange:  # type: ignore[misc]
    """The fake venue with a 20 USDT minimum notional on the BTCUSDT perpetual, on a frozen clock."""
    with FakeExchange(check_timestamp=False, hang_seconds=0.6,
                      futures_markets=[FakeMarket(min_notional="20")]) as fx:
        fx.script("BTCUSDT", [100.0])
        yield fx


def futures(fake: FakeExchange, **ccxt: object) -> Rig:
    return build(fake, market="future", **ccxt)


def bracket(rig: Rig, side: OrderSide, qty: str, *, stop: str, target: str):  # type: ignore[no-untyped-def]
    exit_side = SELL if side is BUY else BUY
    entry = rig.order("entry", side, OrderType.MARKET, qty)
    sl = rig.order("sl", exit_side, OrderType.STOP, qty, stop=stop)
    tp = rig.order("tp", exit_side, OrderType.LIMIT, qty, price=target)
    rig.execution.submit_bracket(entry, sl, tp)
    rig.execution.pump()
    return entry, sl, tp


def move(fake: FakeExchange, rig: Rig, prices: list[float]) -> None:
    fake.script("BTCUSDT", prices)
    fake.step(len(prices))
    rig.execution.pump()


def venue_fees(fake: FakeExchange) -> Decimal:
    return sum((D(t["commission"]) for t in fake.futures.trades), D(0))


# --------------------------------------------------------------------------- set-up


def test_margin_mode_then_leverage_are_set_on_start_for_each_traded_symbol(fake: FakeExchange) -> None:
    rig = futures(fake, leverage=5, margin_mode="isolated", symbols=("BTCUSDT",))

    [margin] = fake.calls("POST", "/fapi/v1/marginType")
    [leverage] = fake.calls("POST", "/fapi/v1/leverage")
    assert margin.params["marginType"] == "ISOLATED" and leverage.params["leverage"] == "5"
    assert fake.requests.index(margin) < fake.requests.index(leverage)  # the mode cannot change later
    assert (fake.futures.margin_type["BTCUSDT"], fake.futures.leverage["BTCUSDT"]) == ("ISOLATED", 5)
    assert len(fake.calls("GET", "/fapi/v1/positionSide/dual")) == 1  # one-way mode checked

    rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "1"))
    rig.execution.pump()
    assert len(fake.calls("POST", "/fapi/v1/leverage")) == 1  # set once, not before every order


def test_a_symbol_first_traded_later_is_set_up_before_its_first_order(fake: FakeExchange) -> None:
    rig = futures(fake, leverage=3)
    assert fake.calls("POST", "/fapi/v1/leverage") == []
    rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "1"))
    rig.execution.pump()

    [leverage] = fake.calls("POST", "/fapi/v1/leverage")
    assert fake.requests.index(leverage) < fake.requests.index(fake.calls("POST", ORDER)[0])
    assert rig.execution.venue_positions[PERP].leverage == 3


def test_leverage_the_venue_refuses_stops_the_start_naming_the_setting(fake: FakeExchange) -> None:
    fake.futures.max_leverage = 20
    with pytest.raises(FuturesSetupError, match="BTC/USDT:USDT: the venue refused leverage 50"):
        futures(fake, leverage=50, symbols=("BTCUSDT",))


def test_an_account_in_hedge_mode_is_refused_at_connect(fake: FakeExchange) -> None:
    fake.futures.dual_side = True
    with pytest.raises(FuturesSetupError, match="hedge mode"):
        futures(fake)


# --------------------------------------------------------------------------- round trips


def test_long_round_trip_target_fills_and_the_bot_cancels_the_stop(fake: FakeExchange) -> None:
    rig = futures(fake)
    entry, sl, tp = bracket(rig, BUY, "1", stop="95", target="105")

    assert entry.status is OrderStatus.FILLED and entry.avg_fill_price == D("100")
    legs = {r.params["clientAlgoId"]: r.params for r in fake.calls("POST", ALGO)}
    stop, target = legs[str(sl.client_order_id)], legs[str(tp.client_order_id)]
    assert (stop["type"], stop["triggerPrice"], stop["quantity"], stop["reduceOnly"]) == (
        "STOP_MARKET", "95", "1", "true")
    assert (target["type"], target["triggerPrice"], target["reduceOnly"]) == ("TAKE_PROFIT_MARKET", "105", "true")
    assert sl.status is tp.status is OrderStatus.ACCEPTED
    assert fake.calls("POST", "/api/v3/orderList/oco") == []  # no OCO on futures

    move(fake, rig, [103.0, 105.5])
    assert tp.status is OrderStatus.FILLED and tp.avg_fill_price == D("105.5")
    assert sl.status is OrderStatus.CANCELLED  # in the same pass that saw the fill
    [cancelled] = [e for e in rig.of_type(OrderCancelled) if e.client_order_id == sl.client_order_id]
    assert cancelled.reason == "OCO"  # type: ignore[attr-defined]
    assert fake.algo_orders(str(sl.client_order_id))[0].status == "CANCELED"
    assert fake.futures.positions["BTCUSDT"].qty == 0
    assert rig.execution.positions[PERP] == 0
    fees = entry.fees + tp.fees
    assert fees == venue_fees(fake) == D("0.04") + D("0.0422")  # taker 0.04 % of 100 and of 105.5
    assert fake.futures.wallet == D("10000") + D("5.5") - fees


def test_short_round_trip_stop_fills_and_the_bot_cancels_the_target(fake: FakeExchange) -> None:
    rig = futures(fake)
    entry, sl, tp = bracket(rig, SELL, "2", stop="104", target="95")
    assert entry.status is OrderStatus.FILLED
    assert fake.futures.positions["BTCUSDT"].qty == D("-2")  # shorts are allowed on futures
    assert rig.execution.venue_positions[PERP].side == "short"

    move(fake, rig, [102.0, 104.5])
    assert sl.status is OrderStatus.FILLED and sl.avg_fill_price == D("104.5")
    assert tp.status is OrderStatus.CANCELLED
    assert fake.algo_orders(str(tp.client_order_id))[0].status == "CANCELED"
    assert fake.futures.positions["BTCUSDT"].qty == 0
    realised = sum(D(t["realizedPnl"]) for t in fake.futures.trades)
    assert realised == D("-9")  # 2 x (100 - 104.5)
    assert entry.fees + sl.fees == venue_fees(fake)


def test_both_legs_wait_for_the_entry_and_a_resting_entry_releases_them_when_it_fills(fake: FakeExchange) -> None:
    rig = futures(fake)
    entry = rig.order("entry", BUY, OrderType.LIMIT, "1", price="98")
    sl = rig.order("sl", SELL, OrderType.STOP, "1", stop="95")
    tp = rig.order("tp", SELL, OrderType.LIMIT, "1", price="105")
    rig.execution.submit_bracket(entry, sl, tp)
    rig.execution.pump()
    assert entry.status is OrderStatus.ACCEPTED
    assert fake.calls("POST", ALGO) == []  # reduce-only legs have no position to reduce yet

    move(fake, rig, [99.0, 97.9])
    assert entry.status is OrderStatus.FILLED and entry.avg_fill_price == D("98")  # maker at its price
    assert entry.fees == D("0.0196")  # maker 0.02 %
    assert len(fake.calls("POST", ALGO)) == 2 and sl.status is tp.status is OrderStatus.ACCEPTED


# --------------------------------------------------------------------------- reduce-only


def test_reduce_only_leg_is_cut_to_the_position_and_never_flips_it(fake: FakeExchange) -> None:
    rig = futures(fake)
    rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "1"))
    rig.execution.pump()
    stop = rig.execution.submit(rig.order("sl", SELL, OrderType.STOP, "3", stop="95"), reduce_only=True)
    rig.execution.pump()

    [sent] = fake.calls("POST", ALGO)
    assert (sent.params["quantity"], sent.params["reduceOnly"]) == ("1", "true")  # not 3
    assert stop.quantity == D("1")

    # The position goes by another way (a plain sell); the stop, still resting, then has nothing to reduce.
    rig.execution.submit(rig.order("exit", SELL, OrderType.MARKET, "1"))
    rig.execution.pump()
    move(fake, rig, [96.0, 94.0])
    assert fake.futures.positions["BTCUSDT"].qty == 0  # not -1: the venue honoured reduceOnly
    assert stop.status is OrderStatus.EXPIRED
    assert [e.client_order_id for e in rig.of_type(OrderExpired)] == [stop.client_order_id]


def test_close_position_legs_close_whatever_is_open(fake: FakeExchange) -> None:
    rig = futures(fake, close_position=True)
    _, sl, tp = bracket(rig, BUY, "1", stop="95", target="110")
    [stop] = [r.params for r in fake.calls("POST", ALGO) if r.params["clientAlgoId"] == str(sl.client_order_id)]
    assert stop["closePosition"] == "true" and "reduceOnly" not in stop and "quantity" not in stop

    move(fake, rig, [97.0, 94.5])
    assert sl.status is OrderStatus.FILLED and sl.filled_qty == D("1") and sl.avg_fill_price == D("94.5")
    assert tp.status is OrderStatus.CANCELLED and fake.futures.positions["BTCUSDT"].qty == 0


# --------------------------------------------------------------------------- positions and balances


def test_positions_unrealised_pnl_and_balances_match_the_venue(fake: FakeExchange) -> None:
    rig = futures(fake, leverage=5, symbols=("BTCUSDT",))
    rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "2"))
    rig.execution.pump()
    fake.script("BTCUSDT", [103.0])
    rig.execution.pump(poll=True)

    pos = rig.execution.venue_positions[PERP]
    assert (pos.quantity, pos.entry_price, pos.mark_price) == (D("2"), D("100"), D("103"))
    assert pos.unrealised_pnl == fake.futures.unrealised("BTCUSDT") == D("6")
    assert pos.leverage == 5 and pos.margin_mode == "cross"
    free, total = rig.execution.balances["USDT"]
    assert total == fake.futures.wallet + D("6")  # margin balance: wallet plus unrealised pnl
    assert free == fake.futures.available() == total - D("2") * D("103") / 5

    view = CcxtBrokerView(rig.venue, ["BTCUSDT"])
    [held] = view.positions()
    assert (held.symbol, held.quantity, held.avg_entry_price) == ("BTCUSDT", D("2"), D("100"))
    assert held.unrealised_pnl(D("103")) == pos.unrealised_pnl


def test_the_venue_view_of_a_bracket_equals_the_bots_orders(fake: FakeExchange) -> None:
    rig = futures(fake)
    _, sl, tp = bracket(rig, BUY, "1", stop="95", target="105")

    view = CcxtBrokerView(rig.venue, ["BTCUSDT"])
    states = {s.client_order_id: s for s in view.open_orders()}
    assert set(states) == {str(sl.client_order_id), str(tp.client_order_id)}
    for rec in (sl, tp):  # a stop-market is the stop; a take-profit-market the limit target
        s = states[str(rec.client_order_id)]
        assert (s.symbol, s.side, s.order_type, s.quantity, s.price, s.stop_price, s.status, s.filled_qty) == (
            rec.symbol, rec.side, rec.order_type, rec.quantity, rec.price, rec.stop_price, rec.status, rec.filled_qty)


# --------------------------------------------------------------------------- idempotent placement


def test_unknown_status_after_the_venue_took_the_order_is_looked_up_not_resent(fake: FakeExchange) -> None:
    rig = futures(fake)
    fake.fault("POST", ORDER, "unknown_status")  # -1007: executed, but the answer says "unknown"
    order = rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "1"))
    rig.execution.pump()

    assert len(fake.calls("POST", ORDER)) == 1
    assert fake.calls("GET", ORDER)[0].params["origClientOrderId"] == str(order.client_order_id)
    assert len(fake.futures_orders(str(order.client_order_id))) == 1
    assert order.status is OrderStatus.FILLED and len(rig.of_type(OrderFilled)) == 1
    assert fake.futures.positions["BTCUSDT"].qty == 1


def test_a_stop_leg_lost_in_a_timeout_is_found_by_its_client_algo_id(fake: FakeExchange) -> None:
    rig = futures(fake, timeout_ms=300)
    rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "1"))
    rig.execution.pump()
    fake.fault("POST", ALGO, "timeout_after_accept")
    stop = rig.execution.submit(rig.order("sl", SELL, OrderType.STOP, "1", stop="95"), reduce_only=True)
    rig.execution.pump()

    assert len(fake.calls("POST", ALGO)) == 1
    assert fake.calls("GET", ALGO)[0].params["clientAlgoId"] == str(stop.client_order_id)
    assert len(fake.algo_orders(str(stop.client_order_id))) == 1
    assert stop.status is OrderStatus.ACCEPTED


def test_429_and_5xx_on_futures_reads_are_retried_with_backoff(fake: FakeExchange) -> None:
    rig = futures(fake)
    fake.fault("GET", "/fapi/v3/positionRisk", "rate_limit")
    fake.fault("GET", "/fapi/v3/account", "server_error")
    rig.execution.refresh_balances()

    assert rig.execution.balances["USDT"] == (D("10000"), D("10000"))
    assert len(fake.calls("GET", "/fapi/v3/account")) == 3  # connect, the 500, the retry
    assert len(fake.calls("GET", "/fapi/v3/positionRisk")) == 3  # connect, the 429, the retry
    assert sorted(rig.sleeps) == [0.01, 1.0]  # the backoff step; Retry-After: 1 after the 429


def test_a_placement_that_never_arrived_is_sent_exactly_once_more(fake: FakeExchange) -> None:
    rig = futures(fake)
    fake.fault("POST", ORDER, "unavailable")
    order = rig.execution.submit(rig.order("entry", SELL, OrderType.MARKET, "1"))
    rig.execution.pump()

    assert len(fake.calls("POST", ORDER)) == 2
    assert len(fake.futures_orders(str(order.client_order_id))) == 1
    assert order.status is OrderStatus.FILLED and fake.futures.positions["BTCUSDT"].qty == -1


# --------------------------------------------------------------------------- refusals


def test_order_below_the_minimum_notional_is_refused_before_anything_is_sent(fake: FakeExchange) -> None:
    rig = futures(fake)
    order = rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "0.15"))  # 15 USDT < 20
    rig.execution.pump()

    assert order.status is OrderStatus.REJECTED
    [rejected] = rig.of_type(OrderRejected)
    assert rejected.reason == (  # type: ignore[attr-defined]
        "MIN_NOTIONAL: BTC/USDT:USDT: 0.15 at 100 is 15.00000000 USDT, below the venue minimum 20.0 USDT")
    assert fake.calls("POST", ORDER) == []


def test_a_reduce_only_exit_below_the_minimum_notional_still_goes(fake: FakeExchange) -> None:
    rig = futures(fake)
    rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "1"))
    rig.execution.pump()
    rest = rig.execution.submit(rig.order("exit", SELL, OrderType.MARKET, "0.1"), reduce_only=True)  # 10 USDT
    rig.execution.pump()

    assert rest.status is OrderStatus.FILLED  # Binance exempts reduce-only orders: a position can always close
    assert fake.futures.positions["BTCUSDT"].qty == D("0.9")


def test_insufficient_margin_is_rejected_with_the_venues_reason(fake: FakeExchange) -> None:
    rig = futures(fake, leverage=1, symbols=("BTCUSDT",))
    order = rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "150"))  # 15000 USDT at 1x > 10000
    rig.execution.pump()

    assert order.status is OrderStatus.REJECTED
    reason = rig.of_type(OrderRejected)[0].reason  # type: ignore[attr-defined]
    assert reason.startswith("INSUFFICIENT_MARGIN:") and "Margin is insufficient." in reason
    assert len(fake.calls("POST", ORDER)) == 1  # a refusal is an answer: not retried

    fake.fault("POST", ORDER, "insufficient_margin")
    again = rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "1", n=1))
    rig.execution.pump()
    assert again.status is OrderStatus.REJECTED and fake.futures.positions["BTCUSDT"].qty == 0


def test_an_inverse_contract_is_not_traded(fake: FakeExchange) -> None:
    rig = futures(fake)
    market = rig.venue.market(PERP)
    market["linear"], market["inverse"] = False, True  # as a COIN-M market looks to ccxt
    order = rig.execution.submit(rig.order("entry", BUY, OrderType.MARKET, "1"))
    rig.execution.pump()
    assert order.status is OrderStatus.REJECTED
    reason = rig.of_type(OrderRejected)[0].reason  # type: ignore[attr-defined]
    assert reason.startswith("UNSUPPORTED_MARKET: BTC/USDT:USDT is an inverse (COIN-M) contract")
    assert fake.calls("POST", ORDER) == []
