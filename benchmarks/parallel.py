"""Wall-clock speed-up of evaluations on Ray workers (issue 20): 1, 2 and 4 workers, batch and async mode.

Run: ``python -m benchmarks.parallel`` (writes ``benchmarks/results/parallel.md``).

The problem: the digits benchmark's block-wise task-arithmetic merge (3 blocks, hybrid
partition; ``--tasks``, 2: the first two tasks' accuracies), where every evaluation runs the
real digits evaluation and then sleeps ``--sleep`` seconds (2 by default), standing in for the minutes an LLM
evaluation takes on a GPU: a worker mostly waits, as a driver does for a GPU worker, so
four workers can run side by side on this 2-core machine. Ray gets ``--cpus`` logical CPUs
(4), one per worker.

Each configuration runs BAMBO's default (``n_iterations=None``) through the experiment loop
with :class:`~bambo.ray_executor.RayExecutor` to ``--budget`` evaluations (20):

- batch mode: batches of ``q = 4``, the next batch asked once the whole batch has ended;
- async mode: one candidate per worker first, then one new candidate as each worker
  frees up, the running ones pending.

The workers are started (and have unpickled the problem) before the clock starts. Measured
per run: wall seconds, the driver's CPU seconds (proposals, bookkeeping; the workers' are
not counted), the speed-up against 1 worker in batch mode for the same seed, and the
hypervolume of the evaluations completed by fixed wall-clock times (the journal's finish
times), against the benchmark's reference point (chance accuracy).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bambo.benchmark import load_benchmark
from bambo.experiment import Experiment
from bambo.merge_problem import MergeProblem
from bambo.pareto import hypervolume
from bambo.problem import Objective, Problem
from bambo.store import Journal
from bambo.strategies import get_strategy
from benchmarks.common import RESULTS, Clock, machine_header

BATCH = 4


class Sleepy(Problem):
    """``problem`` whose every evaluation also sleeps ``seconds`` (a stand-in for a long GPU evaluation)."""

    def __init__(self, problem: MergeProblem, seconds: float) -> None:
        self.inner = problem
        self.seconds = seconds
        self._set_objectives(list(problem.objectives), problem.ref_point)
        self.bounds = problem.bounds

    @property
    def parameter_names(self) -> list[str]:
        return self.inner.parameter_names

    def heuristic_points(self) -> torch.Tensor:
        return self.inner.heuristic_points()

    def metrics(self, x: torch.Tensor, fidelity: float = 1.0) -> dict[str, float]:
        metrics = self.inner.metrics(x, fidelity)
        time.sleep(self.seconds)
        return metrics

    def evaluate_one(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.objective_values(self.metrics(x), x), dtype=torch.float64)


def run_one(problem: Sleepy, workers: int, mode: str, seed: int, budget: int, folder: Path) -> dict:
    """One search on ``workers`` Ray workers; its wall and CPU seconds and the finish time of each evaluation."""
    from bambo.ray_executor import RayExecutor

    executor = RayExecutor(workers=workers, threads=1)
    executor.start(problem, wait=True)
    try:
        with Journal(folder / f"{workers}-{mode}-{seed}.sqlite") as journal:
            strategy = get_strategy("bambo", problem, seed=seed, n_iterations=None)
            experiment = Experiment(problem, strategy, journal, executor)
            clock, start = Clock(), time.time()
            experiment.run(budget, BATCH, mode=mode)  # type: ignore[arg-type]
            elapsed = clock.elapsed()
            trials = journal.trials()
    finally:
        executor.close()
    done = [t for t in trials if t.status == "completed" and t.finished is not None]
    return {
        "wall": elapsed.wall,
        "cpu": elapsed.cpu,
        "finished": [t.finished - start for t in done],  # type: ignore[operator]
        "Y": torch.tensor([t.objectives for t in done], dtype=torch.float64),
        "failed": len(trials) - len(done),
    }


class OneSecond(Problem):
    """An evaluation that only sleeps 1 s (issue 20's check of one batch on two workers)."""

    def __init__(self) -> None:
        self._set_objectives([Objective(name="f"), Objective(name="g")], None)
        self.bounds = torch.tensor([[0.0], [1.0]], dtype=torch.float64)

    def metrics(self, x: torch.Tensor, fidelity: float = 1.0) -> dict[str, float]:  # noqa: ARG002
        time.sleep(1.0)
        return {"f": float(x[0]), "g": 1.0 - float(x[0])}

    def evaluate_one(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(self.objective_values(self.metrics(x), x), dtype=torch.float64)


def time_one_batch() -> float:
    """Wall seconds of q = 4 evaluations of 1 s each on 2 workers (workers started first)."""
    from bambo.ray_executor import RayExecutor

    problem = OneSecond()
    executor = RayExecutor(workers=2, threads=1)
    executor.start(problem, wait=True)
    trials = [(i, torch.tensor([v], dtype=torch.float64), 1.0) for i, v in enumerate((0.1, 0.2, 0.3, 0.4))]
    clock = Clock()
    executor.evaluate(problem, trials, lambda _: None, lambda *_: None)
    wall = clock.elapsed().wall
    executor.close()
    return wall


def hv_by(run: dict, ref: torch.Tensor, seconds: float) -> float:
    """Hypervolume of the evaluations completed within ``seconds`` of the start."""
    rows = [i for i, t in enumerate(run["finished"]) if t <= seconds]
    return hypervolume(run["Y"][rows], ref) if rows else 0.0


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sleep", type=float, default=2.0, help="seconds each evaluation sleeps")
    parser.add_argument("--budget", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=2, help="digits tasks (objectives): the first N")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--cpus", type=int, default=4, help="Ray's logical CPUs")
    parser.add_argument("--checkpoints", type=float, nargs="+", default=[15.0, 30.0, 45.0])
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    clock = Clock()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    ray.init(num_cpus=args.cpus, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    bench = load_benchmark("digits")
    tasks = bench.task_names[: args.tasks]
    problem = Sleepy(bench.problem(tasks, granularity="block", blocks=3, partitioner="hybrid"), args.sleep)
    ref = problem.ref_point
    one_batch = time_one_batch()
    print(f"one batch of 4 one-second evaluations on 2 workers: wall {one_batch:.2f} s", flush=True)
    runs: dict[tuple[int, str, int], dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.seeds):
            for workers in args.workers:
                for mode in ("batch", "async"):
                    run = run_one(problem, workers, mode, seed, args.budget, Path(folder))
                    runs[workers, mode, seed] = run
                    print(
                        f"seed {seed}, {workers} workers, {mode}: wall {run['wall']:.1f} s, driver CPU "
                        f"{run['cpu']:.1f} s, HV {hv_by(run, ref, float('inf')):.4f}",
                        flush=True,
                    )
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)
    lines = report(args, runs, ref, clock.elapsed().text(), one_batch)
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / "parallel.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


def report(
    args: argparse.Namespace, runs: dict[tuple[int, str, int], dict], ref: torch.Tensor, took: str, one_batch: float
) -> list[str]:
    """The report: medians per configuration, then every run."""
    seeds = range(args.seeds)
    base = {s: runs[args.workers[0], "batch", s]["wall"] for s in seeds}
    checkpoints = list(args.checkpoints)
    head = " | ".join(f"HV by {c:g} s" for c in checkpoints)
    lines = [
        "# Evaluation on Ray workers: wall-clock speed-up, batch vs async mode",
        "",
        machine_header(("torch", "botorch", "ray", "bambo")),
        f"- command: `python -m benchmarks.parallel --sleep {args.sleep:g} --budget {args.budget} --tasks {args.tasks} "
        f"--seeds {args.seeds} "
        f"--workers {' '.join(map(str, args.workers))} --cpus {args.cpus}`; this run: {took} (driver process)",
        f"- problem: digits, block-wise task arithmetic (3 blocks, hybrid partition), the first {args.tasks} tasks' "
        "accuracies as objectives; every "
        f"evaluation is the real digits evaluation plus a {args.sleep:g} s sleep (a stand-in for a GPU evaluation)",
        f"- strategy: BAMBO's default, {args.budget} evaluations; batch mode asks q = {BATCH}, async mode one "
        f"candidate per free worker; Ray with {args.cpus} logical CPUs, one per worker; workers started before "
        "the clock",
        f"- speed-up: wall time of {args.workers[0]} worker in batch mode over this configuration's, same seed; "
        f"HV: completed evaluations by that wall time, reference {[round(v, 3) for v in ref.tolist()]}; "
        f"medians over {args.seeds} seeds",
        f"- one batch of q = 4 evaluations of 1 s each (a sleep) on 2 workers: **{one_batch:.2f} s** wall "
        "(issue 20's target: under 2.5 s)",
        "",
        f"| workers | mode | wall s | driver CPU s | speed-up | {head} | HV at the end |",
        "|---|---|---|---|---|" + "---|" * (len(checkpoints) + 1),
    ]
    for workers in args.workers:
        for mode in ("batch", "async"):
            group = [runs[workers, mode, s] for s in seeds]
            hvs = [statistics.median(hv_by(r, ref, c) for r in group) for c in [*checkpoints, float("inf")]]
            lines.append(
                f"| {workers} | {mode} | {statistics.median(r['wall'] for r in group):.1f} "
                f"| {statistics.median(r['cpu'] for r in group):.1f} "
                f"| {statistics.median(base[s] / runs[workers, mode, s]['wall'] for s in seeds):.2f} | "
                + " | ".join(f"{h:.4f}" for h in hvs)
                + " |"
            )
    lines += ["", "Every run:", ""]
    lines.append(f"| seed | workers | mode | wall s | driver CPU s | failed | {head} | HV at the end |")
    lines.append("|---|---|---|---|---|---|" + "---|" * (len(checkpoints) + 1))
    for (workers, mode, seed), r in sorted(runs.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1])):
        hvs = [hv_by(r, ref, c) for c in [*checkpoints, float("inf")]]
        lines.append(
            f"| {seed} | {workers} | {mode} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['failed']} | "
            + " | ".join(f"{h:.4f}" for h in hvs)
            + " |"
        )
    ideal = args.budget * args.sleep
    lines += [
        "",
        f"The sleeps alone take {ideal:.0f} s on one worker ({ideal / 2:.0f} s on 2, {ideal / 4:.0f} s on 4); the "
        "rest of a run's wall time is the driver's proposals (BAMBO's fit and acquisition) and Ray's overhead.",
    ]
    return lines


if __name__ == "__main__":
    main()
