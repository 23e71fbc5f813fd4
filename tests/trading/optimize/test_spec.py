"""The `optimize:` section: parsing, parameter targets, and errors that name file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.trading.optimize.conftest import BOT, bot_text, study_from
from trading.config import load_config
from trading.exceptions import ConfigError
from trading.optimize import apply_params, load_study, parse_study
from trading.optimize.spec import TrialConfigError

REPO = Path(__file__).resolve().parents[3]


def errors_of(optimize: str, **kw: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        study_from(optimize, **kw)  # type: ignore[arg-type]
    assert info.value.source == "bot.yaml"
    return info.value.errors


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_example_bot_parses_to_targets_in_its_mixins() -> None:
    st = load_study(REPO / "config" / "optimize" / "rsi_bb_atr.yaml")
    assert st.targets["e_rsi_period"].path == (
        "strategy",
        "entry_mixins",
        0,
        "parameters",
        "e_rsi_period",
    )
    assert st.targets["x_sl_multiplier"].path == (
        "strategy",
        "exit_mixins",
        0,
        "parameters",
        "x_sl_multiplier",
    )
    assert st.spec.grid_size() == 4 * 4 * 4
    assert "optimize" not in st.raw and st.config.bot.name == "rsi_bb_atr"
    assert st.spec.walk_forward is not None and st.spec.walk_forward.lengths()[0].days == 120


def test_ranges_enumerate_ints_floats_and_choices() -> None:
    st = study_from()
    p = st.spec.parameters
    assert p["e_rsi_period"].kind == "int" and p["e_rsi_period"].grid_values() == [8, 12, 16]
    assert p["e_bb_dev"].kind == "choice" and p["e_bb_dev"].grid_values() == [1.5, 2.5]
    assert p["x_sl_multiplier"].kind == "float" and p["x_sl_multiplier"].grid_values() == [1.0, 2.0]
    odd = study_from("optimize:\n  parameters:\n    e_bb_dev: {low: 1.0, high: 2.0, step: 0.3}\n")
    assert odd.spec.parameters["e_bb_dev"].grid_values() == [1.0, 1.3, 1.6, 1.9]


def test_qualified_names_and_config_paths_resolve() -> None:
    st = study_from(
        "optimize:\n  parameters:\n"
        "    AdvancedATRExitMixin.x_atr_period: [10, 20]\n"
        "    risk_management.risk_per_trade: [0.01, 0.02]\n"
        "    strategy.entry_mixins[0].parameters.e_bb_period: [15, 25]\n"
    )
    assert st.targets["AdvancedATRExitMixin.x_atr_period"].path[:3] == (
        "strategy",
        "exit_mixins",
        0,
    )
    assert st.targets["risk_management.risk_per_trade"].path == (
        "risk_management",
        "risk_per_trade",
    )
    cfg = apply_params(
        st.base_tree(),
        st.targets,
        {
            "risk_management.risk_per_trade": 0.02,
            "strategy.entry_mixins[0].parameters.e_bb_period": 25,
        },
    )
    assert cfg.risk_management.risk_per_trade == 0.02
    assert cfg.strategy.entry_mixins[0].parameters["e_bb_period"] == 25


def test_a_misspelt_parameter_names_its_line_and_the_closest_name() -> None:
    opt = "optimize:\n  parameters:\n    e_rsi_perod: [10, 14]\n"
    [msg] = errors_of(opt)
    assert f"line {line_of(bot_text(opt), 'e_rsi_perod')}: optimize.parameters.e_rsi_perod:" in msg
    assert "did you mean 'e_rsi_period'?" in msg


def test_a_range_end_the_mixin_rejects_is_an_error_naming_the_parameter() -> None:
    opt = "optimize:\n  parameters:\n    e_rsi_period: {low: 1, high: 20, step: 1}\n"
    [msg] = errors_of(opt)
    assert msg.startswith(
        f"line {line_of(bot_text(opt), 'e_rsi_period: {low')}: optimize.parameters.e_rsi_period:"
    )
    assert "value 1 makes an invalid bot" in msg and "e_rsi_period" in msg.split("invalid bot:")[1]
    assert "greater than or equal to 2" in msg


@pytest.mark.parametrize(
    ("optimize", "expected"),
    [
        (
            "optimize:\n  parameters:\n    e_bb_dev: {low: 3.0, high: 1.0, step: 0.5}\n",
            "low (3.0) is above high (1.0)",
        ),
        (
            "optimize:\n  parameters:\n    e_bb_dev: {low: 1.0, high: 3.0}\n",
            "a grid needs 'step' for a float range",
        ),
        (
            "optimize:\n  objective: sharp\n  parameters: {e_bb_dev: [2.0]}\n",
            "did you mean 'sharpe'?",
        ),
        ("optimize:\n  method: gird\n  parameters: {e_bb_dev: [2.0]}\n", "did you mean 'grid'?"),
        (
            "optimize:\n  paramters: {e_bb_dev: [2.0]}\n",
            "unknown key 'paramters'; did you mean 'parameters'?",
        ),
        (
            "optimize:\n  parameters: {data.bars: [100, 200]}\n",
            "'data' settings cannot be optimised",
        ),
        (
            "optimize:\n  parameters: {risk_management.risk_per_trad: [0.01]}\n",
            "did you mean 'risk_per_trade'?",
        ),
        (
            "optimize:\n  constraints: {max_drawdown: 25}\n  parameters: {e_bb_dev: [2.0]}\n",
            "less than 1",
        ),
        (
            "optimize:\n  walk_forward: {train: 90d, test: 30d, step: 10d}\n  parameters: {e_bb_dev: [2.0]}\n",
            "out-of-sample windows would overlap",
        ),
        (
            "optimize:\n  walk_forward: {train: ninety days}\n  parameters: {e_bb_dev: [2.0]}\n",
            "is not a duration",
        ),
    ],
)
def test_invalid_sections_are_reported_with_their_key(optimize: str, expected: str) -> None:
    errors = errors_of(optimize)
    assert any(expected in e for e in errors), errors
    assert all(e.startswith("line ") for e in errors), errors


def test_a_parameter_two_mixins_share_asks_for_the_qualified_name() -> None:
    text = (
        BOT.replace("BARS", "500").replace(
            "  position_size: 0.1\n",
            "    - name: ATRExitMixin\n      parameters: {x_atr_period: 10}\n  position_size: 0.1\n",
        )
        + "optimize:\n  parameters: {x_atr_period: [10, 20]}\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_study(text, source="two.yaml")
    assert "'AdvancedATRExitMixin.x_atr_period' or 'ATRExitMixin.x_atr_period'" in str(info.value)


def test_errors_in_the_bot_keep_their_line_numbers() -> None:
    text = bot_text().replace("commission_rate: 0.001", "commission_rate: 0.5")
    with pytest.raises(ConfigError) as info:
        parse_study(text, source="bot.yaml")
    assert f"line {line_of(text, 'commission_rate')}: broker.commission_rate" in str(info.value)


def test_a_file_without_an_optimize_section_says_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(BOT.replace("BARS", "500"), encoding="utf-8")
    with pytest.raises(ConfigError, match="no 'optimize:' section"):
        load_study(path)
    assert (
        load_config(path).bot.name == "opt_test"
    )  # the same bot without the section is a plain bot


def test_a_combination_the_bot_rejects_raises_naming_the_parameters() -> None:
    st = study_from("optimize:\n  parameters:\n    x_breakeven_offset: [0.0, 0.05]\n")
    with pytest.raises(TrialConfigError) as info:
        apply_params(st.base_tree(), st.targets, {"x_breakeven_offset": 0.5})
    assert info.value.source == "x_breakeven_offset=0.5"
    assert "strategy.exit_mixins[0].parameters.x_breakeven_offset" in str(info.value)
