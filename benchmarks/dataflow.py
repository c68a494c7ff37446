"""Data-flow-space merging on the digits and MiniLM text benchmarks: PS vs DFS vs PS+DFS, mixed BO vs its peers.

Run: ``python -m benchmarks.dataflow`` (writes ``benchmarks/results/dataflow.md``, ``.json``
and ``.png``; ``--benchmarks digits`` or ``--seeds 3`` for a shorter run).

Each benchmark merges its first two experts. The data-flow (DFS) problem
(:meth:`~bambo.dataflow.DataFlowProblem.from_merge_problem`) lays out the two experts'
layers, repeats the pool twice (``r = 2``, T = 24 slots for both benchmarks' 6 layers), pins
the first slot and runs every built model in the first expert's frame (its input layer or
embeddings and its head). Its objectives are the two task accuracies (validation split; on
text the first ``--text-limit`` = 50 texts per task of the 300: a 12-hop MiniLM path over
100 texts of 64 tokens costs several CPU-seconds) and ``hops``, the path's depth
(minimised). Every contender gets the same budget
(``--budget``, 40) in batches of 4 through bambo's experiment loop:

- DFS, mixed BO: BAMBO's default on the DFS problem (GP per objective on canonical
  vectors, qLogNEHVI through :class:`~bambo.acquisition.CanonicalAcquisition`, BoTorch's
  alternating mixed optimiser; warm start: the first expert's own path, every slot,
  the pinned slot only, then Sobol to 8 points);
- DFS, mixed BO without the canonical form (ablation, ``canonical=False``): the same on
  raw decision vectors (a dropped slot's random scale, the same path under other
  encodings), the dependency the survey says must be respected;
- DFS peers (:mod:`benchmarks.dataflow_peers`): CMA-ES with a sign threshold (bambo's
  ``cmaes``: Akiba et al.'s search, here on a weighted sum with weight 1 per task and
  1/T per hop), ``cmaes``'s COMO-CatCMAwM (two objectives only: mean task accuracy and
  hops), pymoo's mixed-variable GA with NSGA-II survival, Optuna's TPE with conditional
  scales, and random search (bambo's ``random``);
- PS only: BAMBO's default on the block-wise task-arithmetic problem (3 blocks, hybrid
  partition); its models have the experts' depth (6 hops);
- PS+DFS (Akiba et al.'s hybrid, sequentially): 16 evaluations of PS, then the DFS
  problem over the PS merge with the best mean accuracy and both experts (``r = 1``, the
  merge's frame) for the rest of the budget. Its hypervolume counts both stages' points.

Hypervolume is measured in (accuracy 1, accuracy 2, hops) against the reference (chance,
chance, T + 1) after 24 and 40 evaluations; the report gives the median and IQR over seeds.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from bambo.benchmark import load_benchmark
from bambo.dataflow.problem import DataFlowProblem
from bambo.merge_problem import MergeProblem
from bambo.pareto import hypervolume
from bambo.problem import Problem
from bambo.strategies import Strategy, get_strategy
from benchmarks.common import RESULTS, Clock, machine_header, median_iqr, run_jobs
from benchmarks.contenders import run_session
from benchmarks.dataflow_peers import ComoCatCMA, OptunaConditionalTPE, PymooMixedNSGA2

BATCH = 4
PS_STAGE = 16  # PS+DFS: evaluations of the parameter-space stage
CHECKPOINTS = (24, 40)


def dfs_problem(merge: MergeProblem, repeats: int = 2) -> DataFlowProblem:
    """The two experts' layers, ``repeats`` times, in the first expert's frame."""
    anchors = merge.anchor_points()
    experts = merge.merger.task_vectors.expert_names
    return DataFlowProblem.from_merge_problem(merge, {e: anchors[i + 1] for i, e in enumerate(experts)}, repeats)


def _bambo(**options: object) -> Callable[[Problem, int], Strategy]:
    return lambda problem, seed: get_strategy("bambo", problem, seed=seed, n_iterations=None, **options)


def _cmaes_sign(problem: Problem, seed: int) -> Strategy:
    slots = problem.space.n_slots  # type: ignore[attr-defined] - a data-flow problem
    weights = [1.0] * (problem.num_objectives - 1) + [1.0 / slots]
    return get_strategy("cmaes", problem, seed=seed, weights=weights)


DFS_CONTENDERS: dict[str, Callable[[Problem, int], Strategy]] = {
    "DFS, mixed BO (bambo)": _bambo(),
    "DFS, mixed BO without canonical form": _bambo(canonical=False),
    "DFS, CMA-ES sign threshold": _cmaes_sign,
    "DFS, COMO-CatCMAwM": lambda p, s: ComoCatCMA(p, seed=s),  # type: ignore[arg-type]
    "DFS, pymoo mixed NSGA-II": lambda p, s: PymooMixedNSGA2(p, seed=s),  # type: ignore[arg-type]
    "DFS, Optuna TPE conditional": lambda p, s: OptunaConditionalTPE(p, seed=s),  # type: ignore[arg-type]
    "DFS, random": lambda p, s: get_strategy("random", p, seed=s),
}
PS = "PS only, BAMBO block-wise"
HYBRID = "PS+DFS, BAMBO then mixed BO"


def _with_depth(Y: Tensor, depth: int) -> Tensor:
    """PS points in the DFS objective space: the model's own depth as ``hops`` (maximisation form)."""
    return torch.cat([Y, torch.full((Y.shape[0], 1), -float(depth), dtype=Y.dtype)], dim=-1)


def run_ps(merge: MergeProblem, depth: int, seed: int, budget: int) -> dict:
    record = run_session(merge, get_strategy("bambo", merge, seed=seed, n_iterations=None), budget, BATCH)
    return {"Y": _with_depth(record.Y, depth), "cpu": record.batch_cpu_seconds, "wall": record.batch_seconds}


def run_hybrid(merge: MergeProblem, depth: int, seed: int, budget: int) -> dict:
    """PS for :data:`PS_STAGE` evaluations, then DFS over the best-mean PS merge and the experts."""
    strategy = get_strategy("bambo", merge, seed=seed, n_iterations=None)
    first = run_session(merge, strategy, PS_STAGE, BATCH)
    X_ok, Y_ok = strategy.completed
    best = X_ok[Y_ok.mean(dim=-1).argmax()]
    anchors = merge.anchor_points()
    experts = merge.merger.task_vectors.expert_names
    sources = {"merge": best, **{e: anchors[i + 1] for i, e in enumerate(experts)}}
    dfs = DataFlowProblem.from_merge_problem(merge, sources, repeats=1)
    second = run_session(dfs, get_strategy("bambo", dfs, seed=seed, n_iterations=None), budget - PS_STAGE, BATCH)
    Y = torch.cat([_with_depth(first.Y, depth), second.Y])
    return {
        "Y": Y,
        "cpu": first.batch_cpu_seconds + second.batch_cpu_seconds,
        "wall": first.batch_seconds + second.batch_seconds,
    }


def hv_at(Y: Tensor, ref: Tensor, n: int) -> float:
    Y = Y[:n]
    Y = Y[torch.isfinite(Y).all(dim=-1)]
    return hypervolume(Y, ref) if Y.shape[0] else 0.0


@functools.cache
def problems(name: str, text_limit: int) -> tuple[MergeProblem, DataFlowProblem]:
    """The benchmark's PS problem and DFS problem (built once per process)."""
    bench = load_benchmark(name)
    tasks = bench.task_names[:2]
    extra = {"limit": text_limit} if name == "text" else {}
    merge = bench.problem(tasks, granularity="block", blocks=3, partitioner="hybrid", **extra)
    return merge, dfs_problem(merge)


def run_contender(job: tuple) -> list[dict]:
    """Every seed of one contender on one benchmark (a job of the process pool); a failed run is a row too."""
    name, label, seeds, budget, text_limit, threads = job
    torch.set_num_threads(threads)
    merge, dfs = problems(name, text_limit)
    depth, ref = dfs.space.n_layers, dfs.ref_point
    rows = []
    for seed in range(seeds):
        clock = Clock()
        row: dict = {"benchmark": name, "contender": label, "seed": seed}
        try:
            if label == PS:
                run = run_ps(merge, depth, seed, budget)
            elif label == HYBRID:
                run = run_hybrid(merge, depth, seed, budget)
            else:
                record = run_session(dfs, DFS_CONTENDERS[label](dfs, seed), budget, BATCH)
                run = {"Y": record.Y, "cpu": record.batch_cpu_seconds, "wall": record.batch_seconds}
        except Exception as exc:  # noqa: BLE001 - one contender's crash is reported, the others still run
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            rows.append(row)
            print(f"  {name} / {label} seed {seed}: FAILED {row['error']}", flush=True)
            continue
        elapsed = clock.elapsed()
        row.update(
            n=int(run["Y"].shape[0]),
            hv={str(n): hv_at(run["Y"], ref, n) for n in CHECKPOINTS if n <= budget},
            optimizer_cpu_s=sum(run["cpu"]),
            optimizer_wall_s_max_batch=max(run["wall"], default=0.0),
            run_wall_s=elapsed.wall,
            run_cpu_s=elapsed.cpu,
            Y=run["Y"].tolist(),
        )
        rows.append(row)
        print(
            f"  {name} / {label} seed {seed}: HV {row['hv']}, optimizer {row['optimizer_cpu_s']:.1f} CPU-s, "
            f"run {elapsed.text()}",
            flush=True,
        )
    return rows


def _run_text(rows: list[dict], args: argparse.Namespace, clock: Clock) -> str:
    """Wall and CPU seconds of the run; with worker processes their runs' CPU seconds are added."""
    elapsed = clock.elapsed()
    if args.jobs <= 1:
        return elapsed.text()
    cpu = elapsed.cpu + sum(r.get("run_cpu_s", 0.0) for r in rows)
    return f"wall {elapsed.wall:.0f} s, CPU {cpu:.0f} s (this process and its {args.jobs} worker processes' runs)"


def _findings(mine: list[dict]) -> list[str]:
    """Which contender leads at the last checkpoint, and where bambo's mixed BO does not, said in the report."""
    runs = [r for r in mine if "error" not in r and r["hv"]]
    if not runs:
        return []
    last = str(max(int(n) for r in runs for n in r["hv"]))
    medians = {
        label: statistics.median(r["hv"][last] for r in runs if r["contender"] == label)
        for label in dict.fromkeys(r["contender"] for r in runs)
    }
    ours, ablation = "DFS, mixed BO (bambo)", "DFS, mixed BO without canonical form"
    lines = [f"Highest median HV at {last}: {max(medians, key=medians.get)}."]
    if ours in medians:
        peers = {k: v for k, v in medians.items() if k.startswith("DFS, ") and k not in (ours, ablation)}
        ahead = [k for k, v in peers.items() if v >= medians[ours]]
        best = max(peers, key=peers.get) if peers else None
        if best is not None:
            verdict = "beats every DFS baseline's" if not ahead else f"does not beat {', '.join(ahead)}"
            lines.append(
                f"Mixed BO's median ({medians[ours]:.4f}) {verdict} (best baseline: {best}, {peers[best]:.4f})."
            )
        if ablation in medians:
            sign = "above" if medians[ours] > medians[ablation] else "not above"
            lines.append(f"With the canonical form it is {sign} the ablation's median ({medians[ablation]:.4f}).")
    return [" ".join(lines), ""]


def render(rows: list[dict], args: argparse.Namespace, clock: Clock, partial: bool = False) -> str:
    lines = [
        "# Data-flow-space merging: PS vs DFS vs PS+DFS, mixed BO vs its peers",
        "",
        machine_header(("torch", "botorch", "pymoo", "optuna", "cmaes", "bambo")),
        f"- command: `python -m benchmarks.dataflow --benchmarks {' '.join(args.benchmarks)} --seeds {args.seeds} "
        f"{'' if args.text_seeds is None else f'--text-seeds {args.text_seeds} '}--jobs {args.jobs} "
        f"--budget {args.budget} --threads {args.threads} --text-limit {args.text_limit}`; "
        f"this run: {_run_text(rows, args, clock)}",
        "- hypervolume in (accuracy 1, accuracy 2, hops) against (chance, chance, T + 1); median [IQR] over seeds;",
        "  optimizer CPU-s: the contender's ask + tell over the run (evaluations excluded), median over seeds",
        *(["- **partial report**: the run goes on; this file is rewritten after every contender"] if partial else []),
        "",
    ]
    for name in args.benchmarks:
        mine = [r for r in rows if r["benchmark"] == name]
        if not mine:
            continue
        lines += [f"## {name}", "", "| contender | HV at 24 | HV at 40 | optimizer CPU-s | slowest batch wall s |"]
        lines.append("|---|---|---|---|---|")
        for label in dict.fromkeys(r["contender"] for r in mine):
            failed = [r for r in mine if r["contender"] == label and "error" in r]
            runs = [r for r in mine if r["contender"] == label and "error" not in r]
            if failed:
                lines.append(f"| {label}: {len(failed)} run(s) FAILED: {failed[0]['error']} | | | | |")
            if not runs:
                continue
            cells = [median_iqr([r["hv"][str(n)] for r in runs if str(n) in r["hv"]]) for n in CHECKPOINTS]
            cpu = statistics.median(r["optimizer_cpu_s"] for r in runs)
            slow = max(r["optimizer_wall_s_max_batch"] for r in runs)
            lines.append(f"| {label} ({len(runs)} seeds) | {cells[0]} | {cells[1]} | {cpu:.1f} | {slow:.2f} |")
        lines.append("")
        lines += _findings(mine)
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, benchmarks: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(benchmarks), figsize=(6 * len(benchmarks), 4.5), squeeze=False)
    for ax, name in zip(axes[0], benchmarks, strict=True):
        mine = [r for r in rows if r["benchmark"] == name and "error" not in r]
        labels = list(dict.fromkeys(r["contender"] for r in mine))
        last = max((int(n) for r in mine for n in r["hv"]), default=None)
        if last is None:
            continue
        data = [[r["hv"][str(last)] for r in mine if r["contender"] == label] for label in labels]
        ax.boxplot(data, vert=False)
        ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=7)
        ax.set_xlabel(f"hypervolume after {last} evaluations")
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", nargs="+", default=["digits", "text"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=max(CHECKPOINTS))
    parser.add_argument("--contenders", nargs="+", default=[*DFS_CONTENDERS, PS, HYBRID])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per benchmark process")
    parser.add_argument("--jobs", type=int, default=1, help="benchmarks run in parallel processes")
    parser.add_argument("--text-seeds", type=int, default=None, help="seeds on text (default: --seeds)")
    parser.add_argument("--text-limit", type=int, default=50, help="validation texts per task scored on text")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    unknown = [c for c in args.contenders if c not in DFS_CONTENDERS and c not in (PS, HYBRID)]
    if HYBRID in args.contenders and args.budget <= PS_STAGE:
        parser.error(f"{HYBRID!r} needs a budget above its {PS_STAGE} PS evaluations")
    if unknown:
        parser.error(f"unknown contenders {unknown}; valid: {[*DFS_CONTENDERS, PS, HYBRID]}")
    clock = Clock()
    args.output.mkdir(parents=True, exist_ok=True)
    report = args.output / "dataflow.md"
    jobs = [
        (name, label, args.text_seeds if name == "text" and args.text_seeds else args.seeds, args.budget)
        for name in args.benchmarks
        for label in args.contenders
    ]
    jobs = [(*job, args.text_limit, args.threads) for job in jobs]
    slow_first = lambda job: (job[0] != "text", "mixed BO" not in job[1] and job[1] != HYBRID)  # noqa: E731

    def partial_report(rows: list[dict], partial: bool) -> None:
        report.write_text(render(rows, args, clock, partial=partial))

    rows = run_jobs(jobs, run_contender, args.jobs, partial_report, first=slow_first)
    (args.output / "dataflow.json").write_text(json.dumps(rows))
    plot(rows, args.output / "dataflow.png", args.benchmarks)
    text = render(rows, args, clock)
    report.write_text(text)
    print(text)
    return report


if __name__ == "__main__":
    main()
