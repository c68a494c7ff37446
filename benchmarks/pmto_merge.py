"""Preference-conditioned merging with PMTO on the digits benchmark (issue 9's merge run).

Run: ``python -m benchmarks.pmto_merge``. Writes ``benchmarks/results/pmto_merge.md`` and ``.json``.

A user asks for a merge at a preference ``w`` over the tasks. The task for ``w`` is to
minimise the augmented Chebyshev scalarisation of the task accuracies normalised
between their worst and best values over the base model and each expert alone
(:func:`bambo.parametric.anchor_range`, :class:`bambo.parametric.PreferenceFamily`;
the 1 + m anchor evaluations are made once, outside every budget, and shared by
every method). Per problem and seed:

- **PMTO**: an offline search over the preference simplex (``--budget`` evaluations),
  then, for each of 20 unseen preferences (``--preferences``), the task model's answer, with zero
  evaluations (its wall time is recorded);
- **MAP / BAMBO front pick**: a MAP run and a BAMBO run of the same budget; for each
  preference, the evaluated point with the best scalarised value, by the same rule;
- **fresh BO**: bambo's single-objective BO (GP + qLogNEI, 4 Sobol points,
  then batches of 2) on that preference's task alone, 10 new evaluations for each
  preference (``--fresh-evals``; 200 in total).

Every answer is scored by its true scalarised value (lower is better). The table
reports, over seeds, the median of the mean value over the 20 preferences, and at how
many preferences PMTO's instant answer beats, ties (within 1e-4) or loses to each contender.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from torch.quasirandom import SobolEngine

from bambo.experiment import Experiment
from bambo.facade import optimize
from bambo.parametric import PreferenceFamily, anchor_range
from bambo.problem import Problem
from bambo.strategies import BAMBO, MAP
from bambo.strategies.pmto import PMTO
from benchmarks.common import RESULTS, Clock, Timing, machine_header
from benchmarks.contenders import _map_options
from benchmarks.suite import PROBLEMS

DEFAULT_PROBLEMS = (
    "digits 2 experts (model level)",
    "digits 2 experts (block level)",
    "digits 3 experts (model level)",
)
METHODS = ("PMTO (instant)", "PMTO (refined)", "MAP front pick", "BAMBO front pick", "fresh BO")


def test_preferences(m: int, count: int) -> torch.Tensor:
    """``count`` unseen task parameters: a midpoint grid (2 tasks) or scrambled Sobol points (3+)."""
    if m == 2:
        return ((torch.arange(count, dtype=torch.float64) + 0.5) / count).unsqueeze(-1)
    return SobolEngine(m - 1, scramble=True, seed=12345).draw(count, dtype=torch.float64)


def true_values(family: PreferenceFamily, X: torch.Tensor, thetas: torch.Tensor) -> torch.Tensor:
    """Scalarised value (lower is better) of solution ``X[i]`` for preference ``thetas[i]``."""
    Y = family.problem.evaluate(X)
    return family.scalarize(Y, thetas)


def front_pick(family: PreferenceFamily, Y: torch.Tensor, thetas: torch.Tensor) -> torch.Tensor:
    """Best scalarised value among evaluated objective vectors ``Y`` (max form) for each preference."""
    ok = Y[torch.isfinite(Y).all(-1)]
    values = family.scalarize(ok.unsqueeze(0), thetas.unsqueeze(1))  # (t, N)
    return values.min(-1).values


def run_seed(  # noqa: PLR0913 - one benchmark cell
    label: str, problem: Problem, family: PreferenceFamily, tests: torch.Tensor, seed: int, budget: int, fresh: int
) -> dict:
    out: dict[str, dict] = {}
    clock = Clock()
    # 6 initial preferences x 3 solutions at the default budget of 60 (30%), fewer for smaller budgets
    pmto = PMTO(family, seed=seed, n_initial_tasks=max(2, min(6, budget // 10)), samples_per_task=3)
    Experiment(family, pmto).run(budget, batch_size=budget)
    offline = clock.elapsed()
    clock.restart()
    pmto.task_model  # noqa: B018 - the final fit on every evaluation ends the offline phase (a run saves it)
    final_fit = clock.elapsed()
    clock.restart()
    x, _ = pmto.predict_solution(tests)
    online = clock.elapsed()
    out["PMTO (instant)"] = {
        "values": true_values(family, x, tests).tolist(),
        "offline_s": offline.wall,
        "offline_cpu_s": offline.cpu,
        "final_fit_s": final_fit.wall,
        "final_fit_cpu_s": final_fit.cpu,
        "online_s": online.wall,
        "online_cpu_s": online.cpu,
        "online_evaluations": 0,
    }
    clock.restart()
    x, _ = pmto.predict_solution(tests, refine=True)  # fits the unified GP on every evaluation, then climbs it
    online = clock.elapsed()
    out["PMTO (refined)"] = {
        "values": true_values(family, x, tests).tolist(),
        "online_s": online.wall,
        "online_cpu_s": online.cpu,
    }
    strategy = MAP(problem, seed=seed, **_map_options(budget, 4))
    result = optimize(problem, strategy, budget=budget, batch_size=4, progress=False)
    out["MAP front pick"] = {"values": front_pick(family, result.Y_max, tests).tolist()}
    strategy = BAMBO(problem, seed=seed, n_iterations=None)
    result = optimize(problem, strategy, budget=budget, batch_size=4, progress=False)
    out["BAMBO front pick"] = {"values": front_pick(family, result.Y_max, tests).tolist()}
    values = []
    clock.restart()
    for j, theta in enumerate(tests):
        task = family.fixed_task(theta)
        bo = BAMBO(task, seed=seed * 1000 + j, n_initial=4, heuristics=False, n_iterations=None)
        res = optimize(task, bo, budget=fresh, batch_size=2, progress=False)
        values.append(float(res.Y[res.ok].min()))
    fresh_time = clock.elapsed()
    out["fresh BO"] = {"values": values, "seconds": fresh_time.wall, "cpu_seconds": fresh_time.cpu}
    print(label, seed, {m: round(statistics.fmean(out[m]["values"]), 4) for m in METHODS}, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", action="append", help="a problem label of benchmarks.suite (repeatable)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=60, help="offline evaluations of PMTO, MAP and BAMBO")
    parser.add_argument("--preferences", type=int, default=20, help="unseen preferences per problem")
    parser.add_argument("--fresh-evals", type=int, default=10, help="evaluations of the fresh BO per preference")
    parser.add_argument("--name", default="pmto_merge")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    labels = args.problem or list(DEFAULT_PROBLEMS)
    clock = Clock()
    runs: dict[str, dict] = {}
    for label in labels:
        problem = PROBLEMS[label].build()
        ideal, nadir = anchor_range(problem)
        family = PreferenceFamily(problem, ideal, nadir)
        tests = test_preferences(problem.num_objectives, args.preferences)
        runs[label] = {
            "dim": problem.dim,
            "ideal": ideal.tolist(),
            "nadir": nadir.tolist(),
            "seeds": [
                run_seed(label, problem, family, tests, seed, args.budget, args.fresh_evals)
                for seed in range(args.seeds)
            ],
        }
    elapsed = clock.elapsed()
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"{args.name}.json").write_text(json.dumps(runs))
    text = report(runs, args, labels, elapsed)
    (args.output / f"{args.name}.md").write_text(text)
    print(text)
    return 0


def report(runs: dict, args: argparse.Namespace, labels: list[str], elapsed: Timing) -> str:
    """The markdown report of :func:`main`'s runs (every figure measured in them)."""
    problems = " ".join(f'--problem "{label}"' for label in labels)
    n = args.preferences
    lines = [
        "# Preference-conditioned merging: PMTO's instant answers against front picks and fresh BO",
        "",
        machine_header(),
        f"- command: `python -m benchmarks.pmto_merge {problems} --seeds {args.seeds} --budget {args.budget} "
        f"--preferences {n} --fresh-evals {args.fresh_evals}`; this run: {elapsed.text()} (this process, all threads)",
        f"- offline budget {args.budget} evaluations for PMTO, MAP and BAMBO; fresh BO: {args.fresh_evals} new "
        f"evaluations per preference; {n} unseen preferences; value: augmented Chebyshev scalarisation (rho 0.05) of "
        "the accuracies normalised between their worst and best over the base model and each expert alone: 0 is the "
        "ideal point, lower is better",
        f"- cells: median over seeds of the mean value over the {n} preferences [min, max over seeds]; last columns: "
        f"preferences (of {n}) where PMTO's instant answer is better / within 1e-4 / worse, medians over seeds; "
        "PMTO (refined) climbs the unified GP's mean from the instant answer, still without evaluating",
        "",
        "| problem | d | method | mean value | PMTO (instant) better / tie / worse | evaluations per new preference |",
        "|---|---|---|---|---|---|",
    ]
    gaps = []
    for label in labels:
        r = runs[label]
        seeds = r["seeds"]
        pmto = [s["PMTO (instant)"]["values"] for s in seeds]
        for m in METHODS:
            means = [statistics.fmean(s[m]["values"]) for s in seeds]
            cell = f"{statistics.median(means):.4f} [{min(means):.4f}, {max(means):.4f}]"
            better, cost = "-", "0 (task model)" if m.startswith("PMTO") else "0 (pick among evaluated points)"
            if not m.startswith("PMTO"):
                pairs = [list(zip(pv, s[m]["values"], strict=True)) for pv, s in zip(pmto, seeds, strict=True)]
                better = " / ".join(
                    f"{statistics.median(sum(test(p, c) for p, c in seed_pairs) for seed_pairs in pairs):.0f}"
                    for test in (lambda p, c: p < c - 1e-4, lambda p, c: abs(p - c) <= 1e-4, lambda p, c: p > c + 1e-4)
                )
                gap = statistics.median(
                    statistics.fmean(pv) - statistics.fmean(s[m]["values"]) for pv, s in zip(pmto, seeds, strict=True)
                )
                gaps.append((gap, label, m))
            if m == "fresh BO":
                cost = str(args.fresh_evals)
            lines.append(f"| {label} | {r['dim']} | {m} | {cell} | {better} | {cost} |")
        online = max((s["PMTO (instant)"]["online_s"], s["PMTO (instant)"]["online_cpu_s"]) for s in seeds)
        refined = max((s["PMTO (refined)"]["online_s"], s["PMTO (refined)"]["online_cpu_s"]) for s in seeds)
        offline = [statistics.median(s["PMTO (instant)"][key] for s in seeds) for key in ("offline_s", "offline_cpu_s")]
        final_fit = max((s["PMTO (instant)"]["final_fit_s"], s["PMTO (instant)"]["final_fit_cpu_s"]) for s in seeds)
        lines.append(
            f"| {label} | | timing (wall / CPU) | PMTO offline {offline[0]:.1f} / {offline[1]:.1f} s (median) + final "
            f"task-model fit {final_fit[0]:.2f} / {final_fit[1]:.2f} s (slowest); slowest online answer for all {n} "
            f"preferences: instant {online[0] * 1000:.0f} / {online[1] * 1000:.0f} ms, refined "
            f"{refined[0] * 1000:.0f} / {refined[1] * 1000:.0f} ms (incl. fitting the unified GP) | | |"
        )
    worst, best = max(gaps), min(gaps)
    lines += [
        "",
        f"Largest loss of PMTO's instant answer: {worst[0]:+.4f} in mean value against {worst[2]} on {worst[1]}; "
        f"its best result: {best[0]:+.4f} against {best[2]} on {best[1]} (PMTO minus contender, median over seeds; "
        "negative favours PMTO).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
