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
