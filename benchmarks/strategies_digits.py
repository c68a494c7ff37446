"""MAP, Bayesian MAP, nested MAP and BAMBO on the digits benchmark (issue 6's acceptance figures).

Run: ``python -m benchmarks.strategies_digits`` (or ``make bench-strategies``).
Writes ``benchmarks/results/strategies_digits.md``, ``.json`` and ``strategies_digits.png``.

Sections (objectives: validation accuracy of each task, maximised):

1. MAP (30 Sobol points, quadratic with sigmoid link, NSGA-III) against a 14 x 14
   = 196-point grid (the paper's ~200-point direct search) on two experts at model
   level: MAP's win rate over the grid front (MAP Table 2) and IGD/GD of each
   front against the front of a dense 101 x 101 grid (MAP Fig. 6 / App. D).
2. Bayesian MAP (6 + 3 + 3 points) against MAP with 6, 9 and 12 points: IGD/GD of
   the predicted fronts against the dense front (MAP Fig. 14), median of seeds.
3. Nested MAP on four experts: evaluation counts (the paper's count and merged
   models) and the preference-weighted accuracy of the recommended model, next to
   plain MAP with as many merged models (its preference pick re-evaluated) and a
   uniform task-arithmetic merge.
4. BAMBO at block level (BAMBO's DP partition, K = 3 blocks + embeddings + head,
   2 experts, d = 10; 8 + 13 x 4 evaluations) against the model-level baselines of
   BAMBO Table 2 (TA, TIES, DARE-TIES, Breadcrumbs, DELLA at the interpolation
   weights 0.1..0.9, plus TA on the 9 x 9 grid) and model-level BAMBO: how many
   baseline points BAMBO's Pareto set dominates, and who makes up the joint front.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import matplotlib
import torch

from bambo.benchmarks.digits import DigitsBenchmark, DigitsConfig
from bambo.facade import optimize
from bambo.merge_problem import MergeProblem
from bambo.pareto import (
    dominated_by,
    generational_distance,
    hypervolume,
    inverted_generational_distance,
    pareto_front,
    win_rate,
)
from bambo.selection import select_weighted_sum
from bambo.strategies import MAP, BayesianMAP, GridSearch, NestedMAP, get_strategy
from benchmarks.common import RESULTS, Clock, machine_header

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PAIR = ("inverted", "noisy")
BASELINE_METHODS = {
    "TA": "task_arithmetic",
    "TIES": "ties",
    "DARE-TIES": "dare_ties",
    "Breadcrumbs": "breadcrumbs",
    "DELLA": "della",
}


def grid_points(levels: torch.Tensor) -> torch.Tensor:
    """The product grid of ``levels`` in 2-D, shape ``(len(levels) ** 2, 2)``."""
    return torch.cartesian_prod(levels, levels).to(torch.float64)


def dense_front(problem: MergeProblem, n: int) -> torch.Tensor:
    """Pareto front of an ``n x n`` grid over the box (maximisation form)."""
    return pareto_front(problem.evaluate(grid_points(torch.linspace(0, 1, n))))


def front_scores(front: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    return {
        "igd": inverted_generational_distance(front, reference),
        "gd": generational_distance(front, reference),
    }


def med(values: list[float]) -> float:
    return float(statistics.median(values))


# -- 1. MAP vs grid ---------------------------------------------------------------------------


def map_vs_grid(problem: MergeProblem, reference: torch.Tensor, seeds: list[int]) -> tuple[list[str], dict]:
    grid_Y = problem.evaluate(grid_points(torch.linspace(0, 1, 14)))
    grid_front = pareto_front(grid_Y)
    rows: dict[str, list[dict[str, float]]] = {"MAP predicted (30 pts)": [], "MAP real (re-evaluated)": []}
    sobol_rows = []
    for seed in seeds:
        result = optimize(problem, MAP(problem, seed=seed, n_samples=30, n_reevaluate=20), budget=50, progress=False)
        predicted = pareto_front(result.predicted_front_max)
        real = pareto_front(result.Y_max[30:])
        for label, front in (("MAP predicted (30 pts)", predicted), ("MAP real (re-evaluated)", real)):
            rows[label].append({**front_scores(front, reference), "win_rate": win_rate(front, grid_front)})
        sobol = optimize(problem, "sobol", budget=30, seed=seed, progress=False)
        sobol_rows.append(
            {
                **front_scores(pareto_front(sobol.Y_max), reference),
                "win_rate": win_rate(pareto_front(sobol.Y_max), grid_front),
            }
        )
    rows["Sobol, 30 evaluated points"] = sobol_rows
    grid_scores = front_scores(grid_front, reference)
    lines = [
        "## 1. MAP (30 points) vs a 196-point grid, 2 experts at model level",
        "",
        f"Tasks {PAIR[0]} vs {PAIR[1]}, task arithmetic, c in [0, 1]^2. Reference front: the {reference.shape[0]} "
        f"non-dominated points of a 101 x 101 grid. Median over seeds {seeds}.",
        "Paper (MAP Table 2, 2 tasks, 30 points vs 200-point direct search): win rate 49.81% (+-0.30); "
        "Fig. 6 plots IGD/GD (no values in the text); its NIH example (Fig. 7, 30 points vs 400): IGD 0.016, GD 0.014.",
        "",
        "| front | win rate over the 196-point grid front | IGD vs dense front | GD vs dense front |",
        "|---|---|---|---|",
    ]
    for label, runs in rows.items():
        lines.append(
            f"| {label} | {100 * med([r['win_rate'] for r in runs]):.1f}% | {med([r['igd'] for r in runs]):.4f} "
            f"| {med([r['gd'] for r in runs]):.4f} |"
        )
    lines.append(f"| 196-point grid | (50% by definition) | {grid_scores['igd']:.4f} | {grid_scores['gd']:.4f} |")
    return lines + [""], {"rows": rows, "grid": grid_scores}


# -- 2. Bayesian MAP vs MAP -----------------------------------------------------------------------


def bayesian_vs_plain(problem: MergeProblem, reference: torch.Tensor, seeds: list[int]) -> tuple[list[str], dict]:
    settings = {
        "MAP, 6 points": lambda s: MAP(problem, seed=s, n_samples=6, sampler="uniform"),
        "MAP, 9 points": lambda s: MAP(problem, seed=s, n_samples=9, sampler="uniform"),
        "MAP, 12 points": lambda s: MAP(problem, seed=s, n_samples=12, sampler="uniform"),
        "Bayesian MAP, 6 + 3 points": lambda s: BayesianMAP(problem, seed=s, n_rounds=1),
        "Bayesian MAP, 6 + 3 + 3 points": lambda s: BayesianMAP(problem, seed=s, n_rounds=2),
    }
    raw: dict[str, list[dict[str, float]]] = {}
    for label, make in settings.items():
        raw[label] = []
        for seed in seeds:
            result = optimize(problem, make(seed), budget=100, batch_size=3, progress=False)
            raw[label].append(front_scores(pareto_front(result.predicted_front_max), reference))
    lines = [
        "## 2. Bayesian MAP (6 + 3 + 3) vs MAP (12), predicted fronts",
        "",
        f"Same problem and reference front as section 1; uniform samples as in MAP App. E.3; median over "
        f"{len(seeds)} seeds (MAP Fig. 14 averages 7 task pairs).",
        "",
        "| setting | IGD median | IGD per seed | GD median |",
        "|---|---|---|---|",
    ]
    for label, runs in raw.items():
        igd = [r["igd"] for r in runs]
        lines.append(
            f"| {label} | {med(igd):.4f} | {', '.join(f'{v:.3f}' for v in igd)} | {med([r['gd'] for r in runs]):.4f} |"
        )
    b12, m12 = raw["Bayesian MAP, 6 + 3 + 3 points"], raw["MAP, 12 points"]
    wins = sum(b["igd"] < m["igd"] for b, m in zip(b12, m12, strict=True))
    lines += [
        "",
        f"Bayesian MAP (12 points) has the lower IGD than MAP (12 points) in {wins} of {len(seeds)} seeds.",
        "",
    ]
    return lines, raw


# -- 3. Nested MAP on four experts -------------------------------------------------------------


def nested_vs_plain(bench: DigitsBenchmark, seed: int) -> tuple[list[str], dict]:
    problem = bench.problem(list(bench.tasks))
    m = problem.num_objectives
    preferences = {
        "equal": [1.0] * m,
        "first-heavy": [0.55] + [0.15] * (m - 1),
        "last-heavy": [0.15] * (m - 1) + [0.55],
    }
    raw: dict[str, dict] = {}
    uniform = problem.evaluate(torch.full((1, m), 0.3, dtype=torch.float64))[0]
    for label, pref in preferences.items():
        w = torch.tensor(pref, dtype=torch.float64) / sum(pref)
        nested = optimize(problem, NestedMAP(problem, seed=seed, preference=pref), budget=10_000, progress=False)
        n_models = nested.n_evaluations
        plain = MAP(problem, seed=seed, n_samples=n_models - 1)
        plain_result = optimize(problem, plain, budget=n_models - 1, progress=False)
        X_front, Y_front = plain_result.predicted_X, plain_result.predicted_front_max
        x_pick = X_front[select_weighted_sum(Y_front, w)]
        y_pick = problem.evaluate(x_pick.unsqueeze(0))[0]
        raw[label] = {
            "preference": w.tolist(),
            "nested": {
                "task_evaluations": nested.info["task_evaluations"],
                "merged_models": n_models,
                "score": nested.info["recommended_preference_score"],
                "x": nested.info["recommended_x"],
                "accuracy": nested.info["recommended_y"],
            },
            "map": {"merged_models": n_models, "task_evaluations": n_models * m, "score": float(y_pick @ w)},
            "uniform_ta_0.3": float(uniform @ w),
        }
    lines = [
        f"## 3. Nested MAP on {m} experts ({', '.join(bench.tasks)})",
        "",
        "Preference-weighted validation accuracy of the recommended model (evaluated). Nested MAP: experts alone, "
        "then 2-task MAPs of 20 points each, paired by closeness, c* by the preference. Plain MAP: "
        "as many merged models on a 4-D Sobol design, its preference pick on the NSGA-III front re-evaluated. "
        "Task evaluations count a merged model once per task it is scored on (the paper's count: "
        "T x N x log2 N = 20 x 4 x 2 = 160 here; 480 for N = 8).",
        "",
        "| preference | nested MAP score | its task evaluations / merged models | plain MAP score "
        "| its task evaluations / merged models | TA, all c = 0.3 |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in raw.items():
        nested, plain = r["nested"], r["map"]
        lines.append(
            f"| {label} {[round(v, 2) for v in r['preference']]} | {nested['score']:.4f} "
            f"| {nested['task_evaluations']} / {nested['merged_models']} | {plain['score']:.4f} "
            f"| {plain['task_evaluations']} / {plain['merged_models']} | {r['uniform_ta_0.3']:.4f} |"
        )
    return lines + [""], raw


# -- 4. BAMBO block level vs model-level baselines -----------------------------------------------


def bambo_vs_baselines(bench: DigitsBenchmark, seeds: list[int], budget: int) -> tuple[list[str], dict, dict]:
    tasks = list(PAIR)
    baselines: dict[str, torch.Tensor] = {}
    for label, method in BASELINE_METHODS.items():
        problem = bench.problem(tasks, method=method)
        result = optimize(problem, GridSearch(problem, mode="simplex"), budget=100, progress=False)
        baselines[f"{label} (0.1..0.9 interpolation)"] = result.Y_max[result.ok]
    ta = bench.problem(tasks)
    result = optimize(ta, GridSearch(ta), budget=100, progress=False)
    baselines["TA (9 x 9 grid)"] = result.Y_max[result.ok]
    pooled = torch.cat(list(baselines.values()))
    pooled_front = pareto_front(pooled)
    block = bench.problem(tasks, granularity="block", blocks=3, partitioner="hybrid")
    runs: dict[str, list[dict]] = {"BAMBO block-wise (d=10)": [], "BAMBO model-level (d=2)": []}
    fronts: dict[str, torch.Tensor] = {}
    for label, problem in (("BAMBO block-wise (d=10)", block), ("BAMBO model-level (d=2)", ta)):
        for seed in seeds:
            clock = Clock()
            result = optimize(problem, get_strategy("bambo", problem, seed=seed), budget=budget, progress=False)
            elapsed = clock.elapsed()
            front = result.pareto_Y_max
            acq = [t["acquisition_s"] for t in result.info["timings"]]
            joint = pareto_front(torch.cat([front, pooled]))
            in_front = int(sum(bool((front == row).all(-1).any()) for row in joint))
            runs[label].append(
                {
                    "dominated": int(dominated_by(front, pooled).sum()),
                    "dominated_front": int(dominated_by(front, pooled_front).sum()),
                    "joint_front": int(joint.shape[0]),
                    "joint_from_bambo": in_front,
                    "hv": hypervolume(front, block.ref_point),
                    "acq_median_s": statistics.median(acq),
                    "acq_max_s": max(acq),
                    "wall_s": elapsed.wall,
                    "cpu_s": elapsed.cpu,
                }
            )
            fronts[f"{label} seed {seed}"] = front
    lines = [
        "## 4. BAMBO block-wise vs model-level baselines (BAMBO Table 2's claim), 2 experts",
        "",
        f"Block space: {block.space} with partition {[g.name for g in block.space.groups]}. "
        f"BAMBO: {budget} evaluations (8 warm start + {(budget - 8) // 4} x 4). Baselines: "
        f"{pooled.shape[0]} model-level points, {pooled_front.shape[0]} on their joint front. "
        "Hypervolume reference: chance (0.1, 0.1).",
        "",
        "| baseline set | points | hypervolume |",
        "|---|---|---|",
    ]
    for label, Y in baselines.items():
        lines.append(f"| {label} | {Y.shape[0]} | {hypervolume(pareto_front(Y), block.ref_point):.4f} |")
    lines.append(f"| all baselines pooled | {pooled.shape[0]} | {hypervolume(pooled_front, block.ref_point):.4f} |")
    lines += [
        "",
        "| BAMBO run | seed | baseline points dominated | of the baselines' front | joint front: BAMBO / total "
        "| hypervolume | optimizer wall time per batch median / max | run wall / CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, rs in runs.items():
        for seed, r in zip(seeds, rs, strict=True):
            lines.append(
                f"| {label} | {seed} | {r['dominated']} / {pooled.shape[0]} | {r['dominated_front']} / "
                f"{pooled_front.shape[0]} | {r['joint_from_bambo']} / {r['joint_front']} | {r['hv']:.4f} "
                f"| {r['acq_median_s']:.1f} s / {r['acq_max_s']:.1f} s | {r['wall_s']:.0f} / {r['cpu_s']:.0f} |"
            )
    return lines + [""], {"runs": runs, "baselines": {k: v.tolist() for k, v in baselines.items()}}, fronts


def plot(reference: torch.Tensor, fronts: dict[str, torch.Tensor], baselines: dict, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 5))
    ref = reference[reference[:, 0].argsort()]
    ax.plot(ref[:, 0], ref[:, 1], "k-", lw=1, label="dense 101x101 TA grid front")
    for label, Y in baselines.items():
        Y = torch.tensor(Y)
        ax.scatter(Y[:, 0], Y[:, 1], s=10, alpha=0.6, label=label)
    for label, Y in fronts.items():
        if "seed 0" in label:
            ax.scatter(Y[:, 0], Y[:, 1], s=40, marker="*", label=label)
    ax.set_xlabel(f"accuracy {PAIR[0]} (val)")
    ax.set_ylabel(f"accuracy {PAIR[1]} (val)")
    lo = float(reference.min()) - 0.05
    ax.set_xlim(left=lo)
    ax.set_ylim(bottom=lo)
    ax.legend(fontsize=7)
    ax.set_title("digits, 2 experts: BAMBO block-wise vs model-level merges")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--bambo-seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    clock = Clock()
    bench = DigitsBenchmark.build(DigitsConfig())
    problem = bench.problem(list(PAIR))
    reference = dense_front(problem, 101)
    seeds = list(range(args.seeds))
    lines = [
        "# Strategies on the digits benchmark",
        "",
        machine_header(),
        f"- command: `python -m benchmarks.strategies_digits --seeds {args.seeds} --bambo-seeds {args.bambo_seeds} "
        f"--budget {args.budget}" + (f" --threads {args.threads}" if args.threads != 2 else "") + "`",
        "- objectives: validation accuracy per task (maximised); merge method task arithmetic unless named.",
        "",
    ]
    raw: dict = {}
    part, raw["map_vs_grid"] = map_vs_grid(problem, reference, seeds)
    lines += part
    print("\n".join(part), flush=True)
    part, raw["bayesian_vs_plain"] = bayesian_vs_plain(problem, reference, list(range(max(args.seeds, 9))))
    lines += part
    print("\n".join(part), flush=True)
    part, raw["nested"] = nested_vs_plain(bench, seed=0)
    lines += part
    print("\n".join(part), flush=True)
    part, raw["bambo"], fronts = bambo_vs_baselines(bench, list(range(args.bambo_seeds)), args.budget)
    lines += part
    print("\n".join(part), flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    plot(reference, fronts, raw["bambo"]["baselines"], args.output / "strategies_digits.png")
    lines += [
        f"This run: {clock.elapsed().text()} (this process, all threads).",
        "",
        "![fronts](strategies_digits.png)",
    ]
    (args.output / "strategies_digits.md").write_text("\n".join(lines) + "\n")
    (args.output / "strategies_digits.json").write_text(json.dumps(raw, indent=1, default=float))


if __name__ == "__main__":
    main()
