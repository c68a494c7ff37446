"""The commands that search and read runs: ``demo``, ``run``, ``resume``, ``report``, ``export``."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bambo.cli.common import console, guarded, print_run, require, setup_torch
from bambo.store import CONFIG, JOURNAL

# The MAP family works on model-level coefficients (MAP's c); BAMBO on blocks (BAMBO Sec. 3.2).
MODEL_LEVEL_STRATEGIES = ("map", "bayesian-map", "nested-map", "grid")


def demo(
    benchmark: Annotated[
        str,
        typer.Option(
            help="A registered benchmark: digits (MLPs, seconds), text (MiniLM) or arithmetic (a tiny causal LM: "
            "accuracy against output tokens)."
        ),
    ] = "digits",
    tasks: Annotated[
        str | None, typer.Option(help="Comma-separated tasks to merge (default: the benchmark's two demo tasks).")
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            help="Merge method (task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs, della, linear, slerp)."
        ),
    ] = "task_arithmetic",
    strategy: Annotated[
        str, typer.Option(help="Search strategy: bambo, map, bayesian-map, nested-map, sobol, grid, nsga2, pmto, ...")
    ] = "bambo",
    granularity: Annotated[
        str | None,
        typer.Option(
            help="Coefficient granularity: model, layer or block (default: model for the MAP family, else block)."
        ),
    ] = None,
    blocks: Annotated[int, typer.Option(help="Number of layer blocks K for --granularity block.")] = 3,
    partitioner: Annotated[
        str, typer.Option(help="How layers are grouped into blocks: hybrid (BAMBO's DP), variance, balance, uniform.")
    ] = "hybrid",
    budget: Annotated[int | None, typer.Option(help="Merged models to evaluate (default: the benchmark's).")] = None,
    batch_size: Annotated[int, typer.Option(help="Points proposed per batch.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the benchmark training and of the search.")] = 0,
    output: Annotated[Path, typer.Option(help="Run folder (replaced): journal, config, pareto.csv/json/png.")] = Path(
        "runs/demo"
    ),
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache folder for the benchmark's trained models (default ~/.cache/bambo).")
    ] = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
) -> None:
    """Search merge coefficients on a built-in benchmark and save the run.

    Builds (or loads from the cache) the benchmark's base model and experts fine-tuned on
    real data, runs the strategy (BAMBO by default: block-wise coefficients over a DP
    partition of the layers, warm start, batch qLogNEHVI) as a journaled run in --output
    (replacing a run there), and prints the Pareto set. `bambo report` and `bambo export`
    read the folder like any run's.
    """
    setup_torch(threads)
    granularity = granularity or ("model" if strategy in MODEL_LEVEL_STRATEGIES else "block")

    def work() -> None:
        from bambo import runner
        from bambo.benchmark import get_benchmark, load_benchmark
        from bambo.config import RunConfig

        cls = get_benchmark(benchmark)
        names = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else list(cls.default_tasks)
        cache = None if cache_dir is None else (cache_dir / benchmark).resolve()
        config = RunConfig(
            models={"benchmark": benchmark, "tasks": names, "settings": {"seed": seed}, "cache_dir": cache},
            merge={"method": method, "granularity": granularity, "blocks": blocks, "partitioner": partitioner},
            strategy={"name": strategy},
            budget=budget if budget is not None else cls.default_budget,
            batch_size=batch_size,
            seed=seed,
            output=output,
        )
        start = time.perf_counter()
        bench = load_benchmark(benchmark, {"seed": seed}, cache_dir=cache, progress=console.print)
        console.print(
            f"{benchmark} benchmark ready in {time.perf_counter() - start:.1f} s (tasks {', '.join(bench.task_names)})"
        )
        _print_anchors(bench, names)
        console.print(f"strategy {strategy!r}, method {method!r}, {granularity} granularity, budget {config.budget}")
        problem = runner.build_problem(config, Path.cwd(), benchmark=bench)
        result = runner.start_config(config, Path.cwd(), output, problem=problem, replace=True)
        print_run(output, result)
        timings = result.info.get("timings", [])
        if timings:  # model-based batches: the optimizer's own time
            acq = [t["acquisition_s"] for t in timings]
            fit = [t["fit_s"] for t in timings]
            console.print(
                f"{len(timings)} model-based batches: surrogate fit median {statistics.median(fit):.2f} s, "
                f"{result.info['acquisition']} median {statistics.median(acq):.2f} s, max {max(acq):.2f} s"
            )
        if result.predicted_front is not None:
            console.print(f"{strategy} predicted front: {result.predicted_front.shape[0]} points (in pareto.json)")
        if "recommended_y" in result.info:
            console.print(
                f"{strategy} recommended model: {result.info['recommended_y']} at {result.info['recommended_x']}"
            )
        console.print(f"wrote the run to {output} (`bambo report {output}`, `bambo export {output} --preference ...`)")

    guarded(work)


def _print_anchors(benchmark: object, tasks: list[str]) -> None:
    """The base's and the experts' validation metrics: per task (digits, text) or the benchmark's own
    metrics (arithmetic: accuracy and tokens), with each expert's task-vector size."""
    summary = benchmark.summary()  # type: ignore[attr-defined]
    ratios = dict(zip(benchmark.task_names, benchmark.task_vectors().l1_ratio(), strict=True))  # type: ignore[attr-defined]
    metrics = list(dict.fromkeys(k for row in summary.values() for k in row))
    columns = tasks if all(t in metrics for t in tasks) else metrics
    per_task = columns is tasks
    table = Table(title="Base and experts (validation " + ("accuracy)" if per_task else "metrics)"))
    table.add_column("model")
    for column in columns:
        table.add_column(f"acc/{column}" if per_task else column, justify="right")
    table.add_column("||tau||1/||base||1", justify="right")
    for model in ("base", *tasks):
        if model not in summary:
            continue
        ratio = "" if model == "base" else f"{ratios[model]:.3f}"
        table.add_row(model, *(f"{summary[model][c]:.4f}" for c in columns if c in summary[model]), ratio)
    console.print(table)


def run(
    config: Annotated[Path, typer.Argument(help="YAML run config (see examples/).")],
    output: Annotated[Path | None, typer.Option(help="Run folder (default: the config's `output`).")] = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Evaluate the base model once and check that every objective's metric is a finite number; "
            "writes nothing.",
        ),
    ] = False,
    backend: Annotated[
        str | None, typer.Option(help="Where evaluations run: local or ray (overrides the config's execution).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Ray workers evaluating side by side.")] = None,
    mode: Annotated[
        str | None,
        typer.Option(help="batch, or async: a freed worker gets a new candidate at once (bambo, sobol, random)."),
    ] = None,
) -> None:
    """Run an experiment from a config file, journaling every evaluation (resumable)."""
    require(config)
    from bambo import runner

    setup_torch(threads)
    if check:
        metrics = guarded(lambda: runner.dry_run(config))
        console.print(escape(f"the base model's metrics: {metrics}"))
        console.print("every objective's metric is a finite number; the config is ready for `bambo run`")
        return
    execution = _execution_flags(backend, workers, mode)
    run_dir, result = guarded(lambda: runner.start(config, output, execution=execution))
    print_run(run_dir, result)


def resume(
    run_dir: Annotated[Path, typer.Argument(help="Folder of a run started with `bambo run`.")],
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
    backend: Annotated[str | None, typer.Option(help="Where evaluations run: local or ray (for this resume).")] = None,
    workers: Annotated[int | None, typer.Option(help="Ray workers evaluating side by side.")] = None,
    mode: Annotated[str | None, typer.Option(help="batch or async (for this resume).")] = None,
) -> None:
    """Continue a run from its journal: completed trials are kept, interrupted ones re-run.

    One process writes a run at a time: a resume while the run is going on is refused
    (exit 2) before anything is loaded.
    """
    require(run_dir, JOURNAL, CONFIG)
    from bambo.store import RunLock

    lock = guarded(lambda: RunLock(run_dir / JOURNAL).acquire())  # before the heavy imports
    try:
        from bambo import runner

        setup_torch(threads)
        execution = _execution_flags(backend, workers, mode)
        result = guarded(lambda: runner.resume(run_dir, execution=execution))
    finally:
        lock.release()
    print_run(run_dir, result)


def report(run_dir: Annotated[Path, typer.Argument(help="Folder of a run.")]) -> None:
    """Print a run's Pareto set from its journal and write its plots (no model is loaded).

    The journal is opened read-only (a run in progress, or a read-only folder, is
    fine); plots that cannot be written into the folder are reported, not fatal.
    """
    require(run_dir, JOURNAL)
    from bambo import runner

    result = guarded(lambda: runner.journal_result(run_dir))
    folder = escape(str(run_dir))
    if result.ok.sum() == 0:
        console.print(f"[yellow]{folder}: no completed evaluation yet ({result.n_evaluations} trials)[/yellow]")
        raise typer.Exit(code=1)
    print_run(run_dir, result)
    if not writable(run_dir):
        console.print(f"[yellow]{folder} is read-only: plots not written (the table above is the report)[/yellow]")
        return
    from bambo.plotting import plot_front, plot_front_nd, plot_hypervolume

    plots = [(plot_front, "front.png"), (plot_hypervolume, "hypervolume.png")]
    if len(result.front_columns or result.objective_names) >= 3:
        plots.append((plot_front_nd, "front_nd.png"))
    written = []
    for plot, name in plots:
        try:
            written.append(plot(result, run_dir / name))
        except Exception as exc:  # noqa: BLE001 - a plot that fails never hides the report
            console.print(f"[yellow]could not write {escape(str(run_dir / name))}: {escape(str(exc))}[/yellow]")
    if written:
        console.print("wrote " + ", ".join(str(p) for p in written))


def writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried, not guessed from its mode: root ignores modes)."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def export(
    run_dir: Annotated[Path, typer.Argument(help="Folder of a run.")],
    preference: Annotated[
        str | None, typer.Option(help="Weights of the objectives, e.g. 0.7,0.3 (not needed for --format ax).")
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="safetensors, hf (a Hugging Face folder), mergekit, ax (the whole run as an Ax experiment), "
            "or path (a data-flow run's layer path as JSON). Default: safetensors, path for a data-flow run.",
        ),
    ] = "",
    rule: Annotated[
        str,
        typer.Option(
            help="cosine (BAMBO: closest direction among the top 3, best overall) or weighted-sum (MAP); "
            "strategies with their own model (pmto) answer from it instead."
        ),
    ] = "cosine",
    output: Annotated[Path | None, typer.Option(help="Output path (default: inside the run folder).")] = None,
    refine: Annotated[
        bool, typer.Option(help="pmto runs: climb the unified GP's mean from the task model's answer (no evaluation).")
    ] = False,
) -> None:
    """Pick one model by preference and write its weights or a mergekit config.

    The run's strategy recommends it without evaluating (BAMBO's cosine rule or MAP's
    weighted sum over the Pareto set; a pmto run's task model). With --format ax, write
    the whole run as an Ax experiment instead.
    """
    require(run_dir, JOURNAL, CONFIG)

    def work() -> str:
        from bambo import runner
        from bambo.config import RunConfig
        from bambo.dataflow.problem import DataFlowProblem
        from bambo.errors import ConfigError
        from bambo.export import check_export_target, export_merge

        stored = RunConfig.from_yaml(run_dir / runner.CONFIG)
        chosen = fmt or ("path" if stored.merge.kind == "dataflow" else "safetensors")
        if chosen == "ax":
            from bambo.ax.export import export_to_ax

            target = check_export_target(output or run_dir / "ax_experiment.json", chosen, run_dir)
            problem = runner.build_problem(stored, run_dir)
            path = export_to_ax(problem, runner.journal_result(run_dir), target)
            return f"wrote the run as an Ax experiment: {path}"
        if preference is None:
            raise ConfigError("--preference is required to choose a model (e.g. --preference 0.7,0.3)")
        try:
            weights = [float(v) for v in preference.split(",")]
        except ValueError:
            raise ConfigError(f"--preference must be comma-separated numbers, got {preference!r}") from None
        # the output path is checked before any model is loaded
        target, paths = _export_target(stored, run_dir, chosen, output)
        start = time.perf_counter()
        config, problem, result, choice = runner.recommend(run_dir, weights, rule, refine)
        elapsed = time.perf_counter() - start
        if isinstance(problem, DataFlowProblem):
            from bambo.dataflow.export import export_dataflow

            written = export_dataflow(problem, choice.x, target, chosen, _source_paths(config))
        else:
            written = export_merge(problem, choice.x, target, chosen, paths)
        if choice.row is not None:
            scores = ", ".join(
                f"{n} {v:.4g}" for n, v in zip(result.objective_names, result.Y[choice.row].tolist(), strict=True)
            )
            return f"trial {result.trial_ids[choice.row]} ({scores}), chosen by {choice.source} -> {written}"
        spread = "" if choice.spread is None else f"; predicted spread of the coefficients {choice.spread.mean():.3f}"
        return (
            f"preference {weights} answered in {elapsed * 1000:.0f} ms with no evaluation by {choice.source} "
            f"({result.n_evaluations} journaled evaluations{spread}) -> {written}"
        )

    console.print(escape(guarded(work)))


def _execution_flags(backend: str | None, workers: int | None, mode: str | None) -> dict[str, object] | None:
    """The execution fields the flags set (``None``: the config's own)."""
    flags = {k: v for k, v in (("backend", backend), ("workers", workers), ("mode", mode)) if v is not None}
    return flags or None


def _export_target(config: object, run_dir: Path, fmt: str, out: Path | None) -> tuple[Path, list[Path] | None]:
    """Where ``bambo export`` writes (checked: :func:`bambo.export.check_export_target`), and the model files a
    file format needs (``None`` for a benchmark)."""
    from bambo.errors import ConfigError

    models = config.models  # type: ignore[attr-defined]
    paths = None
    if models.benchmark is None:
        paths = [models.base, *models.experts.values()]
    elif fmt not in ("safetensors", "path"):
        raise ConfigError(
            f"--format {fmt} needs models given as files; a built-in benchmark exports safetensors (or a path)"
        )
    from bambo.export import check_export_target

    default = {
        "safetensors": "merged.safetensors",
        "hf": "merged",
        "mergekit": "mergekit.yml",
        "path": "layer_path.json",
    }.get(fmt, "merged")
    return check_export_target(out or run_dir / default, fmt, run_dir), paths


def _source_paths(config: object) -> dict[str, Path]:
    """A data-flow run's source name -> model file or folder (models given as files; empty for a benchmark)."""
    models = config.models  # type: ignore[attr-defined]
    if models.benchmark is not None:
        return {}
    return {"base": models.base, **models.experts}


__all__ = ["demo", "export", "report", "resume", "run"]
