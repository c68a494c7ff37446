"""Objectives, directions, merge problems and synthetic problems."""

import pytest
import torch

from bambo.errors import ConfigError, EvaluationError, UnknownNameError
from bambo.merge import Merger, TaskVectors, get_merge_method
from bambo.merge_problem import MergeProblem
from bambo.pareto import hypervolume
from bambo.problem import Objective, SyntheticProblem
from bambo.space import MergeSpace


def test_bambo_normalised_objective_eq2():
    obj = Objective(name="reasoning", metrics=("aime", "gpqa"), anchors={"aime": (0.2, 0.6), "gpqa": (0.3, 0.5)})
    assert obj.value({"aime": 0.2, "gpqa": 0.3}) == pytest.approx(0.0)  # base
    assert obj.value({"aime": 0.6, "gpqa": 0.5}) == pytest.approx(2.0)  # expert on both
    assert obj.value({"aime": 0.4, "gpqa": 0.4}) == pytest.approx(1.0)
    # a minimised metric (tokens): the expert uses fewer, so fewer tokens scores higher
    tokens = Objective(name="efficiency", metrics=("tokens",), anchors={"tokens": (9000.0, 3000.0)})
    assert tokens.value({"tokens": 6000.0}) == pytest.approx(0.5)
    assert tokens.sign == 1.0


def test_objective_validation():
    with pytest.raises(ConfigError, match="maximised"):
        Objective(name="t", direction="minimize", anchors={"t": (1.0, 0.0)})
    with pytest.raises(ConfigError, match="no anchors for metric 'b'"):
        Objective(name="t", metrics=("a", "b"), anchors={"a": (0.0, 1.0)})
    with pytest.raises(ConfigError, match="divides by zero"):
        Objective(name="t", anchors={"t": (1.0, 1.0)})
    with pytest.raises(ConfigError, match="needs anchors"):
        Objective(name="t", metrics=("a", "b"))
    with pytest.raises(ConfigError, match="directon: Extra inputs are not permitted"):
        Objective(name="t", directon="minimize")


def toy_problem(evaluator, objectives):
    base = {"layers.0.w": torch.zeros(2, dtype=torch.float64)}
    experts = [
        {"layers.0.w": torch.tensor([1.0, 0.0], dtype=torch.float64)},
        {"layers.0.w": torch.tensor([0.0, 1.0], dtype=torch.float64)},
    ]
    tv = TaskVectors(base, experts)
    merger = Merger(tv, get_merge_method("task_arithmetic"))
    return MergeProblem(merger, MergeSpace.model_wise(tv, 2), evaluator, objectives)


def test_merge_problem_maximisation_form_and_directions_restored():
    def evaluator(sd):
        w = sd["layers.0.w"]
        return {"acc": float(w[0]), "loss": float((w[1] - 0.5) ** 2)}

    problem = toy_problem(evaluator, [Objective(name="acc"), Objective(name="loss", direction="minimize")])
    X = torch.tensor([[0.3, 0.5], [1.0, 0.0]], dtype=torch.float64)
    Y = problem.evaluate(X)
    torch.testing.assert_close(Y, torch.tensor([[0.3, -0.0], [1.0, -0.25]], dtype=torch.float64))
    torch.testing.assert_close(problem.to_user(Y), torch.tensor([[0.3, 0.0], [1.0, 0.25]], dtype=torch.float64))
    assert problem.objective_names == ["acc", "loss"]


def test_evaluator_failures_and_nan_metrics_raise_evaluation_errors():
    def crashing(sd):
        raise RuntimeError("CUDA out of memory")

    problem = toy_problem(crashing, [Objective(name="acc")])
    with pytest.raises(
        EvaluationError, match=r"row 0 \(x=\[0.1, 0.2\]\): evaluator raised RuntimeError: CUDA out of memory"
    ):
        problem.evaluate(torch.tensor([[0.1, 0.2], [0.3, 0.4]], dtype=torch.float64))
    nan_problem = toy_problem(lambda sd: {"acc": float("nan")}, [Objective(name="acc")])
    with pytest.raises(EvaluationError, match="metric 'acc' is not finite"):
        nan_problem.evaluate_one(torch.tensor([0.1, 0.1], dtype=torch.float64))
    missing = toy_problem(lambda sd: {"accuracy": 1.0}, [Objective(name="acc")])
    with pytest.raises(EvaluationError, match=r"no metric 'acc' \(got \['accuracy'\]\)"):
        missing.evaluate_one(torch.tensor([0.1, 0.1], dtype=torch.float64))


def test_merge_problem_checks_space_against_method():
    base = {"layers.0.w": torch.zeros(2)}
    experts = [{"layers.0.w": torch.ones(2)}, {"layers.0.w": -torch.ones(2)}]
    tv = TaskVectors(base, experts)
    with pytest.raises(ConfigError, match="needs 1"):
        MergeProblem(
            Merger(tv, get_merge_method("slerp")), MergeSpace.model_wise(tv, 2), lambda sd: {}, [Objective(name="a")]
        )


@pytest.mark.parametrize(
    ("name", "kwargs"), [("zdt1", {}), ("zdt2", {}), ("dtlz2", {"num_objectives": 2}), ("dtlz2", {"num_objectives": 3})]
)
def test_synthetic_fronts_reach_botorch_max_hypervolume(name, kwargs):
    problem = SyntheticProblem(name, **kwargs)
    # a dense sample of the true front approaches BoTorch's max hypervolume from below
    front = problem.pareto_front(2000 if problem.num_objectives == 2 else 3000)
    assert hypervolume(front, problem.ref_point) == pytest.approx(problem.max_hv, rel=2e-2)
    assert hypervolume(front, problem.ref_point) <= problem.max_hv + 1e-9
    g = torch.Generator().manual_seed(0)
    X = torch.rand(8, problem.dim, dtype=torch.float64, generator=g)
    X = problem.bounds[0] + X * (problem.bounds[1] - problem.bounds[0])
    Y = problem.evaluate(X)
    assert Y.shape == (8, problem.num_objectives)
    torch.testing.assert_close(Y, problem.function(X))  # BoTorch's own negated forward


def test_synthetic_problem_directions_and_errors():
    problem = SyntheticProblem("branin_currin")
    assert problem.dim == 2 and all(o.direction == "minimize" for o in problem.objectives)
    x = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    raw = problem.function.evaluate_true(x)  # botorch's values, to be minimised
    torch.testing.assert_close(problem.evaluate(x), -raw)  # maximisation form
    torch.testing.assert_close(problem.to_user(problem.evaluate(x)), raw)
    with pytest.raises(UnknownNameError, match="valid names: branin_currin, dtlz2"):
        SyntheticProblem("zdt9")
    with pytest.raises(ConfigError, match="no analytic Pareto front"):
        problem.pareto_front(10)
    with pytest.raises(ConfigError, match=r"shape \(n, 2\)"):
        problem.evaluate(torch.zeros(3))


def test_reused_buffers_give_the_same_objectives():
    seen = []

    def evaluator(sd):
        seen.append(sd["layers.0.w"].data_ptr())
        return {"acc": float(sd["layers.0.w"][0]), "other": float(sd["layers.0.w"][1])}

    objectives = [Objective(name="acc"), Objective(name="other")]
    plain = toy_problem(evaluator, objectives)
    reused = MergeProblem(plain.merger, plain.space, evaluator, objectives, reuse_buffers=True)
    X = torch.tensor([[0.3, 0.5], [1.0, 0.0], [0.2, 0.9]], dtype=torch.float64)
    seen.clear()
    torch.testing.assert_close(reused.evaluate(X), plain.evaluate(X))
    assert len(set(seen[:3])) == 1  # the reusing problem handed out one buffer three times


def test_heuristic_points_are_experts_alone_balanced_and_corners():
    layers = [f"layers.{i}.w" for i in range(3)]
    base = {k: torch.zeros(2, dtype=torch.float64) for k in layers}
    experts = [{k: torch.ones(2, dtype=torch.float64) * (j + 1) for k in layers} for j in range(2)]
    tv = TaskVectors(base, experts)
    merger = Merger(tv, get_merge_method("task_arithmetic"))
    space = MergeSpace.layer_wise(tv, 2, bounds=(0.0, 0.8))
    problem = MergeProblem(merger, space, lambda sd: {"a": 0.0}, [Objective(name="a")])
    H = problem.heuristic_points()
    # rows: expert 0 alone, expert 1 alone, balanced, all-0, all-1 (clipped to 0.8); group-major x
    expected = torch.tensor([[0.8, 0.0], [0.0, 0.8], [0.5, 0.5], [0.0, 0.0], [0.8, 0.8]], dtype=torch.float64).repeat(
        1, space.dim // 2
    )
    torch.testing.assert_close(H, expected)
    synthetic = SyntheticProblem("branin_currin").heuristic_points()
    torch.testing.assert_close(synthetic, torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5]], dtype=torch.float64))


@pytest.mark.parametrize("cls_name", ["VehicleSafety", "Penicillin", "ToyRobust", "CarSideImpact"])
def test_any_botorch_multi_objective_problem_class_is_accepted(cls_name):
    from botorch.test_functions import multi_objective

    cls = getattr(multi_objective, cls_name)
    problem = SyntheticProblem(cls)
    raw = cls()  # BoTorch's own, minimised
    assert problem.name == cls_name and problem.num_objectives == raw.num_objectives and problem.dim == raw.dim
    torch.testing.assert_close(problem.ref_point, -raw.ref_point.double())  # maximisation form
    g = torch.Generator().manual_seed(0)
    X = problem.bounds[0] + torch.rand(5, problem.dim, generator=g, dtype=torch.float64) * (
        problem.bounds[1] - problem.bounds[0]
    )
    torch.testing.assert_close(problem.evaluate(X), -raw.evaluate_true(X))
    torch.testing.assert_close(problem.to_user(problem.evaluate(X)), raw.evaluate_true(X))
    if raw._max_hv is None:
        with pytest.raises(ConfigError, match=f"no maximum hypervolume for {cls_name}"):
            _ = problem.max_hv
    else:
        assert problem.max_hv == raw.max_hv


def test_a_botorch_problem_instance_keeps_its_own_settings():
    from botorch.test_functions.multi_objective import DTLZ1

    given = DTLZ1(dim=5, num_objectives=3)  # not negated: BoTorch's minimisation form
    problem = SyntheticProblem(given)
    assert problem.name == "DTLZ1" and problem.dim == 5 and problem.num_objectives == 3
    assert problem.max_hv == given.max_hv
    torch.testing.assert_close(problem.ref_point, -given.ref_point.double())
    front = problem.pareto_front(3000)
    assert (front <= 0).all()  # maximisation form of a front that BoTorch minimises at >= 0
    assert hypervolume(front, problem.ref_point) <= problem.max_hv + 1e-9
    assert hypervolume(front, problem.ref_point) == pytest.approx(problem.max_hv, rel=5e-2)
    assert given.negate is False and given.ref_point.dtype == torch.float64  # the caller's object is untouched
    same = SyntheticProblem(DTLZ1, dim=5, num_objectives=3)  # the class with its arguments
    X = torch.rand(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(same.evaluate(X), problem.evaluate(X))
    with pytest.raises(ConfigError, match=r"DTLZ1.*dim"):
        SyntheticProblem(DTLZ1)  # DTLZ1 needs dim
    with pytest.raises(ConfigError, match="not a BoTorch multi-objective test problem"):
        SyntheticProblem(torch.nn.Linear)
    with pytest.raises(UnknownNameError, match="valid names: branin_currin, dtlz2"):
        SyntheticProblem("vehicle_safety_typo")


def test_a_botorch_problem_runs_through_a_strategy():
    from botorch.test_functions.multi_objective import VehicleSafety

    from bambo.facade import optimize

    problem = SyntheticProblem(VehicleSafety)
    result = optimize(problem, "sobol", budget=8, seed=0, progress=False)
    assert result.n_evaluations == 8 and result.pareto_Y.shape[1] == 3
    assert 0.0 <= result.hypervolume_history[-1] <= problem.max_hv


@pytest.mark.parametrize("name", ["branin_currin", "dtlz2", "zdt1"])
def test_a_synthetic_batch_equals_its_rows(name):
    problem = SyntheticProblem(name) if name == "branin_currin" else SyntheticProblem(name, dim=6)
    lower, upper = problem.bounds
    X = lower + (upper - lower) * torch.rand(
        50, problem.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(problem.evaluate(X), torch.stack([problem.evaluate_one(x) for x in X]))
    assert problem.evaluate(X[:0]).shape == (0, problem.num_objectives)
