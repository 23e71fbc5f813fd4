"""Two `atf optimize` processes share one Optuna study through an RDB storage.

PostgreSQL is the CI server started by the suite's `postgres_url` fixture; SQLite is the
single-file storage a laptop can share between processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trading.optimize.conftest import bot_text
from trading.engine import load_bars
from trading.optimize import Workload, best_of, load_study
from trading.optimize.search import outcomes_from_study
from trading.optimize.trial import Task

TRIALS = 12
BARS = 900  # 37 days: enough for the ratios, short enough for a quick study
OPTIMIZE = """\
optimize:
  method: optuna
  trials: 10
  batch_size: 2
  objective: tests.trading.optimize.rendezvous:sharpe_when_all_started
  constraints: {min_trades: 25}
  parameters:
    e_rsi_period: {low: 6, high: 24}
    e_bb_dev: {low: 1.0, high: 3.0}
    x_sl_multiplier: {low: 1.0, high: 3.0}
"""


@pytest.fixture(params=["postgresql", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_two_processes_share_one_study_without_duplicates(storage: str, tmp_path: Path) -> None:
    import optuna

    bot = tmp_path / "bot.yaml"
    bot.write_text(bot_text(OPTIMIZE, bars=BARS), encoding="utf-8")
    # Created once up front, as one would before starting workers on several machines, with two
    # known points queued: many trades (feasible) and few (breaks min_trades).
    created = optuna.create_study(storage=storage, study_name="shared", direction="maximize")
    created.enqueue_trial({"e_rsi_period": 14, "e_bb_dev": 1.0, "x_sl_multiplier": 2.0})
    created.enqueue_trial({"e_rsi_period": 14, "e_bb_dev": 2.9, "x_sl_multiplier": 2.0})
    cmd = [
        sys.executable,
        "-m",
        "trading.cli",
        "optimize",
        str(bot),
        "--trials",
        str(TRIALS),
        "--jobs",
        "1",
        "--storage",
        storage,
        "--study",
        "shared",
    ]
    meet = tmp_path / "rendezvous"
    meet.mkdir()
    env = {**os.environ, "COLUMNS": "200", "ATF_TEST_RENDEZVOUS": f"{meet}:2"}
    procs = [
        subprocess.Popen(
            [*cmd, "--output", str(tmp_path / f"out{i}")],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err + out

    study = optuna.load_study(study_name="shared", storage=storage)
    trials = outcomes_from_study(study)
    assert [o.number for o in trials] == list(range(TRIALS))
    assert not study.get_trials(
        states=(optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    )
    assert (
        len({tuple(sorted(o.params.items())) for o in trials}) == TRIALS
    )  # no parameter set twice
    assert len({o.worker for o in trials}) == 2  # both processes worked on it (they met first)

    # Every stored result equals a serial backtest of its parameters.
    st = load_study(bot)
    wl = Workload.from_study(st, load_bars(st.config))
    for o in trials:
        again = wl.run(Task(o.number, o.params))
        assert (again.value, again.violations, again.metrics) == (o.value, o.violations, o.metrics)

    best = best_of(trials)
    assert (
        best is not None
        and trials[0].feasible
        and trials[1].violations[0].startswith("min_trades: ")
    )
    assert study.best_trial.number == best.number
    summaries = [json.loads((tmp_path / f"out{i}" / "summary.json").read_text()) for i in range(2)]
    complete = [s for s in summaries if s["trials"] == TRIALS]
    assert complete and all(s["best"]["number"] == best.number for s in complete)
    assert all(s["best"]["params"] == best.params for s in complete)
