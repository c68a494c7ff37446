"""The ask/tell loop, the Sobol baseline and failure handling."""

import pytest
import torch

from bambo.errors import ConfigError, UnknownNameError
from bambo.merge import Merger, TaskVectors, get_merge_method
from bambo.optimize import optimize
from bambo.problem import MergeProblem, Objective, SyntheticProblem
from bambo.space import MergeSpace
from bambo.strategies import SobolSearch, get_strategy


def test_sobol_points_lie_in_bounds_and_depend_only_on_the_seed():
    problem = SyntheticProblem("branin_currin")
    a = SobolSearch(problem, seed=3).ask(16)
    b = SobolSearch(problem, seed=3).ask(16)
    c = SobolSearch(problem, seed=4).ask(16)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert ((a >= problem.bounds[0]) & (a <= problem.bounds[1])).all()


def test_optimize_on_a_known_front():
    problem = SyntheticProblem("zdt1", dim=2)
    result = optimize(problem, "sobol", budget=64, batch_size=8, seed=0, progress=False)
    assert result.X.shape == (64, 2) and result.Y.shape == (64, 2)
    history = result.hypervolume_history
    assert len(history) == 64 and all(b >= a for a, b in zip(history[:-1], history[1:], strict=True))
    assert 0.5 * problem.max_hv < history[-1] <= problem.max_hv
    torch.testing.assert_close(result.pareto_Y_user, -result.pareto_Y)


def test_failed_evaluations_are_recorded_and_never_reach_the_model():
    base = {"layers.0.w": torch.zeros(1, dtype=torch.float64)}
    experts = [{"layers.0.w": torch.ones(1, dtype=torch.float64)}, {"layers.0.w": -torch.ones(1, dtype=torch.float64)}]
    tv = TaskVectors(base, experts)

    def evaluator(sd):
        w = float(sd["layers.0.w"])
        if w > 0.3:
            raise RuntimeError(f"evaluator crashed at w={w:.3f}")
        return {"a": w, "b": -w if w > -0.3 else float("nan")}

    problem = MergeProblem(
        Merger(tv, get_merge_method("task_arithmetic")),
        MergeSpace.model_wise(tv, 2),
        evaluator,
        [Objective(name="a"), Objective(name="b")],
    )
    strategy = SobolSearch(problem, seed=0)
    result = optimize(problem, strategy, budget=20, batch_size=4, progress=False)
    assert result.X.shape[0] == 20
    failed = sorted(result.errors)
    assert failed and len(failed) < 20
    assert all(torch.isnan(result.Y[i]).all() for i in failed)
    assert any("crashed" in result.errors[i] for i in failed)
    assert any("not finite" in result.errors[i] for i in failed)
    X_ok, Y_ok = strategy.completed
    assert X_ok.shape[0] == 20 - len(failed) and torch.isfinite(Y_ok).all()
    assert not result.pareto_mask[failed].any()


def test_bad_arguments():
    problem = SyntheticProblem("branin_currin")
    with pytest.raises(UnknownNameError, match="valid names: bambo, bayesian-map, .*sobol"):
        get_strategy("bayes", problem)
    with pytest.raises(ConfigError, match="budget"):
        optimize(problem, budget=0, progress=False)
    with pytest.raises(ConfigError, match=r"Y must have shape \(1, 2\)"):
        SobolSearch(problem).tell(torch.zeros(1, 2), torch.zeros(1, 3))


def test_tell_validates_error_rows_and_does_not_touch_the_callers_tensors():
    problem = SyntheticProblem("branin_currin")
    strategy = SobolSearch(problem)
    X = strategy.ask(2)
    Y = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    with pytest.raises(ConfigError, match=r"error rows \[5\] are outside the batch of 2"):
        strategy.tell(X, Y, {5: "boom"})
    strategy.tell(X, Y, {1: "evaluator crashed"})
    assert torch.equal(Y, torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64))
    assert torch.isnan(strategy.Y[1]).all() and strategy.errors == {1: "evaluator crashed"}
    assert strategy.result().pareto_mask.tolist() == [True, False]


def test_an_evaluator_returning_garbage_is_a_recorded_failure():
    base = {"layers.0.w": torch.zeros(1, dtype=torch.float64)}
    tv = TaskVectors(base, [{"layers.0.w": torch.ones(1, dtype=torch.float64)}])
    answers = iter([{"a": 1.0}, 0.5, {"a": "n/a"}, {"a": 2.0}])
    problem = MergeProblem(
        Merger(tv, get_merge_method("task_arithmetic")),
        MergeSpace.model_wise(tv, 1),
        lambda sd: next(answers),
        [Objective(name="a")],
    )
    result = optimize(problem, SobolSearch(problem), budget=4, batch_size=2, progress=False)
    assert sorted(result.errors) == [1, 2]
    assert "must return a mapping" in result.errors[1] and "metric 'a' is not a number" in result.errors[2]
    assert result.pareto_Y.tolist() == [[2.0]]
