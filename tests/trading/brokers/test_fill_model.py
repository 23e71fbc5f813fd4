"""FillModel as pure functions: table-driven cases with amounts derived by hand (docs/fill-model.md).

Notation: P price, q fill quantity, V bar volume, x = q / V, b base_slippage, f market_impact_factor.
"""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from trading.brokers.fill_model import FillModel, participation, path_price
from trading.config import BrokerSection, PaperTradingConfig

# --------------------------------------------------------------------------- slippage and impact

SLIPPAGE_CASES = [
    # id, model, b, impact f (None: off), P, q, V, expected adverse move in price units
    ("percent_is_b_times_price", "percent", 0.001, None, 100.0, 10, 1000, 0.1),
    ("percent_ignores_size", "percent", 0.001, None, 100.0, 900, 1000, 0.1),
    ("fixed_is_b", "fixed", 0.25, None, 100.0, 10, 1000, 0.25),
    ("linear_x_0.1", "linear", 0.001, None, 100.0, 100, 1000, 0.11),  # 100 * 0.001 * (1 + 0.1)
    ("linear_x_1", "linear", 0.001, None, 100.0, 1000, 1000, 0.2),  # doubles at a whole bar
    ("sqrt_x_0.25", "sqrt", 0.001, None, 100.0, 250, 1000, 0.15),  # 100 * 0.001 * (1 + 0.5)
    ("sqrt_x_0.01", "sqrt", 0.001, None, 100.0, 10, 1000, 0.11),  # 100 * 0.001 * (1 + 0.1)
    ("linear_unknown_volume_is_percent", "linear", 0.001, None, 100.0, 100, 0, 0.1),
    ("impact_x_0.1", "percent", 0.0, 0.1, 100.0, 100, 1000, 1.0),  # 100 * 0.1 * 0.1
    ("impact_plus_percent", "percent", 0.001, 0.1, 100.0, 100, 1000, 1.1),  # 100 * (0.001 + 0.01)
    ("impact_plus_fixed", "fixed", 0.25, 0.1, 100.0, 100, 1000, 1.25),  # 0.25 + 100 * 0.01
    ("impact_plus_sqrt", "sqrt", 0.001, 0.2, 50.0, 250, 1000, 2.575),  # 50 * (0.0015 + 0.05)
]


@pytest.mark.parametrize(
    ("model", "b", "f", "price", "qty", "volume", "expected"),
    [pytest.param(*c[1:], id=c[0]) for c in SLIPPAGE_CASES],
)
def test_slippage_amount_per_model(
    model: str, b: float, f: float | None, price: float, qty: float, volume: float, expected: float
) -> None:
    fm = FillModel(slippage_model=model, base_slippage=b, market_impact_enabled=f is not None,
                   market_impact_factor=f or 0.0)
    assert fm.slippage(price, qty, volume) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("qty", "expected"), [(50, 0.5), (100, 1.0), (200, 2.0), (400, 4.0)])
def test_market_impact_grows_in_proportion_to_the_share_of_bar_volume(qty: float, expected: float) -> None:
    fm = FillModel(market_impact_enabled=True, market_impact_factor=0.1)
    assert fm.slippage(100.0, qty, 1000) == pytest.approx(expected, rel=1e-12)


SLIPPED_CASES = [
    # id, model, b, buy, P, low, high, expected price
    ("buy_moves_up", "percent", 0.001, True, 100.0, 99.0, 101.0, 100.1),
    ("sell_moves_down", "percent", 0.001, False, 100.0, 99.0, 101.0, 99.9),
    ("buy_clipped_to_high", "percent", 0.01, True, 100.0, 99.0, 100.5, 100.5),
    ("sell_clipped_to_low", "fixed", 2.0, False, 100.0, 99.0, 101.0, 99.0),
]


@pytest.mark.parametrize(
    ("model", "b", "buy", "price", "low", "high", "expected"),
    [pytest.param(*c[1:], id=c[0]) for c in SLIPPED_CASES],
)
def test_slipped_price_is_against_the_order_and_inside_the_bar(
    model: str, b: float, buy: bool, price: float, low: float, high: float, expected: float
) -> None:
    fm = FillModel(slippage_model=model, base_slippage=b)
    assert fm.slipped(price, buy, 1.0, 1000, low, high) == pytest.approx(expected, rel=1e-12)


def test_percent_slippage_uses_backtraders_expression_bit_for_bit() -> None:
    fm = FillModel(base_slippage=0.0005)
    assert fm.slipped(101.37, True, 3.0, 1000, 90.0, 110.0) == 101.37 * (1 + 0.0005)
    assert fm.slipped(101.37, False, 3.0, 1000, 90.0, 110.0) == 101.37 * (1 - 0.0005)


def test_participation_is_zero_without_volume() -> None:
    assert participation(5, 0) == 0.0
    assert participation(5, math.nan) == 0.0
    assert participation(-5, 20) == 0.25


# --------------------------------------------------------------------------- quantity

CAP_CASES = [
    # id, max_volume_share, remaining, V, expected fill this bar
    ("capped_at_share_of_volume", 0.25, 400, 1000, 250),
    ("under_the_cap_fills_all", 0.25, 100, 1000, 100),
    ("no_cap", None, 5000, 1000, 5000),
    ("unknown_volume_is_not_capped", 0.25, 400, 0, 400),
]


@pytest.mark.parametrize(("share", "remaining", "volume", "expected"), [pytest.param(*c[1:], id=c[0]) for c in CAP_CASES])
def test_volume_cap(share: float | None, remaining: float, volume: float, expected: float) -> None:
    assert FillModel(max_volume_share=share).fill_quantity(remaining, volume) == expected


def test_random_partial_takes_a_drawn_fraction_of_what_the_bar_allows() -> None:
    fm = FillModel(max_volume_share=0.5, partial_fill_probability=1.0, seed=3)
    draws = [fm.fill_quantity(1000, 1000) for _ in range(200)]
    assert all(0.1 * 500 <= q < 500 for q in draws)


def test_partial_probability_is_the_share_of_bars_with_a_partial() -> None:
    fm = FillModel(partial_fill_probability=0.3, seed=11)
    partial = sum(fm.fill_quantity(10, 1000) < 10 for _ in range(4000))
    assert 0.27 < partial / 4000 < 0.33


# --------------------------------------------------------------------------- latency, path, rejections


def test_latency_is_drawn_between_min_and_max_and_zero_when_off() -> None:
    fm = FillModel(latency_simulation=True, min_latency_ms=100, max_latency_ms=300, seed=1)
    draws = [fm.latency_ms() for _ in range(500)]
    assert all(100 <= d <= 300 for d in draws) and max(draws) - min(draws) > 150
    assert FillModel(latency_simulation=True, min_latency_ms=80, max_latency_ms=80).latency_ms() == 80
    assert FillModel(min_latency_ms=80, max_latency_ms=90).latency_ms() == 0.0


PATH_CASES = [
    # id, (open, high, low, close), fraction of the bar, expected price
    ("start_is_open", (100, 111, 99, 110), 0.0, 100.0),
    ("half_way", (100, 111, 99, 110), 0.5, 105.0),
    ("end_is_close", (100, 111, 99, 110), 1.0, 110.0),
    ("beyond_the_bar_is_close", (100, 111, 99, 110), 1.7, 110.0),
    ("falling_bar_quarter", (120, 121, 99, 100), 0.25, 115.0),
]


@pytest.mark.parametrize(("bar", "frac", "expected"), [pytest.param(*c[1:], id=c[0]) for c in PATH_CASES])
def test_intra_bar_path_is_a_straight_line_from_open_to_close(
    bar: tuple[float, float, float, float], frac: float, expected: float
) -> None:
    o, h, lo, c = bar
    assert path_price(o, h, lo, c, frac) == pytest.approx(expected)


def test_rejections_follow_the_probability_and_draw_nothing_when_zero() -> None:
    fm = FillModel(reject_probability=0.2, seed=5)
    share = sum(fm.rejects() for _ in range(5000)) / 5000
    assert 0.18 < share < 0.22
    quiet = FillModel(seed=5)
    state = quiet.rng.bit_generator.state
    assert not any(quiet.rejects() for _ in range(10))
    assert quiet.rng.bit_generator.state == state


def advanced(seed: int) -> list[tuple[float, float, bool]]:
    fm = FillModel(latency_simulation=True, min_latency_ms=10, max_latency_ms=500,
                   partial_fill_probability=0.5, reject_probability=0.3, max_volume_share=0.5, seed=seed)
    return [(fm.latency_ms(), fm.fill_quantity(700, 1000), fm.rejects()) for _ in range(50)]


def test_same_seed_same_draws_different_seed_different_draws() -> None:
    assert advanced(7) == advanced(7)
    assert advanced(7) != advanced(8)


# --------------------------------------------------------------------------- commission

COMMISSION_CASES = [
    # id, rate, per share, minimum, q, P, expected
    ("rate", 0.001, None, 0.0, 10, 100.0, 1.0),
    ("per_share", 0.0, 0.005, 0.0, 300, 100.0, 1.5),
    ("per_share_minimum", 0.0, 0.005, 1.0, 10, 100.0, 1.0),
    ("rate_minimum_not_binding", 0.001, None, 0.5, 10, 100.0, 1.0),
    ("sell_size_counts_absolute", 0.0, 0.01, 0.0, -200, 50.0, 2.0),
    ("nothing_traded_costs_nothing", 0.0, 0.005, 1.0, 0, 100.0, 0.0),
]


@pytest.mark.parametrize(
    ("rate", "per_share", "minimum", "qty", "price", "expected"),
    [pytest.param(*c[1:], id=c[0]) for c in COMMISSION_CASES],
)
def test_commission(rate: float, per_share: float | None, minimum: float, qty: float, price: float, expected: float) -> None:
    fm = FillModel(commission_rate=rate, commission_per_share=per_share, commission_minimum=minimum)
    assert fm.commission(qty, price) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- config


def test_mode_defaults_and_explicit_keys_winning() -> None:
    basic, realistic, adv = (PaperTradingConfig(mode=m) for m in ("basic", "realistic", "advanced"))
    assert (basic.max_volume_share, basic.latency_simulation, basic.reject_probability) == (None, False, 0.0)
    assert (realistic.max_volume_share, realistic.market_impact_enabled, realistic.latency_simulation) == (1.0, False, False)
    assert (adv.market_impact_enabled, adv.latency_simulation, adv.max_volume_share) == (True, True, 0.25)
    assert (adv.partial_fill_probability, adv.reject_probability) == (0.1, 0.01)
    own = PaperTradingConfig(mode="advanced", reject_probability=0.0, max_volume_share=None)
    assert (own.reject_probability, own.max_volume_share, own.latency_simulation) == (0.0, None, True)
    assert PaperTradingConfig() == PaperTradingConfig(mode="realistic")


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"min_latency_ms": 300, "max_latency_ms": 100, "latency_simulation": True}, "larger than max_latency_ms"),
        ({"latency_simulation": False, "max_latency_ms": 900}, "no effect unless latency_simulation"),
        ({"mode": "basic", "market_impact_factor": 0.5}, "no effect unless market_impact_enabled"),
        ({"base_slippage": 1.5}, "must be below 1"),
        ({"max_volume_share": 1.5}, "less than or equal to 1"),
        ({"reject_probability": 1.0}, "less than 1"),
        ({"slipage_model": "fixed"}, "Extra inputs"),
    ],
)
def test_invalid_combinations_are_refused(keys: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PaperTradingConfig.model_validate(keys)


def test_a_dumped_config_validates_again() -> None:
    cfg = PaperTradingConfig(mode="advanced", seed=4, market_impact_factor=0.3)
    assert PaperTradingConfig.model_validate(cfg.model_dump()) == cfg
    broker = BrokerSection(commission_per_share=0.005)
    assert BrokerSection.model_validate(broker.model_dump()) == broker


def test_per_share_commission_replaces_the_rate() -> None:
    assert BrokerSection(commission_per_share=0.005).commission_rate == 0.0
    with pytest.raises(ValidationError, match="either 'commission_rate' or 'commission_per_share'"):
        BrokerSection(commission_per_share=0.005, commission_rate=0.001)
