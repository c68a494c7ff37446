"""Pareto utilities: dominance, hypervolume, GD/IGD, MAP's win rate, preference scores.

Convention: every function here takes objectives in *maximisation* form, shape
``(n, m)`` (``n`` points, ``m`` objectives). Problems convert user directions to
this form (see :class:`bambo.problem.Problem`).

Hypervolume uses BoTorch's box decompositions. GD and IGD are three lines of
``torch.cdist`` and are written here so they work on tensors inside the
optimisation loop; they follow pymoo's definitions (``pymoo.indicators.gd``,
``igd``: mean Euclidean distance to the nearest point) and are tested against them.
"""

from __future__ import annotations

import torch
from botorch.utils.multi_objective.box_decompositions.dominated import DominatedPartitioning
from botorch.utils.multi_objective.pareto import is_non_dominated
from torch import Tensor

from bambo.errors import ConfigError


def _as_points(Y: Tensor, name: str = "Y", nonempty: bool = False) -> Tensor:
    Y = torch.as_tensor(Y, dtype=torch.float64)
    if Y.dim() != 2 or Y.shape[1] == 0:
        raise ConfigError(f"{name} must have shape (n, m) with m >= 1, got {tuple(Y.shape)}")
    if nonempty and Y.shape[0] == 0:
        raise ConfigError(f"{name} is empty")
    if not torch.isfinite(Y).all():
        raise ConfigError(f"{name} contains non-finite values")
    return Y


def _same_objectives(A: Tensor, B: Tensor, names: str) -> None:
    if A.shape[1] != B.shape[1]:
        raise ConfigError(f"{names} have {A.shape[1]} and {B.shape[1]} objectives")


def pareto_mask(Y: Tensor, deduplicate: bool = True) -> Tensor:
    """Boolean mask of the non-dominated rows of ``Y`` (maximisation).

    Args:
        Y: Shape ``(n, m)``.
        deduplicate: Keep only the first of identical non-dominated rows; with
            ``False`` every row attaining a non-dominated value is kept.

    Returns:
        Shape ``(n,)``, dtype bool.
    """
    Y = _as_points(Y)
    if Y.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool)
    return is_non_dominated(Y, deduplicate=deduplicate)


def pareto_front(Y: Tensor) -> Tensor:
    """The non-dominated rows of ``Y``, shape ``(k, m)``."""
    Y = _as_points(Y)
    return Y[pareto_mask(Y)]


def hypervolume(Y: Tensor, ref_point: Tensor) -> float:
    """Volume dominated by ``Y`` and dominating ``ref_point`` (maximisation).

    Points that do not strictly dominate ``ref_point`` contribute nothing.

    Args:
        Y: Shape ``(n, m)``.
        ref_point: Shape ``(m,)``.
    """
    Y = _as_points(Y)
    ref = torch.as_tensor(ref_point, dtype=torch.float64)
    if ref.shape != (Y.shape[1],):
        raise ConfigError(f"ref_point has shape {tuple(ref.shape)}, expected ({Y.shape[1]},)")
    Y = Y[(Y > ref).all(dim=-1)]
    if Y.shape[0] == 0:
        return 0.0
    if Y.shape[1] == 1:
        return float((Y.max() - ref[0]).item())
    return float(DominatedPartitioning(ref_point=ref, Y=pareto_front(Y)).compute_hypervolume())


def _mean_min_distance(from_points: Tensor, to_points: Tensor) -> float:
    return float(torch.cdist(from_points, to_points).min(dim=1).values.mean())


def generational_distance(Y: Tensor, reference_front: Tensor) -> float:
    """GD: mean distance from each point of ``Y`` to its nearest reference point."""
    A, R = _as_points(Y, nonempty=True), _as_points(reference_front, "reference_front", nonempty=True)
    _same_objectives(A, R, "Y and reference_front")
    return _mean_min_distance(A, R)


def inverted_generational_distance(Y: Tensor, reference_front: Tensor) -> float:
    """IGD: mean distance from each reference point to its nearest point of ``Y``."""
    A, R = _as_points(Y, nonempty=True), _as_points(reference_front, "reference_front", nonempty=True)
    _same_objectives(A, R, "Y and reference_front")
    return _mean_min_distance(R, A)


def dominated_by(front: Tensor, points: Tensor) -> Tensor:
    """Which of ``points`` some row of ``front`` strictly dominates (maximisation).

    Args:
        front: ``(n, m)`` points, e.g. a strategy's Pareto set.
        points: ``(k, m)`` points, e.g. a baseline's evaluations.

    Returns:
        A ``(k,)`` boolean mask: at least as good on every objective and better on one.
    """
    F, P = _as_points(front, "front"), _as_points(points, "points")
    _same_objectives(F, P, "front and points")
    ge = (F[None, :, :] >= P[:, None, :]).all(-1)
    gt = (F[None, :, :] > P[:, None, :]).any(-1)
    return (ge & gt).any(-1)


def win_rate(Y_a: Tensor, Y_b: Tensor) -> float:
    """MAP's win rate of front A over front B (MAP Sec. 4.1).

    The share of all ``(i, j, n)`` with ``Y_a[i, n] > Y_b[j, n]`` over the
    ``|A| |B| m`` comparisons (maximisation).
    """
    A, B = _as_points(Y_a, "Y_a", nonempty=True), _as_points(Y_b, "Y_b", nonempty=True)
    _same_objectives(A, B, "the fronts")
    return float((A[:, None, :] > B[None, :, :]).double().mean())


def preference_weighted_sum(Y: Tensor, preference: Tensor) -> Tensor:
    """Preference-weighted sum ``Y @ w`` with ``w`` normalised to sum to one.

    Args:
        Y: Shape ``(n, m)``, maximisation form.
        preference: Non-negative weights, shape ``(m,)``, not all zero.

    Returns:
        Shape ``(n,)``.
    """
    Y = _as_points(Y)
    w = torch.as_tensor(preference, dtype=torch.float64)
    if w.shape != (Y.shape[1],):
        raise ConfigError(f"preference has shape {tuple(w.shape)}, expected ({Y.shape[1]},)")
    if (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"preference weights must be non-negative and not all zero, got {w.tolist()}")
    return Y @ (w / w.sum())
