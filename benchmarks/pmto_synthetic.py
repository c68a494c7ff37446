"""(theta_l, theta_u)-PMTO on the paper's synthetic task families (issue 9's acceptance run).

Run: ``python -m benchmarks.pmto_synthetic`` (Sphere and Griewank, both shifts, 5 seeds;
``--functions sphere ackley rastrigin griewank`` for all four). Writes
``benchmarks/results/pmto_synthetic.md``, ``.json`` and ``pmto_synthetic.png`` (box plots).

Protocol (the paper's, at a budget two cores can afford): x in [0, 1]^4, theta in
[0, 1]^2; test tasks: the 5 x 5 grid ``linspace(0.1, 0.9, 5)^2`` (25 tasks). Per seed:

- **PMTO** (evolved tasks) and **PMTO-random** (tasks drawn uniformly, the paper's
  ablation): an offline budget of 10 evaluations per test task (250), then the task
  model's answer for every test task, scored on the true function (zero online
  evaluations);
- **single-task BO**: bambo's BO (GP + qLogNEI, 4 Sobol points then batches of 2) run
  separately on every test task with 10 evaluations each: the same 250 in total,
  scored by the best value it found.

Each method's score per seed is the 5/25/50/75/95% quantiles of the true values over
the 25 test tasks (lower is better; every task's optimum is 0); the table reports the
median over seeds, and a quantile is a win for PMTO when its median is below
single-task BO's. Pool diversity (log-determinant of a fixed RBF kernel, lengthscale
0.2, and mean nearest-neighbour distance, unit box) compares evolved and random tasks.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from bambo.benchmarks.task_families import FUNCTIONS, SHIFTS, TaskFamily
from bambo.experiment import Experiment
from bambo.facade import optimize
from bambo.strategies import BAMBO
from bambo.strategies.pmto import PMTO
from benchmarks.common import RESULTS, Clock, Timing, machine_header

QUANTILES = (0.05, 0.25, 0.50, 0.75, 0.95)
METHODS = ("PMTO", "PMTO-random", "single-task BO")


def test_tasks(levels: int = 5) -> torch.Tensor:
    """The test grid over theta in [0, 1]^2, shape ``(levels^2, 2)``."""
    if levels < 2:
        raise SystemExit(f"--levels must be >= 2, got {levels}")
    g = torch.linspace(0.1, 0.9, levels, dtype=torch.float64)
    return torch.cartesian_prod(g, g)


def run_pmto(family: TaskFamily, tests: torch.Tensor, seed: int, budget: int, selection: str) -> dict:
    """PMTO's offline search and its zero-evaluation answers for the test tasks, timed in wall and CPU seconds."""
    clock = Clock()
    # the paper's reference runs spend 10% of the budget on 20 initial tasks; here 10 tasks x 4 (16% of 250)
    strategy = PMTO(family, seed=seed, task_selection=selection, n_initial_tasks=max(2, min(10, budget // 25)))
    Experiment(family, strategy).run(budget, batch_size=budget)
    offline = clock.elapsed()
    clock.restart()
    x, _ = strategy.predict_solution(tests)
    online = clock.elapsed()
    values = family.value(x, tests)
    pool = strategy.artifacts().info["pmto"]
    return {
        "values": values.tolist(),
        "seconds": offline.wall,
        "cpu_seconds": offline.cpu,
        "online_s": online.wall,
        "online_cpu_s": online.cpu,
        "diversity": pool["diversity"],
    }


def run_single_task(family: TaskFamily, tests: torch.Tensor, seed: int, per_task: int) -> dict:
    """Single-task BO on every test task, timed in wall and CPU seconds."""
    clock = Clock()
    values = []
    for j, theta in enumerate(tests):
        task = family.fixed_task(theta)
        strategy = BAMBO(task, seed=seed * 1000 + j, n_initial=4, heuristics=False, n_iterations=None)
        result = optimize(task, strategy, budget=per_task, batch_size=2, progress=False)
        values.append(float(result.Y[result.ok].min()))
    elapsed = clock.elapsed()
    return {"values": values, "seconds": elapsed.wall, "cpu_seconds": elapsed.cpu}


def quantiles(values: list[float]) -> list[float]:
    return torch.quantile(
        torch.tensor(values, dtype=torch.float64), torch.tensor(QUANTILES, dtype=torch.float64)
    ).tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", nargs="+", default=["sphere", "griewank"], choices=sorted(FUNCTIONS))
    parser.add_argument("--shifts", nargs="+", default=list(SHIFTS), choices=sorted(SHIFTS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--per-task", type=int, default=10, help="evaluations per test task (budget = tasks x this)")
    parser.add_argument("--levels", type=int, default=5, help="test grid levels per task dimension (5: 25 tasks)")
    parser.add_argument("--name", default="pmto_synthetic")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    tests = test_tasks(args.levels)
    budget = args.per_task * tests.shape[0]
    clock = Clock()
    runs: dict[str, dict[str, list[dict]]] = {}
    for function in args.functions:
        for shift in args.shifts:
            family = TaskFamily(function, shift, n=4, k=2)
            label = family.label
            runs[label] = {m: [] for m in METHODS}
            for seed in range(args.seeds):
                runs[label]["PMTO"].append(run_pmto(family, tests, seed, budget, "evolution"))
                runs[label]["PMTO-random"].append(run_pmto(family, tests, seed, budget, "random"))
                runs[label]["single-task BO"].append(run_single_task(family, tests, seed, args.per_task))
                print(label, seed, {m: round(runs[label][m][-1]["seconds"], 1) for m in METHODS}, flush=True)
    elapsed = clock.elapsed()
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"{args.name}.json").write_text(json.dumps(runs))
    report = write_report(runs, args, budget, elapsed)
    print(report)
    return 0


def write_report(runs: dict, args: argparse.Namespace, budget: int, elapsed: Timing) -> str:
    """Write the markdown report and the box plot of :func:`main`'s runs (every figure measured in them)."""
    heads = " | ".join(f"q{int(q * 100)}" for q in QUANTILES)
    lines = [
        "# (theta_l, theta_u)-PMTO on synthetic task families",
        "",
        machine_header(),
        f"- command: `python -m benchmarks.pmto_synthetic --functions {' '.join(args.functions)} "
        f"--seeds {args.seeds} --per-task {args.per_task} --levels {args.levels}"
        f"{'' if args.name == 'pmto_synthetic' else ' --name ' + args.name} --threads {args.threads}`; "
        f"this run: {elapsed.text()} "
        "(this process, all threads)",
        f"- x in [0,1]^4, theta in [0,1]^2, {args.levels**2} test tasks ({args.levels} x {args.levels} grid over "
        f"[0.1, 0.9]^2); offline budget "
        f"{budget} for PMTO; single-task BO: {args.per_task} evaluations on each test task ({budget} in total)",
        "- values: true objective (0 is optimal, lower is better) of PMTO's zero-evaluation answer and of "
        "single-task BO's best point per test task; quantiles over the test tasks, median over "
        f"{args.seeds} seeds; **bold**: PMTO beats single-task BO at that quantile",
        "",
        f"| family | method | {heads} | offline wall / CPU s (median) |",
        "|---|---|" + "---|" * len(QUANTILES) + "---|",
    ]
    wins_total, count_total, diversity_lines = 0, 0, []
    for label, methods in runs.items():
        med = {
            m: [statistics.median(q) for q in zip(*[quantiles(r["values"]) for r in rs], strict=True)]
            for m, rs in methods.items()
        }
        for m in METHODS:
            cells = []
            for i, v in enumerate(med[m]):
                win = m == "PMTO" and v < med["single-task BO"][i]
                cells.append(f"**{v:.3g}**" if win else f"{v:.3g}")
            wall = statistics.median(r["seconds"] for r in methods[m])
            cpu = statistics.median(r["cpu_seconds"] for r in methods[m])
            lines.append(f"| {label} | {m} | " + " | ".join(cells) + f" | {wall:.1f} / {cpu:.1f} |")
        wins = sum(a < b for a, b in zip(med["PMTO"], med["single-task BO"], strict=True))
        wins_total, count_total = wins_total + wins, count_total + len(QUANTILES)
        div = {
            m: {key: statistics.median(r["diversity"][key] for r in methods[m]) for key in ("log_det", "nn_distance")}
            for m in ("PMTO", "PMTO-random")
        }
        online = max((r["online_s"], r["online_cpu_s"]) for r in methods["PMTO"])
        diversity_lines.append(
            f"| {label} | {wins}/{len(QUANTILES)} "
            f"| {div['PMTO']['log_det']:.1f} vs {div['PMTO-random']['log_det']:.1f} "
            f"| {div['PMTO']['nn_distance']:.3f} vs {div['PMTO-random']['nn_distance']:.3f} "
            f"| {online[0] * 1000:.0f} / {online[1] * 1000:.0f} ms |"
        )
    lines += [
        "",
        f"**PMTO beats single-task BO at {wins_total} of {count_total} quantiles** (the paper: 31 of 40).",
        "",
        "| family | PMTO wins (quantiles) | pool log-det, evolved vs random | nearest-neighbour distance, "
        f"evolved vs random | slowest online answer ({args.levels**2} tasks), wall / CPU |",
        "|---|---|---|---|---|",
        *diversity_lines,
        "",
        f"![{args.name}.png]({args.name}.png)",
    ]
    plot(runs, args.output / f"{args.name}.png")
    text = "\n".join(lines) + "\n"
    (args.output / f"{args.name}.md").write_text(text)
    return text


def plot(runs: dict, path: Path) -> None:
    """One panel per family: box plots over seeds of each quantile, per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.8), squeeze=False)
    colors = {"PMTO": "tab:blue", "PMTO-random": "tab:orange", "single-task BO": "tab:gray"}
    for ax, (label, methods) in zip(axes[0], runs.items(), strict=True):
        for i, m in enumerate(METHODS):
            per_q = list(zip(*[quantiles(r["values"]) for r in methods[m]], strict=True))
            positions = [q * 4 + i for q in range(len(QUANTILES))]
            box = ax.boxplot(per_q, positions=positions, widths=0.8, patch_artist=True, showfliers=False)
            for patch in box["boxes"]:
                patch.set_facecolor(colors[m])
        ax.set_xticks([q * 4 + 1 for q in range(len(QUANTILES))], [f"q{int(q * 100)}" for q in QUANTILES])
        ax.set_yscale("log")
        ax.set_title(label, fontsize=9)
        ax.set_ylabel("true value at the answer (lower is better)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    fig.legend(handles, list(colors), loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
