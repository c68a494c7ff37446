"""Parametric task families: joint rows, task bounds, the preference family and its scalarisation."""

import pytest
import torch

from bambo.benchmarks.task_families import TaskFamily, shift_matrix
from bambo.errors import BoundsError, ConfigError, UnknownNameError
from bambo.parametric import PreferenceFamily, chebyshev, preference_to_theta, theta_to_preference
from bambo.problem import SyntheticProblem


def test_shift_matrix_interpolates_consecutive_task_parameters():
    A = shift_matrix(4, 5)  # the reference code's n=4, k=5: (t0, 2/3 t1 + 1/3 t2, 1/3 t2 + 2/3 t3, t4)
    expected = torch.tensor(
        [[1, 0, 0, 0, 0], [0, 2 / 3, 1 / 3, 0, 0], [0, 0, 1 / 3, 2 / 3, 0], [0, 0, 0, 0, 1]], dtype=torch.float64
    )
    torch.testing.assert_close(A, expected)
    assert torch.allclose(shift_matrix(3, 1), torch.ones(3, 1, dtype=torch.float64))


@pytest.mark.parametrize("function", ["sphere", "ackley", "rastrigin", "griewank"])
@pytest.mark.parametrize("shift", ["nonlinear", "middle_nonlinear"])
def test_every_task_has_its_known_optimum(function, shift):
    family = TaskFamily(function, shift, n=4, k=2)
    theta = torch.rand(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_star = family.optimum(theta)
    assert ((x_star >= 0) & (x_star <= 1)).all()
    torch.testing.assert_close(family.value(x_star, theta), torch.zeros(16, dtype=torch.float64), atol=1e-9, rtol=0)
    moved = (x_star + 0.05).clamp(0, 1)
    assert (family.value(moved, theta) > 1e-6).all()
    # the joint-row path (runner, strategies) agrees with the vectorised one, in maximisation form
    Y = family.evaluate(family.join(moved[:3], theta[:3]))
    torch.testing.assert_close(-Y[:, 0], family.value(moved[:3], theta[:3]))


def test_task_bounds_and_shapes_are_checked():
    family = TaskFamily("sphere", n=3, k=2)
    assert family.dim == 5 and family.task_dims == [3, 4] and family.parameter_names[-1] == "theta1"
    with pytest.raises(BoundsError, match="outside the task bounds"):
        family.check_theta([0.5, 1.2])
    with pytest.raises(BoundsError, match="2 values per task"):
        family.check_theta([0.5, 0.5, 0.5])
    with pytest.raises(BoundsError, match="not finite"):
        family.check_theta([0.5, float("nan")])
    with pytest.raises(BoundsError, match=r"x must have shape \(1, 3\)"):
        family.join(torch.zeros(1, 2), [0.5, 0.5])
    with pytest.raises(UnknownNameError, match="sphere"):
        TaskFamily("sphear")
    task = family.fixed_task([0.2, 0.7])
    assert task.dim == 3 and task.num_objectives == 1
    x = family.optimum(torch.tensor([[0.2, 0.7]], dtype=torch.float64))
    assert float(task.evaluate(x)[0, 0]) == pytest.approx(0.0, abs=1e-12)


def test_stick_breaking_maps_the_box_onto_the_simplex_and_back():
    theta = torch.rand(50, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w = theta_to_preference(theta)
    assert w.shape == (50, 3) and (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(50, dtype=torch.float64))
    torch.testing.assert_close(preference_to_theta(w), theta)
    torch.testing.assert_close(
        theta_to_preference(torch.tensor([0.7], dtype=torch.float64)), torch.tensor([0.7, 0.3], dtype=torch.float64)
    )
    torch.testing.assert_close(preference_to_theta([7.0, 3.0]), torch.tensor([0.7], dtype=torch.float64))
    with pytest.raises(ConfigError, match="non-negative"):
        preference_to_theta([0.5, -0.5])


def test_a_uniform_theta_gives_a_uniform_preference():
    theta = torch.rand(20000, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    w = theta_to_preference(theta)  # Dirichlet(1, 1, 1): mean 1/3 each, P(w_0 > 1/2) = 1/4
    torch.testing.assert_close(w.mean(0), torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.01, rtol=0)
    assert float((w[:, 0] > 0.5).double().mean()) == pytest.approx(0.25, abs=0.01)


def test_chebyshev_prefers_the_point_on_the_preferred_side():
    ideal, nadir = torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    Y = torch.tensor([[0.9, 0.3], [0.6, 0.6], [0.3, 0.9]], dtype=torch.float64)
    picks = [
        int(chebyshev(Y, torch.tensor(w, dtype=torch.float64), ideal, nadir).argmin())
        for w in ([0.8, 0.2], [0.5, 0.5], [0.2, 0.8])
    ]
    assert picks == [0, 1, 2]
    one_sided = torch.tensor([[0.9, 0.1], [0.9, 0.8]], dtype=torch.float64)  # a zero weight still breaks the tie
    values = chebyshev(one_sided, torch.tensor([1.0, 0.0], dtype=torch.float64), ideal, nadir)
    assert values[1] < values[0]
    dominated = torch.tensor([[0.5, 0.5]], dtype=torch.float64)  # worse than [0.6, 0.6] for every preference
    w = torch.tensor([0.5, 0.5], dtype=torch.float64)
    assert chebyshev(dominated, w, ideal, nadir) > chebyshev(Y[1:2], w, ideal, nadir)


def test_preference_family_reports_the_objectives_and_rescores_any_preference():
    problem = SyntheticProblem("branin_currin")
    front = problem.to_user(
        problem.evaluate(torch.rand(200, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    )
    family = PreferenceFamily(problem, ideal=front.min(0).values, nadir=front.max(0).values)  # both minimised
    assert family.n_task == 1 and family.num_objectives == 3 and family.objective_names[0] == "chebyshev"
    X = torch.rand(5, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    Y = family.evaluate(family.join(X, [0.3]))
    torch.testing.assert_close(Y[:, 1:], problem.evaluate(X))  # nothing measured is lost
    again = family.evaluate(family.join(X, [0.8]))[:, 0]
    torch.testing.assert_close(family.rescore(Y, torch.tensor([[0.8]], dtype=torch.float64))[:, 0], again)
    with pytest.raises(ConfigError, match="better than nadir"):
        PreferenceFamily(problem, ideal=front.max(0).values, nadir=front.min(0).values)
    with pytest.raises(ConfigError, match=r"need shape \(2,\)"):
        PreferenceFamily(problem, ideal=[0.0], nadir=[1.0, 1.0])
