"""BAMBO's optimiser time per batch on a data-flow space (issue 19's target: <= 10 s for T <= 32 slots, n <= 60).

Run: ``python -m benchmarks.dataflow_cost`` (writes ``benchmarks/results/dataflow_cost.md``).

The problem: two residual MLPs of ``--layers`` layers (the digits benchmark's layout, random
weights, seeded), ``--repeats`` repetitions of their pool (``T = 2 * layers * repeats``
slots; 8 layers and 2 repetitions give T = 32: 30 include bits and 32 scales), objectives the
log10 of the mean squared difference of the built model's outputs from a target path's and
the number of hops. Evaluations take milliseconds, so the run's time is the optimiser's: BAMBO's default
(GP per objective on canonical points, qLogNEHVI, BoTorch's alternating mixed optimiser),
batches of 4 up to ``--budget`` evaluations. Printed and reported per batch: the number of
points it was fitted on, fit and acquisition wall seconds (BAMBO's own timings), and the
process CPU seconds of the whole ``ask``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from bambo.dataflow import DataFlowSpace, LayerPath, build_path_model
from bambo.dataflow.problem import HOPS, DataFlowProblem
from bambo.problem import Objective
from bambo.strategies import get_strategy
from benchmarks.common import RESULTS, Clock, machine_header


class ResidualMLP(nn.Module):
    """``input``, a residual ``layers`` list, ``head`` (the digits benchmark's layout)."""

    def __init__(self, seed: int, layers: int, width: int = 32) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.input = nn.Linear(16, width)
        self.layers = nn.ModuleList([nn.Linear(width, width) for _ in range(layers)])
        self.head = nn.Linear(width, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) / p.shape[-1] ** 0.5)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.input(x))
        for layer in self.layers:
            h = h + torch.relu(layer(h))
        return self.head(h)


def make_problem(layers: int, repeats: int) -> DataFlowProblem:
    """Two sources, a target path that mixes them, error and hops minimised."""
    sources = {"a": ResidualMLP(0, layers).eval(), "b": ResidualMLP(1, layers).eval()}
    target_path = LayerPath.of([("a", i) if i % 2 == 0 else ("b", i, 0.8) for i in range(layers)])
    data = torch.randn(256, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        target = build_path_model(target_path, sources)(data)

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {"error": float(((model(data) - target) ** 2).mean().log10())}

    space = DataFlowSpace({"a": layers, "b": layers}, repeats=repeats, pin_last=False)
    objectives = [Objective(name="error", direction="minimize"), Objective(name=HOPS, direction="minimize")]
    return DataFlowProblem(sources, space, evaluate, objectives, ref_point=[8.0, float(space.n_slots + 1)])


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    clock = Clock()
    problem = make_problem(args.layers, args.repeats)
    strategy = get_strategy("bambo", problem, seed=args.seed, n_iterations=None)
    rows = []
    while strategy.X.shape[0] < args.budget:
        batches, cpu = len(strategy.timings), time.process_time()
        X = strategy.ask(min(4, args.budget - strategy.X.shape[0]))
        cpu = time.process_time() - cpu
        strategy.tell(X, problem.evaluate(X))
        if len(strategy.timings) > batches:  # a model-based batch (the warm start has no timing)
            timing = strategy.timings[-1]
            rows.append({"timing": timing, "cpu_s": cpu})
            print(
                f"n={int(timing['n'])}: fit {timing['fit_s']:.2f} s, acquisition {timing['acquisition_s']:.2f} s "
                f"wall; ask {cpu:.2f} CPU-s",
                flush=True,
            )
    space = problem.space
    lines = [
        "# BAMBO's optimiser time per batch on a data-flow space",
        "",
        machine_header(("torch", "botorch", "bambo")),
        f"- command: `python -m benchmarks.dataflow_cost --layers {args.layers} --repeats {args.repeats} "
        f"--budget {args.budget} --seed {args.seed}`; this run: {clock.elapsed().text()}",
        f"- space: {space!r}; batches of 4; issue 19's target: <= 10 s per batch for T <= 32, n <= 60",
        "",
        "| fitted on n points | fit wall s | acquisition wall s | batch wall s | ask CPU s |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        t = row["timing"]
        lines.append(
            f"| {int(t['n'])} | {t['fit_s']:.2f} | {t['acquisition_s']:.2f} | {t['fit_s'] + t['acquisition_s']:.2f} "
            f"| {row['cpu_s']:.2f} |"
        )
    if rows:
        worst = max(r["timing"]["fit_s"] + r["timing"]["acquisition_s"] for r in rows)
        lines += ["", f"Slowest batch: {worst:.2f} s wall ({'within' if worst <= 10 else 'over'} the 10 s target)."]
    else:
        lines += ["", "No model-based batch: the budget ended within the warm start."]
    args.output.mkdir(parents=True, exist_ok=True)
    out = args.output / "dataflow_cost.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


if __name__ == "__main__":
    main()
