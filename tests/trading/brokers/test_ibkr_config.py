"""IBKR settings, contract specs, the broker factory entry and the missing-extra message."""

from __future__ import annotations

import builtins
from decimal import Decimal

import pytest
from pydantic import ValidationError

from tests.fakes.fake_tws_setup import fake_tws, settings
from trading.brokers.factory import BrokerFactory
from trading.brokers.ibkr_broker import IBKRBroker
from trading.brokers.ibkr_config import (
    MISSING_EXTRA,
    IBKRSettings,
    ReconnectPolicy,
    mask_account,
    require_ib_async,
)
from trading.brokers.ibkr_contracts import ContractSpecError, parse_spec, spec_for_symbol
from trading.brokers.ibkr_orders import OrderTicket, bracket_tickets, oco_tickets, to_ib_order
from trading.order_logger import OrderLogger
from trading.orders import ClientOrderId, Order, OrderSide, OrderType


@pytest.mark.parametrize(
    ("app", "mode", "port"),
    [("tws", "paper", 7497), ("tws", "live", 7496), ("gateway", "paper", 4002), ("gateway", "live", 4001)],
)
def test_port_follows_app_and_trading_mode(app: str, mode: str, port: int) -> None:
    assert IBKRSettings(app=app, trading_mode=mode).resolved_port == port  # type: ignore[arg-type]


@pytest.mark.parametrize(("port", "mode"), [(7496, "paper"), (4001, "paper"), (7497, "live"), (4002, "live")])
def test_a_known_port_of_the_other_trading_mode_is_refused(port: int, mode: str) -> None:
    with pytest.raises(ValidationError, match=f"port {port} is a .* trading port but trading_mode is {mode}"):
        IBKRSettings(port=port, trading_mode=mode)  # type: ignore[arg-type]


def test_settings_come_from_the_broker_section_with_its_trading_mode() -> None:
    s = IBKRSettings.from_broker_config(
        {"type": "ibkr", "trading_mode": "live", "cash": 1.0, "ibkr": {"client_id": 3, "app": "tws"}}
    )
    assert (s.trading_mode, s.client_id, s.resolved_port) == ("live", 3, 7496)
    with pytest.raises(ValidationError, match="client_idd"):
        IBKRSettings.from_broker_config({"type": "ibkr", "ibkr": {"client_idd": 3}})


def test_reconnect_delays_grow_exponentially_up_to_the_cap_and_stop_after_max_attempts() -> None:
    delays = list(ReconnectPolicy(initial_delay=1, factor=2, max_delay=5, max_attempts=5).delays())
    assert delays == [1, 2, 4, 5, 5]


def test_account_ids_are_masked() -> None:
    assert mask_account("DU1234567") == "DU***67"
    assert "1234567" not in mask_account("DU1234567")
    assert mask_account("") == "?"


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("AAPL:STK:SMART:USD", ("AAPL", "STK", "SMART", "USD", "", "")),
        ("aapl:stk", ("AAPL", "STK", "SMART", "USD", "", "")),
        ("SAP:STK:IBIS:EUR:IBIS", ("SAP", "STK", "IBIS", "EUR", "", "IBIS")),
        ("EURUSD:CASH", ("EURUSD", "CASH", "IDEALPRO", "USD", "", "")),
        ("ES:FUT:CME:202612", ("ES", "FUT", "CME", "", "202612", "")),
        ("ES:FUT:CME:20261218:USD:50", ("ES", "FUT", "CME", "USD", "20261218", "")),
        ("ES:CONTFUT:CME", ("ES", "CONTFUT", "CME", "", "", "")),
    ],
)
def test_contract_specs_parse(text: str, fields: tuple[str, ...]) -> None:
    s = parse_spec(text)
    assert (s.symbol, s.sec_type, s.exchange, s.currency, s.expiry, s.primary_exchange) == fields


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("AAPL", "use SYMBOL:TYPE"),
        ("AAPL:STOCK", "did you mean 'STK'"),
        ("EURUS:CASH", "six letters"),
        ("ES:FUT:CME", "needs SYMBOL:FUT:EXCHANGE:EXPIRY"),
        ("ES:FUT:CME:2026-12", "YYYYMM"),
        ("ES:CONTFUT", "needs SYMBOL:CONTFUT:EXCHANGE"),
        ("AAPL:STK:SMART:DOLLARS", "3-letter"),
        ("AAPL:STK:SMART:USD:NASDAQ:X", "too many fields"),
    ],
)
def test_bad_contract_specs_name_the_spec_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(ContractSpecError, match=message) as info:
        parse_spec(text)
    assert repr(text) in str(info.value) or "use SYMBOL" in str(info.value)


def test_a_symbol_without_a_spec_is_an_error_with_a_hint() -> None:
    with pytest.raises(ContractSpecError, match="did you mean 'AAPL'"):
        spec_for_symbol("AAPl", {"AAPL": "AAPL:STK"})
    assert spec_for_symbol("MSFT:STK", {}).symbol == "MSFT"


def _order(leg: str, side: OrderSide, kind: OrderType, **kw: object) -> Order:
    from datetime import UTC, datetime

    cid = ClientOrderId.for_signal("b", "AAPL", datetime(2024, 1, 1, tzinfo=UTC), leg)
    return Order(cid, "AAPL", side, kind, Decimal(10), **kw)  # type: ignore[arg-type]


def test_a_bracket_holds_the_entry_and_transmits_with_its_last_child() -> None:
    entry = _order("entry", OrderSide.BUY, OrderType.LIMIT, price=Decimal(100))
    sl = _order("sl", OrderSide.SELL, OrderType.STOP, stop_price=Decimal(95))
    tp = _order("tp", OrderSide.SELL, OrderType.LIMIT, price=Decimal(110))
    t_entry, t_sl, t_tp = bracket_tickets(entry, sl, tp)
    assert [t.transmit for t in (t_entry, t_sl, t_tp)] == [False, False, True]
    assert t_sl.parent == t_tp.parent == entry.client_order_id and t_entry.parent is None
    assert t_sl.oca_group == t_tp.oca_group == f"oca-{entry.client_order_id}"
    ib_sl = to_ib_order(t_sl, order_id=12, parent_order_id=11)
    assert (ib_sl.orderType, ib_sl.auxPrice, ib_sl.parentId, ib_sl.ocaType, ib_sl.tif) == ("STP", 95.0, 11, 1, "GTC")
    assert ib_sl.orderRef == str(sl.client_order_id) and ib_sl.transmit is False
    ib_entry = to_ib_order(t_entry, order_id=11)
    assert (ib_entry.action, ib_entry.orderType, ib_entry.lmtPrice, ib_entry.totalQuantity) == ("BUY", "LMT", 100.0, 10.0)


def test_oco_tickets_share_a_group_and_each_transmits() -> None:
    a = _order("sl", OrderSide.SELL, OrderType.STOP, stop_price=Decimal(95))
    b = _order("tp", OrderSide.SELL, OrderType.LIMIT, price=Decimal(110))
    ta, tb = oco_tickets(a, b)
    assert ta.oca_group == tb.oca_group != "" and ta.transmit and tb.transmit
    market = to_ib_order(OrderTicket.from_order(_order("x", OrderSide.SELL, OrderType.MARKET)), order_id=1)
    assert (market.orderType, market.tif, market.ocaGroup) == ("MKT", "DAY", "")


def test_the_factory_builds_one_ibkr_broker_per_config_with_the_order_logger(tmp_path: object) -> None:
    with fake_tws() as tws:
        s = settings(tws)
        config = {"type": "ibkr", "trading_mode": "paper", "ibkr": s.model_dump()}
        logger = OrderLogger(tmp_path)  # type: ignore[arg-type]
        factory = BrokerFactory(order_logger=logger)
        broker = factory.create_broker("ibkr", config)
        try:
            assert isinstance(broker, IBKRBroker)
            assert factory.create_broker("ibkr", config) is broker
            assert broker.order_logger is logger
            assert broker.adapter.settings.client_id == s.client_id
            broker.start()
            assert broker.getvalue() == pytest.approx(100_000.0)
            assert broker.getcash() == pytest.approx(100_000.0)
        finally:
            broker.close()
            logger.close()


def test_without_ib_async_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_ib(name: str, *args: object, **kwargs: object) -> object:
        if name == "ib_async" or name.startswith("ib_async."):
            raise ImportError("No module named 'ib_async'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_ib)
    with pytest.raises(ImportError, match=r"pip install 'atf\[live\]'"):
        require_ib_async()
    assert "atf[live]" in MISSING_EXTRA
