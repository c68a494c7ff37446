"""BAMBO Table 2 on the arithmetic LM benchmark: block-wise BAMBO against model-level merges and MAP.

Run: ``python -m benchmarks.arithmetic`` (writes ``benchmarks/results/arithmetic.md`` and
``arithmetic.png``).

Objectives: ``accuracy`` (maximised) and ``tokens`` (mean generated tokens, minimised)
of greedy generation on the validation problems; the experts and every front are also
scored on the held-out test problems. Contenders, as in BAMBO Table 2:

- model-level baselines: task arithmetic (TA), TIES, DARE-TIES and Breadcrumbs at the
  interpolation weights ``(w, 1 - w)``, ``w = 0.1..0.9``, and TA on the 9 x 9 grid;
- BAMBO at layer level when the model has fewer than 8 layers, else 8 blocks over
  BAMBO's DP partition (the paper's block count), ``--budget`` evaluations per seed;
- MAP at model level (Sobol design, quadratics, NSGA-III; its predicted set
  re-evaluated), and the R^2 of its quadratics on the TA grid's evaluations (held out).

Reported per seed: how many baseline points BAMBO's evaluated Pareto set dominates,
its share of the joint front, and its hypervolume w.r.t. (accuracy 0, the generation
limit in tokens), beside each baseline set's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import torch

from bambo.benchmarks.arithmetic import ArithmeticBenchmark, ArithmeticConfig
from bambo.facade import optimize
from bambo.merge_problem import MergeProblem
from bambo.pareto import dominated_by, hypervolume, pareto_front
from bambo.strategies import GridSearch, get_strategy
from bambo.strategies.map import TaskQuadratics
from benchmarks.common import RESULTS, Clock, machine_header

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BASELINES = {"TA": "task_arithmetic", "TIES": "ties", "DARE-TIES": "dare_ties", "Breadcrumbs": "breadcrumbs"}


def r_squared(predicted: torch.Tensor, observed: torch.Tensor) -> list[float]:
    """R^2 per column."""
    residual = ((observed - predicted) ** 2).sum(0)
    total = ((observed - observed.mean(0)) ** 2).sum(0)
    return (1 - residual / total).tolist()


def baselines(bench: ArithmeticBenchmark) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Each model-level baseline's evaluations (maximisation form), and the TA grid's ``(X, Y)``."""
    out: dict[str, torch.Tensor] = {}
    for label, method in BASELINES.items():
        problem = bench.problem(method=method)
        result = optimize(problem, GridSearch(problem, mode="simplex"), budget=100, progress=False)
        out[f"{label} (0.1..0.9 interpolation)"] = result.Y_max[result.ok]
    ta = bench.problem()
    result = optimize(ta, GridSearch(ta), budget=100, progress=False)
    out["TA (9 x 9 grid)"] = result.Y_max[result.ok]
    return out, (result.X[result.ok], result.Y_max[result.ok])


def search_space(bench: ArithmeticBenchmark) -> MergeProblem:
    """BAMBO's space: layer-wise under 8 layers, else 8 blocks over the DP partition."""
    if bench.config.layers < 8:
        return bench.problem(granularity="layer")
    return bench.problem(granularity="block", blocks=8, partitioner="hybrid")


def main(argv: list[str] | None = None, config: ArithmeticConfig | None = None, cache_dir: Path | None = None) -> Path:
    """Run the comparison and write the report; returns its path.

    Args:
        argv: Command-line arguments.
        config: The benchmark's settings (default: its defaults; tests pass a small one).
        cache_dir: The benchmark's cache folder (default: its own).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = Clock()
    bench = ArithmeticBenchmark.build(config or ArithmeticConfig(), cache_dir=cache_dir, progress=print)
    summary = {split: bench.summary(split) for split in ("val", "test")}
    points, (grid_X, grid_Y) = baselines(bench)
    pooled = torch.cat(list(points.values()))
    pooled_front = pareto_front(pooled)
    space = search_space(bench)
    ref = space.ref_point
    runs: dict[str, list[dict]] = {"BAMBO": [], "MAP": []}
    fronts: dict[str, torch.Tensor] = {}
    model_level = bench.problem()
    for seed in range(args.seeds):
        for label, problem, strategy in (
            ("BAMBO", space, get_strategy("bambo", space, seed=seed)),
            ("MAP", model_level, get_strategy("map", model_level, seed=seed)),
        ):
            run_clock = Clock()
            result = optimize(problem, strategy, budget=args.budget, batch_size=4, progress=False)
            elapsed = run_clock.elapsed()
            front = result.pareto_Y_max
            joint = pareto_front(torch.cat([front, pooled]))
            row = {
                "dominated": int(dominated_by(front, pooled).sum()),
                "dominated_front": int(dominated_by(front, pooled_front).sum()),
                "joint_front": int(joint.shape[0]),
                "joint_from_it": int(sum(bool((front == r).all(-1).any()) for r in joint)),
                "hv": hypervolume(front, ref),
                "wall_s": elapsed.wall,
                "cpu_s": elapsed.cpu,
            }
            if label == "MAP":
                X, Y = result.X[result.ok], result.Y_max[result.ok]
                quadratics = TaskQuadratics(problem.bounds, problem.objectives, X, Y)
                row["r2"] = r_squared(quadratics.predict(grid_X), grid_Y)
            runs[label].append(row)
            fronts[f"{label} seed {seed}"] = front
            print(label, seed, row, flush=True)
    lines = [
        "# BAMBO Table 2 on the arithmetic LM benchmark: accuracy against output tokens",
        "",
        machine_header(("torch", "transformers", "botorch", "bambo")),
        f"- command: `python -m benchmarks.arithmetic --seeds {args.seeds} --budget {args.budget}"
        + (f" --threads {args.threads}" if args.threads != 2 else "")
        + f"`; this run: {clock.elapsed().text()} (this process, all threads)",
        f"- benchmark: `{bench.config.model_dump_json()}`; training took "
        f"{bench.curves['cpu_seconds'][0][1]:.0f} CPU-s when it was built (cached since)",
        f"- BAMBO's space: {space.space}; objectives: validation accuracy (max) and mean generated tokens (min); "
        f"hypervolume reference: accuracy 0, {bench.config.max_new_tokens} tokens (the generation limit).",
        "",
        "## The experts",
        "",
        "| model | val accuracy | val tokens | test accuracy | test tokens |",
        "|---|---|---|---|---|",
    ]
    for name in ("base", "thinking", "direct"):
        v, t = summary["val"][name], summary["test"][name]
        lines.append(f"| {name} | {v['accuracy']:.3f} | {v['tokens']:.2f} | {t['accuracy']:.3f} | {t['tokens']:.2f} |")
    lines += ["", "## Baselines", "", "| baseline set | points | hypervolume |", "|---|---|---|"]
    for label, Y in points.items():
        lines.append(f"| {label} | {Y.shape[0]} | {hypervolume(pareto_front(Y), ref):.4f} |")
    lines.append(f"| all pooled | {pooled.shape[0]} | {hypervolume(pooled_front, ref):.4f} |")
    lines += [
        "",
        "## BAMBO and MAP, per seed",
        "",
        "| run | seed | baseline points dominated | of the baselines' front | joint front: its / total "
        "| hypervolume | run wall / CPU s | MAP quadratic R^2 (accuracy, tokens) on the TA grid |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, rows in runs.items():
        for seed, r in enumerate(rows):
            r2 = ", ".join(f"{v:.3f}" for v in r["r2"]) if "r2" in r else "-"
            lines.append(
                f"| {label} | {seed} | {r['dominated']} / {pooled.shape[0]} | {r['dominated_front']} / "
                f"{pooled_front.shape[0]} | {r['joint_from_it']} / {r['joint_front']} | {r['hv']:.4f} "
                f"| {r['wall_s']:.0f} / {r['cpu_s']:.0f} | {r2} |"
            )
    args.output.mkdir(parents=True, exist_ok=True)
    plot(points, fronts, bench, args.output / "arithmetic.png")
    lines += ["", "![fronts and learning curves](arithmetic.png)", ""]
    out = args.output / "arithmetic.md"
    out.write_text("\n".join(lines))
    (args.output / "arithmetic.json").write_text(
        json.dumps({"summary": summary, "runs": runs, "curves": bench.curves}, indent=1, default=float)
    )
    print("\n".join(lines))
    return out


def plot(
    points: dict[str, torch.Tensor], fronts: dict[str, torch.Tensor], bench: ArithmeticBenchmark, path: Path
) -> None:
    """Accuracy against tokens (the baselines and seed 0's fronts), and the learning curves."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for label, Y in points.items():
        left.scatter(-Y[:, 1], Y[:, 0], s=12, alpha=0.6, label=label)
    for label, Y in fronts.items():
        if label.endswith("seed 0"):
            left.scatter(-Y[:, 1], Y[:, 0], s=50, marker="*", label=label)
    left.set(xlabel="mean generated tokens (val)", ylabel="accuracy (val)", title="merges of thinking and direct")
    left.legend(fontsize=7)
    for name in ("base", "thinking", "direct"):
        steps, losses = zip(*bench.curves[name], strict=True)
        right.plot(steps, losses, label=name)
    right.set(xlabel="step", ylabel="training loss", yscale="log", title="learning curves")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
