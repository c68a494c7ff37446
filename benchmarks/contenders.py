"""The contenders of the benchmark suite, each a bambo :class:`~bambo.strategies.Strategy`.

Every contender (another tool's too) is a strategy with ``ask(n) -> X`` and
``tell(X, Y)`` (``Y`` in bambo's maximisation form), so bambo's one experiment loop
(:class:`bambo.experiment.Experiment`, through :func:`run_session`) runs them all with
the same budget and batch size and times the optimizer alone: ``ask`` plus ``tell``
per batch, never the evaluations.

- bambo's own strategies (:func:`bambo.strategies.get_strategy`): BAMBO with a GP or a
  quadratic-mean GP per objective (by default, ``ref_point="auto"``, it takes the problem's
  reference point, here the suite's scoring reference, as Ax is told it; "BAMBO (GP,
  inferred ref)" infers its own from its observed front, as Ax without thresholds), MAP
  (Sobol design, then its predicted Pareto set re-evaluated, so its hypervolume counts
  evaluated points only), Bayesian MAP, Sobol, the papers' grid, pymoo's NSGA-II on the
  true objectives and CMA-ES on a weighted sum (mergekit-evolve's search).
- Ax's ``Client`` with its default generation strategy (``configure_generation_strategy()``),
  told the problem's reference point (the suite's scoring reference) as objective
  thresholds (:func:`bambo.ax.configure_client`), or with no thresholds (Ax infers them).
- Optuna's NSGA-II (population 8, as bambo's NSGA-II) and TPE (defaults) samplers.

Each contender states what it was told about the reference point (:attr:`Contender.reference`)
and which tool it configures (:attr:`Contender.tool`: the report's "best of" rows pick,
after the fact and by one rule, among a tool's configurations).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from bambo.experiment import Experiment
from bambo.problem import Problem
from bambo.strategies import Strategy, get_strategy

__all__ = ["CONTENDERS", "BAMBO_FAMILY", "DEFAULT_BAMBO", "Contender", "RunRecord", "run_session"]


@dataclass
class RunRecord:
    """What one contender did on one problem with one seed.

    Attributes:
        Y: Objectives in evaluation order, maximisation form, shape ``(n, m)``.
        batch_seconds: Optimizer wall time (ask + tell) of every batch, evaluations excluded.
        batch_cpu_seconds: The same in process CPU time.
        wall_s: Wall time of the whole run, evaluations included.
    """

    Y: Tensor
    batch_seconds: list[float] = field(default_factory=list)
    batch_cpu_seconds: list[float] = field(default_factory=list)
    wall_s: float = 0.0


def run_session(problem: Problem, strategy: Strategy, budget: int, batch_size: int) -> RunRecord:
    """Run one contender through bambo's experiment loop (the same loop for every contender).

    Args:
        problem: The true objective.
        strategy: The contender, as a strategy built for ``problem``.
        budget: Evaluations; a finite design (grid, MAP) may stop earlier.
        batch_size: Points asked for per batch.

    Returns:
        The evaluations and the optimizer's time per batch (the loop's ``strategy_seconds``).
    """
    start = time.perf_counter()
    result = Experiment(problem, strategy).run(budget, batch_size)
    return RunRecord(
        result.Y_max,
        list(result.info["strategy_seconds"]),
        list(result.info["strategy_cpu_seconds"]),
        time.perf_counter() - start,
    )


# -- bambo's strategies --------------------------------------------------------------------------


def _n_initial(budget: int, batch: int) -> int:
    return max(4, min(8, budget // 3))


def _map_options(budget: int, batch: int) -> dict:
    n_reevaluate = max(1, min(batch * max(1, budget // (3 * batch)), budget - 4))
    return {"n_samples": budget - n_reevaluate, "n_reevaluate": n_reevaluate}


def _bayesian_map_options(budget: int, batch: int) -> dict:
    n_initial = _n_initial(budget, batch)
    n_reevaluate = min(batch, max(0, budget - n_initial - 1))
    rounds = max(1, (budget - n_initial - n_reevaluate) // batch)
    return {"n_initial": n_initial, "n_per_round": batch, "n_rounds": rounds, "n_reevaluate": n_reevaluate}


def _grid_options(problem: Problem, budget: int) -> dict:
    """The papers' 0.1..0.9 levels, thinned so that the product grid fits the budget."""
    k = max(2, int(round(budget ** (1.0 / problem.dim) + 1e-9)))
    while k > 2 and k**problem.dim > budget:
        k -= 1
    return {"levels": torch.linspace(0.1, 0.9, k).tolist() if k > 2 else [0.1, 0.9]}


def _bambo(name: str, options: Callable[[Problem, int, int], dict] | None = None) -> Callable[..., Strategy]:
    def make(problem: Problem, seed: int, budget: int, batch: int) -> Strategy:
        extra = options(problem, budget, batch) if options else {}
        return get_strategy(name, problem, seed=seed, **extra)

    return make


# -- Ax -------------------------------------------------------------------------------------------


class _AxStrategy(Strategy):
    """Ax's ``Client`` behind the ask/tell interface."""

    name = "ax"

    def __init__(self, problem: Problem, seed: int, thresholds: bool = True) -> None:
        super().__init__(problem, seed)
        from ax.api.client import Client
        from ax.utils.common.logger import set_stderr_log_level

        from bambo.ax.export import configure_client

        set_stderr_log_level(logging.ERROR)
        warnings.filterwarnings("ignore", module=r"ax\.")
        self.client = Client(random_seed=seed)
        self.names = configure_client(self.client, problem, name="bench", thresholds=thresholds)
        self.client.configure_generation_strategy()
        self.pending: list[int] = []

    def ask(self, n: int) -> Tensor:
        trials = self.client.get_next_trials(max_trials=n)
        self.pending = list(trials)
        if not trials:
            return torch.empty(0, self.problem.dim, dtype=torch.float64)
        return torch.stack([self.names.vector(p) for p in trials.values()]).to(torch.float64)

    def tell(self, X: Tensor, Y: Tensor) -> None:
        super().tell(X, Y)
        for index, y in zip(self.pending, Y, strict=True):
            if bool(torch.isfinite(y).all()):
                self.client.complete_trial(index, raw_data=self.names.outcome(self.problem.to_user(y)))
            else:
                self.client.mark_trial_failed(index, failed_reason="failed evaluation")


def _ax(problem: Problem, seed: int, budget: int, batch: int) -> Strategy:
    return _AxStrategy(problem, seed)


def _ax_inferred(problem: Problem, seed: int, budget: int, batch: int) -> Strategy:
    return _AxStrategy(problem, seed, thresholds=False)


# -- Optuna ---------------------------------------------------------------------------------------


class _OptunaStrategy(Strategy):
    """An Optuna study (ask-and-tell interface) behind bambo's ask/tell interface."""

    name = "optuna"

    def __init__(self, problem: Problem, sampler: object) -> None:
        import optuna

        super().__init__(problem, seed=0)  # the sampler carries the seed
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        self.study = optuna.create_study(directions=["maximize"] * problem.num_objectives, sampler=sampler)
        self.pending: list = []

    def ask(self, n: int) -> Tensor:
        self.pending = [self.study.ask() for _ in range(n)]
        lower, upper = self.problem.bounds.tolist()
        rows = [
            [t.suggest_float(f"x{i}", lo, hi) for i, (lo, hi) in enumerate(zip(lower, upper, strict=True))]
            for t in self.pending
        ]
        return torch.tensor(rows, dtype=torch.float64)

    def tell(self, X: Tensor, Y: Tensor) -> None:
        import optuna

        super().tell(X, Y)
        for trial, y in zip(self.pending, Y, strict=True):
            if bool(torch.isfinite(y).all()):
                self.study.tell(trial, values=y.tolist())
            else:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)


def _optuna_nsga2(problem: Problem, seed: int, budget: int, batch: int) -> Strategy:
    import optuna

    return _OptunaStrategy(problem, optuna.samplers.NSGAIISampler(seed=seed, population_size=8))


def _optuna_tpe(problem: Problem, seed: int, budget: int, batch: int) -> Strategy:
    import optuna

    return _OptunaStrategy(problem, optuna.samplers.TPESampler(seed=seed))


# -- the registry ---------------------------------------------------------------------------------

NO_REFERENCE = "nothing (takes no reference point)"
INFERS = "nothing: infers its own from its observed front (nadir less 10% of the front's range, every batch)"
TOLD = "the scoring reference point"
TOLD_AUTO = TOLD + " (ref_point='auto': the problem's reference point)"


@dataclass(frozen=True)
class Contender:
    """A contender of the suite.

    Attributes:
        label: Name in the report.
        make: ``(problem, seed, budget, batch_size) -> Strategy``.
        family: ``"bambo"`` (bambo's own methods), ``"baseline"`` (bambo's baselines) or
            ``"external"`` (another tool).
        note: How it is configured, for the report.
        reference: What it is told about the hypervolume reference point, for the report.
        tool: The tool it configures (``"bambo"``, ``"Ax"``, ``"Optuna"``, ...): the report's
            "best of" rows pick among a tool's configurations.
        applies: Whether it can run on a problem (Bayesian MAP: 2 <= d <= 4).
    """

    label: str
    make: Callable[[Problem, int, int, int], Strategy]
    family: str
    note: str
    reference: str = NO_REFERENCE
    tool: str = ""
    applies: Callable[[Problem], bool] = lambda problem: True


CONTENDERS: dict[str, Contender] = {
    c.label: c
    for c in [
        Contender(
            "BAMBO (GP)",
            _bambo("bambo", lambda p, b, q: {"surrogate": "gp", "n_initial": _n_initial(b, q)}),
            "bambo",
            "bambo's default: warm start of min(8, budget/3) points, GP per objective, qLogNEHVI "
            "(qLogNParEGO from 4 objectives)",
            TOLD_AUTO,
            "bambo",
        ),
        Contender(
            "BAMBO (GP, inferred ref)",
            _bambo("bambo", lambda p, b, q: {"surrogate": "gp", "n_initial": _n_initial(b, q), "ref_point": "nadir"}),
            "bambo",
            "bambo: as BAMBO (GP), with ref_point='nadir' (the default before issue 16)",
            INFERS + " (ref_point='nadir')",
            "bambo",
        ),
        Contender(
            "BAMBO (QM-GP)",
            _bambo("bambo", lambda p, b, q: {"surrogate": "quadratic-mean-gp", "n_initial": _n_initial(b, q)}),
            "bambo",
            "bambo: as BAMBO (GP) with MAP's quadratic as the GP's mean",
            TOLD_AUTO,
            "bambo",
        ),
        Contender(
            "MAP",
            _bambo("map", lambda p, b, q: _map_options(b, q)),
            "bambo",
            "bambo: Sobol design + quadratics + NSGA-III; about a third of the budget re-evaluates the predicted front",
            NO_REFERENCE,
            "bambo",
        ),
        Contender(
            "Bayesian MAP",
            _bambo("bayesian-map", lambda p, b, q: _bayesian_map_options(b, q)),
            "bambo",
            "bambo: initial design, rounds of one batch by angular-bin scores, one batch of re-evaluations; "
            "only for 2 <= d <= 4",
            NO_REFERENCE,
            "bambo",
            lambda problem: 2 <= problem.dim <= 4,
        ),
        Contender("Sobol", _bambo("sobol"), "baseline", "bambo: scrambled Sobol points", NO_REFERENCE, "Sobol"),
        Contender(
            "grid",
            _bambo("grid", lambda p, b, q: _grid_options(p, b)),
            "baseline",
            "bambo: product grid of the papers' 0.1..0.9 levels thinned to fit the budget, random order",
            NO_REFERENCE,
            "grid",
        ),
        Contender(
            "Ax (default MOO)",
            _ax,
            "external",
            "Ax Client, configure_generation_strategy() defaults",
            TOLD + " (as objective thresholds)",
            "Ax",
        ),
        Contender(
            "Ax (inferred thresholds)",
            _ax_inferred,
            "external",
            "Ax Client, configure_generation_strategy() defaults, no objective thresholds",
            "nothing: Ax infers its objective thresholds",
            "Ax",
        ),
        Contender(
            "Optuna NSGA-II",
            _optuna_nsga2,
            "external",
            "optuna NSGAIISampler(population_size=8)",
            NO_REFERENCE,
            "Optuna",
        ),
        Contender(
            "Optuna TPE",
            _optuna_tpe,
            "external",
            "optuna TPESampler() defaults (10 startup trials)",
            NO_REFERENCE,
            "Optuna",
        ),
        Contender(
            "pymoo NSGA-II",
            _bambo("nsga2"),
            "external",
            "pymoo NSGA-II (pop 8) on the true objectives",
            NO_REFERENCE,
            "pymoo",
        ),
        Contender(
            "CMA-ES (weighted sum)",
            _bambo("cmaes"),
            "external",
            "cma on a weighted sum (mergekit-evolve), cma's default population; batches end at generations",
            NO_REFERENCE,
            "CMA-ES",
        ),
    ]
}
BAMBO_FAMILY = [label for label, c in CONTENDERS.items() if c.family == "bambo"]
DEFAULT_BAMBO = "BAMBO (GP)"  # the configuration fixed before any run: the headline ratios use it
