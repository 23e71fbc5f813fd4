"""The IB adapter against the fake TWS: handshake and accounts, contracts, account data, reconnection."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from tests.fakes.fake_tws import FakeTWS
from tests.fakes.fake_tws_setup import (
    AAPL,
    ES_DEC,
    EURUSD,
    bridge,
    fake_tws,
    order,
    settings,
    wait_until,
)
from trading.brokers.ibkr import IBKRAdapter
from trading.brokers.ibkr_config import IBKRConnectionError
from trading.brokers.ibkr_contracts import ContractSpecError
from trading.bus import EventBus
from trading.events import ConnectionLost, ConnectionRestored, Event


def test_connect_completes_the_handshake_and_picks_the_only_paper_account(
    tws: FakeTWS, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trading")
    a = IBKRAdapter(settings(tws))
    try:
        a.connect()
        assert a.connected.is_set() and a.account == "DU1234567"
        assert a.ib.client.serverVersion() == 176
        # startApi, positions, open orders (own and all), account updates and executions were asked for.
        for msg_id in (71, 61, 5, 16, 6, 7):
            assert tws.received[msg_id] >= 1, msg_id
        assert "DU***67" in caplog.text and "1234567" not in caplog.text
    finally:
        a.close()
    assert not a.connected.is_set()


def test_a_paper_bot_refuses_a_live_account() -> None:
    with fake_tws(accounts=("U7654321",)) as tws:
        a = IBKRAdapter(settings(tws))
        try:
            with pytest.raises(IBKRConnectionError, match=r"not a paper account") as info:
                a.connect()
            assert "7654321" not in str(info.value)
        finally:
            a.close()


def test_several_accounts_need_one_chosen() -> None:
    with fake_tws(accounts=("DU1111111", "DU2222222")) as tws:
        a = IBKRAdapter(settings(tws))
        try:
            with pytest.raises(IBKRConnectionError, match="manages 2 accounts.*set broker.ibkr.account"):
                a.connect()
        finally:
            a.close()
        b = IBKRAdapter(settings(tws, account="DU2222222"))
        try:
            b.connect()
            assert b.account == "DU2222222"
        finally:
            b.close()


def test_a_client_id_in_use_is_refused(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    twin = IBKRAdapter(settings(tws))  # same client id as `adapter`
    try:
        with pytest.raises(IBKRConnectionError, match="cannot connect"):
            twin.connect()
    finally:
        twin.close()


def test_no_gateway_listening_is_a_connection_error() -> None:
    with fake_tws() as tws:
        port = tws.port
    a = IBKRAdapter(settings(tws, port=port, connect_timeout=1.0))
    try:
        with pytest.raises(IBKRConnectionError, match=f"127.0.0.1:{port}"):
            a.connect()
    finally:
        a.close()


def test_stock_forex_future_and_continuous_future_are_qualified(adapter: IBKRAdapter) -> None:
    aapl, eur, es, cont = (adapter.instrument(s) for s in ("AAPL", "EURUSD", "ES", "ESC"))
    assert (aapl.trade.conId, aapl.trade.secType, aapl.trade.exchange, aapl.trade.primaryExchange) == (
        AAPL.con_id, "STK", "SMART", "NASDAQ")
    assert (eur.trade.conId, eur.trade.symbol, eur.trade.currency) == (EURUSD.con_id, "EUR", "USD")
    assert (es.trade.conId, es.trade.lastTradeDateOrContractMonth, es.multiplier) == (ES_DEC.con_id, "20261218", 50.0)
    # The continuous future's bars come from it; orders go to the front future behind it.
    assert cont.data.secType == "CONTFUT" and cont.trade.secType == "FUT"
    assert cont.trade.conId == ES_DEC.con_id


def test_an_unknown_contract_is_named_in_the_error(tws: FakeTWS) -> None:
    a = IBKRAdapter(settings(tws, contracts={"ZZZ": "ZZZ:STK:SMART:USD"}))
    try:
        with pytest.raises(ContractSpecError, match="'ZZZ:STK:SMART:USD'"):
            a.connect()
    finally:
        a.close()


def test_account_values_summary_and_positions_follow_the_account(adapter: IBKRAdapter, tws: FakeTWS) -> None:
    values = adapter.account_values()
    assert values["NetLiquidation"] == Decimal("100000.00") and values["AvailableFunds"] == Decimal("100000.00")
    assert adapter.positions() == {}
    summary = adapter.account_summary()
    assert summary["NetLiquidation"] == Decimal("100000.00") and "TotalCashValue" in summary

    _, br = bridge(adapter)
    br.submit(order("ES", "buy", "market", 2))
    wait_until(lambda: "ES" in adapter.positions(), pump=br.pump)
    pos = adapter.positions()["ES"]
    price = tws.book.last[ES_DEC.con_id]
    assert pos.quantity == Decimal("2.0")
    assert float(pos.avg_cost) == pytest.approx(price)  # per point: IB's avgCost is divided by the multiplier
    wait_until(lambda: adapter.account_value("TotalCashValue") != Decimal("100000.00"))
    cash = float(adapter.account_value("TotalCashValue") or 0)
    assert cash == pytest.approx(100_000 - 2 * 50 * price - 1.70, abs=0.01)  # 2 contracts x $0.85


def test_a_dropped_connection_is_re_established_with_backoff(tws: FakeTWS, caplog: pytest.LogCaptureFixture) -> None:
    a = IBKRAdapter(settings(tws))
    try:
        a.connect()
        tws.refuse_connections(3)
        tws.drop_clients()
        wait_until(lambda: a.reconnects == 1, timeout=10)
        assert a.connected.is_set() and tws.refuse == 0  # three refused attempts, then back
        assert caplog.text.count("reconnect attempt") >= 3
        assert a.account_values()["NetLiquidation"] == Decimal("100000.00")
    finally:
        a.close()


def test_a_dropped_connection_publishes_connection_lost_then_restored(tws: FakeTWS) -> None:
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe(seen.append, inline=True, name="recorder")
    a = IBKRAdapter(settings(tws, reconnect={"initial_delay": 0.05, "max_delay": 0.05, "max_attempts": 10}))
    a.bus = bus
    try:
        a.connect()
        assert seen == []
        tws.refuse_connections(2)
        tws.drop_clients()
        wait_until(lambda: a.reconnects == 1, timeout=10)
        wait_until(lambda: any(isinstance(e, ConnectionRestored) for e in seen), timeout=5)
        lost = [e for e in seen if isinstance(e, ConnectionLost)]
        restored = [e for e in seen if isinstance(e, ConnectionRestored)]
        assert len(lost) == 1 and len(restored) == 1  # one outage, however many attempts
        assert seen.index(lost[0]) < seen.index(restored[0])
        assert lost[0].venue == "ibkr" and "dropped" in lost[0].detail
        assert restored[0].venue == "ibkr" and restored[0].downtime_s > 0.1  # two refused attempts at 0.05 s
    finally:
        a.close()
    assert len([e for e in seen if isinstance(e, ConnectionLost)]) == 1  # closing is not a lost connection


def test_reconnection_gives_up_after_max_attempts(tws: FakeTWS) -> None:
    a = IBKRAdapter(settings(tws, reconnect={"initial_delay": 0.01, "max_delay": 0.01, "max_attempts": 3}))
    try:
        a.connect()
        tws.refuse_connections(10)
        tws.drop_clients()
        wait_until(lambda: a.gave_up, timeout=5)
        assert not a.connected.is_set()
        with pytest.raises(IBKRConnectionError, match="not connected"):
            a.place([])
    finally:
        a.close()
