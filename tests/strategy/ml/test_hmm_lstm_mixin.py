"""HMMLSTMEntryMixin: walk-forward without lookahead, deterministic, cached, diagnosed, and safe without the extra."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from strategy.mixins.base import Side
from strategy.mixins.entry.hmm_lstm import HMMLSTMEntryMixin
from strategy.ml import walkforward
from tests.strategy.conftest import SYMBOL, make_config, synthetic_frame
from tests.strategy.ml.helpers import SMALL, bars_of, head
from trading.analytics.report import build_figure
from trading.engine import run_backtest

torch.set_num_threads(1)
N = 400


@pytest.fixture(scope="module")
def frame():  # type: ignore[no-untyped-def]
    return synthetic_frame(N, seed=8)


def bot(params: dict, direction: str = "both"):  # type: ignore[no-untyped-def]
    return make_config(
        {
            "strategy": {
                "direction": direction,
                "entry_mixins": [{"name": "HMMLSTMEntryMixin", "parameters": params}],
                "exit_mixins": [{"name": "FixedRatioExitMixin", "parameters": {"x_stop_pct": 0.01}}],
            }
        }
    )


def test_predictions_up_to_t_ignore_later_bars(frame) -> None:  # type: ignore[no-untyped-def]
    bars = bars_of(frame)
    full = HMMLSTMEntryMixin(SMALL)
    full.prepare(bars)
    rng = np.random.default_rng(1)
    for t in (119, 150, 239, 301):
        cut = HMMLSTMEntryMixin(SMALL)
        cut.prepare(head(bars, t + 1))
        other = bars_of(frame)
        other.close[t + 1 :] *= np.exp(np.cumsum(rng.normal(0.0, 0.03, N - t - 1)))
        other.high[t + 1 :] = np.maximum(other.high[t + 1 :], other.close[t + 1 :])
        other.low[t + 1 :] = np.minimum(other.low[t + 1 :], other.close[t + 1 :])
        changed = HMMLSTMEntryMixin(SMALL)
        changed.prepare(other)
        for m in (cut, changed):
            np.testing.assert_array_equal(m.prob[: t + 1], full.prob[: t + 1])
            np.testing.assert_array_equal(m.regime[: t + 1], full.regime[: t + 1])
            for side in Side:
                assert m.signal_array(side)[: t + 1] == full.signal_array(side)[: t + 1]


def test_no_model_and_no_entry_before_the_first_window(frame) -> None:  # type: ignore[no-untyped-def]
    m = HMMLSTMEntryMixin(SMALL)
    m.prepare(bars_of(frame))
    assert m.warmup() == SMALL["e_train_bars"]
    assert np.isnan(m.prob[:120]).all() and np.isfinite(m.prob[120:]).all()
    assert not any(m.long_signal[:120]) and not any(m.short_signal[:120])
    assert any(m.long_signal[120:]) and any(m.short_signal[120:])
    # Windows: fit on [0,120) serves 120..179, [60,180) serves 180..239, ...
    assert sorted(m.windows) == [0, 1, 2, 3, 4]
    assert [(w["start"], w["end"]) for w in m.windows.values()] == [(0, 120), (60, 180), (120, 240), (180, 300), (240, 360)]
    assert list(m.served_by[118:122]) == [-1, -1, 0, 0] and m.served_by[180] == 1 and m.served_by[-1] == 4


def test_model_depends_on_its_window_bars_only(frame) -> None:  # type: ignore[no-untyped-def]
    spec = HMMLSTMEntryMixin(SMALL)._spec()
    bars, other = bars_of(frame), bars_of(frame)
    other.close[:50] *= 1.5  # before window [60, 180)
    assert walkforward.window_key(bars, 60, 180, spec) == walkforward.window_key(other, 60, 180, spec)
    assert walkforward.window_key(bars, 0, 120, spec) != walkforward.window_key(other, 0, 120, spec)
    a = walkforward.fit_window(bars, 60, 180, spec)
    b = walkforward.fit_window(other, 60, 180, spec)
    for k in a.lstm_state:
        assert torch.equal(a.lstm_state[k], b.lstm_state[k])
    np.testing.assert_array_equal(a.hmm.means, b.hmm.means)


def test_same_config_and_data_give_the_same_trades_twice_without_any_cache(frame) -> None:  # type: ignore[no-untyped-def]
    cfg = bot({**SMALL, "e_cache": False})
    runs = []
    for _ in range(2):
        walkforward.clear_memory()
        before = walkforward.training_count()
        runs.append(run_backtest(cfg, {SYMBOL: frame}))
        assert walkforward.training_count() - before == 5  # really trained, twice
    a, b = runs
    assert len(a.trades) >= 5
    assert [t.to_dict() for t in a.trades] == [t.to_dict() for t in b.trades]


def test_second_run_loads_every_window_from_disk(frame, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ATF_MODEL_CACHE", str(tmp_path))
    params = {**SMALL, "e_seed": 11}  # models no other test has trained
    walkforward.clear_memory()
    before = walkforward.training_count()
    first = run_backtest(bot(params), {SYMBOL: frame})
    assert walkforward.training_count() - before == 5
    assert len(list(tmp_path.glob("*.pt"))) == 5 and len(list(tmp_path.glob("*.json"))) == 5
    walkforward.clear_memory()
    # A different threshold reads the same models: it only changes the decisions.
    second = run_backtest(bot({**params, "e_threshold": 0.55}), {SYMBOL: frame})
    assert walkforward.training_count() - before == 5
    diag = second.diagnostics["mixins"][SYMBOL]["HMMLSTMEntryMixin"]
    assert diag["trained"] == 0 and diag["from_cache"] == 5
    assert {w["source"] for w in diag["windows"]} == {"disk"}
    d1 = first.diagnostics["mixins"][SYMBOL]["HMMLSTMEntryMixin"]
    assert [w["lstm"] for w in d1["windows"]] == [w["lstm"] for w in diag["windows"]]


def test_diagnostics_per_window_in_the_result_json_and_regime_band_in_report(frame) -> None:  # type: ignore[no-untyped-def]
    result = run_backtest(bot(SMALL), {SYMBOL: frame})
    text = json.dumps(result.to_dict(include_equity=False), allow_nan=False)
    diag = json.loads(text)["diagnostics"]["mixins"][SYMBOL]["HMMLSTMEntryMixin"]
    assert diag["windows_fitted"] == 5
    w0 = diag["windows"][0]
    assert (w0["train_start"], w0["train_end"]) == ("2020-01-01T00:00:00Z", "2020-01-05T23:00:00Z")
    assert w0["predict_start"] == "2020-01-06T00:00:00Z"
    assert sorted(s["regime"] for s in w0["hmm"]["states"]) == ["bear", "bull"]
    assert all(set(s["mean"]) == {"ret_mean", "log_vol"} and s["variance"]["log_vol"] > 0 for s in w0["hmm"]["states"])
    assert w0["lstm"]["val_loss"] > 0 and 1 <= w0["lstm"]["epochs_run"] <= SMALL["e_epochs"]
    # Hit rate over the bars whose outcome (h bars later) is known.
    assert w0["oos"]["bars"] == 60 and 0.0 <= w0["oos"]["hit_rate"] <= 1.0
    assert diag["windows"][-1]["oos"]["bars"] == N - 360 - SMALL["e_horizon"]
    assert diag["regime_changes"][0][0] == "2020-01-06T00:00:00Z"
    # Summaries, not per-bar arrays: the regime goes out only where it changes.
    assert len(diag["regime_changes"]) < (N - 120) / 3

    fig = build_figure(result)
    bands = [s for s in fig.layout.shapes if s.y1 is not None and s.y1 <= 0.1]
    assert len(bands) == len(diag["regime_changes"])
    legend = {t.meta["regime"] for t in fig.data if isinstance(t.meta, dict) and t.meta.get("role") == "regime"}
    assert legend == {r for _, r in diag["regime_changes"]}


def test_unknown_regime_and_too_small_window_are_config_errors() -> None:
    with pytest.raises(ValueError, match="unknown regime"):
        HMMLSTMEntryMixin.Params.model_validate({"e_allowed_regimes": ["bull", "moon"]})
    with pytest.raises(ValueError, match="e_train_bars must be >="):
        HMMLSTMEntryMixin.Params.model_validate({"e_train_bars": 60})


def test_without_the_ml_extra_validation_names_the_install_command(tmp_path: Path) -> None:
    src = Path("config/strategies/hmm_lstm_atr.yaml").resolve()
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # as if the ml extra were not installed
        import strategy.mixins.entry  # the mixin module itself imports
        from trading.config import load_config
        from trading.exceptions import ConfigError
        try:
            load_config({str(src)!r}, env={{}})
        except ConfigError as exc:
            print(exc)
        else:
            print("NO ERROR")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert "pip install 'atf[ml]'" in out.stdout, out.stdout + out.stderr
    assert "strategy.entry_mixins[0].parameters" in out.stdout
    assert "torch" in out.stdout
