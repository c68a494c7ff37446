"""Pareto utilities against pymoo's indicators and brute force."""

import numpy as np
import pytest
import torch
from pymoo.indicators.gd import GD
from pymoo.indicators.hv import HV
from pymoo.indicators.igd import IGD

from bambo.errors import ConfigError
from bambo.pareto import (
    dominated_by,
    generational_distance,
    hypervolume,
    inverted_generational_distance,
    pareto_front,
    pareto_mask,
    preference_weighted_sum,
    win_rate,
)


def random_front(m, n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, m, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("m", [2, 3, 4])
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ref_value", [-0.1, 0.3])  # below every point, and inside the cloud
def test_hypervolume_equals_pymoo(m, seed, ref_value):
    Y = random_front(m, 30, seed)
    ref = torch.full((m,), ref_value, dtype=torch.float64)
    ours = hypervolume(Y, ref)
    theirs = HV(ref_point=(-ref).numpy())(-Y.numpy())  # pymoo minimises
    assert ours == pytest.approx(theirs, abs=1e-9)


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("seed", range(5))
def test_gd_and_igd_equal_pymoo(m, seed):
    Y = random_front(m, 25, seed)
    ref = random_front(m, 40, seed + 100)
    assert generational_distance(Y, ref) == pytest.approx(GD(ref.numpy())(Y.numpy()), abs=1e-9)
    assert inverted_generational_distance(Y, ref) == pytest.approx(IGD(ref.numpy())(Y.numpy()), abs=1e-9)


def test_pareto_mask_matches_brute_force():
    Y = random_front(3, 60, 7)
    Yn = Y.numpy()
    brute = [not any(np.all(o >= y) and np.any(o > y) for o in Yn) for y in Yn]
    assert pareto_mask(Y).tolist() == brute
    assert pareto_front(Y).shape[0] == sum(brute)


def test_dominated_by_matches_brute_force_and_ignores_ties():
    front, points = random_front(2, 8, 1), random_front(2, 40, 2)
    F, P = front.numpy(), points.numpy()
    brute = [any(np.all(f >= p) and np.any(f > p) for f in F) for p in P]
    assert dominated_by(front, points).tolist() == brute
    own = pareto_front(front)
    assert not dominated_by(own, own).any()  # a point does not dominate itself, nor its front mates
    with pytest.raises(ConfigError, match="front and points"):
        dominated_by(front, torch.zeros(2, 3))


def test_hypervolume_known_value_and_points_below_reference():
    Y = torch.tensor([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [-1.0, 5.0]], dtype=torch.float64)
    # Staircase of three unit-offset rectangles: 3 + 2 + 1 = 6 above (0, 0); the last point is ignored.
    assert hypervolume(Y, torch.zeros(2, dtype=torch.float64)) == pytest.approx(6.0)
    assert hypervolume(Y[3:], torch.zeros(2, dtype=torch.float64)) == 0.0


def test_single_objective_hypervolume_and_bad_shapes():
    Y = torch.tensor([[0.2], [0.7], [0.5]], dtype=torch.float64)
    assert hypervolume(Y, torch.tensor([0.1], dtype=torch.float64)) == pytest.approx(0.6)
    with pytest.raises(ConfigError, match="empty"):
        inverted_generational_distance(torch.empty(0, 2), torch.ones(3, 2))
    with pytest.raises(ConfigError, match="2 and 3 objectives"):
        generational_distance(torch.ones(2, 2), torch.ones(3, 3))
    with pytest.raises(ConfigError, match="empty"):
        win_rate(torch.empty(0, 2), torch.ones(3, 2))


def test_win_rate_counts_pairwise_objective_wins():
    A = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    B = torch.tensor([[1.0, 1.0], [3.0, -1.0]], dtype=torch.float64)
    # comparisons: (2>1, 0>1), (2>3, 0>-1) -> 2 wins of 4
    assert win_rate(A, B) == 0.5
    assert win_rate(B, A) == 0.5


def test_preference_weighted_sum_normalises_and_validates():
    Y = torch.tensor([[1.0, 3.0], [2.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(
        preference_weighted_sum(Y, torch.tensor([3.0, 1.0])), torch.tensor([1.5, 2.0], dtype=torch.float64)
    )
    with pytest.raises(ConfigError, match="non-negative"):
        preference_weighted_sum(Y, torch.tensor([-1.0, 1.0]))
    with pytest.raises(ConfigError, match="shape"):
        preference_weighted_sum(Y, torch.tensor([1.0]))
    with pytest.raises(ConfigError, match="non-finite"):
        pareto_mask(torch.tensor([[float("nan"), 1.0]]))
