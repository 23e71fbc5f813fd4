"""The custom entry mixin shown in docs/strategies.md works as printed, from a user's own package."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tests.e2e.test_cli_backtest import REPO, atf


def test_documented_custom_mixin_runs_from_yaml(tmp_path: Path) -> None:
    doc = (REPO / "docs" / "strategies.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(# mybot/breakout\.py\n.*?)```", doc, re.S)
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

