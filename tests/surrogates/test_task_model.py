"""PMTO's task model: a known theta -> x* map, its uncertainty, the DPP diversity gain, bad input."""

import pytest
import torch

from bambo.errors import BoundsError, ConfigError
from bambo.surrogates.task_model import TaskModel

TASK = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
SOLUTION = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)


def known_map(theta: torch.Tensor) -> torch.Tensor:
    """x*(theta) = (theta0, (sin(3 theta1) + 1) / 2, 0.2 + 0.5 theta0 theta1)."""
    return torch.stack([theta[:, 0], (torch.sin(3 * theta[:, 1]) + 1) / 2, 0.2 + 0.5 * theta[:, 0] * theta[:, 1]], -1)


@pytest.fixture(scope="module")
def model() -> TaskModel:
    g = torch.linspace(0, 1, 6, dtype=torch.float64)
    thetas = torch.cartesian_prod(g, g)
    return TaskModel(thetas, known_map(thetas), TASK, SOLUTION)


def test_the_task_model_recovers_a_known_map_between_the_training_tasks(model):
    held_out = torch.rand(40, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.9 + 0.05
    mean, std = model.predict(held_out)
    assert mean.shape == std.shape == (40, 3)
    assert (mean - known_map(held_out)).abs().max() < 0.03
    # uncertainty is lower at a training task than between training tasks
    at_task = model.predict(torch.tensor([[0.4, 0.6]], dtype=torch.float64))[1]
    between = model.predict(torch.tensor([[0.5, 0.5]], dtype=torch.float64))[1]
    assert (at_task < between).all()


def test_predictions_stay_inside_the_solution_bounds():
    thetas = torch.tensor([[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]], dtype=torch.float64)
    model = TaskModel(thetas, torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]), TASK, SOLUTION)
    mean, _ = model.predict(torch.rand(20, 2, dtype=torch.float64))
    assert ((mean >= 0) & (mean <= 1)).all()


def test_diversity_gain_is_the_log_determinant_increase(model):
    pool = torch.tensor([[0.1, 0.1], [0.5, 0.6], [0.9, 0.2]], dtype=torch.float64)
    candidates = torch.tensor([[0.1, 0.1], [0.5, 0.55], [0.1, 0.9]], dtype=torch.float64)
    gain = model.diversity_gain(pool, candidates, jitter=0.0)
    for i, c in enumerate(candidates):  # oracle: the determinants themselves, per solution dimension's kernel
        full = torch.cat([pool, c.unsqueeze(0)])
        expected = torch.stack(
            [
                torch.linalg.slogdet(K_full)[1] - torch.linalg.slogdet(K_pool)[1]
                for K_full, K_pool in zip(model.correlation(full, full), model.correlation(pool, pool), strict=True)
            ]
        ).mean()
        if i == 0:
            assert gain[0] < -20  # a task already in the pool adds nothing
        else:
            assert float(gain[i]) == pytest.approx(float(expected), abs=1e-6)
    assert gain[2] > gain[1] > gain[0]  # far from the pool beats close to it


def test_bad_input_names_the_problem(model):
    with pytest.raises(BoundsError, match="outside the task bounds"):
        model.predict(torch.tensor([[0.5, 1.5]], dtype=torch.float64))
    with pytest.raises(BoundsError, match="2 values per task"):
        model.predict(torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64))
    with pytest.raises(ConfigError, match="at least 2 tasks"):
        TaskModel(TASK[:1], SOLUTION[:1], TASK, SOLUTION)
    with pytest.raises(ConfigError, match=r"thetas must be \(t, 2\)"):
        TaskModel(torch.zeros(4, 3), torch.zeros(4, 3), TASK, SOLUTION)
