"""`atf lookahead`: a bot that peeks at future bars is caught and named; an honest one passes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from strategy.mixins.base import Bars, EntryMixin, ExitMixin, ExitPlan, OpenTrade, Side
from tests.e2e.test_cli_backtest import atf
from tests.strategy.conftest import config_dict, make_config
from trading.data import generate_ohlcv
from trading.lookahead import analyse, cut_points

MODULE = __name__


class CenteredMeanEntry(EntryMixin):
    """Peeks: a centred rolling mean uses two bars after i (a classic research-notebook bug)."""

    def prepare(self, bars: Bars) -> None:
        mean = pd.Series(bars.close).rolling(5, center=True).mean().to_numpy()
        with np.errstate(invalid="ignore"):
            self.long = (bars.close < mean * 0.995).tolist()

    def signal(self, i: int, side: Side) -> bool:
        return side is Side.LONG and self.long[i]


class NextCloseExit(ExitMixin):
    """Peeks: exits when the *next* bar closes lower (reads bars[i + 1] when it exists)."""

    def prepare(self, bars: Bars) -> None:
        self.close = bars.close.tolist()

    def on_entry(self, trade: OpenTrade, i: int) -> ExitPlan:
        return ExitPlan(stop=trade.ref_price * 0.9)

    def on_bar(self, trade: OpenTrade, i: int) -> ExitPlan:
        ahead = i + 1 < len(self.close) and self.close[i + 1] < self.close[i]
        return ExitPlan(stop=trade.stop, exit_now="peek" if ahead else None)


FRAME = generate_ohlcv(1500, seed=9, timeframe="1h", symbol="SYM")


def test_honest_bot_has_no_findings() -> None:
    report = analyse(make_config(), {"SYM": FRAME}, cuts=5)
    assert report.ok, report.findings
    assert 5 < len(report.cuts) <= 5 + 12  # the even cuts plus cuts at sampled decisions
    assert report.signals_checked > 5 * 100 and report.decisions_checked > 0 and report.trades_checked > 0


def test_peeking_entry_mixin_is_named() -> None:
    cfg = make_config({"strategy": {"entry_mixins": [{"name": f"{MODULE}:CenteredMeanEntry"}]}})
    report = analyse(cfg, {"SYM": FRAME}, cuts=5)
    assert "CenteredMeanEntry" in report.biased_sources
    sig = [f for f in report.findings if f.check == "signal"]
    # The centred mean at bar t needs bars t+1 and t+2: only the last two bars of a cut can differ.
    assert sig and all(f.cut - 2 <= f.bar <= f.cut for f in sig)


def test_peeking_exit_changes_decisions_and_is_reported() -> None:
    cfg = make_config({"strategy": {"exit_mixins": [{"name": f"{MODULE}:NextCloseExit"}]}})
    report = analyse(cfg, {"SYM": FRAME}, cuts=6)
    assert not report.ok
    assert {f.check for f in report.findings} & {"decision", "trade"}
    assert all(f.bar <= f.cut for f in report.findings)


@pytest.mark.parametrize(("n", "warmup", "count"), [(1000, 20, 8), (100, 50, 5), (30, 5, 50)])
def test_cut_points_stay_after_warmup_and_before_the_end(n: int, warmup: int, count: int) -> None:
    pts = cut_points(n, warmup, count)
    assert pts == sorted(set(pts)) and 0 < len(pts) <= count
    assert pts[0] > warmup and pts[-1] == n - 2


def test_cli_exit_codes_and_json(tmp_path: Path) -> None:
    data = tmp_path / "bars.csv"
    FRAME.rename_axis("datetime").to_csv(data)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(config_dict()))
    proc = atf("lookahead", str(good), "--data", str(data), "--cuts", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no lookahead bias found" in proc.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config_dict({"strategy": {"entry_mixins": [
        {"name": f"{MODULE}:CenteredMeanEntry"}]}})))
    out = tmp_path / "report.json"
    proc = atf("lookahead", str(bad), "--data", str(data), "--cuts", "3", "--json", str(out), cwd=tmp_path,
               env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "CenteredMeanEntry" in proc.stdout
    rep = json.loads(out.read_text())
    assert rep["ok"] is False and "CenteredMeanEntry" in rep["biased_sources"]
