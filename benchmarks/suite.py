"""The benchmark suite: problems, reference fronts, runs and per-problem statistics.

``python -m benchmarks run --suite quick|standard|outside|full`` (see :mod:`benchmarks.__main__`) runs every
contender of :mod:`benchmarks.contenders` on every problem of the suite with the same
budget, batch size and seeds, and summarises each problem by the hypervolume of the
evaluated points as a fraction of a reference hypervolume:

- synthetic problems (BoTorch): BoTorch's ``max_hv`` for the problem's reference point;
  IGD against the analytic front (BraninCurrin: the front of a 300 x 300 grid);
- merge problems (digits, MiniLM): the hypervolume of a reference front pooled from a
  dense model-level grid (digits), a long pymoo NSGA-II run on the true objectives and
  every contender's evaluations in this run (sizes stated in the report), w.r.t. one
  reference point fixed *before* any contender runs: the nadir of the grid's and the
  NSGA-II run's front less 10% of its range (the problems' chance-level reference
  point is so low that any fair merge scores close to the reference hypervolume).

One reference point per problem scores every contender, and it is the problem's
``ref_point`` while the contenders run, so every contender that takes a reference
point or objective thresholds is told the same one (:attr:`Contender.reference` says
which are). IGD is computed on objectives scaled to ``[ref point, ideal point of the
reference front]``. Each run's optimizer time is measured in wall and CPU seconds.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
import torch
from botorch.test_functions.multi_objective import CarSideImpact, VehicleSafety
from torch import Tensor

from bambo.facade import optimize
from bambo.pareto import hypervolume, inverted_generational_distance, pareto_front
from bambo.problem import Problem, SyntheticProblem
from bambo.strategies import get_strategy
from benchmarks.common import Clock
from benchmarks.contenders import CONTENDERS, RunRecord, run_session

__all__ = [
    "PROBLEMS",
    "SUITES",
    "PreReference",
    "ProblemSpec",
    "Reference",
    "SuiteConfig",
    "Stats",
    "init_worker",
    "run_problem",
    "run_seed",
]

DIGITS_TASKS = ("rotated", "inverted", "flipped", "noisy")
GRID_LEVELS = {2: 51, 3: 21, 4: 11}  # dense model-level grid per number of experts (51^2, 21^3, 11^4 points)


@dataclass(frozen=True)
class ProblemSpec:
    """A problem of the suite.

    Attributes:
        label: Name in the report.
        build: Builds the problem (cached builders make repeated calls cheap).
        grid: For merge problems, builds the model-level problem with the same objectives,
            whose dense grid joins the reference front; ``None`` for none.
    """

    label: str
    build: Callable[[], Problem]
    grid: Callable[[], Problem] | None = None


@functools.lru_cache(maxsize=1)
def _digits():  # noqa: ANN202 - DigitsBenchmark, imported lazily
    from bambo.benchmarks.digits import DigitsBenchmark, DigitsConfig

    return DigitsBenchmark.build(DigitsConfig())


@functools.lru_cache(maxsize=1)
def _text():  # noqa: ANN202 - TextBenchmark, imported lazily
    from bambo.benchmarks.text import TextBenchmark, TextConfig

    return TextBenchmark.build(TextConfig())


def _digits_problem(n: int, granularity: str) -> Callable[[], Problem]:
    def build() -> Problem:
        tasks = list(DIGITS_TASKS[:n])
        if granularity == "model":
            return _digits().problem(tasks)
        return _digits().problem(tasks, granularity="block", blocks=3, partitioner="hybrid")

    return build


def _text_problem(n: int) -> Callable[[], Problem]:
    def build() -> Problem:
        bench = _text()
        return bench.problem(bench.task_names[:n], granularity="block", blocks=3, partitioner="hybrid")

    return build


def _synthetic(name: str | type, dim: int | None = None, m: int | None = 2) -> Callable[[], Problem]:
    return lambda: SyntheticProblem(name, dim=dim, num_objectives=m)


PROBLEMS: dict[str, ProblemSpec] = {
    s.label: s
    for s in [
        ProblemSpec("BraninCurrin (d=2)", _synthetic("branin_currin")),
        ProblemSpec("DTLZ2 (d=6, 2 obj)", _synthetic("dtlz2", 6, 2)),
        ProblemSpec("DTLZ2 (d=6, 3 obj)", _synthetic("dtlz2", 6, 3)),
        ProblemSpec("ZDT1 (d=6)", _synthetic("zdt1", 6)),
        ProblemSpec("ZDT2 (d=6)", _synthetic("zdt2", 6)),
        ProblemSpec("ZDT3 (d=6)", _synthetic("zdt3", 6)),
        *[
            ProblemSpec(f"digits {n} experts (model level)", _digits_problem(n, "model"), _digits_problem(n, "model"))
            for n in (2, 3, 4)
        ],
        *[
            ProblemSpec(f"digits {n} experts (block level)", _digits_problem(n, "block"), _digits_problem(n, "model"))
            for n in (2, 3)
        ],
        *[ProblemSpec(f"MiniLM text {n} experts (block level)", _text_problem(n)) for n in (2, 4)],
        # outside every tier but `outside`: the defaults were chosen without looking at them (issue 16)
        ProblemSpec("VehicleSafety (d=5, 3 obj)", _synthetic(VehicleSafety, None, None)),
        ProblemSpec("CarSideImpact (d=7, 4 obj)", _synthetic(CarSideImpact, None, None)),
    ]
}


OUTSIDE = ("VehicleSafety (d=5, 3 obj)", "CarSideImpact (d=7, 4 obj)")  # only in the `outside` tier


@dataclass(frozen=True)
class SuiteConfig:
    """One suite: which problems and contenders, budget, batch size, seeds.

    Attributes:
        name: ``quick``, ``standard``, ``outside`` or ``full`` (the report is ``<name>.md``).
        problems: Labels of :data:`PROBLEMS`.
        contenders: Labels of :data:`benchmarks.contenders.CONTENDERS`.
        budget: Evaluations per run.
        batch_size: Points per batch.
        seeds: Number of seeds (0, 1, ...).
        reference_evaluations: Evaluations of the long NSGA-II reference run on merge problems.
        merge_throughput: Run :mod:`benchmarks.merge_throughput` (else cite its last report).
    """

    name: str
    problems: Sequence[str]
    contenders: Sequence[str]
    budget: int = 24
    batch_size: int = 4
    seeds: int = 5
    reference_evaluations: int = 800
    merge_throughput: bool = False


SUITES: dict[str, SuiteConfig] = {
    "quick": SuiteConfig(
        "quick",
        [
            "BraninCurrin (d=2)",
            "DTLZ2 (d=6, 2 obj)",
            "digits 2 experts (model level)",
            "digits 2 experts (block level)",
        ],
        # everything but BAMBO (QM-GP) and Ax with inferred thresholds, to keep the quick suite short
        [label for label in CONTENDERS if label not in ("BAMBO (QM-GP)", "Ax (inferred thresholds)")],
        budget=24,
        batch_size=4,
        seeds=5,
        reference_evaluations=800,
    ),
    "standard": SuiteConfig(
        "standard",
        [
            "BraninCurrin (d=2)",
            "DTLZ2 (d=6, 2 obj)",
            "digits 2 experts (model level)",
            "digits 3 experts (model level)",
            "digits 2 experts (block level)",
            "digits 3 experts (block level)",
        ],
        # bambo's default and MAP against every other tool's default configuration (issue 16's ratios)
        # (and BAMBO inferring its reference point: the default before issue 16, the reference-point lever)
        [
            "BAMBO (GP)",
            "BAMBO (GP, inferred ref)",
            "MAP",
            "Sobol",
            "Ax (default MOO)",
            "Optuna NSGA-II",
            "Optuna TPE",
            "pymoo NSGA-II",
        ],
        budget=60,
        batch_size=4,
        seeds=5,
        reference_evaluations=2000,
    ),
    "outside": SuiteConfig(
        "outside",
        list(OUTSIDE),
        # bambo's defaults against Ax's on two BoTorch problems no tier contains and no default was tuned on
        ["BAMBO (GP)", "Sobol", "Ax (default MOO)"],
        budget=40,
        batch_size=4,
        seeds=5,
    ),
    "full": SuiteConfig(
        "full",
        [label for label in PROBLEMS if label not in OUTSIDE],
        list(CONTENDERS),
        budget=60,
        batch_size=4,
        seeds=5,
        reference_evaluations=4000,
        merge_throughput=True,
    ),
}


@dataclass
class Reference:
    """The yardstick of a problem.

    Attributes:
        hv: Reference hypervolume (w.r.t. ``ref_point``).
        front: Reference front for IGD, maximisation form.
        description: How it was obtained, for the report.
        ref_point: Hypervolume reference point, maximisation form.
    """

    hv: float
    front: Tensor
    description: str
    ref_point: Tensor


def synthetic_reference(problem: SyntheticProblem) -> Reference:
    """BoTorch's ``max_hv`` and the analytic front (BraninCurrin: a dense grid's front)."""
    try:
        front, how = problem.pareto_front(1000), "1000 points of the analytic front"
    except Exception:  # noqa: BLE001 - BraninCurrin, VehicleSafety, ... have no front generator
        if problem.dim == 2:
            u = torch.linspace(0, 1, 300, dtype=torch.float64)
            X = torch.cartesian_prod(u, u)
            lower, upper = problem.bounds
            front = pareto_front(problem.evaluate(lower + (upper - lower) * X))
            how = f"the {front.shape[0]} non-dominated points of a 300 x 300 grid"
        else:
            front = _nsga2_front(problem, population=200, generations=250)
            how = f"the {front.shape[0]} non-dominated points of pymoo's NSGA-II (population 200, 250 generations)"
    ref = [round(v, 4) for v in problem.to_user(problem.ref_point).tolist()]
    description = (
        f"HV reference point: BoTorch's, {ref} in the objectives' own directions; reference HV: BoTorch's "
        f"max_hv = {problem.max_hv:.4g} for it; IGD against {how}"
    )
    return Reference(problem.max_hv, front, description, problem.ref_point)


def _nsga2_front(problem: Problem, population: int, generations: int, seed: int = 0) -> Tensor:
    """The non-dominated set of a long pymoo NSGA-II run on ``problem`` (maximisation form)."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem as PymooProblem
    from pymoo.optimize import minimize

    lower, upper = problem.bounds

    class _Negated(PymooProblem):
        def __init__(self) -> None:
            super().__init__(n_var=problem.dim, n_obj=problem.num_objectives, xl=lower.numpy(), xu=upper.numpy())

        def _evaluate(self, x, out, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003 - pymoo's signature
            out["F"] = -problem.evaluate(torch.as_tensor(x, dtype=torch.float64)).numpy()

    result = minimize(_Negated(), NSGA2(pop_size=population), ("n_gen", generations), seed=seed, verbose=False)
    return pareto_front(-torch.as_tensor(result.pop.get("F"), dtype=torch.float64))


@dataclass
class PreReference:
    """What is known of a merge problem's yardstick before any contender runs.

    Attributes:
        front: Front of the dense grid and the long NSGA-II run, maximisation form, shape ``(k, m)``.
        notes: How the front was obtained, for the report.
        ref_point: The scoring reference point, maximisation form, shape ``(m,)``.
        rule: How ``ref_point`` was set, for the report.
    """

    front: Tensor
    notes: list[str]
    ref_point: Tensor
    rule: str


def merge_prereference(spec: ProblemSpec, problem: Problem, evaluations: int) -> PreReference:
    """The reference front's grid and NSGA-II parts, and the scoring reference point they fix.

    The reference point is the front's nadir less 10% of its range, never below the
    problem's own (chance-level) reference; with no grid and no NSGA-II run, the
    problem's own reference.

    Args:
        spec: The problem's spec (its ``grid`` builder, if any).
        problem: The problem.
        evaluations: Evaluations of the NSGA-II run (population 40, seed 0).
    """
    parts, notes = [], []
    if spec.grid is not None:
        model = spec.grid()
        levels = GRID_LEVELS.get(model.dim)
        if levels is not None:
            X = torch.cartesian_prod(*[torch.linspace(0, 1, levels, dtype=torch.float64)] * model.dim)
            X = X.reshape(-1, model.dim)
            lower, upper = model.bounds
            Y = model.evaluate(lower + (upper - lower) * X)
            parts.append(Y[torch.isfinite(Y).all(-1)])
            notes.append(f"a {' x '.join([str(levels)] * model.dim)} = {X.shape[0]}-point model-level grid")
    if evaluations > 0:
        strategy = get_strategy("nsga2", problem, seed=0, pop_size=40)
        result = optimize(problem, strategy, budget=evaluations, batch_size=40, progress=False)
        parts.append(result.Y_max[result.ok])
        notes.append(f"a {evaluations}-evaluation pymoo NSGA-II run (population 40) on the true objectives")
    if not parts or sum(part.shape[0] for part in parts) == 0:
        empty = torch.empty(0, problem.num_objectives, dtype=torch.float64)
        return PreReference(empty, notes, problem.ref_point.clone(), "the problem's own reference point")
    front = pareto_front(torch.cat(parts))
    nadir, ideal = front.min(0).values, front.max(0).values
    ref = torch.maximum(nadir - 0.1 * (ideal - nadir).clamp_min(1e-3), problem.ref_point)
    rule = "the nadir of the grid's and NSGA-II's front (fixed before the contenders ran) less 10% of its range"
    return PreReference(front, notes, ref, rule)


def merge_reference(problem: Problem, pre: PreReference, pooled: Tensor) -> Reference:
    """Pool the grid and NSGA-II front with the contenders' evaluations; HV w.r.t. the fixed reference point.

    Args:
        problem: The problem (for the reference point in its own directions).
        pre: The parts fixed before the contenders ran.
        pooled: Every contender's evaluations, maximisation form, shape ``(n, m)``.
    """
    front = pareto_front(torch.cat([pre.front, pooled[torch.isfinite(pooled).all(-1)]]))
    hv = hypervolume(front, pre.ref_point)
    notes = [*pre.notes, f"all {pooled.shape[0]} evaluations of the contenders in this run"]
    return Reference(
        hv,
        front,
        f"reference front of {front.shape[0]} points from " + ", ".join(notes) + f"; HV reference point: {pre.rule}, "
        f"{[round(v, 4) for v in problem.to_user(pre.ref_point).tolist()]} in the objectives' own directions "
        f"(HV {hv:.4g})",
        pre.ref_point,
    )


def with_ref_point(problem: Problem, ref_point: Tensor) -> Problem:
    """A shallow copy of ``problem`` whose ``ref_point`` (maximisation form) is ``ref_point``."""
    told = copy.copy(problem)
    told.ref_point = ref_point.clone()
    return told


def hv_history(Y: Tensor, ref_point: Tensor) -> list[float]:
    """Hypervolume of the first ``i`` evaluations, for every ``i`` (recomputed only when the front grows)."""
    history: list[float] = []
    front = torch.empty(0, Y.shape[1], dtype=torch.float64)
    hv = 0.0
    for y in Y:
        if bool(torch.isfinite(y).all()) and bool((y > ref_point).all()):
            dominated = bool(((front >= y).all(-1)).any()) if front.shape[0] else False
            if not dominated:
                front = pareto_front(torch.cat([front, y.unsqueeze(0)]))
                hv = hypervolume(front, ref_point)
        history.append(hv)
    return history


def scaled_igd(Y: Tensor, reference: Tensor, ref_point: Tensor) -> float:
    """IGD of the evaluated front on objectives scaled to [ref point, ideal of the reference front]."""
    ok = Y[torch.isfinite(Y).all(-1)]
    if ok.shape[0] == 0:
        return math.inf
    span = (reference.max(0).values - ref_point).clamp_min(1e-12)
    return inverted_generational_distance(pareto_front((ok - ref_point) / span), (reference - ref_point) / span)


def first_reaching(history: Sequence[float], level: float) -> float:
    """1-based evaluation count at which ``history`` first reaches ``level`` (inf if never)."""
    return next((float(i + 1) for i, v in enumerate(history) if v >= level - 1e-12), math.inf)


@dataclass
class Stats:
    """One contender on one problem, over the seeds.

    Attributes:
        histories: HV fraction after every evaluation, per seed (padded to the budget).
        final: Final HV fraction per seed.
        reach90: Evaluations to 90% per seed (inf: not within the budget).
        reach95: Evaluations to 95% per seed.
        igd: Scaled IGD at the final budget per seed.
        batch_s: Median optimizer wall seconds per batch, per seed.
        batch_cpu_s: Median optimizer CPU seconds per batch, per seed.
        run_cpu_s: CPU seconds of the whole run (evaluations included), per seed.
        evaluations: Evaluations made, per seed.
    """

    histories: list[list[float]] = field(default_factory=list)
    final: list[float] = field(default_factory=list)
    reach90: list[float] = field(default_factory=list)
    reach95: list[float] = field(default_factory=list)
    igd: list[float] = field(default_factory=list)
    batch_s: list[float] = field(default_factory=list)
    batch_cpu_s: list[float] = field(default_factory=list)
    run_cpu_s: list[float] = field(default_factory=list)
    evaluations: list[int] = field(default_factory=list)


@dataclass
class TimedRun:
    """One run, its optimizer CPU seconds per batch and the run's CPU seconds, evaluations included."""

    record: RunRecord
    batch_cpu_s: list[float]
    run_cpu_s: float


def summarise(runs: list[TimedRun], reference: Reference, budget: int) -> Stats:
    """Statistics of a contender's runs against the problem's reference."""
    stats, ref_point = Stats(), reference.ref_point
    for run in runs:
        record = run.record
        fraction = [v / reference.hv for v in hv_history(record.Y, ref_point)]
        fraction += [fraction[-1] if fraction else 0.0] * (budget - len(fraction))
        stats.histories.append(fraction)
        stats.final.append(fraction[-1])
        stats.reach90.append(first_reaching(fraction, 0.90))
        stats.reach95.append(first_reaching(fraction, 0.95))
        stats.igd.append(scaled_igd(record.Y, reference.front, ref_point))
        stats.batch_s.append(float(np.median(record.batch_seconds)) if record.batch_seconds else math.nan)
        stats.batch_cpu_s.append(float(np.median(run.batch_cpu_s)) if run.batch_cpu_s else math.nan)
        stats.run_cpu_s.append(run.run_cpu_s)
        stats.evaluations.append(int(record.Y.shape[0]))
    return stats


@dataclass
class ProblemResult:
    """Everything the report needs about one problem.

    Attributes:
        label: The problem's label.
        problem: The problem, with the scoring reference point as its ``ref_point``.
        reference: The yardstick.
        stats: Per contender.
        seconds: Wall seconds of the problem, reference included.
        cpu_seconds: CPU seconds of the problem, reference included: this process's, plus
            the runs' in worker processes when they ran there.
        own_cpu_seconds: This process's part of ``cpu_seconds``.
    """

    label: str
    problem: Problem
    reference: Reference
    stats: dict[str, Stats]
    seconds: float
    cpu_seconds: float = math.nan
    own_cpu_seconds: float = math.nan


_WORKER_PROBLEM: dict[tuple, Problem] = {}  # a worker's last problem, built once for its many runs


def init_worker(threads: int) -> None:
    """Set a worker process up as the parent is (torch threads, flushed denormals)."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)


def run_seed(problem: Problem, label: str, seed: int, budget: int, batch_size: int) -> TimedRun:
    """One contender's run on one seed, timed in this process."""
    torch.manual_seed(seed)
    run_clock = Clock()
    strategy = CONTENDERS[label].make(problem, seed, budget, batch_size)
    record = run_session(problem, strategy, budget, batch_size)
    return TimedRun(record, record.batch_cpu_seconds, run_clock.elapsed().cpu)


def run_seed_in_worker(
    problem_label: str, ref_point: list[float] | None, label: str, seed: int, budget: int, batch_size: int
) -> TimedRun:
    """:func:`run_seed` in a worker process: the problem is rebuilt there from its label (the
    builders are deterministic and cached on disk) and told the same scoring reference point."""
    key = (problem_label, None if ref_point is None else tuple(ref_point))
    if key not in _WORKER_PROBLEM:
        problem = PROBLEMS[problem_label].build()
        if ref_point is not None:
            problem = with_ref_point(problem, torch.tensor(ref_point, dtype=torch.float64))
        _WORKER_PROBLEM.clear()
        _WORKER_PROBLEM[key] = problem
    return run_seed(_WORKER_PROBLEM[key], label, seed, budget, batch_size)


def run_problem(
    spec: ProblemSpec,
    config: SuiteConfig,
    log: Callable[[str], None] = print,
    pool: Executor | None = None,
) -> ProblemResult:
    """Run every contender of ``config`` on one problem for every seed and summarise.

    Args:
        spec: The problem.
        config: The suite.
        log: Progress messages.
        pool: Worker processes (made with :func:`init_worker`) that run the contenders' seeds
            side by side; ``None`` runs them one after another here. Every run is seeded and
            builds its own strategy, so both give the same evaluations; a run's CPU seconds
            are those of the process it ran in.

    Returns:
        The reference and per-contender statistics.
    """
    clock = Clock()
    problem = spec.build()
    pre = None
    if not isinstance(problem, SyntheticProblem):
        # fix the scoring reference point before any contender runs, and tell it to those that take one
        pre = merge_prereference(spec, problem, config.reference_evaluations)
        problem = with_ref_point(problem, pre.ref_point)
    labels = []
    for label in config.contenders:
        if CONTENDERS[label].applies(problem):
            labels.append(label)
        else:
            log(f"  {label}: does not apply to this problem (d = {problem.dim}), skipped")
    jobs = [(label, seed) for label in labels for seed in range(config.seeds)]
    if pool is None:
        done = [run_seed(problem, label, seed, config.budget, config.batch_size) for label, seed in jobs]
    else:
        ref = None if pre is None else pre.ref_point.tolist()
        futures = [
            pool.submit(run_seed_in_worker, spec.label, ref, label, seed, config.budget, config.batch_size)
            for label, seed in jobs
        ]
        done = [f.result() for f in futures]
    runs: dict[str, list[TimedRun]] = {label: [] for label in labels}
    for (label, _), run in zip(jobs, done, strict=True):
        runs[label].append(run)
    for label in labels:
        walls = [r.record.wall_s for r in runs[label]]
        cpus = [r.run_cpu_s for r in runs[label]]
        log(f"  {label}: wall {sum(walls):.1f} s, CPU {sum(cpus):.1f} s for {config.seeds} seeds")
    if pre is None:
        reference = synthetic_reference(problem)
    else:
        pooled = torch.cat([r.record.Y for seeds in runs.values() for r in seeds])
        reference = merge_reference(problem, pre, pooled)
    stats = {label: summarise(seeds, reference, config.budget) for label, seeds in runs.items()}
    elapsed = clock.elapsed()
    worker_cpu = sum(r.run_cpu_s for r in done) if pool is not None else 0.0
    return ProblemResult(spec.label, problem, reference, stats, elapsed.wall, elapsed.cpu + worker_cpu, elapsed.cpu)
