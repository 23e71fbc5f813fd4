"""No order is placed twice: after a lost connection or a restart, orders are found at IB by orderRef."""

from __future__ import annotations

from tests.fakes.fake_tws import FakeTWS
from tests.fakes.fake_tws_setup import AAPL, bridge, order, settings, wait_until
from trading.brokers.ibkr import IBKRAdapter
from trading.brokers.ibkr_orders import OrderTicket
from trading.orders import OrderStatus as S


def _adapter(tws: FakeTWS) -> IBKRAdapter:
    a = IBKRAdapter(settings(tws))
    a.connect()
    return a


def test_an_order_whose_answer_was_lost_with_the_connection_is_found_not_placed_again(tws: FakeTWS) -> None:
    a = _adapter(tws)
    try:
        _, br = bridge(a)
        buy = order("AAPL", "buy", "market", 20)
        tws.drop_after_next_place()  # IB takes and fills it, then the connection dies unanswered
        br.submit(buy)
        wait_until(lambda: a.reconnects == 1, timeout=10)
        wait_until(lambda: buy.status is S.FILLED, pump=br.pump)  # learnt from the executions after reconnecting
        assert buy.filled_qty == 20 and buy.fees == 1
        # The bot retries the placement it never saw confirmed: IB already has it.
        [again] = a.place([OrderTicket.from_order(buy)])
        assert again.adopted
        assert len(tws.orders(str(buy.client_order_id))) == 1
        assert tws.position(AAPL.con_id) == 20
    finally:
        a.close()


def test_open_orders_are_rebound_after_a_reconnect_and_cancels_missed_meanwhile_are_reported(tws: FakeTWS) -> None:
    a = _adapter(tws)
    try:
        om, br = bridge(a)
        price = tws.book.last[AAPL.con_id]
        keep = order("AAPL", "buy", "limit", 10, leg="keep", price=price * 0.5)
        gone = order("AAPL", "buy", "limit", 10, leg="gone", price=price * 0.4)
        br.submit(keep)
        br.submit(gone)
        wait_until(lambda: keep.status is S.ACCEPTED and gone.status is S.ACCEPTED, pump=br.pump)
        tws.refuse_connections(2)
        tws.drop_clients()
        tws.call(lambda: tws.book.cancel(tws.book.orders[1]))  # cancelled at IB while we are away
        wait_until(lambda: a.reconnects == 1, timeout=10)
        wait_until(lambda: gone.status is S.CANCELLED, pump=br.pump)
        assert keep.status is S.ACCEPTED
        # The surviving order is ours again: it can be cancelled through the new connection.
        om.request_cancel(keep.client_order_id, "USER")
        wait_until(lambda: keep.status is S.CANCELLED, pump=br.pump)
        assert [o.status for o in tws.orders()] == ["Cancelled", "Cancelled"]
        assert len(tws.orders()) == 2
    finally:
        a.close()


def test_a_restarted_bot_adopts_its_open_and_its_filled_orders_instead_of_placing_them(tws: FakeTWS) -> None:
    first = _adapter(tws)
    price = tws.book.last[AAPL.con_id]
    resting = order("AAPL", "sell", "limit", 5, leg="tp", price=price * 2)
    filled = order("AAPL", "buy", "market", 5)
    try:
        _, br = bridge(first)
        br.submit(filled)
        br.submit(resting)
        wait_until(lambda: filled.status is S.FILLED and resting.status is S.ACCEPTED, pump=br.pump)
    finally:
        first.close()  # the process ends

    second = _adapter(tws)  # a new process, same client id, a fresh OrderManager
    try:
        om2, br2 = bridge(second)
        again_filled = order("AAPL", "buy", "market", 5)
        again_resting = order("AAPL", "sell", "limit", 5, leg="tp", price=price * 2)
        assert again_filled.client_order_id == filled.client_order_id
        results = [br2.submit(again_filled), br2.submit(again_resting)]
        assert all(r.adopted for r in results)
        wait_until(lambda: again_filled.status is S.FILLED and again_resting.status is S.ACCEPTED, pump=br2.pump)
        assert again_filled.filled_qty == 5 and again_filled.fees == 1
        assert again_filled.avg_fill_price == filled.avg_fill_price
        assert len(tws.orders()) == 2 and tws.position(AAPL.con_id) == 5
        # The adopted resting order is managed as before.
        om2.request_cancel(again_resting.client_order_id, "USER")
        wait_until(lambda: again_resting.status is S.CANCELLED, pump=br2.pump)
    finally:
        second.close()


def test_a_new_order_id_is_never_reused_after_a_restart(tws: FakeTWS) -> None:
    first = _adapter(tws)
    try:
        _, br = bridge(first)
        br.submit(order("AAPL", "buy", "limit", 1, leg="a", price=1.0))
    finally:
        first.close()
    second = _adapter(tws)
    try:
        _, br = bridge(second)
        result = br.submit(order("AAPL", "buy", "limit", 1, leg="b", price=1.0))
        assert not result.adopted
        ids = [o.order_id for o in tws.orders()]
        assert len(set(ids)) == 2 and result.order_id == max(ids)
    finally:
        second.close()
