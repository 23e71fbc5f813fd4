"""Orders at IB through the adapter and an OrderManager: placement, fills, commissions, cancels, brackets."""

from __future__ import annotations

from decimal import Decimal

from tests.fakes.fake_tws import FakeTWS
from tests.fakes.fake_tws_setup import (
    AAPL,
    ES_DEC,
    EURUSD,
    bridge,
    order,
    wait_until,
)
from trading.brokers.ibkr import IBKRAdapter
from trading.events import (
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
)
from trading.order_manager import OrderManager
from trading.orders import OrderStatus as S


def _events(om: OrderManager) -> list[OrderEvent]:
    seen: list[OrderEvent] = []
    om.add_update_callback(lambda _order, event: seen.append(event))
    return seen


def _last(tws: FakeTWS, con_id: int = AAPL.con_id) -> float:
    return tws.book.last[con_id]


def test_a_market_order_is_accepted_filled_and_charged_ibs_commission(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    om, br = bridge(adapter)
    seen = _events(om)
    entry = order("AAPL", "buy", "market", 300)
    result = br.submit(entry)
    assert result.order_id > 0 and not result.adopted
    wait_until(lambda: entry.status is S.FILLED, pump=br.pump)
    [at_ib] = tws.orders(str(entry.client_order_id))
    assert (at_ib.action, at_ib.order_type, at_ib.quantity, at_ib.tif) == ("BUY", "MKT", 300.0, "DAY")
    assert entry.avg_fill_price == Decimal(repr(_last(tws)))
    assert entry.fees == Decimal("1.5")  # 300 shares x $0.005
    assert entry.venue_order_id == str(at_ib.perm_id)
    kinds = [type(e) for e in seen]
    assert kinds.index(OrderAccepted) < kinds.index(OrderFilled)
    [filled] = [e for e in seen if isinstance(e, OrderFilled)]
    assert filled.trade_id and filled.fee == Decimal("1.5")
    assert filled.fee_currency == "USD"  # the commission report's currency
    assert (filled.bid, filled.ask) == (None, None)  # IB's fills carry no quote


def test_a_limit_order_rests_until_the_price_reaches_it_and_fills_at_its_limit(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    _, br = bridge(adapter)
    price = _last(tws)
    limit = round(price * 0.995, 2)
    buy = order("AAPL", "buy", "limit", 10, price=limit)
    br.submit(buy)
    wait_until(lambda: buy.status is S.ACCEPTED, pump=br.pump)
    steps = 0
    while buy.status is not S.FILLED and steps < 200:
        tws.step()
        adapter.sync()
        br.pump()
        steps += 1
    assert buy.status is S.FILLED and steps > 0
    assert buy.avg_fill_price == Decimal(repr(limit))


def test_a_stop_order_triggers_when_the_price_crosses_it(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    _, br = bridge(adapter)
    stop = round(_last(tws) * 0.99, 2)
    sell = order("AAPL", "sell", "stop", 5, leg="sl", stop=stop)
    br.submit(sell)
    while sell.status is not S.FILLED:
        assert tws.next_tick_time() is not None, "the path never reached the stop"
        tws.step()
        adapter.sync()
        br.pump()
    assert tws.orders(str(sell.client_order_id))[0].order_type == "STP"
    assert sell.avg_fill_price is not None and sell.avg_fill_price <= Decimal(repr(stop))


def test_futures_and_forex_orders_fill_with_their_own_commission(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    _, br = bridge(adapter)
    es = order("ES", "sell", "market", 3)
    fx = order("EURUSD", "buy", "market", 20000)
    br.submit(es)
    br.submit(fx)
    wait_until(lambda: es.status is S.FILLED and fx.status is S.FILLED, pump=br.pump)
    assert es.fees == Decimal("2.55")  # 3 x $0.85
    assert fx.fees == Decimal("2.0")  # minimum
    assert tws.position(ES_DEC.con_id) == -3 and tws.position(EURUSD.con_id) == 20000
    positions = adapter.positions()
    assert positions["ES"].quantity == Decimal("-3.0") and positions["EURUSD"].quantity == Decimal("20000.0")


def test_partial_fills_each_bring_their_commission(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    tws.book.max_fill = 100
    om, br = bridge(adapter)
    seen = _events(om)
    big = order("AAPL", "buy", "market", 250)
    br.submit(big)
    while big.status is not S.FILLED:
        tws.step()
        adapter.sync()
        br.pump()
    partials = [e for e in seen if isinstance(e, OrderPartiallyFilled)]
    assert [p.last_qty for p in partials] == [Decimal("100.0"), Decimal("100.0")]
    assert big.filled_qty == 250 and big.fees == Decimal("1.0") * 3  # $1 minimum per execution
    assert len([e for e in tws.book.executions if e.order.order_ref == str(big.client_order_id)]) == 3


def test_a_cancelled_order_is_cancelled_at_ib_and_in_the_book(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    om, br = bridge(adapter)
    seen = _events(om)
    buy = order("AAPL", "buy", "limit", 10, price=_last(tws) * 0.5)
    br.submit(buy)
    wait_until(lambda: buy.status is S.ACCEPTED, pump=br.pump)
    om.request_cancel(buy.client_order_id, "USER")
    wait_until(lambda: buy.status is S.CANCELLED, pump=br.pump)
    assert tws.orders(str(buy.client_order_id))[0].status == "Cancelled"
    [cancelled] = [e for e in seen if isinstance(e, OrderCancelled)]
    assert cancelled.reason == ""  # IB's plain confirmation (202)
    assert not adapter.cancel(buy.client_order_id)  # nothing open to cancel any more


def test_an_order_ib_rejects_is_rejected_with_ibs_reason(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    om, br = bridge(adapter)
    seen = _events(om)
    tws.reject_next("insufficient margin")
    buy = order("AAPL", "buy", "market", 10)
    br.submit(buy)
    wait_until(lambda: buy.status is S.REJECTED, pump=br.pump)
    [rejected] = [e for e in seen if isinstance(e, OrderRejected)]
    assert rejected.reason == "IB 201: Order rejected - reason:insufficient margin"
    assert tws.position(AAPL.con_id) == 0


def _bracket(adapter: IBKRAdapter, tws: FakeTWS, qty: float = 10):  # type: ignore[no-untyped-def]
    om, br = bridge(adapter)
    price = _last(tws)
    entry = order("AAPL", "buy", "market", qty)
    sl = order("AAPL", "sell", "stop", qty, leg="sl", stop=price * 0.98)
    tp = order("AAPL", "sell", "limit", qty, leg="tp", price=price * 1.02)
    br.submit_bracket(entry, sl, tp)
    return om, br, entry, sl, tp


def test_a_bracket_goes_out_as_parent_and_children_in_one_oca_group(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    _, br, entry, sl, tp = _bracket(adapter, tws)
    wait_until(lambda: entry.status is S.FILLED and sl.status is S.ACCEPTED and tp.status is S.ACCEPTED, pump=br.pump)
    parent, stop, target = (tws.orders(str(o.client_order_id))[0] for o in (entry, sl, tp))
    assert (parent.transmit, stop.transmit, target.transmit) == (False, False, True)
    assert stop.parent_id == target.parent_id == parent.order_id
    assert stop.oca_group == target.oca_group == f"oca-{entry.client_order_id}" and stop.oca_type == 1
    assert (stop.order_type, stop.aux, target.order_type, target.lmt) == (
        "STP", float(sl.stop_price), "LMT", float(tp.price))  # type: ignore[arg-type]
    assert stop.status == target.status == "Submitted"  # live once the parent filled


def test_children_wait_for_the_parent_and_die_with_it(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    om, br = bridge(adapter)
    price = _last(tws)
    entry = order("AAPL", "buy", "limit", 10, price=price * 0.5)
    sl = order("AAPL", "sell", "stop", 10, leg="sl", stop=price * 0.4)
    tp = order("AAPL", "sell", "limit", 10, leg="tp", price=price * 0.6)  # would fill at once if it were live
    br.submit_bracket(entry, sl, tp)
    wait_until(lambda: all(o.status is S.ACCEPTED for o in (entry, sl, tp)), pump=br.pump)
    assert [o.status for o in tws.orders()] == ["Submitted", "PreSubmitted", "PreSubmitted"]
    om.request_cancel(entry.client_order_id, "USER")
    wait_until(lambda: all(o.status is S.CANCELLED for o in (entry, sl, tp)), pump=br.pump)
    assert {o.status for o in tws.orders()} == {"Cancelled"}
    assert tws.position(AAPL.con_id) == 0


def test_a_filled_bracket_child_cancels_the_other(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    _, br, _entry, sl, tp = _bracket(adapter, tws)
    while not (sl.status is S.FILLED or tp.status is S.FILLED):
        assert tws.next_tick_time() is not None
        tws.step()
        adapter.sync()
        br.pump()
    winner, loser = (sl, tp) if sl.status is S.FILLED else (tp, sl)
    wait_until(lambda: loser.status is S.CANCELLED, pump=br.pump)
    assert tws.orders(str(loser.client_order_id))[0].status == "Cancelled"
    assert tws.position(AAPL.con_id) == 0
    assert winner.filled_qty == 10 and loser.filled_qty == 0


def test_a_modified_stop_moves_at_ib_and_is_confirmed(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    om, br, entry, sl, _tp = _bracket(adapter, tws)
    wait_until(lambda: sl.status is S.ACCEPTED and entry.status is S.FILLED, pump=br.pump)
    new_stop = Decimal(repr(round(_last(tws) * 0.97, 2)))
    om.request_modify(sl.client_order_id, stop_price=new_stop)
    wait_until(lambda: sl.stop_price == new_stop, pump=br.pump)
    stop = tws.orders(str(sl.client_order_id))[0]
    assert stop.aux == float(new_stop) and stop.status == "Submitted"
    assert len(tws.orders()) == 3  # amended in place, nothing new placed
