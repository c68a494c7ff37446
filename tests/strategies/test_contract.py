"""One contract for every registered strategy: bounds, determinism per seed, failures, exact resume."""

import pytest
import torch

from bambo.benchmarks.noisy import NoisyFidelityProblem
from bambo.benchmarks.task_families import TaskFamily
from bambo.errors import ConfigError, EvaluationError, UnknownNameError
from bambo.execution import LocalExecutor
from bambo.experiment import Experiment
from bambo.facade import optimize
from bambo.problem import Problem, SyntheticProblem
from bambo.store import Journal
from bambo.strategies import STRATEGIES, available_strategies, get_strategy

# Small settings so the whole contract runs in seconds.
FAST = {
    "bambo": {"n_initial": 6, "num_restarts": 2, "raw_samples": 32, "mc_samples": 16, "maxiter": 30},
    "map": {"n_samples": 10, "n_reevaluate": 3, "pop_size": 20, "n_generations": 20},
    "bayesian-map": {"pop_size": 20, "n_generations": 20},
    "nested-map": {"n_per_pair": 6, "pop_size": 20, "n_generations": 20},
    "pmto": {"n_initial_tasks": 3, "samples_per_task": 2, "population": 10, "generations": 5, "raw_samples": 32},
    "momf": {
        "n_initial": 12,
        "fidelities": [0.5],
        "num_restarts": 1,
        "raw_samples": 16,
        "mc_samples": 8,
        "maxiter": 20,
    },
}
BUDGET = 14
BUDGETS = {"momf": 10}  # evaluation cost: MOMF's warm start spends 7.5 of it, one model-based batch follows


def budget_of(name: str) -> int:
    return BUDGETS.get(name, BUDGET)


class FailingBand(Problem):
    """BraninCurrin that crashes for 0.3 < x0 < 0.45 (a crashed evaluator)."""

    def __init__(self) -> None:
        self.inner = SyntheticProblem("branin_currin")
        self.bounds, self.objectives, self.ref_point = self.inner.bounds, self.inner.objectives, self.inner.ref_point

    def evaluate_one(self, x: torch.Tensor) -> torch.Tensor:
        if 0.3 < float(x[0]) < 0.45:
            raise EvaluationError(f"evaluator crashed at x0={float(x[0]):.3f}")
        return self.inner.evaluate_one(x)


class FailingFamily(TaskFamily):
    """A sphere task family that crashes for 0.3 < x0 < 0.45 (PMTO needs a task family)."""

    def __init__(self) -> None:
        super().__init__("sphere", "nonlinear", n=2, k=1)

    def evaluate_task(self, x: torch.Tensor, theta: torch.Tensor) -> float:
        if 0.3 < float(x[0]) < 0.45:
            raise EvaluationError(f"evaluator crashed at x0={float(x[0]):.3f}")
        return super().evaluate_task(x, theta)


class FailingNoisy(NoisyFidelityProblem):
    """The noisy BraninCurrin with fidelities (a multi-fidelity strategy needs them), crashing in the same band."""

    def evaluate_at(self, x: torch.Tensor, fidelity: float = 1.0) -> torch.Tensor:
        if 0.3 < float(x[0]) < 0.45:
            raise EvaluationError(f"evaluator crashed at x0={float(x[0]):.3f}")
        return super().evaluate_at(x, fidelity)


def failing_problem(name: str) -> Problem:
    if name == "momf":
        return FailingNoisy(noise=0.03)
    return FailingFamily() if name == "pmto" else FailingBand()


def run(name: str, problem: Problem, seed: int):
    strategy = get_strategy(name, problem, seed=seed, **FAST.get(name, {}))
    return optimize(problem, strategy, budget=budget_of(name), batch_size=4, progress=False)


@pytest.mark.parametrize("name", available_strategies())
def test_contract(name):
    problem = failing_problem(name)
    a, b = run(name, problem, seed=1), run(name, problem, seed=1)
    assert 0 < a.n_evaluations <= budget_of(name)
    torch.testing.assert_close(a.X, b.X)  # deterministic for a seed
    torch.testing.assert_close(a.Y, b.Y, equal_nan=True)
    lower, upper = problem.bounds
    assert ((a.X >= lower - 1e-12) & (a.X <= upper + 1e-12)).all()
    assert a.strategy == name and len(a.hypervolume_history) == a.n_evaluations
    for row, message in a.errors.items():  # failures are recorded and kept out of the front
        assert torch.isnan(a.Y[row]).all() and "crashed" in message
        assert not a.pareto_mask[row]
    assert a.ok.sum() + len(a.errors) == a.n_evaluations


class Crash(BaseException):
    """A process dying mid-batch (not an evaluation failure: nothing catches it)."""


class CrashingExecutor(LocalExecutor):
    """Evaluates ``survive`` trials, then dies just after starting the next one."""

    def __init__(self, survive: int) -> None:
        super().__init__()
        self.left = survive

    def evaluate(self, problem, trials, started, finished):
        def start(trial_id):
            started(trial_id)
            if self.left == 0:
                raise Crash
            self.left -= 1

        super().evaluate(problem, trials, start, finished)


@pytest.mark.parametrize("name", available_strategies())
def test_a_resumed_run_proposes_what_the_uninterrupted_run_does(name, tmp_path):
    problem = failing_problem(name)
    whole = run(name, problem, seed=2)
    path = tmp_path / "journal.sqlite"
    survive = 2 * whole.n_evaluations // 3  # dies inside a later batch
    with Journal(path) as journal, pytest.raises(Crash):
        strategy = get_strategy(name, problem, seed=2, **FAST.get(name, {}))
        Experiment(problem, strategy, journal, CrashingExecutor(survive)).run(budget_of(name), batch_size=4)
    with Journal(path) as journal:
        counts = journal.counts()
        assert counts["running"] == 1 and counts["completed"] + counts["failed"] == survive
        ended_before = [(t.started, t.finished) for t in journal.trials() if t.ended]
        strategy = get_strategy(name, problem, seed=2, **FAST.get(name, {}))
        resumed = Experiment(problem, strategy, journal).run(budget_of(name), batch_size=4)
        ended_after = [(t.started, t.finished) for t in journal.trials()[:survive]]
    torch.testing.assert_close(resumed.X, whole.X)
    torch.testing.assert_close(resumed.Y, whole.Y, equal_nan=True)
    assert resumed.errors == whole.errors
    assert ended_after == ended_before  # the trials that had ended were not evaluated again


def test_a_different_seed_changes_the_points():
    problem = SyntheticProblem("branin_currin")
    for name in ("bambo", "map", "bayesian-map", "sobol", "random", "nsga2", "cmaes"):
        assert not torch.equal(run(name, problem, 0).X, run(name, problem, 1).X), name


def test_registry_errors_name_the_problem():
    problem = SyntheticProblem("branin_currin")
    with pytest.raises(UnknownNameError, match="bambo"):
        get_strategy("bamboo", problem)
    with pytest.raises(ConfigError, match="n_intial"):
        get_strategy("bambo", problem, n_intial=4)
    assert set(STRATEGIES) >= {"bambo", "map", "bayesian-map", "nested-map", "sobol", "grid", "nsga2", "moead"}


def test_tell_refuses_points_that_cannot_have_been_evaluated():
    problem = SyntheticProblem("branin_currin")
    strategy = get_strategy("sobol", problem)
    with pytest.raises(ConfigError, match="not finite"):
        strategy.tell(torch.tensor([[float("nan"), 0.5]]), torch.tensor([[1.0, 1.0]]))
    with pytest.raises(ConfigError, match="outside the bounds"):
        strategy.tell(torch.tensor([[1.5, 0.5]]), torch.tensor([[1.0, 1.0]]))
    experiment = Experiment(problem, strategy)
    with pytest.raises(ConfigError, match="ref_point has shape"):
        experiment.result(ref_point=torch.tensor([1.0, 2.0, 3.0]))
    assert experiment.result(ref_point=torch.tensor([-300.0, -20.0])).hypervolume_history == []


def test_a_failing_strategy_keeps_what_was_evaluated():
    from bambo.errors import StrategyError
    from bambo.strategies import MAP

    class Broken(MAP):
        def tell(self, X, Y):
            super().tell(X, Y)
            if self.X.shape[0] >= 8:
                raise RuntimeError("surrogate exploded")

    problem = SyntheticProblem("branin_currin")
    with pytest.raises(StrategyError, match="after 8 evaluations") as info:
        optimize(problem, Broken(problem, n_samples=12), budget=12, batch_size=4, progress=False)
    assert info.value.result.n_evaluations == 8 and info.value.result.ok.all()
