"""Optimizer cost of one batch: bambo's BAMBO against Ax's ``Client``, same data, same machine.

Run: ``python -m benchmarks.optimizer_cost`` (writes ``benchmarks/results/optimizer_cost.md``).

The setting of issue 16's target: DTLZ2 with d = 16 inputs and 2, 3 and 4 objectives,
n = 100 evaluated points (scrambled Sobol, seeded), a batch of q = 4. Both tools see
exactly the same points and ask for one batch twice:

- **first batch** (cold): the tool is told the first 96 points and asked for 4; every
  model is fitted from scratch;
- **next batch** (in the loop): told all 100 points and asked for 4 again, after that first
  batch. bambo's BAMBO is built anew and resumes from the state journaled with the first
  batch (:meth:`~bambo.strategies.BAMBO.checkpoint` / ``restore``: its fit starts from the
  previous hyperparameters), which is what an uninterrupted run does too. Ax's ``Client``
  marks its first batch abandoned, is told the 4 points, and generates again (its
  generation strategy keeps whatever it keeps between calls).

Wall seconds (``time.perf_counter``) and process CPU seconds (``time.process_time``, all
threads) of each ``ask`` / ``get_next_trials`` call, per seed; the report gives the median
over seeds and the ratio bambo / Ax. Every figure is measured in the run that writes it.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import warnings
from pathlib import Path

import torch
from torch import Tensor
from torch.quasirandom import SobolEngine

from bambo.problem import SyntheticProblem
from bambo.strategies import get_strategy
from benchmarks.common import RESULTS, Clock, Timing, machine_header

__all__ = ["ax_batches", "bambo_batches", "main"]


def design(problem: SyntheticProblem, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` scrambled Sobol points in the problem's bounds and their objectives (maximisation form)."""
    lower, upper = problem.bounds
    X = lower + (upper - lower) * SobolEngine(problem.dim, scramble=True, seed=seed).draw(n, dtype=torch.float64)
    return X, problem.evaluate(X)


def bambo_batches(
    problem: SyntheticProblem, X: Tensor, Y: Tensor, q: int, seed: int, **options: object
) -> tuple[Timing, Timing, dict]:
    """bambo's first batch on ``X[:-q]`` and its next batch on ``X`` (resumed from the first's checkpoint).

    ``options`` go to the strategy (``ref_point="nadir"``: the reference inferred from the front).
    """
    first = get_strategy("bambo", problem, seed=seed, **options)
    first.tell(X[:-q], Y[:-q])
    clock = Clock()
    first.ask(q)
    cold = clock.elapsed()
    state = first.checkpoint()
    second = get_strategy("bambo", problem, seed=seed, **options)
    second.tell(X, Y)
    if state is not None:
        second.restore(state)
    clock.restart()
    second.ask(q)
    warm = clock.elapsed()
    return cold, warm, {"first": first.timings[-1], "next": second.timings[-1], "acquisition": first.acquisition_name}


def ax_batches(problem: SyntheticProblem, X: Tensor, Y: Tensor, q: int, seed: int) -> tuple[Timing, Timing, str]:
    """Ax's first batch on ``X[:-q]`` and its next batch on ``X`` (default generation strategy)."""
    from ax.api.client import Client
    from ax.utils.common.logger import set_stderr_log_level

    from bambo.ax.export import configure_client

    set_stderr_log_level(logging.ERROR)
    client = Client(random_seed=seed)
    names = configure_client(client, problem, name="cost", thresholds=True)
    client.configure_generation_strategy()

    def attach(rows: range) -> None:
        for i in rows:
            index = client.attach_trial(parameters=names.parameterization(X[i]))
            client.complete_trial(index, raw_data=names.outcome(problem.to_user(Y[i])))

    attach(range(X.shape[0] - q))
    clock = Clock()
    trials = client.get_next_trials(max_trials=q)
    cold = clock.elapsed()
    for index in trials:
        client.mark_trial_abandoned(index)
    attach(range(X.shape[0] - q, X.shape[0]))
    clock.restart()
    trials = client.get_next_trials(max_trials=q)
    warm = clock.elapsed()
    experiment = client._experiment  # noqa: SLF001 - which generator made the batch, for the report
    last = experiment.trials[max(trials)].generator_runs[0]
    return cold, warm, str(getattr(last, "_generation_node_name", None) or last._model_key)  # noqa: SLF001


def _median(values: list[float]) -> float:
    return statistics.median(values)


def main(argv: list[str] | None = None) -> Path:
    """Run the measurement and write the report; returns its path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--n", type=int, default=100, help="evaluated points before the next batch")
    parser.add_argument("--objectives", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--q", type=int, default=4)
    parser.add_argument("--no-ax", action="store_true", help="bambo only (Ax not installed)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--name", default="optimizer_cost")
    parser.add_argument("--output", type=Path, default=RESULTS, help="folder of the report")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    warnings.filterwarnings("ignore")
    total = Clock()
    rows, details = [], []
    for m in args.objectives:
        problem = SyntheticProblem("dtlz2", dim=args.dim, num_objectives=m)
        ours: dict[str, list[float]] = {k: [] for k in ("cold_w", "cold_c", "warm_w", "warm_c", "nadir_w", "nadir_c")}
        theirs: dict[str, list[float]] = {k: [] for k in ("cold_w", "cold_c", "warm_w", "warm_c")}
        generator = "-"
        for seed in range(args.seeds):
            X, Y = design(problem, args.n, seed)
            cold, warm, info = bambo_batches(problem, X, Y, args.q, seed)
            for key, t in (("cold", cold), ("warm", warm)):
                ours[f"{key}_w"].append(t.wall)
                ours[f"{key}_c"].append(t.cpu)
            details.append(
                f"- m = {m}, seed {seed}: bambo ({info['acquisition']}) first batch fit "
                f"{info['first']['fit_s']:.2f} s + "
                f"acquisition {info['first']['acquisition_s']:.2f} s; next batch fit {info['next']['fit_s']:.2f} s + "
                f"acquisition {info['next']['acquisition_s']:.2f} s (wall)"
            )
            if info["acquisition"] == "qlognehvi":  # the reference point matters: measure the inferred one too
                _, warm, nadir_info = bambo_batches(problem, X, Y, args.q, seed, ref_point="nadir")
                ours["nadir_w"].append(warm.wall)
                ours["nadir_c"].append(warm.cpu)
                details.append(
                    f"- m = {m}, seed {seed}: bambo with ref_point='nadir', next batch fit "
                    f"{nadir_info['next']['fit_s']:.2f} s + acquisition {nadir_info['next']['acquisition_s']:.2f} s"
                )
            if not args.no_ax:
                cold, warm, generator = ax_batches(problem, X, Y, args.q, seed)
                for key, t in (("cold", cold), ("warm", warm)):
                    theirs[f"{key}_w"].append(t.wall)
                    theirs[f"{key}_c"].append(t.cpu)
            print(f"m={m} seed={seed}: bambo next batch {ours['warm_w'][-1]:.2f} s wall", flush=True)
        medians = {k: _median(v) for k, v in ours.items() if v}
        rows.append((m, medians, {k: _median(v) for k, v in theirs.items() if v}, generator))
    elapsed = total.elapsed()
    command = "python -m benchmarks.optimizer_cost" + "".join(f" {flag}" for flag in _flags(args))
    lines = [
        "# Optimizer cost of one batch: bambo's BAMBO against Ax's Client",
        "",
        machine_header(("torch", "botorch", "gpytorch", "bambo", "ax-platform")),
        f"- command: `{command}`; this run: {elapsed.text(0)} (this process, all threads)",
        f"- setting: DTLZ2, d = {args.dim}, n = {args.n} scrambled Sobol points (seed = the seed), q = {args.q}, "
        f"seeds 0..{args.seeds - 1}; medians over seeds. First batch: told n - q points, models fitted from scratch. "
        "Next batch: told all n, after the first (bambo resumes from the first batch's journaled state; Ax's Client "
        "abandons its first batch and generates again). bambo: `get_strategy('bambo', problem)` defaults "
        "(`ref_point='auto'`: the problem's reference point); Ax: `Client.configure_generation_strategy()` "
        "defaults, told the problem's reference point as objective thresholds (the same point, as in the suite). "
        "The last column is bambo's next batch with `ref_point='nadir'` (the reference inferred from the observed "
        "front, the default before issue 16), where the acquisition uses a reference point (qLogNEHVI).",
        "",
        "| objectives | bambo first batch wall / CPU s | Ax first batch wall / CPU s | bambo next batch wall / CPU s | "
        "Ax next batch wall / CPU s | next batch CPU ratio bambo / Ax | next batch wall ratio | "
        "bambo (ref_point='nadir') next batch wall / CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, o, t, _ in rows:
        ax_first = f"{t['cold_w']:.2f} / {t['cold_c']:.2f}" if t else "not run"
        ax_next = f"{t['warm_w']:.2f} / {t['warm_c']:.2f}" if t else "not run"
        cpu_ratio = f"{o['warm_c'] / t['warm_c']:.2f}" if t else "n/a"
        wall_ratio = f"{o['warm_w'] / t['warm_w']:.2f}" if t else "n/a"
        nadir = f"{o['nadir_w']:.2f} / {o['nadir_c']:.2f}" if "nadir_w" in o else "n/a (qLogNParEGO takes none)"
        lines.append(
            f"| {m} | {o['cold_w']:.2f} / {o['cold_c']:.2f} | {ax_first} | {o['warm_w']:.2f} / {o['warm_c']:.2f} | "
            f"{ax_next} | {cpu_ratio} | {wall_ratio} | {nadir} |"
        )
    lines += ["", "Ax's generator of its next batch: " + ", ".join(f"m = {m}: {g}" for m, _, _, g in rows), ""]
    lines += ["Where bambo's time goes (its own fit / acquisition timings):", "", *details, ""]
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / f"{args.name}.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    return out


def _flags(args: argparse.Namespace) -> list[str]:
    flags = []
    if args.dim != 16:
        flags.append(f"--dim {args.dim}")
    if args.n != 100:
        flags.append(f"--n {args.n}")
    if args.objectives != [2, 3, 4]:
        flags.append("--objectives " + " ".join(map(str, args.objectives)))
    if args.seeds != 3:
        flags.append(f"--seeds {args.seeds}")
    if args.q != 4:
        flags.append(f"--q {args.q}")
    if args.no_ax:
        flags.append("--no-ax")
    if args.threads is not None:
        flags.append(f"--threads {args.threads}")
    if args.name != "optimizer_cost":
        flags.append(f"--name {args.name}")
    if args.output != RESULTS:
        flags.append(f"--output {args.output}")
    return flags


if __name__ == "__main__":
    main()
