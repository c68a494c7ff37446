"""The ``bambo`` command line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.table import Table

import bambo
from bambo.errors import BamboError

app = typer.Typer(
    help="bambo: find the Pareto set of merged neural networks with few evaluations.", no_args_is_help=True
)
console = Console()


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


@app.command()
def demo(
    tasks: Annotated[
        str, typer.Option(help="Comma-separated digits tasks to merge (rotated, inverted, flipped, noisy).")
    ] = "inverted,noisy",
    method: Annotated[
        str,
        typer.Option(
            help="Merge method (task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs, della, linear, slerp)."
        ),
    ] = "task_arithmetic",
    granularity: Annotated[str, typer.Option(help="Coefficient granularity: model, layer or block.")] = "model",
    n_blocks: Annotated[int, typer.Option(help="Number of uniform blocks for --granularity block.")] = 3,
    budget: Annotated[int, typer.Option(help="Number of merged models to evaluate.")] = 32,
    batch_size: Annotated[int, typer.Option(help="Points proposed per batch.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the benchmark training and of the search.")] = 0,
    out: Annotated[Path, typer.Option(help="Folder for pareto.csv, pareto.json and pareto.png.")] = Path("runs/demo"),
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache folder for the trained digits models (default ~/.cache/bambo).")
    ] = None,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
) -> None:
    """Search merge coefficients on the embedded digits benchmark and save the Pareto set.

    Builds (or loads from the cache) a base MLP and experts fine-tuned on real handwritten
    digits, evaluates Sobol points of the merge coefficients, prints the Pareto set and writes
    pareto.csv, pareto.json and pareto.png to --out.
    """
    from bambo.benchmarks.digits import DigitsBenchmark, DigitsConfig
    from bambo.optimize import optimize
    from bambo.report import pareto_table, write_pareto

    torch.set_num_threads(threads)
    names = tuple(t.strip() for t in tasks.split(",") if t.strip())
    try:
        start = time.perf_counter()
        benchmark = DigitsBenchmark.build(DigitsConfig(seed=seed), cache_dir=cache_dir and cache_dir / "digits")
        console.print(
            f"digits benchmark ready in {time.perf_counter() - start:.1f} s (tasks {', '.join(benchmark.tasks)})"
        )
        _print_anchors(benchmark, names)
        problem = benchmark.problem(names, method=method, granularity=granularity, n_blocks=n_blocks)  # type: ignore[arg-type]
        console.print(f"search space: {problem.space}, method {method!r}, budget {budget}")
        result = optimize(problem, "sobol", budget=budget, batch_size=batch_size, seed=seed)
    except BamboError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=2) from None
    console.print(pareto_table(result, title=f"Pareto set ({int(result.pareto_mask.sum())} of {budget} evaluated)"))
    if result.errors:
        console.print(f"[yellow]{len(result.errors)} evaluations failed[/yellow]")
    metadata = {
        "benchmark": "digits",
        "tasks": list(names),
        "method": method,
        "granularity": granularity,
        "strategy": "sobol",
        "budget": budget,
        "batch_size": batch_size,
        "seed": seed,
        "config": benchmark.config.model_dump(),
    }
    paths = write_pareto(result, out, metadata, title=f"digits: {' vs '.join(names)} ({method}, {granularity})")
    console.print("wrote " + ", ".join(str(p) for p in paths))


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
    benchmark = DigitsBenchmark.build(DigitsConfig(seed=seed), cache_dir=cache_dir and cache_dir / "digits")
    typer.echo(describe(benchmark, split))  # type: ignore[arg-type]


def _print_anchors(benchmark: object, tasks: tuple[str, ...]) -> None:
    summary = benchmark.summary()  # type: ignore[attr-defined]
    ratios = dict(zip(benchmark.tasks, benchmark.task_vectors().l1_ratio(), strict=True))  # type: ignore[attr-defined]
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
