"""BAMBO against baselines on BoTorch's synthetic problems (issue 6's acceptance run).

Run: ``python -m benchmarks.strategies_synthetic`` (or ``make bench-strategies``).
Writes ``benchmarks/results/strategies_synthetic.md`` and ``.json``.

Per problem and seed, 60 evaluations in batches of 4 (BAMBO: 8 warm-start points
+ 13 x 4): hypervolume of the evaluated set as a fraction of BoTorch's
``max_hv`` for the problem's reference point (the one scoring reference for every
strategy), for BAMBO (defaults: ``ref_point="auto"`` takes the problem's reference
point, the scoring one), BAMBO inferring its own from the observed front
(``ref_point="nadir"``, the default before issue 16), BAMBO with
the paper's literal "worst observed" reference point, Sobol, random search and
NSGA-II. Each configuration is reported on its own. The optimizer time per BAMBO
batch (bambo's own wall-clock timings) and each run's wall and CPU seconds are
reported, and a 3- and a 4-objective DTLZ2 run check the per-batch time of
qLogNEHVI and qLogNParEGO. Other tools (Ax, Optuna, ...) are not run here: the suite
(``python -m benchmarks run``) measures them beside bambo under one budget.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from bambo.facade import optimize
from bambo.problem import SyntheticProblem
from bambo.strategies import get_strategy
from benchmarks.common import RESULTS, Clock, machine_header

PROBLEMS = {"BraninCurrin (d=2)": ("branin_currin", 2, 2), "DTLZ2 (d=6, 2 obj)": ("dtlz2", 6, 2)}
DEFAULT = "BAMBO (qLogNEHVI, default: told the scoring ref)"
STRATEGIES = {
    DEFAULT: ("bambo", {}),
    "BAMBO (inferred nadir ref)": ("bambo", {"ref_point": "nadir"}),
    "BAMBO (worst-observed ref)": ("bambo", {"ref_point": "worst"}),
    "Sobol": ("sobol", {}),
    "random": ("random", {}),
    "NSGA-II (pop 8)": ("nsga2", {}),
}


def first_reaching(history: list[float], level: float) -> int | None:
    """1-based evaluation count at which ``history`` first reaches ``level`` (None if never)."""
    return next((i + 1 for i, v in enumerate(history) if v >= level), None)


def run_one(problem: SyntheticProblem, name: str, options: dict, seed: int, budget: int) -> dict:
    """One strategy on one problem and seed: HV-fraction history, evaluations to 95%, timings."""
    clock = Clock()
    strategy = get_strategy(name, problem, seed=seed, **options)
    result = optimize(problem, strategy, budget=budget, batch_size=4, progress=False)
    fraction = [v / problem.max_hv for v in result.hypervolume_history]
    acq = [t["acquisition_s"] for t in result.info.get("timings", [])]
    elapsed = clock.elapsed()
    return {
        "final": fraction[-1],
        "history": fraction,
        "reach95": first_reaching(fraction, 0.95),
        "acq_median_s": statistics.median(acq) if acq else None,
        "acq_max_s": max(acq) if acq else None,
        "wall_s": elapsed.wall,
        "cpu_s": elapsed.cpu,
    }


def timing_run(num_objectives: int, budget: int, seed: int = 0) -> dict:
    """Per-batch optimizer time of BAMBO's default acquisition on DTLZ2 (d=6) with m objectives."""
    problem = SyntheticProblem("dtlz2", dim=6, num_objectives=num_objectives)
    clock = Clock()
    strategy = get_strategy("bambo", problem, seed=seed)
    result = optimize(problem, strategy, budget=budget, batch_size=4, progress=False)
    elapsed = clock.elapsed()
    acq = [t["acquisition_s"] for t in result.info["timings"]]
    return {
        "wall_s": elapsed.wall,
        "cpu_s": elapsed.cpu,
        "objectives": num_objectives,
        "acquisition": result.info["acquisition"],
        "batches": len(acq),
        "median_s": statistics.median(acq),
        "max_s": max(acq),
        "hv_fraction": result.hypervolume_history[-1] / problem.max_hv,
    }


def pct(v: float) -> str:
    """A fraction as a percentage with one decimal."""
    return f"{100 * v:.1f}%"


def main() -> None:
    """Run every strategy on every problem and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    clock = Clock()
    seeds = list(range(args.seeds))
    raw: dict = {"budget": args.budget, "seeds": seeds, "problems": {}, "timing": []}
    lines = [
        "# Strategies on synthetic problems (hypervolume as a fraction of BoTorch's max_hv)",
        "",
        machine_header(),
        f"- command: `python -m benchmarks.strategies_synthetic --seeds {args.seeds} --budget {args.budget}"
        + (f" --threads {args.threads}" if args.threads != 2 else "")
        + "`",
        f"- {args.budget} evaluations in batches of 4 per run; BAMBO = 8 warm-start points + "
        f"{(args.budget - 8) // 4} x 4 (GP per objective, qLogNEHVI, sequential greedy batches).",
        "- scoring: every strategy's hypervolume is computed w.r.t. the problem's BoTorch reference point "
        "(stated per problem) and divided by BoTorch's max_hv for it. What each strategy was told: "
        f"{DEFAULT} is given the scoring reference point (the default, ref_point='auto'); "
        "BAMBO (inferred nadir ref) infers its own from its observed front; BAMBO (worst-observed ref) uses the "
        "worst observed values; Sobol, random and NSGA-II take no reference point.",
        "- every figure below was measured in this run. Other tools (Ax, Optuna, pymoo, CMA-ES) are measured "
        "beside bambo by the suite, `python -m benchmarks run` ([quick.md](quick.md), "
        "[full_synthetic.md](full_synthetic.md): their own date, machine and command).",
        "",
    ]
    for label, (fn, dim, m) in PROBLEMS.items():
        problem = SyntheticProblem(fn, dim=dim, num_objectives=m)
        per: dict = {}
        for sname, (name, options) in STRATEGIES.items():
            per[sname] = [run_one(problem, name, options, seed, args.budget) for seed in seeds]
            print(label, sname, [round(r["final"], 3) for r in per[sname]], flush=True)
        raw["problems"][label] = per
        bambo, sobol = per[DEFAULT], per["Sobol"]
        beats = sum(b["final"] > s["final"] for b, s in zip(bambo, sobol, strict=True))
        lines += [
            f"## {label}",
            "",
            f"Scoring reference point (maximisation form): {[round(v, 4) for v in problem.ref_point.tolist()]}; "
            f"max_hv = {problem.max_hv:.4g}.",
            "",
            "| strategy | median final | per seed | median evals to 95% | BAMBO batch wall time median / max "
            "| run wall / CPU s (median) |",
            "|---|---|---|---|---|---|",
        ]
        for sname, runs in per.items():
            finals = [r["final"] for r in runs]
            reach = [r["reach95"] for r in runs if r["reach95"] is not None]
            reach_txt = f"{statistics.median(reach):.0f} ({len(reach)}/{len(runs)} seeds)" if reach else "never"
            acq = [r["acq_median_s"] for r in runs if r["acq_median_s"] is not None]
            acq_max = [r["acq_max_s"] for r in runs if r["acq_max_s"] is not None]
            timing = f"{statistics.median(acq):.1f} s / {max(acq_max):.1f} s" if acq else "-"
            wall = statistics.median(r["wall_s"] for r in runs)
            run_s = f"{wall:.1f} / {statistics.median(r['cpu_s'] for r in runs):.1f}"
            lines.append(
                f"| {sname} | {pct(statistics.median(finals))} | {', '.join(pct(v) for v in finals)} "
                f"| {reach_txt} | {timing} | {run_s} |"
            )
        lines += ["", f"{DEFAULT} beats Sobol in {beats} of {len(seeds)} seeds.", ""]
    for m, budget in ((3, 40), (4, 32)):
        t = timing_run(m, budget)
        raw["timing"].append(t)
        print("timing", t, flush=True)
    lines += [
        "## Optimizer time per batch with more objectives (DTLZ2, d=6, q=4, seed 0)",
        "",
        "| objectives | acquisition | batches | median batch wall | max batch wall | run wall / CPU s "
        "| hypervolume fraction |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in raw["timing"]:
        lines.append(
            f"| {t['objectives']} | {t['acquisition']} | {t['batches']} | {t['median_s']:.1f} s "
            f"| {t['max_s']:.1f} s | {t['wall_s']:.1f} / {t['cpu_s']:.1f} | {pct(t['hv_fraction'])} |"
        )
    lines += ["", f"This run: {clock.elapsed().text()} (this process, all threads).", ""]
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "strategies_synthetic.md").write_text("\n".join(lines) + "\n")
    (args.output / "strategies_synthetic.json").write_text(json.dumps(raw, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
