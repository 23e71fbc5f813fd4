"""Search: every combination of a grid, or Optuna's TPE sampler, over one window of bars.

Optuna runs through its ask-and-tell interface in rounds of `batch_size` trials: each round
is asked, evaluated by the runner (in parallel) and told before the next one is asked, so a
seeded study gives the same trials with any number of workers. With an RDB storage several
processes (or machines) share one study; each stops when the study holds the requested
number of trials. Trial metrics are kept as user attributes, so any process can report on
the whole study.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trading.optimize.runner import Runner, require
from trading.optimize.spec import Constraints, OptimizeSpec, ParamRange
from trading.optimize.trial import Task, TrialOutcome, Window, best_of, constraint_excess

OnResult = Callable[[TrialOutcome], None]


@dataclass
class SearchResult:
    method: str
    objective: str
    direction: str
    trials: list[TrialOutcome]  # by trial number
    best: TrialOutcome | None
    seconds: float
    workers: int
    study_name: str | None = None
    window: Window | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def feasible(self) -> int:
        return sum(o.feasible for o in self.trials)


def _result(
    method: str,
    spec: OptimizeSpec,
    runner: Runner,
    outcomes: list[TrialOutcome],
    t0: float,
    window: Window | None,
    study_name: str | None = None,
) -> SearchResult:
    """Return the result of a search that started at `t0` (perf_counter) and found `outcomes`."""
    return SearchResult(
        method,
        spec.objective,
        spec.direction,
        outcomes,
        best_of(outcomes, spec.direction),
        time.perf_counter() - t0,
        runner.workers,
        study_name=study_name,
        window=window,
    )


def grid_points(spec: OptimizeSpec) -> list[dict[str, Any]]:
    """Return every combination of the parameters' grid values, the last parameter varying fastest."""
    names = list(spec.parameters)
    values = [spec.parameters[n].grid_values() for n in names]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*values)]


def run_grid(
    spec: OptimizeSpec,
    runner: Runner,
    *,
    window: Window | None = None,
    on_result: OnResult | None = None,
) -> SearchResult:
    t0 = time.perf_counter()
    tasks = [Task(i, p, window) for i, p in enumerate(grid_points(spec))]
    outcomes = []
    for o in runner.map(tasks):
        outcomes.append(o)
        if on_result:
            on_result(o)
    outcomes.sort(key=lambda o: o.number)
    return _result("grid", spec, runner, outcomes, t0, window)


def distribution(rng: ParamRange) -> Any:
    """Return the Optuna distribution of a range."""
    d = require("optuna.distributions", "optuna")
    if rng.choices is not None:
        return d.CategoricalDistribution(rng.choices)
    if rng.kind == "int":
        return d.IntDistribution(int(rng.low), int(rng.high), log=rng.log, step=int(rng.step or 1))  # type: ignore[arg-type]
    return d.FloatDistribution(float(rng.low), float(rng.high), log=rng.log, step=rng.step)  # type: ignore[arg-type]


def sampler_seed(seed: int, shared: bool) -> int:
    """Return the TPE seed: the spec's, or for a shared study one unique to this process.

    Processes sharing a study with one seed would propose the same trials; a shared study is
    therefore not reproducible run to run, while an in-memory one is.
    """
    if not shared:
        return seed
    ident = f"{seed}:{socket.gethostname()}:{os.getpid()}".encode()
    return int.from_bytes(hashlib.sha256(ident).digest()[:4], "little")


def open_storage(storage: str | Any) -> Any:
    """Return the Optuna storage for a URL; SQLite gets transactions that claim trials atomically.

    Optuna claims an enqueued (WAITING) trial with `SELECT ... FOR UPDATE` then `UPDATE`.
    SQLite ignores `FOR UPDATE` and pysqlite starts its transaction only at the `UPDATE`, so
    two processes could both read WAITING and both run the same trial, the second one failing
    when it tells a trial the first already finished. Every SQLite transaction of this storage
    therefore starts with `BEGIN IMMEDIATE`, taking the database's write lock before it reads
    (SQLAlchemy's documented pysqlite recipe); waiting processes queue on `timeout`.
    """
    if not isinstance(storage, str) or not storage.startswith("sqlite"):
        return storage
    optuna = require("optuna", "optuna")
    from sqlalchemy import event

    rdb = optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": {"timeout": 60}})
    engine = rdb.engine

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself, below

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made while creating the tables predate the listeners
    return rdb


def run_optuna(
    spec: OptimizeSpec,
    runner: Runner,
    *,
    trials: int | None = None,
    window: Window | None = None,
    storage: str | Any = None,
    study_name: str | None = None,
    on_result: OnResult | None = None,
) -> SearchResult:
    optuna = require("optuna", "optuna")
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n = trials or spec.trials
    t0 = time.perf_counter()
    sampler = optuna.samplers.TPESampler(seed=sampler_seed(spec.seed, isinstance(storage, str)))
    study = optuna.create_study(
        storage=open_storage(storage),
        study_name=study_name,
        sampler=sampler,
        direction=spec.direction,
        load_if_exists=True,
    )
    dists = {k: distribution(r) for k, r in spec.parameters.items()}
    while True:
        remaining = n - len(study.get_trials(deepcopy=False))
        if remaining <= 0:
            break
        asked = {}
        for _ in range(min(spec.batch_size, remaining)):
            trial = study.ask(dists)
            if trial.number >= n:  # another process took the last slots meanwhile
                trial.set_user_attr("surplus", True)
                study.tell(trial, state=TrialState.FAIL)
                break
            asked[trial.number] = trial
        if not asked:
            break
        for o in runner.map([Task(num, dict(t.params), window) for num, t in asked.items()]):
            _tell(study, asked[o.number], o, spec.constraints)
            if on_result:
                on_result(o)
    outcomes = outcomes_from_study(study)
    return _result("optuna", spec, runner, outcomes, t0, window, study_name=study.study_name)


def _tell(study: Any, trial: Any, o: TrialOutcome, constraints: Constraints) -> None:
    from optuna.trial import TrialState

    trial.set_user_attr("metrics", o.metrics)
    trial.set_user_attr("violations", o.violations)
    trial.set_user_attr("error", o.error)
    trial.set_user_attr("bars", o.bars)
    trial.set_user_attr("seconds", o.seconds)
    trial.set_user_attr("cpu_seconds", o.cpu_seconds)
    trial.set_user_attr("worker", o.worker)
    if o.value is None:  # undefined objective or an invalid bot: TPE learns nothing from it
        study.tell(trial, state=TrialState.FAIL)
        return
    # Optuna's constrained optimisation: feasible when every value is <= 0; TPE weighs the excess.
    for key, excess in constraint_excess(o.metrics, constraints).items():
        trial.set_constraint(key, excess)
    study.tell(trial, o.value)


def outcomes_from_study(study: Any) -> list[TrialOutcome]:
    """Rebuild the outcomes of every finished trial of a study (from any process)."""
    from optuna.trial import TrialState

    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        a = t.user_attrs
        if a.get("surplus") or "metrics" not in a:
            continue
        out.append(
            TrialOutcome(
                t.number,
                dict(t.params),
                t.value if t.state == TrialState.COMPLETE else None,
                dict(a["metrics"]),
                list(a.get("violations") or []),
                a.get("error"),
                int(a.get("bars") or 0),
                float(a.get("seconds") or 0.0),
                float(a.get("cpu_seconds") or 0.0),
                str(a.get("worker") or ""),
            )
        )
    return sorted(out, key=lambda o: o.number)


def run_search(
    spec: OptimizeSpec, runner: Runner, *, method: str | None = None, **kwargs: Any
) -> SearchResult:
    """Run the spec's method (or `method`); keyword arguments go to run_grid / run_optuna."""
    if (method or spec.method) == "grid":
        for key in ("trials", "storage", "study_name"):
            kwargs.pop(key, None)
        return run_grid(spec, runner, **kwargs)
    return run_optuna(spec, runner, **kwargs)
