"""BrokerFactory: the paper broker as the engine builds it, validation, reuse, logger injection."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from trading.brokers.factory import BrokerFactory, BrokerSpec
from trading.brokers.fill_model import FillModel
from trading.brokers.sim import SimBroker
from trading.config import parse_config
from trading.engine import build_cerebro, collect_result, load_bars, run_backtest
from trading.order_logger import OrderLogger, read_records

BOT_YAML = """
bot: {name: factory_test, symbols: [AAA], timeframe: 1h}
data: {source: synthetic, bars: 300, seed: 3}
strategy:
  name: t
  entry_mixins:
    - name: RSIOrBBEntryMixin
      parameters: {e_rsi_period: 14, e_rsi_oversold: 35, e_bb_period: 20, e_bb_dev: 1.8}
  exit_mixins:
    - name: AdvancedATRExitMixin
      parameters: {x_atr_period: 14, x_sl_multiplier: 1.5, x_tp_multiplier: 2.0}
  position_size: 0.2
broker:
  cash: 25000.0
  commission_rate: 0.002
  paper_trading_config: {slippage_model: sqrt, base_slippage: 0.001, max_volume_share: 0.5}
"""


class FakeVenueBroker:
    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self.order_logger: OrderLogger | None = None


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test register broker types without leaking them into other tests."""
    monkeypatch.setattr(BrokerFactory, "_registry", dict(BrokerFactory._registry))
    monkeypatch.setattr(BrokerFactory, "_resolvers", [])


def _model_fields(model: FillModel) -> dict[str, Any]:
    return {f.name: getattr(model, f.name) for f in dataclasses.fields(model) if f.name != "rng"}


def test_paper_broker_is_the_simbroker_with_the_configs_fill_model_and_cash() -> None:
    cfg = parse_config(BOT_YAML)
    broker = BrokerFactory().create_broker("paper", cfg)
    assert isinstance(broker, SimBroker)
    assert broker.getcash() == 25000.0
    assert broker.comminfo[None].p.commission == 0.002
    expected = FillModel.from_config(cfg.broker.paper_trading_config, commission_rate=0.002)
    assert broker.fill_model is not None
    assert _model_fields(broker.fill_model) == _model_fields(expected)
    assert broker.fill_model.slippage_model == "sqrt" and broker.fill_model.max_volume_share == 0.5


def test_a_run_on_the_factorys_paper_broker_trades_as_the_engines_backtest() -> None:
    cfg = parse_config(BOT_YAML)
    frames = load_bars(cfg)
    cerebro, _ = build_cerebro(cfg, frames)
    cerebro.broker = BrokerFactory().create_broker("paper", cfg.broker)
    ours = collect_result(cfg, frames, cerebro, cerebro.run()[0])
    engine = run_backtest(cfg, frames)
    assert len(engine.trades) >= 3
    assert [t.to_dict() for t in ours.trades] == [t.to_dict() for t in engine.trades]
    assert ours.final_value == engine.final_value


def test_the_same_type_and_config_give_the_same_instance(tmp_path: Path) -> None:
    cfg = parse_config(BOT_YAML)
    factory = BrokerFactory()
    first = factory.create_broker("paper", cfg.broker)
    assert factory.create_broker("PAPER", cfg.broker) is first
    assert factory.create_broker("paper", cfg) is first  # a whole BotConfig means its broker section
    assert factory.create_broker("paper", cfg.broker.model_dump()) is first  # equal content
    other = factory.create_broker("paper", cfg.broker.model_copy(update={"cash": 1.0}))
    assert other is not first and other.getcash() == 1.0
    assert BrokerFactory().create_broker("paper", cfg.broker) is not first  # brokers belong to a factory
    factory.clear()
    assert factory.create_broker("paper", cfg.broker) is not first


def test_each_broker_gets_the_factorys_order_logger(tmp_path: Path) -> None:
    with OrderLogger(tmp_path) as log:
        broker = BrokerFactory(order_logger=log).create_broker("paper", {"cash": 5000})
        assert broker.order_logger is log
        broker.order_logger.log_order_entry(symbol="AAA", side="buy", quantity=1, order_id="x")
    assert [r["order_id"] for r in read_records(tmp_path)] == ["x"]
    assert BrokerFactory().create_broker("paper", {"cash": 5000}).order_logger is None


def test_an_unknown_type_or_key_is_a_value_error_with_a_hint() -> None:
    with pytest.raises(ValueError, match=r"unknown broker type 'papr'; did you mean 'paper'\?"):
        BrokerFactory().create_broker("papr", {})
    with pytest.raises(ValueError, match="cassh"):
        BrokerFactory().create_broker("paper", {"cassh": 100.0})
    with pytest.raises(TypeError, match="mapping"):
        BrokerFactory().create_broker("paper", 42)


def test_a_missing_required_key_names_the_key_and_never_a_secret(registry: None) -> None:
    BrokerFactory.register("venue", FakeVenueBroker, required=("api_key", "secret"))
    config = {"api_key": "K" * 24, "secret": ""}
    with pytest.raises(ValueError, match=r"'venue' config is missing required key\(s\): secret") as err:
        BrokerFactory().create_broker("venue", config)
    assert "K" * 24 not in str(err.value)
    with pytest.raises(ValueError, match="api_key, secret"):
        BrokerFactory().create_broker("venue", {"testnet": True})


def test_a_registered_brokers_secrets_are_masked_in_the_order_log(registry: None, tmp_path: Path) -> None:
    BrokerFactory.register("venue", FakeVenueBroker, required=("api_key",))
    key, secret = "AKIA1234567890ABCDEF", "wJalrXUtnFEMI-K7MDENG"
    with OrderLogger(tmp_path) as log:
        broker = BrokerFactory(order_logger=log).create_broker(
            "venue", {"api_key": key, "credentials": {"private_key": secret}, "testnet": True})
        assert isinstance(broker, FakeVenueBroker) and broker.order_logger is log
        log.log_order_failed(symbol="BTC/USDT", reason=f"401 for key {key} signed with {secret}", broker="venue")
    [rec] = read_records(tmp_path)
    assert rec["reason"] == "401 for key *** signed with ***"
    assert key not in (tmp_path / "trading_orders.log").read_text()


def test_a_resolver_supplies_types_that_are_not_registered_by_name(registry: None) -> None:
    exchanges = {"kraken", "bybit"}  # stands in for ccxt.exchanges
    BrokerFactory.register_resolver(
        lambda name: BrokerSpec(name, FakeVenueBroker, ("api_key",)) if name in exchanges else None)
    broker = BrokerFactory().create_broker("Kraken", {"api_key": "k-123456"})
    assert isinstance(broker, FakeVenueBroker)
    with pytest.raises(ValueError, match="api_key"):
        BrokerFactory().create_broker("bybit", {})
    with pytest.raises(ValueError, match="unknown broker type 'ftx'"):
        BrokerFactory().create_broker("ftx", {"api_key": "k-123456"})
