"""Bot configuration: validation, error reporting, env interpolation, schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from trading.config import BotConfig, json_schema, load_config, parse_config, redact
from trading.exceptions import ConfigError

REPO = Path(__file__).resolve().parents[2]

VALID = """\
bot:
  name: demo
  symbols: [BTCUSDT]
  timeframe: 1h
strategy:
  name: S
  entry_mixins:
    - name: RSIOrBBEntryMixin
      parameters: {e_rsi_period: 14}
  exit_mixins:
    - name: AdvancedATRExitMixin
      parameters: {x_atr_period: 14, x_sl_multiplier: 2.0}
broker:
  cash: 5000
"""


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="bot.yaml", env=env or {})
    return info.value.errors


def test_valid_config_parses_with_defaults() -> None:
    cfg = parse_config(VALID, env={})
    assert cfg.broker.cash == 5000
    assert cfg.strategy.direction == "long"
    assert cfg.strategy.resolved_sizing().method == "percent_equity"
    assert cfg.strategy.resolved_sizing().percent == 0.1
    assert cfg.data.source == "synthetic"


def test_shipped_configs_are_valid() -> None:
    files = sorted((REPO / "config" / "strategies").glob("*.yaml"))
    assert files, "no example bots found"
    for f in files:
        assert isinstance(load_config(f), BotConfig)


def test_misspelt_mixin_parameter_names_path_line_and_suggestion() -> None:
    text = VALID.replace("x_atr_period: 14", "x_atr_perod: 14")
    (msg,) = errors_of(text)
    assert "strategy.exit_mixins[0].parameters.x_atr_perod" in msg
    assert "line 12" in msg
    assert "did you mean 'x_atr_period'" in msg


def test_misspelt_mixin_name_suggests_closest() -> None:
    (msg,) = errors_of(VALID.replace("RSIOrBBEntryMixin", "RSIorBBEntryMixn"))
    assert "strategy.entry_mixins[0].name" in msg
    assert "did you mean 'RSIOrBBEntryMixin'" in msg


def test_exit_mixin_listed_as_entry_is_explained() -> None:
    (msg,) = errors_of(VALID.replace("- name: RSIOrBBEntryMixin", "- name: AdvancedATRExitMixin"))
    assert "is an exit mixin, not an entry mixin" in msg


def test_unknown_top_level_key_suggests_closest() -> None:
    (msg,) = errors_of(VALID + "risk_managment: {max_position_size: 0.2}\n")
    assert "unknown key 'risk_managment'" in msg and "did you mean 'risk_management'" in msg


def test_all_errors_are_reported_at_once() -> None:
    text = (
        VALID.replace("timeframe: 1h", "timeframe: 1hour")
        .replace("cash: 5000", "cash: -1")
        .replace("e_rsi_period: 14", "e_rsi_period: 1")
    )
    errors = errors_of(text)
    assert len(errors) == 3
    joined = "\n".join(errors)
    assert "bot.timeframe" in joined and "1hour" in joined
    assert "broker.cash" in joined
    assert "strategy.entry_mixins[0].parameters.e_rsi_period" in joined


def test_literal_error_suggests_valid_value() -> None:
    (msg,) = errors_of(VALID.replace("name: S\n", "name: S\n  direction: lnog\n"))
    assert "strategy.direction" in msg and "did you mean 'long'" in msg


def test_wrong_type_names_the_value() -> None:
    (msg,) = errors_of(VALID.replace("e_rsi_period: 14", "e_rsi_period: fourteen"))
    assert "e_rsi_period" in msg and "'fourteen'" in msg


def test_env_interpolation_keeps_yaml_types_and_defaults() -> None:
    text = VALID.replace("cash: 5000", "cash: ${CASH}").replace("name: demo", "name: ${BOT:-fallback}")
    cfg = parse_config(text, env={"CASH": "1234.5"})
    assert cfg.broker.cash == 1234.5
    assert cfg.bot.name == "fallback"


def test_missing_env_variable_is_an_error_naming_it_and_its_key() -> None:
    (msg,) = errors_of(VALID.replace("cash: 5000", "cash: ${ATF_TEST_NOPE}"))
    assert "ATF_TEST_NOPE" in msg and "broker.cash" in msg and "line 14" in msg


def test_invalid_yaml_reports_line() -> None:
    (msg,) = errors_of("bot: [unclosed\n")
    assert "invalid YAML" in msg and "line" in msg


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


def test_csv_source_requires_a_path() -> None:
    (msg,) = errors_of(VALID + "data: {source: csv}\n")
    assert "data" in msg and "needs 'path'" in msg


def test_sizing_method_requires_its_value() -> None:
    text = VALID.replace("  exit_mixins:", "  sizing: {method: risk_per_trade}\n  exit_mixins:")
    (msg,) = errors_of(text)
    assert "strategy.sizing" in msg and "needs 'risk'" in msg


def test_position_size_and_sizing_are_exclusive() -> None:
    text = VALID.replace(
        "  exit_mixins:", "  position_size: 0.1\n  sizing: {method: fixed, quantity: 1}\n  exit_mixins:"
    )
    (msg,) = errors_of(text)
    assert "not both" in msg


def test_redaction_hides_secrets_and_url_passwords() -> None:
    data = {"telegram": {"bot_token": "123:abc"}, "database": {"url": "postgresql://u:hunter2@h/db"}, "x": 1}
    out = redact(data)
    assert out["telegram"]["bot_token"] == "***"
    assert "hunter2" not in json.dumps(out)
    assert out["x"] == 1


def test_redacted_config_never_contains_interpolated_secret() -> None:
    text = VALID + "database: {url: 'postgresql://atf:${PGPASS}@localhost/atf'}\n"
    cfg = parse_config(text, env={"PGPASS": "s3cr3t-value"})
    assert "s3cr3t-value" not in json.dumps(cfg.redacted())


def test_json_schema_describes_sections_and_validates_example() -> None:
    schema = json_schema()
    assert set(schema["required"]) == {"bot", "strategy"}
    assert "risk_management" in schema["properties"]
    assert {"logging", "ledger", "telegram", "email", "notifications"} <= set(schema["properties"])
    resolved = SERVICES.replace('"${TELEGRAM_BOT_TOKEN}"', "t0ken").replace('"${TELEGRAM_CHAT_ID}"', "[11]")
    jsonschema.validate(yaml.safe_load(VALID + resolved.replace("reports: off", "reports: 'off'")), schema)
    jsonschema.validate(yaml.safe_load((REPO / "config/strategies/rsi_bb_atr.yaml").read_text()), schema)


SERVICES = """\
logging:
  order_log: {enabled: true, dir: /var/log/atf, max_bytes: 0, compress: false}
ledger:
  export_url: s3://bucket/atf
  attribution: {"*": {S: 1}}
telegram:
  enabled: true
  bot_token: "${TELEGRAM_BOT_TOKEN}"
  chat_id: "${TELEGRAM_CHAT_ID}"
notifications:
  order_filled: silent
  performance_reports: off
"""


def test_service_sections_default_to_the_mode_and_parse_with_secrets_from_the_environment() -> None:
    plain = parse_config(VALID, env={})
    assert plain.logging.order_log.enabled is None and plain.ledger.enabled is None  # the mode decides
    assert plain.logging.order_log.max_bytes == 10 * 1024 * 1024 and plain.logging.order_log.backup_count == 5
    assert not plain.telegram.enabled and not plain.email.enabled
    cfg = parse_config(VALID + SERVICES, env={"TELEGRAM_BOT_TOKEN": "123:secret-token", "TELEGRAM_CHAT_ID": "11,-22"})
    assert cfg.logging.order_log.enabled is True and cfg.logging.order_log.dir == "/var/log/atf"
    assert cfg.ledger.export_url == "s3://bucket/atf" and cfg.ledger.attribution == {"*": {"S": 1.0}}
    assert cfg.telegram.chat_id == [11, -22]
    assert cfg.telegram.bot_token is not None and cfg.telegram.bot_token.get_secret_value() == "123:secret-token"
    assert cfg.notifications.route("order_filled") == "silent"
    assert cfg.notifications.route("performance_reports") == "off"
    assert "secret-token" not in json.dumps(cfg.redacted()) and "secret-token" not in repr(cfg)


@pytest.mark.parametrize(
    ("extra", "where_", "says"),
    [
        ("telegram: {enabled: true, chat_id: 1}\n", "line 15: telegram", "needs bot_token"),
        ("logging: {order_log: {max_byte: 5}}\n", "logging.order_log.max_byte", "did you mean 'max_bytes'"),
        ("logging: {order_log: {backup_count: 0}}\n", "line 15: logging.order_log", "backup_count must be at least 1"),
        ("ledger: {attribution: {BTCUSDT: {a: 0.5, b: 0.4}}}\n", "ledger.attribution", "BTCUSDT: weights sum to 0.9"),
        ("notifications: {position_opened: loud}\n", "notifications.position_opened", "'on', 'off' or 'silent'"),
        ("email: {enabled: true, smtp_host: h}\n", "line 15: email", "needs to"),
        ("ledgr: {enabled: true}\n", "unknown key 'ledgr'", "did you mean 'ledger'"),
    ],
)
def test_bad_service_settings_name_the_line_and_key(extra: str, where_: str, says: str) -> None:
    (msg,) = errors_of(VALID + extra)
    assert where_ in msg and says in msg


def test_a_dotenv_file_next_to_the_config_fills_variables_the_environment_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bot.yaml").write_text(VALID + SERVICES)
    (tmp_path / ".env").write_text("TELEGRAM_BOT_TOKEN=from-dotenv-token\nTELEGRAM_CHAT_ID=7\n")
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    monkeypatch.setenv("TELEGRAM_CHAT_ID", "8")  # the environment wins
    cfg = load_config(tmp_path / "bot.yaml")
    assert cfg.telegram.bot_token is not None and cfg.telegram.bot_token.get_secret_value() == "from-dotenv-token"
    assert cfg.telegram.chat_id == [8]
    # An explicit env ignores the file: the unset variable is reported with its key and line.
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "bot.yaml", env={"TELEGRAM_CHAT_ID": "8"})
    assert any("TELEGRAM_BOT_TOKEN" in e and "telegram.bot_token" in e for e in info.value.errors)
