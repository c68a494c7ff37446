"""The registry, the quadratic-mean GP and the parametric-task GP's transfer across tasks."""

import math

import pytest
import torch
from botorch.acquisition import UpperConfidenceBound
from botorch.models import SingleTaskGP
from botorch.optim import optimize_acqf

from bambo.acquisition import acquisition_for_task
from bambo.errors import ConfigError, UnknownNameError
from bambo.problem import SyntheticProblem
from bambo.surrogates import (
    ParametricTaskGP,
    available_surrogates,
    batched_gp,
    build_surrogate,
    fit_gp,
    fit_model,
    fit_parametric_task_gp,
    fit_quadratic_mean_gp,
    fit_surrogate,
    hyperparameters,
    set_hyperparameters,
)

D = torch.float64


def test_registry_errors_name_the_problem():
    X, Y = torch.rand(6, 2, dtype=D), torch.rand(6, 1, dtype=D)
    with pytest.raises(UnknownNameError, match="valid names: .*quadratic-mean-gp"):
        fit_surrogate("kriging", X, Y)
    with pytest.raises(ConfigError, match=r"no options \['lowr'\]; its options: lower, upper"):
        fit_surrogate("quadratic-sigmoid", X, Y, lowr=0.0)
    assert len(available_surrogates()) == 6


def test_quadratic_mean_gp_learns_the_quadratic_from_few_points():
    g = torch.Generator().manual_seed(0)
    X = torch.rand(15, 2, generator=g, dtype=D)
    f = lambda X: 3 * (X[:, 0] - 0.3) ** 2 - 2 * X[:, 0] * X[:, 1] + X[:, 1]  # noqa: E731
    X_test = torch.rand(200, 2, generator=g, dtype=D)
    errors = {}
    for name, builder in (("gp", fit_gp), ("qm-gp", fit_quadratic_mean_gp)):
        model = builder(X, f(X).unsqueeze(-1), bounds=torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=D))
        errors[name] = (model.posterior(X_test).mean.squeeze(-1) - f(X_test)).pow(2).mean().sqrt().item()
    assert errors["qm-gp"] < 0.01  # the mean function captures it
    assert errors["qm-gp"] < errors["gp"]


def shifted_sphere(x, theta):
    """A PMTO-style family: the optimum moves nonlinearly with theta."""
    shift = (torch.sin(5 * (theta + 0.5)) + 1) / 2
    return ((x - shift.unsqueeze(-1)) ** 2).sum(-1)


def test_parametric_task_gp_transfers_to_a_held_out_task():
    g = torch.Generator().manual_seed(1)
    d = 2
    thetas = torch.linspace(0.0, 1.0, 9, dtype=D)
    X_tasks = [torch.rand(6, d, generator=g, dtype=D) for _ in thetas]
    joint_X = torch.cat([torch.cat([x, t.expand(len(x), 1)], dim=-1) for x, t in zip(X_tasks, thetas, strict=True)])
    joint_Y = shifted_sphere(joint_X[:, :d], joint_X[:, d]).unsqueeze(-1)
    bounds = torch.tensor([[0.0] * (d + 1), [1.0] * (d + 1)], dtype=D)
    joint = fit_parametric_task_gp(joint_X, joint_Y, task_dims=[d], bounds=bounds)

    held_out = torch.tensor(0.5625, dtype=D)  # between two training tasks
    few_X = torch.rand(3, d, generator=g, dtype=D)
    alone = fit_gp(few_X, shifted_sphere(few_X, held_out).unsqueeze(-1), bounds=bounds[:, :d])
    test_X = torch.rand(300, d, generator=g, dtype=D)
    truth = shifted_sphere(test_X, held_out)
    pred_joint = joint.posterior(torch.cat([test_X, held_out.expand(300, 1)], dim=-1)).mean.squeeze(-1)
    pred_alone = alone.posterior(test_X).mean.squeeze(-1)
    rmse = lambda p: math.sqrt(((p - truth) ** 2).mean().item())  # noqa: E731
    assert rmse(pred_joint) < 0.5 * rmse(pred_alone)


def test_fixed_task_acquisition_optimises_the_solution_only():
    g = torch.Generator().manual_seed(2)
    X = torch.rand(30, 3, generator=g, dtype=D)
    Y = -shifted_sphere(X[:, :2], X[:, 2]).unsqueeze(-1)
    model = ParametricTaskGP(X, Y, task_dims=[2])
    from botorch.fit import fit_gpytorch_mll
    from gpytorch.mlls import ExactMarginalLogLikelihood

    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    ucb = UpperConfidenceBound(model, beta=0.1)
    theta = 0.3
    via_fixed, value_fixed = optimize_acqf(
        ucb,
        bounds=torch.tensor([[0.0] * 3, [1.0] * 3], dtype=D),
        q=1,
        num_restarts=4,
        raw_samples=64,
        fixed_features=model.fixed_features([theta]),
    )
    assert via_fixed[0, 2].item() == pytest.approx(theta)
    wrapped = acquisition_for_task(ucb, [theta], task_dims=[2], d=3)
    via_wrapper, value_wrapper = optimize_acqf(
        wrapped, bounds=torch.tensor([[0.0] * 2, [1.0] * 2], dtype=D), q=1, num_restarts=4, raw_samples=64
    )
    assert value_wrapper.item() == pytest.approx(value_fixed.item(), rel=1e-3, abs=1e-4)
    with pytest.raises(ConfigError, match="task_dims must name some but not all"):
        ParametricTaskGP(X, Y, task_dims=[0, 1, 2])


def test_task_parameters_follow_the_callers_order():
    g = torch.Generator().manual_seed(3)
    X = torch.rand(20, 4, generator=g, dtype=D)
    model = ParametricTaskGP(X, X.sum(-1, keepdim=True), task_dims=[3, 2])
    assert model.fixed_features([0.1, 0.9]) == {3: 0.1, 2: 0.9}
    with pytest.raises(ConfigError, match="models one output"):
        ParametricTaskGP(X, X[:, :2], task_dims=[3])


@pytest.mark.parametrize("name", ["gp", "quadratic-mean-gp", "parametric-task-gp"])
def test_gps_are_built_unfitted_then_fitted_as_fit_surrogate_does(name):
    g = torch.Generator().manual_seed(3)
    X = torch.rand(12, 3, generator=g, dtype=D)
    Y = torch.stack([(X**2).sum(-1), X.prod(-1)], dim=-1)
    options = {"task_dims": [2]} if name == "parametric-task-gp" else {}
    built = build_surrogate(name, X, Y, **options)
    initial = {k: v.clone() for k, v in built.state_dict().items()}
    again = build_surrogate(name, X, Y, **options).state_dict()
    assert all(torch.equal(initial[k], again[k]) for k in initial)  # building is deterministic and fits nothing
    with torch.random.fork_rng():
        torch.manual_seed(0)
        assert fit_model(built) is built
    assert any(not torch.equal(initial[k], v) for k, v in built.state_dict().items())
    with torch.random.fork_rng():
        torch.manual_seed(0)
        reference = fit_surrogate(name, X, Y, **options)
    test_X = torch.rand(5, 3, generator=g, dtype=D)
    assert torch.equal(built.posterior(test_X).mean, reference.posterior(test_X).mean)


def test_fit_model_refuses_what_it_cannot_fit():
    with pytest.raises(ConfigError, match="cannot fit a Linear"):
        fit_model(torch.nn.Linear(2, 1))


def _dtlz2_data(n: int = 30, m: int = 3, d: int = 6):
    problem = SyntheticProblem("dtlz2", dim=d, num_objectives=m)
    X = torch.rand(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return problem, X, problem.evaluate(X)


def test_batched_gp_has_the_fitted_lists_posterior():
    problem, X, Y = _dtlz2_data()
    model_list = fit_surrogate("gp", X, Y, bounds=problem.bounds)
    batched = batched_gp(model_list, X, Y, problem.bounds)
    assert isinstance(batched, SingleTaskGP) and batched.num_outputs == 3
    test_X = torch.rand(7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours, theirs = batched.posterior(test_X), model_list.posterior(test_X)
    torch.testing.assert_close(ours.mean, theirs.mean, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(ours.variance, theirs.variance, rtol=1e-9, atol=1e-10)
    # a list it cannot batch (a quadratic prior mean per output) comes back as it is
    qm = build_surrogate("quadratic-mean-gp", X, Y, bounds=problem.bounds)  # its structure decides, not its fit
    assert batched_gp(qm, X, Y, problem.bounds) is qm


def test_a_fit_started_from_its_own_optimum_stays_there():
    problem, X, Y = _dtlz2_data(m=2)
    first = fit_surrogate("gp", X, Y, bounds=problem.bounds)
    start = hyperparameters(first)
    again = fit_model(build_surrogate("gp", X, Y, bounds=problem.bounds), start=start)
    for name, value in hyperparameters(again).items():
        torch.testing.assert_close(torch.tensor(value), torch.tensor(start[name]), rtol=1e-3, atol=1e-4)


def test_hyperparameters_of_another_model_are_not_written():
    problem, X, Y = _dtlz2_data(m=2)
    model = build_surrogate("gp", X, Y, bounds=problem.bounds)
    before = hyperparameters(model)
    other = hyperparameters(build_surrogate("gp", X[:, :4], Y))  # 4 inputs, not 6
    assert not set_hyperparameters(model, other)
    key = next(k for k in before if k.endswith("raw_lengthscale"))
    bad = {**before, key: [[float("nan")] * 6]}
    assert not set_hyperparameters(model, bad)
    assert hyperparameters(model) == before
    assert set_hyperparameters(model, before)
