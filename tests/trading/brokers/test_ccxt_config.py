"""Settings, credentials, sandbox and BrokerFactory registration of the ccxt broker."""

from __future__ import annotations

import pytest

from tests.fakes.fake_exchange import FakeExchange
from tests.trading.brokers.ccxt_harness import ENV, section
from trading.brokers.ccxt_broker import CcxtBroker
from trading.brokers.ccxt_config import credentials_from_env, env_names, settings_from_broker
from trading.brokers.ccxt_venue import CcxtVenue, build_exchange
from trading.brokers.factory import BrokerFactory
from trading.exceptions import ConfigError
from trading.order_logger import OrderLogger, read_records


def test_paper_mode_uses_the_testnet_and_its_own_credential_variables() -> None:
    settings = settings_from_broker("binance", {"trading_mode": "paper"})
    assert settings.testnet is True
    assert env_names(settings)[:2] == ("BINANCE_TESTNET_API_KEY", "BINANCE_TESTNET_API_SECRET")
    live = settings_from_broker("binance", {"trading_mode": "live"})
    assert live.testnet is False
    assert env_names(live)[:2] == ("BINANCE_API_KEY", "BINANCE_API_SECRET")


def test_paper_mode_on_the_real_venue_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_broker("binance", {"trading_mode": "paper", "testnet": False})
    assert "trading_mode paper trades on the venue's testnet" in str(info.value)


def test_a_misspelt_key_names_the_key_and_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_broker("binance", {"ccxt": {"poll_intervall": 1}})
    assert "broker.ccxt.poll_intervall: unknown key; did you mean 'poll_interval'?" in str(info.value)
    with pytest.raises(ConfigError) as info:
        settings_from_broker("binance", {"ccxt": {"requests_per_minute": 0}})
    assert "broker.ccxt.requests_per_minute" in str(info.value)


def test_missing_credentials_name_the_variable_never_a_value() -> None:
    settings = settings_from_broker("binance", {"trading_mode": "live"})
    with pytest.raises(ValueError, match="BINANCE_API_KEY, BINANCE_API_SECRET"):
        credentials_from_env(settings, {})
    creds = credentials_from_env(settings_from_broker("binance", {}), ENV)
    assert ENV["BINANCE_TESTNET_API_KEY"] not in repr(creds)


def test_testnet_points_ccxt_at_the_sandbox() -> None:
    exchange = build_exchange(settings_from_broker("binance", {"trading_mode": "paper"}))
    assert exchange.urls["api"]["public"].startswith("https://testnet.binance.vision")
    real = build_exchange(settings_from_broker("binance", {"trading_mode": "live"}))
    assert real.urls["api"]["public"].startswith("https://api.binance.com")


def test_unknown_exchange_id_suggests_the_closest() -> None:
    with pytest.raises(ValueError, match="did you mean 'binance'"):
        CcxtVenue(settings_from_broker("binanse", {"trading_mode": "live"}))


def test_factory_builds_binance_and_any_ccxt_id_with_the_logger_masking_the_keys(
    fake: FakeExchange, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    logger = OrderLogger(tmp_path)
    factory = BrokerFactory(order_logger=logger)
    broker = factory.create_broker("binance", section(fake))
    assert isinstance(broker, CcxtBroker)
    assert broker.order_logger is logger
    assert factory.create_broker("binance", section(fake)) is broker  # one connection per config
    secret = ENV["BINANCE_TESTNET_API_SECRET"]
    logger.log_order_failed(symbol="BTCUSDT", reason=f"venue said: bad key {secret}", order_id="x")
    logger.close()
    [record] = list(read_records(tmp_path))
    assert secret not in str(record) and "***" in str(record)

    assert BrokerFactory.spec("kraken").name == "kraken"  # any ccxt id resolves
    monkeypatch.setenv("KRAKEN_API_KEY", "k" * 8)
    monkeypatch.setenv("KRAKEN_API_SECRET", "s" * 8)
    kraken = factory.create_broker("kraken", {"trading_mode": "live"})
    assert kraken.execution.venue.exchange.id == "kraken"
    with pytest.raises(ValueError, match="unknown broker type 'not-a-venue'"):
        factory.create_broker("not-a-venue", {})


def test_futures_market_builds_binanceusdm_on_binance_demo_trading_with_its_own_keys() -> None:
    settings = settings_from_broker("binance", {"trading_mode": "paper", "ccxt": {"market": "future"}})
    assert (settings.ccxt_id, settings.sandbox_kind) == ("binanceusdm", "demo")
    assert env_names(settings)[:2] == ("BINANCE_DEMO_API_KEY", "BINANCE_DEMO_API_SECRET")
    exchange = build_exchange(settings)
    assert exchange.id == "binanceusdm"
    assert exchange.urls["api"]["fapiPrivate"] == "https://demo-fapi.binance.com/fapi/v1"
    live = build_exchange(settings_from_broker("binance", {"trading_mode": "live", "ccxt": {"market": "future"}}))
    assert live.urls["api"]["fapiPrivate"] == "https://fapi.binance.com/fapi/v1"
    with pytest.raises(ValueError, match="BINANCE_DEMO_API_KEY"):
        credentials_from_env(settings, ENV | {"BINANCE_DEMO_API_KEY": ""})


def test_the_retired_futures_testnet_can_still_be_chosen() -> None:
    settings = settings_from_broker("binance", {"ccxt": {"market": "future", "sandbox": "testnet"}})
    exchange = build_exchange(settings)
    assert exchange.urls["api"]["fapiPrivate"].startswith("https://testnet.binancefuture.com")
    assert exchange.options["disableFuturesSandboxWarning"] is True  # else ccxt refuses to sign for it
    assert env_names(settings)[0] == "BINANCE_TESTNET_API_KEY"


def test_binanceusdm_is_futures_and_coin_m_or_futures_knobs_on_spot_are_refused() -> None:
    usdm = settings_from_broker("binanceusdm", {"ccxt": {"leverage": 3, "margin_mode": "isolated"}})
    assert usdm.futures and (usdm.leverage, usdm.margin_mode) == (3, "isolated")
    with pytest.raises(ConfigError, match="leverage: futures only; set market: future"):
        settings_from_broker("binance", {"ccxt": {"leverage": 3}})
    with pytest.raises(ConfigError, match="COIN-M"):
        settings_from_broker("binancecoinm", {})
    with pytest.raises(ConfigError, match="broker.ccxt.leverage"):
        settings_from_broker("binance", {"ccxt": {"market": "future", "leverage": 200}})
    with pytest.raises(ConfigError, match="broker.ccxt.market"):
        settings_from_broker("binance", {"ccxt": {"market": "swap"}})


def test_api_url_overrides_keep_ccxts_futures_error_table() -> None:
    settings = settings_from_broker("binance", {"ccxt": {"market": "future", "urls": {"fapiPrivate": "http://proxy"}}})
    exchange = build_exchange(settings)
    ccxt = pytest.importorskip("ccxt")
    assert exchange.exceptions["exact"]["-2019"] is ccxt.InsufficientFunds  # Margin is insufficient.
    assert exchange.exceptions["exact"]["-4164"] is ccxt.InvalidOrder  # below the minimum notional
