"""Processes sharing a SQLite Optuna study never claim one enqueued trial twice.

Optuna claims a WAITING trial with `SELECT ... FOR UPDATE` then `UPDATE`; SQLite ignores the
row lock, so with a plain URL two processes can both run the same enqueued trial (and the
second fails telling a finished one). `open_storage` makes every SQLite transaction
`BEGIN IMMEDIATE`. The processes start together on a barrier and claim as fast as they can.
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

import pytest

from trading.optimize.search import open_storage

QUEUED = 60
PROCESSES = 3


def _claim(url: str, atomic: bool, barrier: Any, out: Any) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(url) if atomic else url
    study = optuna.load_study(study_name="s", storage=storage)
    barrier.wait()
    claimed = []
    for _ in range(QUEUED // PROCESSES + 5):
        trial = study.ask()
        if "x" not in trial.user_attrs:  # the queue is empty: a fresh (unqueued) trial
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            break
        claimed.append((trial.number, trial.user_attrs["x"]))
    out.put(claimed)


def _race(tmp_path: Path, atomic: bool) -> list[tuple[int, int]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="s")
    for x in range(QUEUED):
        study.enqueue_trial({}, user_attrs={"x": x})
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(url, atomic, barrier, out)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    claimed = [c for _ in procs for c in out.get(timeout=120)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return claimed


def test_open_storage_claims_every_enqueued_trial_exactly_once(tmp_path: Path) -> None:
    claimed = _race(tmp_path, atomic=True)
    assert sorted(x for _, x in claimed) == list(range(QUEUED))
    assert len({n for n, _ in claimed}) == QUEUED


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "postgresql://u@h/db", None])
def test_open_storage_leaves_other_storages_to_optuna(url: str | None) -> None:
    if url == "sqlite:///:memory:":
        import optuna

        assert isinstance(open_storage(url), optuna.storages.RDBStorage)
    else:
        assert open_storage(url) == url
