"""MAP (Alg. 1), Bayesian MAP (Alg. 3) and nested MAP (Alg. 2)."""

import math

import pytest
import torch

from bambo.errors import ConfigError
from bambo.facade import optimize
from bambo.pareto import pareto_mask
from bambo.problem import Objective, Problem
from bambo.strategies import MAP, BayesianMAP, NestedMAP
from bambo.strategies.bayesian_map import angular_bins, bin_scores, hyperspherical_angles
from bambo.strategies.map import TaskQuadratics, link_for, spread_subset


class Quadratics(Problem):
    """Exactly quadratic tasks: task t peaks where its own coefficient is high and the others low.

    ``y_t(x) = 1 - (1 - x_t)^2 - 0.3 * sum_{s != t} x_s^2``; one coefficient per task.
    """

    def __init__(self, m: int = 2, bounds: tuple[float | None, float | None] = (None, None)) -> None:
        self.bounds = torch.tensor([[0.0] * m, [1.0] * m], dtype=torch.float64)
        self.objectives = [Objective(name=f"t{t}", bounds=bounds) for t in range(m)]

    def evaluate_one(self, x: torch.Tensor) -> torch.Tensor:
        sq = (x**2).sum()
        return torch.stack([1 - (1 - x[t]) ** 2 - 0.3 * (sq - x[t] ** 2) for t in range(x.shape[0])])


def test_link_follows_the_metric_range():
    assert link_for((0.0, 1.0)) == ("sigmoid", 0.0, 1.0)
    assert link_for((0.0, None))[:2] == ("softplus", 0.0)
    assert link_for((None, None))[0] == "identity"


def test_map_recovers_the_true_front_of_quadratic_tasks():
    problem = Quadratics()
    strategy = MAP(problem, seed=0, n_samples=12, n_reevaluate=5)
    result = optimize(problem, strategy, budget=100, batch_size=6, progress=False)
    assert result.n_evaluations == 17  # 12 design points + 5 re-evaluated predictions, then exhausted
    X_pred, Y_pred = result.predicted_X, result.predicted_front_max
    # closed-form fit of exact quadratics: predictions are the truth
    torch.testing.assert_close(Y_pred, problem.evaluate(X_pred), atol=1e-6, rtol=0)
    # and NSGA-III's set is (nearly) Pareto optimal: no dense-grid point dominates it by more than 1e-3
    g = torch.linspace(0, 1, 61, dtype=torch.float64)
    grid = torch.cartesian_prod(g, g)
    Y_grid = problem.evaluate(grid)
    dominated = ((Y_grid[None, :, :] > Y_pred[:, None, :] + 1e-3).all(-1)).any(-1)
    assert not dominated.any()
    assert Y_pred.shape[0] >= 20 and pareto_mask(Y_pred).float().mean() > 0.9
    # "MAP real": the re-evaluated points are predicted points, spread along the front
    re_X = result.X[12:]
    assert all((X_pred - x).abs().sum(-1).min() < 1e-12 for x in re_X)
    assert (Y_pred[:, 0].max() - Y_pred[:, 0].min()) > 0.5


def test_map_with_a_sigmoid_link_stays_in_the_metric_range():
    problem = Quadratics(bounds=(-1.0, 1.0))
    result = optimize(problem, MAP(problem, seed=3, n_samples=10), budget=10, progress=False)
    assert result.info["links"] == ["sigmoid", "sigmoid"]
    assert (result.predicted_front > -1).all() and (result.predicted_front < 1).all()


def test_spread_subset_picks_distinct_extremes():
    Y = torch.stack([torch.linspace(0, 1, 11), 1 - torch.linspace(0, 1, 11)], dim=-1).double()
    idx = spread_subset(Y, 3)
    assert sorted(idx.tolist()) == [0, 5, 10]


def test_hyperspherical_angles_and_bins():
    C = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(
        hyperspherical_angles(C).flatten(), torch.tensor([0.0, math.pi / 2, math.pi / 4]).double()
    )
    C3 = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    phi = hyperspherical_angles(C3)
    torch.testing.assert_close(phi[0], torch.tensor([math.pi / 4, 0.0]).double())
    torch.testing.assert_close(phi[1], torch.tensor([math.pi / 2, math.pi / 2]).double())
    # 4 bins per angle in 2-D: 0..3 by angle; the top edge (pi/2) falls in the last bin
    C2 = torch.tensor([[1.0, 0.01], [1.0, 0.6], [0.6, 1.0], [0.0, 1.0]], dtype=torch.float64)
    assert angular_bins(C2, 4).tolist() == [0, 1, 2, 3]
    assert angular_bins(C3, 2).max() < 4


def test_bin_scores_mean_plus_bootstrap_spread():
    errors = torch.tensor([1.0, 1.0, 1.0, 5.0, 0.0, 2.0], dtype=torch.float64)
    bins = torch.tensor([0, 0, 0, 1, 1, 3])
    g = torch.Generator().manual_seed(0)
    scores = bin_scores(errors, bins, 4, g, drop_rate=0.2, n_bootstrap=30, std_weight=0.5)
    assert scores[0] == pytest.approx(1.0)  # constant errors: no spread
    assert scores[1] > 2.5  # mean 2.5 plus a positive spread
    assert math.isnan(scores[2]) and scores[3] == pytest.approx(2.0)


def test_bayesian_map_samples_bins_by_score_and_scores_every_point():
    problem = Quadratics()
    strategy = BayesianMAP(problem, seed=0, n_initial=6, n_per_round=3, n_rounds=2, bins_per_angle=4)
    X0 = strategy.ask(6)
    strategy.tell(X0, problem.evaluate(X0))
    # a round drawn from scores that put all mass on bin 2 lands every point in bin 2
    strategy.scores = lambda: torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64)  # type: ignore[method-assign]
    X1 = torch.cat([strategy.ask(2), strategy.ask(2)])
    assert X1.shape[0] == 3 and angular_bins(X1, 4).tolist() == [2, 2, 2]
    with pytest.raises(ConfigError, match="outstanding"):
        strategy.ask(2)  # the next round waits for this round's results
    # a full run: 6 + 2 x 3 points, a predicted front, and one score list per round
    result = optimize(problem, BayesianMAP(problem, seed=2), budget=50, batch_size=3, progress=False)
    assert result.n_evaluations == 12 and len(result.info["round_scores"]) == 2
    assert result.predicted_front is not None


def test_bayesian_map_scores_use_every_completed_point():
    problem = Quadratics()
    strategy = BayesianMAP(problem, seed=0)
    X = strategy.ask(6)
    strategy.tell(X, problem.evaluate(X))
    before = strategy.scores()
    X = strategy.ask(3)
    Y = problem.evaluate(X) + 0.5  # the new points are badly predicted: their bins' scores must rise
    strategy.tell(X, Y)
    after = strategy.scores()
    for k in angular_bins(X, 4).unique().tolist():
        assert after[k] > (0 if math.isnan(before[k]) else before[k])


def test_nested_map_counts_evaluations_like_the_paper():
    problem = Quadratics(m=8)
    strategy = NestedMAP(problem, seed=0, n_per_pair=20, pop_size=24, n_generations=20)
    result = optimize(problem, strategy, budget=10_000, batch_size=20, progress=False)
    assert result.info["task_evaluations"] == 480  # 4 x 20 x 2 + 2 x 20 x 4 + 20 x 8 (MAP App. E.2.2)
    assert result.n_evaluations == 8 + 7 * 20 + 1  # experts alone, 7 pairs, the recommended model
    rounds = [step["round"] for step in result.info["merge_tree"]]
    assert rounds == [1, 1, 1, 1, 2, 2, 3]
    x = torch.tensor(result.info["recommended_x"], dtype=torch.float64)
    torch.testing.assert_close(result.X[-1], x)
    assert ((x >= 0) & (x <= 1)).all()
    # merging beats every expert alone on the preference-weighted (here: mean) score
    experts = problem.evaluate(torch.eye(8, dtype=torch.float64)).mean(-1)
    assert result.info["recommended_preference_score"] > experts.max()


def test_nested_map_follows_the_preference():
    problem = Quadratics(m=4)
    scores = {}
    for name, pref in {"first": [0.85, 0.05, 0.05, 0.05], "last": [0.05, 0.05, 0.05, 0.85]}.items():
        s = NestedMAP(problem, seed=0, preference=pref, n_per_pair=10, expert_scores=[1.0] * 4, pop_size=24)
        scores[name] = optimize(problem, s, budget=1000, batch_size=10, progress=False).info["recommended_y"]
    assert scores["first"][0] > scores["last"][0] and scores["last"][3] > scores["first"][3]


def test_nested_map_validates_its_problem():
    with pytest.raises(ConfigError, match="preference must be 2 non-negative weights"):
        NestedMAP(Quadratics(m=2), preference=[1, 1, 1])
    bad = Quadratics(m=3)
    bad.objectives = bad.objectives[:2]
    with pytest.raises(ConfigError, match="dim == objectives"):
        NestedMAP(bad)


def test_nested_map_accepts_zero_preference_weights_and_odd_task_counts():
    problem = Quadratics(m=5)
    strategy = NestedMAP(problem, seed=0, preference=[1, 0, 0, 1, 0], n_per_pair=6, pop_size=20, n_generations=10)
    result = optimize(problem, strategy, budget=1000, batch_size=7, progress=False)
    assert [step["round"] for step in result.info["merge_tree"]] == [1, 1, 2, 3]  # 5 -> 3 -> 2 -> 1
    assert result.info["recommended_preference_score"] is not None


def test_bayesian_map_is_limited_to_few_tasks():
    with pytest.raises(ConfigError, match="2 <= d <= 4"):
        BayesianMAP(Quadratics(m=5))


def test_values_outside_declared_objective_bounds_fail_their_trials_and_never_reach_map():
    problem = Quadratics(bounds=(0.0, 1.0))  # the quadratics go negative
    X = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.5, 0.5], [0.2, 0.9]], dtype=torch.float64)
    Y = torch.stack([problem.evaluate_one(x) for x in X])
    assert (Y < 0).any()
    with pytest.raises(ConfigError, match="outside its declared bounds"):  # data given to MAP directly
        TaskQuadratics(problem.bounds, problem.objectives, X, Y)
    # through the experiment loop such an evaluation is a failed trial, with the reason
    result = optimize(problem, "sobol", budget=8, progress=False, stop_on_first_batch_failure=False)
    outside = [e for e in result.errors.values() if "lies outside its bounds" in e]
    assert outside and len(outside) + int(result.ok.sum()) == 8
