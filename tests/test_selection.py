"""Choosing a model from a Pareto set, checked against brute-force oracles."""

import math

import pytest
import torch
from pymoo.util.ref_dirs import get_reference_directions

from bambo.errors import BamboError, ConfigError, InfeasibleError
from bambo.selection import (
    das_dennis,
    normalize_objectives,
    select_by_cosine,
    select_constrained,
    select_per_preferences,
    select_weighted_sum,
)

NAN = float("nan")


def random_Y(seed: int, n: int = 40, m: int = 3) -> torch.Tensor:
    """A random cloud with a curved front and a few failed (NaN) rows."""
    g = torch.Generator().manual_seed(seed)
    Y = torch.rand(n, m, generator=g, dtype=torch.float64)
    Y = Y / Y.norm(dim=-1, keepdim=True) * (0.5 + 0.5 * torch.rand(n, 1, generator=g, dtype=torch.float64))
    Y[[3, 17]] = NAN
    return Y


def pareto_oracle(Y: torch.Tensor) -> set[int]:
    rows = [i for i in range(Y.shape[0]) if torch.isfinite(Y[i]).all()]
    return {i for i in rows if not any(bool((Y[j] >= Y[i]).all() and (Y[j] > Y[i]).any()) for j in rows if j != i)}


def test_das_dennis_matches_pymoo():
    W = das_dennis(4, 3)
    assert W.shape == (math.comb(6, 2), 3) and W.dtype == torch.float64
    assert torch.allclose(W.sum(dim=-1), torch.ones(15, dtype=torch.float64))
    assert torch.allclose(W, torch.as_tensor(get_reference_directions("das-dennis", 3, n_partitions=4)))
    with pytest.raises(ConfigError, match="got 0 and 2"):
        das_dennis(0, 2)


def test_normalize_objectives():
    Y = torch.tensor([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [NAN, 0.0, 0.0], [2.0, 5.0, 3.0]], dtype=torch.float64)
    Z = normalize_objectives(Y)
    assert torch.isnan(Z[2]).all()
    assert torch.allclose(Z[[0, 1, 3]], torch.tensor([[0, 0.5, 0], [1, 0.5, 1], [0.5, 0.5, 0.5]], dtype=torch.float64))
    Z = normalize_objectives(Y, lower=[0.0, 0.0, 0.0], upper=[4.0, 10.0, 4.0])
    assert torch.allclose(Z[0], torch.tensor([0.25, 0.5, 0.5], dtype=torch.float64))
    with pytest.raises(ConfigError, match=r"upper < lower for objectives \[1\]"):
        normalize_objectives(Y, lower=[0.0, 1.0, 0.0], upper=[1.0, 0.0, 1.0])


@pytest.mark.parametrize("seed", range(3))
def test_weighted_sum_pick_is_the_brute_force_argmax(seed):
    Y = random_Y(seed)
    g = torch.Generator().manual_seed(100 + seed)
    for _ in range(10):
        w = torch.rand(3, generator=g, dtype=torch.float64)
        scores = [float(Y[i] @ w) if torch.isfinite(Y[i]).all() else -math.inf for i in range(Y.shape[0])]
        assert select_weighted_sum(Y, w) == max(range(Y.shape[0]), key=lambda i: scores[i])


def cosine_oracle(Y: torch.Tensor, w: torch.Tensor, top_k: int) -> int:
    rows = sorted(pareto_oracle(Y))
    P = Y[rows]
    low, high = P.min(0).values, P.max(0).values
    Z = (P - low) / (high - low)
    cos = [float(z @ w / (z.norm() * w.norm())) for z in Z]
    top = sorted(range(len(rows)), key=lambda i: -cos[i])[:top_k]
    return rows[max(top, key=lambda i: float(Z[i].sum()))]


@pytest.mark.parametrize("seed", range(3))
def test_cosine_pick_matches_the_oracle_and_is_pareto_optimal(seed):
    Y = random_Y(seed)
    front = pareto_oracle(Y)
    g = torch.Generator().manual_seed(200 + seed)
    for top_k in (1, 3):
        for _ in range(8):
            w = torch.rand(3, generator=g, dtype=torch.float64)
            pick = select_by_cosine(Y, w, top_k=top_k)
            assert pick in front and pick == cosine_oracle(Y, w, top_k)


def test_one_hot_preference_with_top_1_picks_the_best_row_on_that_objective():
    Y = random_Y(5)
    front = sorted(pareto_oracle(Y))
    for j in range(3):
        best = max(front, key=lambda i: float(Y[i, j]))
        assert select_by_cosine(Y, torch.eye(3, dtype=torch.float64)[j], top_k=1) == best


def test_cosine_pick_never_returns_a_dominated_row():
    # the dominated row (0.5, 0.5) is the most aligned with the balanced preference
    Y = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [0.6, 0.9]], dtype=torch.float64)
    assert select_by_cosine(Y, [1.0, 1.0], top_k=1) == 3


@pytest.mark.parametrize("seed", range(3))
def test_constrained_pick_matches_brute_force_filtering(seed):
    Y = random_Y(seed)
    finite = [i for i in range(Y.shape[0]) if torch.isfinite(Y[i]).all()]
    for objective in range(3):
        thresholds = torch.tensor([0.2, 0.25, 0.3], dtype=torch.float64)
        feasible = [i for i in finite if all(Y[i, j] >= thresholds[j] for j in range(3) if j != objective)]
        expected = max(feasible, key=lambda i: float(Y[i, objective]))
        assert select_constrained(Y, objective, thresholds) == expected
        expert = torch.tensor([0.8, 1.0, 0.6], dtype=torch.float64)
        fractions = thresholds / expert
        assert select_constrained(Y, objective, fractions, relative_to=expert) == expected


def test_infeasible_constraints_raise_with_the_best_values():
    Y = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.4], [NAN, NAN, NAN]], dtype=torch.float64)
    with pytest.raises(InfeasibleError, match=r"objective 1 >= 0.76 \(best 0.8\); objective 2 >= 0.45 \(best 0.5\)"):
        select_constrained(Y, 0, [0.0, 0.95, 0.9], relative_to=[1.0, 0.8, 0.5])
    assert issubclass(InfeasibleError, BamboError)
    assert select_constrained(Y, 0, [NAN, 0.5, -math.inf]) == 1


def test_per_preference_set_is_the_union_of_cosine_picks_and_per_objective_bests():
    Y = random_Y(7)
    preferences = das_dennis(3, 3)
    picks = select_per_preferences(Y, preferences, top_k=2)
    front = sorted(pareto_oracle(Y))
    expected = {select_by_cosine(Y, w, top_k=2) for w in preferences}
    expected |= {max(front, key=lambda i: float(Y[i, j])) for j in range(3)}
    assert picks.dtype == torch.int64 and picks.tolist() == sorted(expected)
    assert set(picks.tolist()) <= set(front)


def test_bad_inputs_name_the_bad_value():
    Y = random_Y(0)
    with pytest.raises(ConfigError, match=r"preference must have shape \(3,\), got \(2,\)"):
        select_by_cosine(Y, [1.0, 1.0])
    with pytest.raises(ConfigError, match=r"non-negative.*-1.0"):
        select_weighted_sum(Y, [1.0, -1.0, 0.0])
    with pytest.raises(ConfigError, match="top_k must be >= 1, got 0"):
        select_by_cosine(Y, [1.0, 1.0, 1.0], top_k=0)
    with pytest.raises(ConfigError, match="objective index 3 is out of range for 3 objectives"):
        select_constrained(Y, 3, [0.0, 0.0, 0.0])
    with pytest.raises(ConfigError, match="relative_to"):
        select_constrained(Y, 0, [0.0, 0.5, 0.5], relative_to=[1.0, -1.0, 1.0])
    with pytest.raises(ConfigError, match="all 2 rows of Y are NaN"):
        select_weighted_sum(torch.full((2, 3), NAN), [1.0, 1.0, 1.0])
    with pytest.raises(ConfigError, match=r"preferences\[1\] must be non-negative"):
        select_per_preferences(Y, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
