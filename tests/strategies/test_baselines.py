"""Random, grid, NSGA-II, MOEA/D and CMA-ES baselines behind the ask/tell interface."""

import itertools

import numpy as np
import pytest
import torch

from bambo.errors import ConfigError, EvaluationError
from bambo.experiment import Experiment
from bambo.facade import optimize
from bambo.problem import Objective, Problem, SyntheticProblem
from bambo.strategies.base import Strategy
from bambo.strategies.baselines import (
    CMAESWeightedSum,
    GridSearch,
    MOEADSearch,
    NSGA2Search,
    RandomSearch,
)

ALL = [RandomSearch, GridSearch, NSGA2Search, MOEADSearch, CMAESWeightedSum]
EVOLUTIONARY = [NSGA2Search, MOEADSearch, CMAESWeightedSum]


class Shifted(Problem):
    """Two objectives on a non-unit box; optionally fails where the first unit coordinate exceeds 0.7."""

    def __init__(self, fail: bool = False) -> None:
        self.bounds = torch.tensor([[-2.0, 3.0], [10.0, 20.0]], dtype=torch.float64)
        self.objectives = [Objective(name="a"), Objective(name="b")]
        self.fail = fail

    def evaluate_one(self, x: torch.Tensor) -> torch.Tensor:
        u = (x - self.bounds[0]) / (self.bounds[1] - self.bounds[0])
        if self.fail and u[0] > 0.7:
            raise EvaluationError(f"crashed at u={u.tolist()}")
        return torch.stack([-(u**2).sum(), -((u - 1) ** 2).sum()])


def run(strategy: Strategy, problem: Problem, budget: int = 24, batch_size: int = 3):
    return Experiment(problem, strategy).run(budget, batch_size)  # drives (and changes) this strategy


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.name)
def test_points_lie_in_bounds_and_depend_only_on_the_seed(cls):
    problem = Shifted()
    a = run(cls(problem, seed=3), problem).X
    b = run(cls(problem, seed=3), problem).X
    c = run(cls(problem, seed=4), problem).X
    assert a.shape == (24, 2) and a.dtype == torch.float64
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert ((a >= problem.bounds[0]) & (a <= problem.bounds[1])).all()


@pytest.mark.parametrize("cls", EVOLUTIONARY, ids=lambda c: c.name)
def test_evolutionary_strategies_improve_on_their_first_population(cls):
    problem = SyntheticProblem("zdt1", dim=4)
    strategy = cls(problem, seed=0)
    result = run(strategy, problem, budget=80, batch_size=8)
    pop = strategy.pop_size if hasattr(strategy, "pop_size") else strategy.popsize
    assert result.info["generations"] == 80 // pop
    if cls is CMAESWeightedSum:
        scores = result.Y_max @ strategy.weights
        assert scores.max() > scores[:pop].max() and result.info["best_weighted_sum"] == scores.max()
    else:
        history = result.hypervolume_history
        assert history[-1] > history[pop - 1] > 0


@pytest.mark.parametrize("cls", EVOLUTIONARY, ids=lambda c: c.name)
def test_failed_evaluations_do_not_stop_the_search(cls):
    problem = Shifted(fail=True)
    strategy = cls(problem, seed=1)
    result = run(strategy, problem, budget=48, batch_size=5)
    assert result.n_evaluations == 48 and result.errors and len(result.errors) < 48
    assert all("crashed" in text for text in result.errors.values())
    assert result.info["generations"] >= 2
    assert ((result.X >= problem.bounds[0]) & (result.X <= problem.bounds[1])).all()


@pytest.mark.parametrize("cls", EVOLUTIONARY, ids=lambda c: c.name)
def test_a_generation_of_nan_rows_is_told_without_crashing(cls):
    problem = SyntheticProblem("branin_currin")
    strategy = cls(problem, seed=0)
    for _ in range(3):  # all-failed, half-failed, then completed generations
        X = strategy.ask(100)
        Y = problem.evaluate(X)
        Y[: X.shape[0] // 2 if strategy.generations else X.shape[0]] = float("nan")
        strategy.tell(X, Y)
    assert strategy.generations == 3 and strategy.ask(2).shape == (2, 2)


def test_a_generation_must_be_told_before_the_next_is_asked():
    problem = Shifted()
    strategy = NSGA2Search(problem, pop_size=4)
    X = strategy.ask(3)
    assert strategy.ask(3).shape == (1, 2)  # the rest of the generation
    with pytest.raises(ConfigError, match="all 4 points of the current generation were handed out but only 0"):
        strategy.ask(1)
    # an unrelated point is recorded but does not complete the generation
    strategy.tell(torch.tensor([[0.0, 5.0]], dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64))
    strategy.tell(X, problem.evaluate(X))
    assert strategy.generations == 0 and strategy.X.shape[0] == 4


def test_moead_population_follows_das_dennis():
    assert MOEADSearch(Shifted(), pop_size=8).pop_size == 8
    dtlz = SyntheticProblem("dtlz2", num_objectives=3)
    assert MOEADSearch(dtlz, pop_size=15).pop_size == 15  # 4 partitions
    assert MOEADSearch(dtlz, pop_size=12).pop_size in (10, 15)
    strategy = MOEADSearch(dtlz, pop_size=6, n_neighbors=3)
    assert strategy.ask(100).shape == (6, dtlz.dim)


def test_evolutionary_options_are_checked():
    problem = Shifted()
    with pytest.raises(ConfigError, match="n_neighbors must lie in \\[2, 8\\].*got 9"):
        MOEADSearch(problem, n_neighbors=9)
    with pytest.raises(ConfigError, match="pop_size >= 2, got 1"):
        NSGA2Search(problem, pop_size=1)
    with pytest.raises(ConfigError, match=r"weights must have shape \(2,\), got \(3,\)"):
        CMAESWeightedSum(problem, weights=[1.0, 1.0, 1.0])
    with pytest.raises(ConfigError, match=r"non-negative.*\[1.0, -1.0\]"):
        CMAESWeightedSum(problem, weights=[1.0, -1.0])
    with pytest.raises(ConfigError, match="sigma0 must be positive, got 0"):
        CMAESWeightedSum(problem, sigma0=0.0)
    assert CMAESWeightedSum(problem, popsize=5).ask(100).shape == (5, 2)


def test_grid_sizes_and_points():
    problem = Shifted()
    lower, span = problem.bounds[0], problem.bounds[1] - problem.bounds[0]
    product = GridSearch(problem)
    assert product.size == 81
    levels = torch.arange(1, 10, dtype=torch.float64) / 10
    X = product.ask(100)
    assert X.shape == (81, 2) and product.remaining == 0
    expected = torch.cartesian_prod(levels, levels) * span + lower
    assert torch.allclose(X[torch.argsort(X[:, 0] * 100 + X[:, 1])], expected)
    assert product.ask(4).shape == (0, 2)

    simplex = GridSearch(problem, mode="simplex")
    U = (simplex.ask(100) - lower) / span
    assert simplex.size == 9 and U.shape == (9, 2)
    assert torch.allclose(U.sum(dim=-1), torch.ones(9, dtype=torch.float64))
    assert torch.allclose(U[:, 0].sort().values, levels)


def test_grid_order_is_a_seeded_sample():
    problem = Shifted()
    first = GridSearch(problem, seed=0).ask(9)
    assert torch.equal(first, GridSearch(problem, seed=0).ask(9))
    assert not torch.equal(first, GridSearch(problem, seed=1).ask(9))


def test_simplex_grid_matches_brute_force_in_three_dimensions():
    problem = SyntheticProblem("dtlz2", dim=3, num_objectives=2)
    levels = (0.0, 0.25, 0.5, 0.75, 1.0)
    grid = GridSearch(problem, levels=levels, mode="simplex")
    brute = {c for c in itertools.product(levels, repeat=3) if abs(sum(c) - 1) < 1e-12}
    points = {tuple(round(v, 12) for v in row) for row in grid.ask(1000).tolist()}
    assert grid.size == len(brute) == 15 and points == brute


def test_optimize_stops_when_the_grid_is_exhausted():
    problem = SyntheticProblem("branin_currin")
    result = optimize(problem, GridSearch(problem), budget=100, batch_size=8, progress=False)
    assert result.n_evaluations == 81
    assert torch.unique(result.X, dim=0).shape[0] == 81


def test_bad_grids_are_refused():
    with pytest.raises(ConfigError, match="4,782,969 points"):
        GridSearch(SyntheticProblem("zdt1", dim=7))
    with pytest.raises(ConfigError, match="'diagonal'"):
        GridSearch(Shifted(), mode="diagonal")
    with pytest.raises(ConfigError, match=r"lie in \[0, 1\].*1.5"):
        GridSearch(Shifted(), levels=[0.5, 1.5])
    with pytest.raises(ConfigError, match="distinct"):
        GridSearch(Shifted(), levels=[0.5, 0.5])
    with pytest.raises(ConfigError, match="has no point"):
        GridSearch(Shifted(), levels=[0.2, 0.3], mode="simplex")


def test_random_search_is_uniform_in_the_box():
    problem = Shifted()
    X = RandomSearch(problem, seed=0).ask(2000)
    U = (X - problem.bounds[0]) / (problem.bounds[1] - problem.bounds[0])
    assert ((U >= 0) & (U <= 1)).all()
    assert torch.allclose(U.mean(0), torch.full((2,), 0.5, dtype=torch.float64), atol=0.03)


def test_cmaes_keeps_numpys_global_random_state_apart():
    problem = Shifted()
    np.random.seed(0)
    expected = np.random.rand()
    reference = run(CMAESWeightedSum(problem, seed=2), problem).X
    np.random.seed(0)
    strategy = CMAESWeightedSum(problem, seed=2)
    X = strategy.ask(3)
    assert np.random.rand() == expected  # cma neither reseeded nor consumed the global state
    np.random.rand(10)  # other numpy users in between do not change cma's draws
    strategy.tell(X, problem.evaluate(X))
    assert torch.equal(torch.cat([X, run(strategy, problem, budget=21).X]), reference)
