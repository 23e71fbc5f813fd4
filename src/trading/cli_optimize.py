"""`atf optimize CONFIG`: grid or Optuna search, walk-forward, local or Dask workers (docs/optimize.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from trading.exceptions import ATFError

console = Console()
err = Console(stderr=True)


def _fail(exc: BaseException) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code=1)


def optimize(
    config: Annotated[Path, typer.Argument(help="Bot YAML file with an `optimize:` section.")],
    method: Annotated[str | None, typer.Option(help="grid | optuna (default: the file's).")] = None,
    trials: Annotated[
        int | None, typer.Option(min=1, help="Optuna trials (default: the file's).")
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", "-j", min=1, help="Worker processes (default: all cores)."),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Run on Dask: 'local' for a LocalCluster of --jobs workers, or a scheduler address tcp://HOST:8786."
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            envvar="ATF_OPTUNA_STORAGE",
            help="Optuna RDB storage URL shared by several processes or machines.",
        ),
    ] = None,
    study: Annotated[
        str | None, typer.Option(help="Optuna study name (default: the bot's name).")
    ] = None,
    walk_forward: Annotated[
        bool, typer.Option("--walk-forward", help="Rolling in-sample / out-of-sample analysis.")
    ] = False,
    train: Annotated[
        str | None, typer.Option(help="In-sample window, e.g. 180d (default: the file's).")
    ] = None,
    test: Annotated[str | None, typer.Option(help="Out-of-sample window, e.g. 30d.")] = None,
    step: Annotated[
        str | None, typer.Option(help="Shift between windows (default: --test).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Folder for the report files.")
    ] = None,
    top: Annotated[int, typer.Option(help="Rows in the best-trials table.")] = 10,
) -> None:
    """Search mixin and risk parameters; write trials CSV/JSON, a heatmap and the best bot as YAML."""
    from trading.engine import load_bars
    from trading.optimize import load_study, make_runner
    from trading.optimize.trial import Workload

    try:
        st = load_study(config)
        spec = st.spec
        if method is not None and method not in ("grid", "optuna"):
            raise ATFError(f"--method must be grid or optuna, not {method!r}")
        method = method or spec.method
        if method == "grid" and (storage or study):
            raise ATFError("--storage and --study apply to --method optuna")
        wf_lengths = _walk_forward_lengths(spec, train, test, step) if walk_forward else None
        frames = load_bars(st.config)
        runner = make_runner(jobs, scheduler)
    except (ATFError, FileNotFoundError, ValueError) as exc:
        raise _fail(exc) from None

    n = spec.grid_size() if method == "grid" else (trials or spec.trials)
    if method == "grid" and trials is not None:
        err.print(
            f"[yellow]note:[/yellow] a grid runs all {n} combinations; --trials applies to optuna"
        )
    where = runner.name if runner.name != "dask" else f"dask ({scheduler})"
    console.print(
        f"{st.config.bot.name}: {method}, {n} trials per search, {runner.workers} worker(s) ({where}), "
        f"objective {spec.direction} {spec.objective}"
    )
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    outdir = output or Path("results") / "optimize" / f"{st.config.bot.name}-{stamp}"
    study_name = study or (st.config.bot.name if storage else None)
    try:
        with runner:
            runner.start(Workload.from_study(st, frames))
            if wf_lengths is None:
                result = _search(st, runner, method, trials, storage, study_name, n)
            else:
                result = _walk(st, runner, method, trials, storage, study_name, n, wf_lengths)
    except ATFError as exc:
        raise _fail(exc) from None
    _report(st, result, outdir, top)


def _walk_forward_lengths(spec: Any, train: str | None, test: str | None, step: str | None) -> Any:
    from trading.optimize.spec import WalkForwardSpec

    base = spec.walk_forward or WalkForwardSpec()
    try:
        wf = WalkForwardSpec(
            train=train or base.train,
            test=test or base.test,
            step=step or (base.step if not test else None),
        )
        return wf.lengths()
    except ValueError as exc:
        raise ATFError(f"walk-forward: {exc}") from None


def _progress() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[best]}"),
        console=err,
        transient=True,
    )


def _tracker(bar: Any, task: Any, direction: str) -> Any:
    best: list[float] = []

    def on_result(o: Any) -> None:
        if o.feasible and (
            not best or (o.value > best[0] if direction == "maximize" else o.value < best[0])
        ):
            best[:] = [o.value]
        bar.update(task, advance=1, best=f"best {best[0]:.4g}" if best else "")

    return on_result


def _search(
    st: Any,
    runner: Any,
    method: str,
    trials: int | None,
    storage: str | None,
    study_name: str | None,
    n: int,
) -> Any:
    from trading.optimize import run_search

    with _progress() as bar:
        task = bar.add_task(method, total=n, best="")
        return run_search(
            st.spec,
            runner,
            method=method,
            trials=trials,
            storage=storage,
            study_name=study_name,
            on_result=_tracker(bar, task, st.spec.direction),
        )


def _walk(
    st: Any,
    runner: Any,
    method: str,
    trials: int | None,
    storage: str | None,
    study_name: str | None,
    n: int,
    lengths: Any,
) -> Any:
    from trading.optimize.walkforward import data_span, make_windows, run_walk_forward

    train, test, step = lengths
    with _progress() as bar:
        task = bar.add_task("walk-forward", total=None, best="")

        def on_window(w: Any) -> None:
            bar.update(task, description=f"window {w.index}")

        wl = runner.workload
        windows = make_windows(*data_span(wl.frames), train, test, step)
        bar.update(task, total=len(windows) * (n + 1))
        return run_walk_forward(
            st.spec,
            runner,
            wl,
            train=train,
            test=test,
            step=step,
            method=method,
            trials=trials,
            storage=storage,
            study_name=study_name,
            on_result=_tracker(bar, task, st.spec.direction),
            on_window=on_window,
        )


def _report(st: Any, result: Any, outdir: Path, top: int) -> None:
    from trading.optimize.report import (
        best_table,
        walk_forward_table,
        write_report,
        write_walk_forward,
    )
    from trading.optimize.walkforward import WalkForwardResult

    if isinstance(result, WalkForwardResult):
        paths = write_walk_forward(st, result, outdir)
        console.print(walk_forward_table(result))
        for note in result.notes:
            err.print(f"[yellow]note:[/yellow] {escape(note)}")
        best, label = result.last_best, "Best of the latest in-sample window:"
    else:
        paths = write_report(st, result, outdir)
        console.print(best_table(result, top))
        best, label = result.best, "Best:   "
    if best is None:
        err.print("[yellow]no trial satisfied the constraints[/yellow]: no best.yaml written")
    else:
        params = ", ".join(f"{k}={v!r}" for k, v in best.params.items())
        console.print(
            f"{label} trial {best.number}: {params} -> {st.spec.objective} {best.value:.6g}"
        )
    width = max(len(k) for k in paths) + 2
    for key, path in paths.items():
        console.print(f"{key + ':':{width}}{path}", highlight=False, soft_wrap=True)
