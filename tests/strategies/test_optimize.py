"""The ask/tell loop, the Sobol baseline and failure handling."""

import pytest
import torch

from bambo.errors import ConfigError, UnknownNameError
from bambo.experiment import Experiment
from bambo.facade import optimize
from bambo.merge import Merger, TaskVectors, get_merge_method
from bambo.merge_problem import MergeProblem
from bambo.problem import Objective, SyntheticProblem
from bambo.space import MergeSpace
from bambo.strategies import GridSearch, SobolSearch, get_strategy


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
    torch.testing.assert_close(result.pareto_Y, -result.pareto_Y_max)


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
    experiment = Experiment(problem, SobolSearch(problem, seed=0))
    result = experiment.run(budget=20, batch_size=4)
    assert result.X.shape[0] == 20
    failed = sorted(result.errors)
    assert failed and len(failed) < 20
    assert all(torch.isnan(result.Y[i]).all() for i in failed)
    assert any("crashed" in result.errors[i] for i in failed)
    assert any("not finite" in result.errors[i] for i in failed)
    X_ok, Y_ok = experiment.strategy.completed
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


def test_strategy_tell_does_not_touch_the_callers_tensors():
    problem = SyntheticProblem("branin_currin")
    strategy = SobolSearch(problem)
    X = strategy.ask(2)
    Y = torch.tensor([[1.0, 2.0], [3.0, float("inf")]], dtype=torch.float64)
    strategy.tell(X, Y)
    assert torch.equal(Y, torch.tensor([[1.0, 2.0], [3.0, float("inf")]], dtype=torch.float64))
    assert torch.isnan(strategy.Y[1]).all() and strategy.completed[0].shape[0] == 1


def test_ask_and_tell_metrics_by_name_in_their_own_directions():
    problem = SyntheticProblem("branin_currin")  # both objectives minimised
    experiment = Experiment(problem, GridSearch(problem))  # learns whole batches: no ask while one is open
    first, second, third = experiment.ask(3)
    with pytest.raises(ConfigError, match=r"trials \[0, 1, 2\] have not ended.*'grid' learns whole batches"):
        experiment.ask(1)
    experiment.tell(first.id, {"f0": 10.0, "f1": 5.0})
    experiment.fail(second.id, "evaluator crashed")
    experiment.tell(third.id, {"f0": 1.0})  # a missing metric fails the trial, with the reason
    with pytest.raises(ConfigError, match="trial 0 has already ended"):
        experiment.tell(first.id, {"f0": 1.0, "f1": 1.0})
    result = experiment.result()
    assert result.Y[0].tolist() == [10.0, 5.0] and result.Y_max[0].tolist() == [-10.0, -5.0]
    assert result.errors == {1: "evaluator crashed", 2: "the evaluator returned no metric 'f1' (got ['f0'])"}
    assert result.pareto_mask.tolist() == [True, False, False]
    assert experiment.strategy.completed[0].shape[0] == 1  # failures never reach the strategy's data
    assert len(experiment.ask(2)) == 2  # the batch was told: the next one can be asked


def test_optimize_never_changes_what_it_is_given_and_refuses_a_seed_it_cannot_apply():
    problem = SyntheticProblem("branin_currin")
    strategy = SobolSearch(problem, seed=3)
    result = optimize(problem, strategy, budget=8, progress=False)
    assert strategy.X.shape[0] == 0 and result.n_evaluations == 8
    assert torch.equal(optimize(problem, strategy, budget=8, progress=False).X, result.X)
    torch.testing.assert_close(optimize(problem, "sobol", budget=8, seed=3, progress=False).X, result.X)
    with pytest.raises(ConfigError, match=r"seed=4 cannot be applied to a 'sobol' instance built with seed=3"):
        optimize(problem, strategy, seed=4, progress=False)
    with pytest.raises(ConfigError, match="options apply to a strategy given by name"):
        optimize(problem, strategy, options={"scramble": False}, progress=False)
    with pytest.raises(ConfigError, match="built for another problem"):
        optimize(SyntheticProblem("zdt1", dim=2), strategy, progress=False)


def test_a_journal_path_makes_optimize_resumable(tmp_path):
    problem = SyntheticProblem("branin_currin")
    whole = optimize(problem, "random", budget=12, batch_size=4, seed=1, progress=False)
    optimize(problem, "random", budget=8, batch_size=4, seed=1, journal=tmp_path / "j.sqlite", progress=False)
    resumed = optimize(
        problem, "random", budget=12, batch_size=4, seed=1, journal=tmp_path / "j.sqlite", progress=False
    )
    assert torch.equal(resumed.X, whole.X) and resumed.trial_ids == list(range(12))
    with pytest.raises(ConfigError, match="the journal belongs to another problem"):
        optimize(SyntheticProblem("dtlz2", dim=3), "random", budget=4, journal=tmp_path / "j.sqlite", progress=False)


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
