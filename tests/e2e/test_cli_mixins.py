"""`atf mixins list|show`: every registered mixin with its parameters, defaults and rule."""

from __future__ import annotations

import json
from pathlib import Path

from strategy.registry import available
from tests.e2e.test_cli_backtest import atf


def test_list_json_covers_every_registered_mixin_with_defaults(tmp_path: Path) -> None:
    proc = atf("mixins", "list", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    listed = {d["name"]: d for d in json.loads(proc.stdout)}
    assert set(listed) == set(available("entry")) | set(available("exit"))
    for name, cls in {**available("entry"), **available("exit")}.items():
        d = listed[name]
        assert d["kind"] == cls.kind and d["description"]
        defaults = {p["name"]: p["default"] for p in d["parameters"]}
        assert defaults == {k: f.get_default(call_default_factory=True) for k, f in cls.Params.model_fields.items()
                            if not f.is_required()} | {k: None for k, f in cls.Params.model_fields.items()
                                                       if f.is_required()}
        prefix = "e_" if cls.kind == "entry" else "x_"
        assert all(p["name"].startswith(prefix) and p["description"] for p in d["parameters"]), name


def test_list_by_kind_and_show_one(tmp_path: Path) -> None:
    proc = atf("mixins", "list", "--kind", "exit", cwd=tmp_path)
    assert proc.returncode == 0 and "AdvancedATRExitMixin" in proc.stdout and "RSIOrBBEntryMixin" not in proc.stdout
    shown = atf("mixins", "show", "RSIOrBBEntryMixin", cwd=tmp_path)
    assert shown.returncode == 0
    assert "e_bb_dev" in shown.stdout and "2.0" in shown.stdout and "entry mixin" in shown.stdout


def test_show_unknown_name_suggests_closest(tmp_path: Path) -> None:
    proc = atf("mixins", "show", "AdvancedATRExitMixn", cwd=tmp_path)
    assert proc.returncode == 1
    assert "did you mean 'AdvancedATRExitMixin'" in proc.stderr
