"""Where trials run: in this process, in a local process pool, or on a Dask cluster.

Every runner receives the `Workload` once per worker (pool initializer; Dask `scatter` with
`broadcast=True`) and then only small `Task`s; `map` yields outcomes as they complete.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Self

from trading.exceptions import ATFError
from trading.optimize.trial import Task, TrialOutcome, Workload


class MissingExtraError(ATFError, ImportError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed: install the {extra} extra: pip install 'atf[{extra}]'"
        )


def require(module: str, package: str, extra: str = "optimize") -> Any:
    """Import `module` or raise MissingExtraError naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(package, extra) from None


class Runner:
    """Run tasks in this process (the reference every parallel runner must equal)."""

    workers = 1
    name = "serial"

    def __init__(self) -> None:
        self.workload: Workload | None = None  # what start() shipped; the bars live here too

    def start(self, workload: Workload) -> None:
        self.workload = workload

    def map(self, tasks: Sequence[Task]) -> Iterator[TrialOutcome]:
        assert self.workload is not None, "start() the runner first"
        for task in tasks:
            yield self.workload.run(task)

    def close(self) -> None:
        self.workload = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- process pool
_WORKLOAD: Workload | None = None


def _install(workload: Workload) -> None:
    global _WORKLOAD
    _WORKLOAD = workload


def _run_installed(task: Task) -> TrialOutcome:
    assert _WORKLOAD is not None, "worker started without its workload"
    return _WORKLOAD.run(task)


class PoolRunner(Runner):
    """A pool of `jobs` worker processes; each receives the workload once, in its initializer.

    Workers are started with `forkserver` (fresh interpreters, safe next to the progress
    bar's thread) and kept for the whole run, walk-forward windows included.
    """

    name = "pool"

    def __init__(self, jobs: int) -> None:
        super().__init__()
        self.workers = max(1, jobs)
        self._pool: ProcessPoolExecutor | None = None

    def start(self, workload: Workload) -> None:
        self.close()
        self.workload = workload
        ctx = multiprocessing.get_context("forkserver")
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=ctx, initializer=_install, initargs=(workload,)
        )

    def map(self, tasks: Sequence[Task]) -> Iterator[TrialOutcome]:
        assert self._pool is not None, "start() the runner first"
        futures = [self._pool.submit(_run_installed, t) for t in tasks]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            for fut in futures:
                fut.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.workload = None


# ----------------------------------------------------------------------------- dask
def _run_on_dask(task: Task, workload: Workload) -> TrialOutcome:
    return workload.run(task)


class DaskRunner(Runner):
    """Trials as Dask tasks: `Client(address)` for a running scheduler, else a LocalCluster.

    The workload is scattered to every worker once (`broadcast=True`) and tasks refer to it
    by its future, so each worker deserialises the bars once. Workers of a remote cluster
    need atf installed (and any custom objective or mixin importable).
    """

    name = "dask"

    def __init__(
        self, address: str | None = None, jobs: int = 2, *, processes: bool = True
    ) -> None:
        super().__init__()
        require("distributed", "dask[distributed]")
        self.address = address
        self._jobs = max(1, jobs)
        self._processes = processes
        self._cluster: Any = None
        self._client: Any = None
        self._handle: Any = None

    def start(self, workload: Workload) -> None:
        from distributed import Client, LocalCluster

        if self._client is None:
            if self.address:
                self._client = Client(self.address)
            else:
                self._cluster = LocalCluster(
                    n_workers=self._jobs,
                    threads_per_worker=1,
                    processes=self._processes,
                    dashboard_address=None,
                )
                self._client = Client(self._cluster)
        self.workload = workload
        self._handle = self._client.scatter(workload, broadcast=True, hash=False)

    @property
    def workers(self) -> int:  # type: ignore[override]
        if self._client is None:
            return self._jobs
        return (
            sum(w.get("nthreads", 1) for w in self._client.scheduler_info()["workers"].values())
            or 1
        )

    def map(self, tasks: Sequence[Task]) -> Iterator[TrialOutcome]:
        from distributed import as_completed as dask_completed

        assert self._client is not None, "start() the runner first"
        futures = self._client.map(_run_on_dask, list(tasks), workload=self._handle, pure=False)
        try:
            for fut in dask_completed(futures):
                yield fut.result()
        finally:
            self._client.cancel(futures)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = self._handle = self.workload = None


def make_runner(jobs: int | None = None, scheduler: str | None = None) -> Runner:
    """Return the runner for --jobs and --scheduler ('local': a Dask LocalCluster; 'tcp://…': that scheduler)."""
    jobs = jobs or os.cpu_count() or 1
    if scheduler:
        return DaskRunner(None if scheduler == "local" else scheduler, jobs)
    return Runner() if jobs == 1 else PoolRunner(jobs)
