"""Surrogate benchmark: how well each surrogate predicts held-out points.

For each problem and training size, every surrogate is fitted on scrambled
Sobol points and scored on held-out Sobol points:

- R^2 (1 - SSE / SST per output, averaged over outputs) and RMSE;
- NLPD: mean negative log density of the truth under ``N(mean, variance)`` of the
  predictive distribution (``observation_noise=True``: a model's noise term is
  where it puts what it cannot fit);
- coverage of the central 90% predictive interval ``mean +- 1.645 sd``, and of the
  noise-free posterior of ``f`` (what acquisition functions use: a model that
  calls everything noise looks calibrated by the first and fails the second);
- fit time (seconds).

Problems: BoTorch's BraninCurrin and DTLZ2 (d = 4, 2 objectives); the digits merge
landscape (task arithmetic, accuracies) with 2, 3 and 4 experts at model level
and 2 experts at block level (3 uniform blocks + embed + head: d = 10); and a
PMTO-style parametric family (a shifted sphere over ``(x, theta)``, where the
last input is the task parameter) on which the parametric-task GP is scored.
The sigmoid link runs where outputs lie in [0, 1] (accuracies), the softplus
link where they are >= 0; the parametric-task GP only on the parametric family.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torch.quasirandom import SobolEngine

from bambo.benchmarks.environment import machine_header
from bambo.problem import SyntheticProblem
from bambo.surrogates import available_surrogates, fit_surrogate

_Z90 = 1.6448536269514722


@dataclass(frozen=True)
class LandscapeProblem:
    """A landscape to learn: a function on a box and which surrogates apply.

    Attributes:
        name: Label in the tables.
        bounds: ``(2, d)``.
        function: Maps ``(n, d)`` inputs to ``(n, m)`` outputs.
        output_range: ``(l, u)`` of every output (``u`` may be ``inf``), or ``None``.
        task_dims: Task-parameter columns (only the parametric family has them).
    """

    name: str
    bounds: Tensor
    function: Callable[[Tensor], Tensor]
    output_range: tuple[float, float] | None = None
    task_dims: tuple[int, ...] = ()

    def surrogates(self) -> list[str]:
        """The surrogates that apply to this problem."""
        names = []
        for name in available_surrogates():
            if name == "parametric-task-gp" and not self.task_dims:
                continue
            if name == "quadratic-sigmoid" and (self.output_range is None or math.isinf(self.output_range[1])):
                continue
            if name == "quadratic-softplus" and self.output_range is None:
                continue
            names.append(name)
        return names

    def options(self, surrogate: str) -> dict[str, object]:
        """Keyword options of ``fit_surrogate`` for this problem."""
        if surrogate == "parametric-task-gp":
            return {"task_dims": list(self.task_dims)}
        if surrogate == "quadratic-sigmoid" and self.output_range is not None:
            return {"lower": self.output_range[0], "upper": self.output_range[1]}
        if surrogate == "quadratic-softplus" and self.output_range is not None:
            return {"lower": self.output_range[0]}
        return {}


def synthetic_landscape(name: str, **kwargs: int) -> LandscapeProblem:
    """A BoTorch test function (maximisation form) as a landscape."""
    problem = SyntheticProblem(name, **kwargs)
    label = name if not kwargs else f"{name}(" + ",".join(f"{k}={v}" for k, v in kwargs.items()) + ")"
    return LandscapeProblem(label, problem.bounds, problem.evaluate)


def digits_landscape(tasks: Sequence[str], granularity: str = "model", n_blocks: int = 3) -> LandscapeProblem:
    """The digits merge landscape: accuracies of task-arithmetic merges (outputs in [0, 1])."""
    from bambo.benchmarks.digits import DigitsBenchmark

    problem = DigitsBenchmark.build().problem(list(tasks), granularity=granularity, blocks=n_blocks)  # type: ignore[arg-type]
    label = f"digits-{len(tasks)} {granularity}" + (f" K={n_blocks}" if granularity == "block" else "")
    return LandscapeProblem(label, problem.bounds, problem.evaluate, output_range=(0.0, 1.0))


def sphere_family(dim: int = 2) -> LandscapeProblem:
    """PMTO's shifted sphere with a nonlinear shift ``s(theta) = (sin(5 (theta + 0.5)) + 1) / 2``.

    Inputs ``(x_1..x_dim, theta)`` in the unit cube; output ``sum_i (x_i - s(theta))^2 >= 0``.
    """

    def function(X: Tensor) -> Tensor:
        shift = (torch.sin(5.0 * (X[:, -1] + 0.5)) + 1.0) / 2.0
        return ((X[:, :-1] - shift.unsqueeze(-1)) ** 2).sum(-1, keepdim=True)

    bounds = torch.stack([torch.zeros(dim + 1), torch.ones(dim + 1)]).double()
    return LandscapeProblem(
        f"sphere-family d={dim}+1", bounds, function, output_range=(0.0, math.inf), task_dims=(dim,)
    )


@dataclass
class Scores:
    """Per-(problem, size, surrogate) scores over seeds."""

    r2: list[float] = field(default_factory=list)
    rmse: list[float] = field(default_factory=list)
    nlpd: list[float] = field(default_factory=list)
    coverage: list[float] = field(default_factory=list)
    coverage_f: list[float] = field(default_factory=list)
    fit_seconds: list[float] = field(default_factory=list)
    fit_cpu_seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _sobol(bounds: Tensor, n: int, seed: int) -> Tensor:
    unit = SobolEngine(bounds.shape[1], scramble=True, seed=seed).draw(n, dtype=torch.float64)
    return bounds[0] + (bounds[1] - bounds[0]) * unit


def score(mean: Tensor, variance: Tensor, truth: Tensor) -> dict[str, float]:
    """R^2, RMSE, NLPD and 90% coverage of Gaussian predictions; all ``(n, m)``."""
    var = variance.clamp_min(1e-12)
    sse = ((truth - mean) ** 2).sum(0)
    sst = ((truth - truth.mean(0)) ** 2).sum(0).clamp_min(1e-12)
    nlpd = 0.5 * (torch.log(2 * math.pi * var) + (truth - mean) ** 2 / var)
    inside = ((truth - mean).abs() <= _Z90 * var.sqrt()).double()
    return {
        "r2": float((1.0 - sse / sst).mean()),
        "rmse": float(((truth - mean) ** 2).mean().sqrt()),
        "nlpd": float(nlpd.mean()),
        "coverage": float(inside.mean()),
    }


def run(
    problems: Sequence[LandscapeProblem],
    sizes: Sequence[int],
    seeds: Sequence[int],
    n_test: int = 200,
    progress: Callable[[str], None] | None = None,
) -> dict[tuple[str, int, str], Scores]:
    """Fit and score every applicable surrogate on every problem, size and seed.

    Returns:
        ``{(problem, n, surrogate): Scores}``.
    """
    results: dict[tuple[str, int, str], Scores] = {}
    for problem in problems:
        X_test = _sobol(problem.bounds, n_test, seed=10_000)
        Y_test = problem.function(X_test)
        for n in sizes:
            for seed in seeds:
                X = _sobol(problem.bounds, n, seed=seed)
                Y = problem.function(X)
                for name in problem.surrogates():
                    entry = results.setdefault((problem.name, n, name), Scores())
                    start, start_cpu = time.perf_counter(), time.process_time()
                    try:
                        model = fit_surrogate(name, X, Y, bounds=problem.bounds, **problem.options(name))
                        elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
                        with torch.no_grad():  # predictive distribution of held-out observations
                            post = model.posterior(X_test, observation_noise=True)
                            figures = score(post.mean, post.variance, Y_test)
                            latent = model.posterior(X_test)
                            figures_f = score(latent.mean, latent.variance, Y_test)
                    except Exception as exc:  # noqa: BLE001 - a failed fit is a result, not a crash
                        entry.failures.append(f"{type(exc).__name__}: {exc}")
                        continue
                    entry.r2.append(figures["r2"])
                    entry.rmse.append(figures["rmse"])
                    entry.nlpd.append(figures["nlpd"])
                    entry.coverage.append(figures["coverage"])
                    entry.coverage_f.append(figures_f["coverage"])
                    entry.fit_seconds.append(elapsed)
                    entry.fit_cpu_seconds.append(elapsed_cpu)
                if progress is not None:
                    progress(f"{problem.name} n={n} seed={seed}")
    return results


def median_iqr(values: Sequence[float]) -> str:
    """``median [q1, q3]`` with 3 significant digits, or ``-`` if empty."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3g}"
    q1, med, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return f"{med:.3g} [{q1:.3g}, {q3:.3g}]"


def markdown_table(results: dict[tuple[str, int, str], Scores]) -> str:
    """One row per (problem, n, surrogate): medians and interquartile ranges over seeds."""
    lines = [
        "| problem | n | surrogate | R^2 | RMSE | NLPD | 90% coverage | 90% coverage of f | fit wall s | fit CPU s "
        "| failed |",
        "|---|---:|---|---|---|---|---|---|---|---|---:|",
    ]
    for (problem, n, name), s in results.items():
        lines.append(
            f"| {problem} | {n} | {name} | {median_iqr(s.r2)} | {median_iqr(s.rmse)} | {median_iqr(s.nlpd)} | "
            f"{median_iqr(s.coverage)} | {median_iqr(s.coverage_f)} | {median_iqr(s.fit_seconds)} | "
            f"{median_iqr(s.fit_cpu_seconds)} | {len(s.failures)} |"
        )
    return "\n".join(lines)


def plot_r2(results: dict[tuple[str, int, str], Scores], path: str) -> None:
    """R^2 (median over seeds) against training size, one panel per problem."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = list(dict.fromkeys(p for p, _, _ in results))
    cols = min(3, len(problems))
    rows = (len(problems) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.6 * rows), squeeze=False)
    for ax, problem in zip(axes.flat, problems, strict=False):
        names = list(dict.fromkeys(s for p, _, s in results if p == problem))
        for name in names:
            points = sorted(
                (n, statistics.median(sc.r2))
                for (p, n, s), sc in results.items()
                if p == problem and s == name and sc.r2
            )
            if points:
                ax.plot([p[0] for p in points], [max(p[1], -0.5) for p in points], marker="o", ms=3, label=name)
        ax.set_title(problem, fontsize=9)
        ax.set_xscale("log")
        ax.set_xlabel("training points")
        ax.set_ylabel("R^2 (clipped at -0.5)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(problems) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


SUITES: dict[str, dict[str, object]] = {
    "quick": {"sizes": (10, 30), "seeds": (0,), "n_test": 100},
    "full": {"sizes": (10, 20, 30, 50, 100), "seeds": (0, 1, 2, 3, 4), "n_test": 200},
}


def suite_problems(suite: str) -> list[LandscapeProblem]:
    """The problems of a suite (quick: digits with 2 experts and the parametric family)."""
    if suite == "quick":
        return [digits_landscape(["inverted", "noisy"]), sphere_family()]
    return [
        synthetic_landscape("branin_currin"),
        synthetic_landscape("dtlz2", dim=4),
        digits_landscape(["inverted", "noisy"]),
        digits_landscape(["rotated", "inverted", "noisy"]),
        digits_landscape(["rotated", "inverted", "flipped", "noisy"]),
        digits_landscape(["inverted", "noisy"], granularity="block", n_blocks=3),
        sphere_family(),
    ]


MAP_R2_TWO_TASKS = 0.953  # MAP Table 2: R^2 of the quadratic for 2 tasks (ViT-B/32)


def write_report(suite: str, out_dir: Path, threads: int = 2, echo: bool = True) -> Path:
    """Run a suite and write its markdown report and plot; returns the report path."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    config = SUITES[suite]
    start, start_cpu = time.perf_counter(), time.process_time()
    results = run(
        suite_problems(suite),
        sizes=config["sizes"],  # type: ignore[arg-type]
        seeds=config["seeds"],  # type: ignore[arg-type]
        n_test=config["n_test"],  # type: ignore[arg-type]
        progress=print if echo else None,
    )
    elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    suffix = "" if suite == "full" else f"_{suite}"
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = out_dir / f"surrogates{suffix}.png"
    plot_r2(results, str(plot))
    headline = results.get(("digits-2 model", 30, "quadratic"))
    head = (
        f"Digits landscape, 2 experts, model level, 30 training points: quadratic R^2 = "
        f"{statistics.median(headline.r2):.3f} (median over {len(headline.r2)} seeds) vs MAP's reported "
        f"{MAP_R2_TWO_TASKS} (ViT-B/32, 2 tasks)."
        if headline and headline.r2
        else "Digits landscape with 2 experts at 30 points was not in this suite."
    )
    text = "\n".join(
        [
            f"# Surrogate benchmark ({suite})",
            "",
            machine_header(("torch", "botorch", "gpytorch", "bambo")),
            f"- command: `python -m benchmarks.surrogates --suite {suite}"
            + (f" --threads {threads}" if threads != 2 else "")
            + f"`; this run: wall {elapsed:.0f} s, "
            f"CPU {elapsed_cpu:.0f} s (this process, all threads)",
            f"- training sizes {list(config['sizes'])}, seeds {list(config['seeds'])}, "  # type: ignore[call-overload]
            f"{config['n_test']} held-out Sobol points; medians [interquartile range] over seeds",
            "",
            f"**{head}**",
            "",
            f"![R^2 against training size]({plot.name})",
            "",
            markdown_table(results),
            "",
        ]
    )
    report = out_dir / f"surrogates{suffix}.md"
    report.write_text(text)
    return report
