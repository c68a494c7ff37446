"""A block-wise merge search driven by Ax's ``Client``, with bambo as the evaluation function.

The digits benchmark (embedded, trains in about a second and is cached) gives a real
merge problem: a base MLP and two experts (``rotated`` and ``inverted`` digits),
merged by task arithmetic with one coefficient per expert per block of layers
(embedding, 3 layer blocks, head: 10 parameters). Ax proposes coefficients, bambo
merges the experts and scores the merged model on both tasks, and Ax searches for
the Pareto frontier of the two accuracies, here with a bambo surrogate (MAP's
Bayesian quadratic by default) inside Ax's BoTorch generator.

Run::

    python examples/ax_client.py --budget 12
    python examples/ax_client.py --budget 12 --surrogate quadratic-mean-gp
    python examples/ax_client.py --budget 12 --surrogate ax    # Ax's own default GP

The three bambo pieces used are :func:`bambo.ax.configure_client` (Ax parameters and
objectives from the problem, with Ax-safe names), :class:`bambo.ax.AxNames` (Ax
parameterization <-> bambo decision vector) and :func:`bambo.ax.generation_strategy`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from ax.api.client import Client
from ax.utils.common.logger import set_stderr_log_level

from bambo.ax.adapters import AX_SURROGATES, generation_strategy
from bambo.ax.export import configure_client
from bambo.benchmarks.digits import DigitsBenchmark, DigitsConfig
from bambo.errors import EvaluationError
from bambo.merge_problem import MergeProblem

TASKS = ("rotated", "inverted")


def build_problem(cache_dir: Path | None = None) -> MergeProblem:
    """The digits benchmark's block-wise merge problem for two experts.

    Args:
        cache_dir: Where the trained models are cached (default: bambo's cache).

    Returns:
        A problem with 10 coefficients in [0, 1] and two accuracies to maximise.
    """
    benchmark = DigitsBenchmark.build(DigitsConfig(), cache_dir=cache_dir)
    return benchmark.problem(list(TASKS), granularity="block", blocks=3, partitioner="hybrid")


def run(
    budget: int = 12,
    surrogate: str = "quadratic",
    n_initial: int = 5,
    seed: int = 0,
    cache_dir: Path | None = None,
) -> tuple[Client, list[dict[str, float]]]:
    """Run the merge search through Ax.

    Args:
        budget: Number of trials (evaluations).
        surrogate: A name from :data:`bambo.ax.AX_SURROGATES`, or ``"ax"`` for Ax's
            default generation strategy.
        n_initial: Quasi-random trials before the surrogate takes over.
        seed: Seed of Ax's random choices.
        cache_dir: Model cache of the digits benchmark.

    Returns:
        The client and the observed Pareto frontier, one ``{metric: value}`` per point.
    """
    torch.set_flush_denormal(True)  # subnormal floats slow acquisition optimisation badly
    problem = build_problem(cache_dir)
    client = Client(random_seed=seed)
    names = configure_client(client, problem, name="digits-blockwise")
    if surrogate == "ax":
        client.configure_generation_strategy(initialization_budget=n_initial, initialization_random_seed=seed)
    else:
        strategy = generation_strategy(surrogate, n_initial=n_initial, seed=seed, num_restarts=4, raw_samples=256)
        client.set_generation_strategy(strategy)

    for _ in range(budget):
        for index, parameters in client.get_next_trials(max_trials=1).items():
            x = names.vector(parameters)  # Ax parameterization -> bambo decision vector
            try:
                y = problem.to_user(problem.evaluate_one(x))  # the accuracies, in their own directions
            except EvaluationError as exc:
                client.mark_trial_failed(index, failed_reason=str(exc))
                continue
            client.complete_trial(index, raw_data=names.outcome(y))

    frontier = client.get_pareto_frontier(use_model_predictions=False)
    return client, [{metric: float(mean) for metric, (mean, _) in outcome.items()} for _, outcome, _, _ in frontier]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints the Pareto frontier.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status, 0.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=12, help="number of trials (default 12)")
    parser.add_argument("--surrogate", default="quadratic", choices=[*AX_SURROGATES, "ax"])
    parser.add_argument("--n-initial", type=int, default=5, help="quasi-random trials first (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="show Ax's log of every trial")
    args = parser.parse_args(argv)
    if args.budget < 1 or args.n_initial < 1:
        parser.error(f"--budget and --n-initial must be >= 1, got {args.budget} and {args.n_initial}")
    set_stderr_log_level(logging.INFO if args.verbose else logging.WARNING)

    client, frontier = run(args.budget, args.surrogate, min(args.n_initial, args.budget), args.seed)
    summary = client.summarize()
    print(f"{len(summary)} trials ({(summary['trial_status'] == 'COMPLETED').sum()} completed) with {args.surrogate}")
    print(f"Pareto frontier of the observed trials, {len(frontier)} point(s):")
    for point in sorted(frontier, key=lambda p: sorted(p.items())):
        print("  " + "  ".join(f"{metric} {value:.4f}" for metric, value in point.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
