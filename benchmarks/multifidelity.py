"""Multi-fidelity BAMBO (successive halving inside each batch) against full-fidelity BAMBO, by evaluation cost.

Run: ``python -m benchmarks.multifidelity`` (writes ``benchmarks/results/multifidelity.md``,
``.json`` and ``.png``; ``--benchmarks digits`` or ``--seeds 2`` for a shorter run; ``--replot``
redraws the ``.png`` from the ``.json`` of an earlier run without running anything).

Each benchmark merges its first two experts block-wise (3 blocks, BAMBO's hybrid DP
partition), objectives on the validation split:

- ``digits``: accuracy on the two tasks' 359 validation images;
- ``text``: MiniLM accuracy on the two tasks' 300 validation texts each;
- ``arithmetic``: the tiny Llama's accuracy and mean generated tokens (minimised) on its
  200 validation problems (greedy generation).

and a synthetic one, ``noisy``: BraninCurrin observed through a simulated evaluation set of
400 examples (:class:`bambo.benchmarks.noisy.NoisyFidelityProblem`, noise 0.05 of each
objective's spread at fidelity 1, ``0.05 / sqrt(f)`` below), whose hypervolume is measured on
the noise-free values of the full-fidelity evaluations (the merge benchmarks' on the observed
values, which are the objectives themselves).

A fidelity ``f`` scores a nested, seeded subset of ``ceil(f * n)`` of those examples
(:func:`bambo.fidelity.nested_subset`). Contenders, each for ``--budget`` (40) full
evaluations of cost, in batches of 4, through bambo's experiment loop:

- ``BAMBO``: BAMBO's default, every evaluation in full (cost 1 each);
- ``BAMBO + halving``: the same strategy, each batch successive halving
  (:class:`bambo.fidelity.Halving`): ``factor * 4`` candidates at ``fidelity``, at most 4
  promoted to a full evaluation. Digits runs every configuration in :data:`HALVING`,
  arithmetic the first two, text (a full evaluation takes about 9 CPU-s) the default only;
  every configuration run is reported;
- ``MOMF`` (``--contenders``): bambo's model-based option, strategy ``momf`` (a
  multi-fidelity GP and BoTorch's MOMF acquisition over fidelities 0.25 and 1).

Cost counts every evaluation by its fidelity (low-fidelity ones included); hypervolume uses
the full-fidelity evaluations only, against each problem's reference point. The target is
the median over seeds of BAMBO's hypervolume after 40 evaluations; for each seed of a halving
configuration the report gives the cost at which its hypervolume first reaches the target
(censored, ``>`` budget, where it never does) and the ratio of the median of those costs to 40.
Evaluation seconds (the evaluator's own time, summed over trials) are given beside the cost.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
from pathlib import Path

import torch

from bambo.benchmark import load_benchmark
from bambo.benchmarks.noisy import NoisyFidelityProblem
from bambo.experiment import Experiment
from bambo.fidelity import Halving
from bambo.pareto import hypervolume, pareto_mask
from bambo.problem import Problem
from bambo.result import ParetoResult
from bambo.strategies import get_strategy
from benchmarks.common import RESULTS, Clock, machine_header, median_iqr, run_jobs

BATCH = 4
FULL = "BAMBO"
MOMF_LABEL = "MOMF"
HALVING: dict[str, Halving] = {
    "BAMBO + halving (f=0.25, k=3, tell)": Halving(fidelity=0.25, factor=3, low_fidelity="tell"),
    "BAMBO + halving (f=0.25, k=3, drop)": Halving(fidelity=0.25, factor=3, low_fidelity="drop"),
    "BAMBO + halving (f=0.1, k=4, tell)": Halving(fidelity=0.1, factor=4, low_fidelity="tell"),
}
DEFAULT_CONTENDERS = {
    "digits": [FULL, *HALVING],
    "text": [FULL, *list(HALVING)[:1]],
    "arithmetic": [FULL, *list(HALVING)[:2]],
    "noisy": [FULL, *list(HALVING)[:1], MOMF_LABEL],
}
CONTENDERS = [FULL, *HALVING, MOMF_LABEL]


@functools.cache
def build_problem(name: str) -> Problem:
    """The benchmark's block-wise problem of its first two experts, or the noisy synthetic one (once per process)."""
    if name == "noisy":
        return NoisyFidelityProblem(noise=0.05)
    bench = load_benchmark(name)
    tasks = None if name == "arithmetic" else bench.task_names[:2]
    return bench.problem(tasks, granularity="block", blocks=3, partitioner="hybrid")


def hv_curve(Y: torch.Tensor, ref: torch.Tensor) -> list[float]:
    """Hypervolume after each row (maximisation form; NaN rows skipped)."""
    out, front = [], Y[:0]
    for y in Y:
        if torch.isfinite(y).all() and (y > ref).all():
            front = torch.cat([front, y.unsqueeze(0)])
            front = front[pareto_mask(front)]
        out.append(hypervolume(front, ref) if front.shape[0] else 0.0)
    return out


def run_one(name: str, label: str, seed: int, budget: int) -> dict:
    """One seed of one contender: the full-fidelity rows with their costs, timings and counts."""
    problem = build_problem(name)
    if label == MOMF_LABEL:
        strategy = get_strategy("momf", problem, seed=seed)
    else:
        strategy = get_strategy("bambo", problem, seed=seed, n_iterations=None)
    experiment = Experiment(problem, strategy, halving=HALVING.get(label))
    clock = Clock()
    result = experiment.run(budget, BATCH)
    elapsed = clock.elapsed()
    seconds = [t.seconds or 0.0 for t in experiment.trials]
    return {
        "costs": result.costs,
        "Y": result.Y_max.tolist(),
        "hv": hv_curve(_scored(problem, result), problem.ref_point),
        "full_evaluations": result.n_evaluations,
        "low_evaluations": len(experiment.trials) - result.n_evaluations,
        "cost": experiment.cost,
        "evaluation_s": sum(seconds),
        "optimizer_cpu_s": sum(result.info["strategy_cpu_seconds"]),
        "optimizer_wall_s_max_batch": max(result.info["strategy_seconds"], default=0.0),
        "run_wall_s": elapsed.wall,
        "run_cpu_s": elapsed.cpu,
    }


def _scored(problem: Problem, result: ParetoResult) -> torch.Tensor:
    """What the hypervolume is measured on: the observed objectives, or the noise-free ones of a noisy problem."""
    if isinstance(problem, NoisyFidelityProblem):
        Y = torch.full_like(result.Y_max, float("nan"))
        Y[result.ok] = problem.true(result.X[result.ok])
        return Y
    return result.Y_max


def run_job(job: tuple) -> list[dict]:
    """Every seed of one contender on one benchmark (a job of the process pool); a failed run is a row too."""
    name, label, seeds, budget, threads = job
    torch.set_num_threads(threads)
    rows = []
    for seed in range(seeds):
        row: dict = {"benchmark": name, "contender": label, "seed": seed}
        try:
            row.update(run_one(name, label, seed, budget))
        except Exception as exc:  # noqa: BLE001 - one run's crash is reported, the others still run
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            print(f"  {name} / {label} seed {seed}: FAILED {row['error']}", flush=True)
        else:
            print(
                f"  {name} / {label} seed {seed}: HV {row['hv'][-1]:.4f} at cost {row['cost']:.2f} "
                f"({row['full_evaluations']} full, {row['low_evaluations']} low), run {row['run_wall_s']:.0f} s",
                flush=True,
            )
        rows.append(row)
    return rows


def hv_at_cost(row: dict, cost: float) -> float:
    """Hypervolume of the full-fidelity evaluations proposed within ``cost``."""
    values = [hv for c, hv in zip(row["costs"], row["hv"], strict=True) if c <= cost + 1e-9]
    return values[-1] if values else 0.0


def cost_to(row: dict, target: float) -> float:
    """The cost at which the hypervolume first reaches ``target`` (``inf`` if never)."""
    return next((c for c, hv in zip(row["costs"], row["hv"], strict=True) if hv >= target - 1e-12), float("inf"))


def _cost_text(value: float, budget: int) -> str:
    return f"> {budget}" if value == float("inf") else f"{value:.2f}"


def summary(rows: list[dict], name: str, budget: int) -> tuple[float | None, dict[str, dict]]:
    """The target (BAMBO's median HV at ``budget``) and, per contender, its costs to reach it and the ratio."""
    mine = [r for r in rows if r["benchmark"] == name and "error" not in r]
    full = [hv_at_cost(r, budget) for r in mine if r["contender"] == FULL]
    if not full:
        return None, {}
    target = statistics.median(full)
    out = {}
    for label in dict.fromkeys(r["contender"] for r in mine):
        runs = [r for r in mine if r["contender"] == label]
        costs = [cost_to(r, target) for r in runs]
        median = statistics.median(costs)
        out[label] = {"costs": costs, "median_cost": median, "ratio": median / budget}
    return target, out


def render(rows: list[dict], args: argparse.Namespace, clock: Clock, partial: bool = False) -> str:
    checkpoints = sorted({round(0.4 * args.budget), args.budget // 2, args.budget})
    elapsed = clock.elapsed()
    cpu = elapsed.cpu + (sum(r.get("run_cpu_s", 0.0) for r in rows) if args.jobs > 1 else 0.0)
    lines = [
        "# Multi-fidelity BAMBO: successive halving inside each batch, against full-fidelity BAMBO by evaluation cost",
        "",
        machine_header(("torch", "botorch", "transformers", "bambo")),
        f"- command: `python -m benchmarks.multifidelity --benchmarks {' '.join(args.benchmarks)} --seeds {args.seeds} "
        f"--budget {args.budget} --jobs {args.jobs} --threads {args.threads}{_options(args)}`; "
        f"this run: wall {elapsed.wall:.0f} s, "
        f"CPU {cpu:.0f} s (this process{' and its worker processes' if args.jobs > 1 else ''})",
        "- cost: evaluations weighted by fidelity (a full evaluation costs 1); hypervolume over full-fidelity "
        "evaluations only, against the problem's reference point; median [IQR] over seeds",
        f"- target: BAMBO's median hypervolume after {args.budget} full evaluations; cost to target per seed, "
        f"`> {args.budget}` where the run never reached it; ratio = median cost to target / {args.budget} "
        "(the issue's goal: <= 0.4)",
        *(["- **partial report**: the run goes on; this file is rewritten after every contender"] if partial else []),
        "",
    ]
    for name in args.benchmarks:
        mine = [r for r in rows if r["benchmark"] == name]
        if not mine:
            continue
        target, reached = summary(rows, name, args.budget)
        lines += [f"## {name}", ""]
        if target is not None:
            lines += [f"Target hypervolume: {target:.4f}.", ""]
        head = " | ".join(f"HV at cost {c}" for c in checkpoints)
        lines += [
            f"| contender | {head} | cost to target per seed | ratio | full / low evaluations | evaluation s "
            "| optimizer CPU-s |",
            "|---|" + "---|" * (len(checkpoints) + 5),
        ]
        for label in dict.fromkeys(r["contender"] for r in mine):
            failed = [r for r in mine if r["contender"] == label and "error" in r]
            runs = [r for r in mine if r["contender"] == label and "error" not in r]
            if failed:
                lines.append(f"| {label}: {len(failed)} run(s) FAILED: {failed[0]['error']} |")
            if not runs:
                continue
            cells = [median_iqr([hv_at_cost(r, c) for r in runs]) for c in checkpoints]
            info = reached.get(label)
            per_seed = ", ".join(_cost_text(c, args.budget) for c in info["costs"]) if info else "-"
            ratio = "-" if not info else (f"{info['ratio']:.2f}" if info["ratio"] != float("inf") else "not reached")
            counts = (
                f"{statistics.median(r['full_evaluations'] for r in runs):.0f} / "
                f"{statistics.median(r['low_evaluations'] for r in runs):.0f}"
            )
            evaluation = statistics.median(r["evaluation_s"] for r in runs)
            optimizer = statistics.median(r["optimizer_cpu_s"] for r in runs)
            lines.append(
                f"| {label} ({len(runs)} seeds) | {' | '.join(cells)} | {per_seed} | {ratio} | {counts} "
                f"| {evaluation:.1f} | {optimizer:.1f} |"
            )
        lines.append("")
        lines += _findings(target, reached)
    return "\n".join(lines) + "\n"


def _options(args: argparse.Namespace) -> str:
    """The command's optional arguments as given."""
    text = "" if args.contenders is None else " --contenders " + " ".join(f'"{c}"' for c in args.contenders)
    return text + ("" if args.name == "multifidelity" else f" --name {args.name}")


def _findings(target: float | None, reached: dict[str, dict]) -> list[str]:
    """Which halving configurations meet the goal (ratio <= 0.4), said in the report."""
    if target is None:
        return []
    said = []
    for label, info in reached.items():
        if label == FULL:
            continue
        ratio = info["ratio"]
        if ratio == float("inf"):
            said.append(f"{label} did not reach the target in half or more of its seeds: the goal is not met.")
        elif ratio <= 0.4:
            said.append(f"{label} reached the target at {ratio:.2f} of the cost: the goal (<= 0.4) is met.")
        elif ratio < 1.0:
            said.append(
                f"{label} reached the target at {ratio:.2f} of the cost: cheaper, but the goal (<= 0.4) is not met."
            )
        else:
            said.append(f"{label} needed {ratio:.2f} of the cost: no saving here.")
    return [" ".join(said), ""] if said else []


def plot(rows: list[dict], path: Path, benchmarks: list[str], budget: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = [budget * i / 80 for i in range(81)]
    fig, axes = plt.subplots(1, len(benchmarks), figsize=(6 * len(benchmarks), 4.5), squeeze=False)
    for ax, name in zip(axes[0], benchmarks, strict=True):
        mine = [r for r in rows if r["benchmark"] == name and "error" not in r]
        for label in dict.fromkeys(r["contender"] for r in mine):
            runs = [r for r in mine if r["contender"] == label]
            curves = [[hv_at_cost(r, c) for r in runs] for c in grid]
            median = [statistics.median(v) for v in curves]
            low = [min(v) for v in curves]
            high = [max(v) for v in curves]
            (line,) = ax.plot(grid, median, label=f"{label} (median)")
            ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.12)
        target, _ = summary(rows, name, budget)
        if target is not None:
            ax.axhline(target, color="grey", linestyle=":", label="target: BAMBO's median at the budget")
            # zoom on the top: the warm start's first jump would flatten every difference that matters
            top = max(hv_at_cost(r, budget) for r in mine)
            start = min(
                statistics.median(hv_at_cost(r, budget / 4) for r in mine if r["contender"] == label)
                for label in dict.fromkeys(r["contender"] for r in mine)
            )
            if top > start:
                ax.set_ylim(start - 0.05 * (top - start), top + 0.05 * (top - start))
            ax.set_xlim(budget / 4, budget)
        ax.set_xlabel("evaluation cost (full evaluations)")
        ax.set_ylabel("hypervolume (full-fidelity evaluations)")
        ax.set_title(f"{name} (band: min-max over seeds; from cost {budget / 4:g})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", nargs="+", default=["digits", "text", "arithmetic"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--jobs", type=int, default=1, help="(benchmark, contender) jobs run in parallel processes")
    parser.add_argument("--contenders", nargs="+", default=None, help=f"among {CONTENDERS} (default: per benchmark)")
    parser.add_argument("--name", default="multifidelity", help="file name of the report, .json and .png")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--replot", action="store_true", help="redraw <name>.png from <name>.json, run nothing")
    args = parser.parse_args(argv)
    if args.replot:
        rows = json.loads((args.output / f"{args.name}.json").read_text())
        path = args.output / f"{args.name}.png"
        plot(rows, path, list(dict.fromkeys(r["benchmark"] for r in rows)), args.budget)
        return path
    unknown = [b for b in args.benchmarks if b not in DEFAULT_CONTENDERS]
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; valid: {list(DEFAULT_CONTENDERS)}")
    strangers = [c for c in args.contenders or [] if c not in CONTENDERS]
    if strangers:
        parser.error(f"unknown contenders {strangers}; valid: {CONTENDERS}")
    torch.set_num_threads(args.threads)
    clock = Clock()
    args.output.mkdir(parents=True, exist_ok=True)
    report = args.output / f"{args.name}.md"
    jobs = [
        (name, label, args.seeds, args.budget, args.threads)
        for name in args.benchmarks
        for label in (args.contenders or DEFAULT_CONTENDERS[name])
    ]

    def partial_report(rows: list[dict], partial: bool) -> None:
        report.write_text(render(rows, args, clock, partial=partial))

    rows = run_jobs(jobs, run_job, args.jobs, partial_report, first=lambda job: job[0] != "text")  # slow text first
    (args.output / f"{args.name}.json").write_text(json.dumps(rows))
    plot(rows, args.output / f"{args.name}.png", args.benchmarks, args.budget)
    text = render(rows, args, clock)
    report.write_text(text)
    print(text)
    return report


if __name__ == "__main__":
    main()
