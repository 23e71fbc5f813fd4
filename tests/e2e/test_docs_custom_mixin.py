"""The custom entry mixin shown in docs/strategies.md works as printed, from a user's own package."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.e2e.test_cli_backtest import REPO, atf
from tests.strategy.test_rolling_window import SHORT, assert_same_values, stream


def test_documented_custom_mixin_runs_from_yaml(tmp_path: Path) -> None:
    doc = (REPO / "docs" / "strategies.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(# mybot/breakout\.py\n.*?)```", doc, re.DOTALL)
    assert code, "the custom mixin example is missing from docs/strategies.md"
    source = code.group(1)
    assert len([ln for ln in source.splitlines() if ln.strip()]) < 30  # "in under 30 lines"
    pkg = tmp_path / "mybot"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "breakout.py").write_text(source)

    raw = yaml.safe_load((REPO / "config" / "strategies" / "rsi_bb_atr.yaml").read_text())
    raw["strategy"]["entry_mixins"] = [
        {"name": "mybot.breakout:BreakoutEntryMixin", "parameters": {"e_period": 30, "e_cooldown_bars": 3}}
    ]
    cfg = tmp_path / "breakout.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    env = {"PYTHONPATH": str(tmp_path)}
    proc = atf("backtest", str(cfg), "--no-save", "--output", str(tmp_path / "out"), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    trades = json.loads((tmp_path / "out" / "result.json").read_text())["trades"]
    assert len(trades) > 10 and {t["entry_tag"] for t in trades} == {"BreakoutEntryMixin"}

    honest = atf("lookahead", str(cfg), "--cuts", "2", cwd=tmp_path, env=env)
    assert honest.returncode == 0 and "no lookahead bias found" in honest.stdout, honest.stdout + honest.stderr

    # A misspelt parameter of the user's class is reported like a built-in one.
    raw["strategy"]["entry_mixins"][0]["parameters"] = {"e_perod": 30}
    cfg.write_text(yaml.safe_dump(raw))
    bad = atf("config", "validate", str(cfg), cwd=tmp_path, env=env)
    assert bad.returncode == 1 and "did you mean 'e_period'" in bad.stderr



def test_documented_rolling_window_mixin_streams_the_values_of_a_full_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = (REPO / "docs" / "strategies.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(# mybot/window_breakout\.py\n.*?)```", doc, re.DOTALL)
    assert code, "the rolling-window example is missing from docs/strategies.md"
    pkg = tmp_path / "mybot"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "window_breakout.py").write_text(code.group(1))
    monkeypatch.syspath_prepend(str(tmp_path))
    cls = importlib.import_module("mybot.window_breakout").WindowBreakoutEntryMixin

    params = {"e_period": 30, "e_vol_period": 10}
    for bars in SHORT.values():
        n = len(bars)
        full, streamed = cls(params), cls(params)
        full.prepare(bars)
        windows = stream(streamed, bars)
        assert sum(full.long) > 10  # the rule fires: the comparison is not of all-False lists
        assert_same_values(full, streamed, n)
        memory = streamed.memory()
        assert memory == 31 and windows[-(n - memory):] == [memory] * (n - memory)

    # The check catches a memory one bar short: the range would miss bar t-N.
    short = type("ShortMemory", (cls,), {"memory": lambda self: self.p.e_period})
    bars = SHORT["seed1"]
    full, streamed = short(params), short(params)
    full.prepare(bars)
    stream(streamed, bars)
    assert not np.array_equal(np.asarray(full.long), np.asarray(streamed.long))
