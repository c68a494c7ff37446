"""(theta_l, theta_u)-PMTO: the offline loop, task evolution, online answers, determinism, bad input."""

import pytest
import torch

from bambo.benchmarks.task_families import TaskFamily
from bambo.errors import BoundsError, ConfigError
from bambo.experiment import Experiment
from bambo.parametric import PreferenceFamily
from bambo.problem import SyntheticProblem
from bambo.strategies import get_strategy
from bambo.strategies.pmto import PMTO
from bambo.strategies.task_data import best_per_task, pool_diversity

FAST = {"n_initial_tasks": 5, "samples_per_task": 3, "population": 20, "generations": 10, "raw_samples": 64}


def run(family, seed: int = 0, budget: int = 80, **options) -> PMTO:
    strategy = PMTO(family, seed=seed, **{**FAST, **options})
    Experiment(family, strategy).run(budget, batch_size=budget)
    return strategy


@pytest.fixture(scope="module")
def sphere() -> TaskFamily:
    return TaskFamily("sphere", "nonlinear", n=2, k=1)


@pytest.fixture(scope="module")
def fitted(sphere) -> PMTO:
    return run(sphere)


def test_the_offline_loop_grows_the_pool_and_evaluates_every_task(sphere, fitted):
    # 5 initial tasks x 3 solutions, then iterations of (pool size) rows: 6 + 7 + 8 + 9 + 10 + ... up to 80
    thetas, _, _ = best_per_task(sphere, fitted.X, fitted.Y)
    assert fitted.X.shape[0] == 80 and thetas.shape[0] >= 10
    first_iteration = fitted.X[15:21]
    assert torch.unique(first_iteration[:, -1]).numel() == 6  # one row per pool task, the new one first
    assert not bool((fitted.X[15, -1] == fitted.X[:15, -1]).any())


def test_online_answers_land_near_the_known_optimum_without_evaluating(sphere, fitted):
    tests = torch.linspace(0.05, 0.95, 19, dtype=torch.float64).unsqueeze(-1)
    n_before = fitted.X.shape[0]
    x, std = fitted.predict_solution(tests)  # its speed is measured by benchmarks/pmto_*.py, not here
    assert fitted.X.shape[0] == n_before and x.shape == std.shape == (19, 2)
    error = (x - sphere.optimum(tests)).norm(dim=-1)
    centre = (torch.full_like(x, 0.5) - sphere.optimum(tests)).norm(dim=-1)
    assert error.median() < 0.1 and error.median() < 0.3 * centre.median()
    refined, _ = fitted.predict_solution(tests, refine=True)
    assert (refined - sphere.optimum(tests)).norm(dim=-1).median() < 0.1


def test_task_evolution_spreads_the_pool_more_than_random_selection(sphere, fitted):
    evolved = pool_diversity(best_per_task(sphere, fitted.X, fitted.Y)[0], sphere.task_bounds)
    random = run(sphere, task_selection="random")
    drawn = pool_diversity(best_per_task(sphere, random.X, random.Y)[0], sphere.task_bounds)
    assert evolved["log_det"] > drawn["log_det"] and evolved["nn_distance"] > drawn["nn_distance"]
    assert fitted.artifacts().info["pmto"]["task_selection"] == "evolution"


def test_same_seed_same_run_and_another_seed_another(sphere):
    a, b, c = run(sphere, 1, budget=30), run(sphere, 1, budget=30), run(sphere, 2, budget=30)
    torch.testing.assert_close(a.X, b.X)
    torch.testing.assert_close(a.predict_solution([0.3])[0], b.predict_solution([0.3])[0])
    assert not torch.equal(a.X, c.X)


def test_a_preference_family_shares_every_evaluation_across_preferences():
    problem = SyntheticProblem("branin_currin")
    family = PreferenceFamily(problem, ideal=[0.0, 1.0], nadir=[150.0, 13.0])  # both objectives minimised
    strategy = get_strategy("pmto", family, seed=0, **FAST)
    assert strategy.best_share == 1.0  # scalarised values are not comparable across preferences
    result = Experiment(family, strategy).run(budget=40, batch_size=8)
    thetas, solutions, values = best_per_task(family, strategy.X, strategy.Y)
    raw = problem.evaluate(family.split(strategy.X)[0])  # oracle: re-evaluate every row's solution
    ideal, nadir = family.ideal, family.nadir
    for theta, x, value in zip(thetas, solutions, values, strict=True):
        w = torch.cat([theta, 1 - theta])
        u = (ideal - raw) / (ideal - nadir)
        scalarised = (w * u).max(-1).values + 0.05 * u.sum(-1)
        assert float(-value) == pytest.approx(float(scalarised.min()))  # the best over *all* rows, not its own
        assert torch.equal(x, family.split(strategy.X)[0][scalarised.argmin()])
    assert result.front_columns == [1, 2]  # the Pareto set is over the objectives, not the scalarisation
    torch.testing.assert_close(result.pareto_mask, pareto_mask_of(raw))
    x, _ = strategy.predict_solution([0.25])
    assert x.shape == (1, 2) and ((x >= problem.bounds[0]) & (x <= problem.bounds[1])).all()


def pareto_mask_of(Y: torch.Tensor) -> torch.Tensor:
    return torch.tensor([not bool(((Y >= y).all(-1) & (Y > y).any(-1)).any()) for y in Y])


def test_a_task_family_keeps_the_reference_codes_best_share(sphere):
    assert PMTO(sphere).best_share == 0.7


def test_bad_input_gets_clear_errors(sphere, fitted):
    with pytest.raises(ConfigError, match="needs a ParametricProblem"):
        PMTO(SyntheticProblem("branin_currin"))
    with pytest.raises(ConfigError, match="task_selection"):
        PMTO(sphere, task_selection="greedy")
    with pytest.raises(ConfigError, match="n_initial_tasks must be >= 2"):
        PMTO(sphere, n_initial_tasks=1)
    with pytest.raises(ConfigError, match="best_share"):
        PMTO(sphere, best_share=0.0)
    with pytest.raises(BoundsError, match="outside the task bounds"):
        fitted.predict_solution([1.5])
    with pytest.raises(BoundsError, match="1 values per task"):
        fitted.predict_solution([0.2, 0.3])
    with pytest.raises(ConfigError, match="offline phase first"):
        PMTO(sphere).predict_solution([0.5])
    with pytest.raises(ConfigError, match="seed must be >= 0"):
        PMTO(sphere, seed=-1)
