"""Choosing one model from a Pareto set by preference.

Three rules from the papers: BAMBO's cosine rule (BAMBO Sec. 3.4, "Solution
Selection"), MAP's preference-weighted sum (MAP Sec. 4, Table 4) and MAP's
constrained pick (maximise one task while every other task keeps a minimum
score, MAP Fig. 2). Every function takes objectives in *maximisation* form, ``Y``
of shape ``(n, m)`` (e.g. :attr:`bambo.result.ParetoResult.Y_max`), ignores rows
with a non-finite value (failed evaluations) and returns row indices into ``Y``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pymoo.util.ref_dirs import get_reference_directions
from torch import Tensor

from bambo.errors import ConfigError, InfeasibleError
from bambo.pareto import pareto_mask, preference_weighted_sum

Vector = Sequence[float] | Tensor


def das_dennis(n_partitions: int, n_objectives: int) -> Tensor:
    """Das-Dennis preference vectors: all weight vectors on the simplex with steps ``1 / n_partitions``.

    Args:
        n_partitions: Divisions per objective (>= 1).
        n_objectives: m (>= 1).

    Returns:
        Shape ``(k, m)`` with ``k = C(n_partitions + m - 1, m - 1)``; rows sum to one.
    """
    if n_partitions < 1 or n_objectives < 1:
        raise ConfigError(
            f"das_dennis needs n_partitions >= 1 and n_objectives >= 1, got {n_partitions} and {n_objectives}"
        )
    dirs = get_reference_directions("das-dennis", n_objectives, n_partitions=n_partitions)
    return torch.as_tensor(dirs, dtype=torch.float64).reshape(-1, n_objectives)


def normalize_objectives(Y: Tensor, lower: Vector | None = None, upper: Vector | None = None) -> Tensor:
    """Min-max normalise each objective: ``(Y - lower) / (upper - lower)``.

    Args:
        Y: Shape ``(n, m)``; non-finite rows stay NaN.
        lower: Per-objective value mapped to 0, shape ``(m,)`` (default: the
            minimum over the finite rows).
        upper: Per-objective value mapped to 1, shape ``(m,)`` (default: the
            maximum over the finite rows). Values outside explicit bounds map
            outside ``[0, 1]``.

    Returns:
        Shape ``(n, m)``; a column whose range is zero is 0.5.
    """
    Y, ok = _check_Y(Y)
    m = Y.shape[1]
    low = Y[ok].min(dim=0).values if lower is None else _vector(lower, m, "lower")
    high = Y[ok].max(dim=0).values if upper is None else _vector(upper, m, "upper")
    below = (high < low).nonzero().flatten().tolist()
    if below:
        raise ConfigError(f"upper < lower for objectives {below}: lower={low.tolist()}, upper={high.tolist()}")
    span = high - low
    flat = span == 0
    Z = (Y - low) / torch.where(flat, 1.0, span)
    Z[:, flat] = 0.5
    Z[~ok] = float("nan")
    return Z


def select_by_cosine(
    Y: Tensor, preference: Vector, top_k: int = 3, lower: Vector | None = None, upper: Vector | None = None
) -> int:
    """BAMBO's selection rule (BAMBO Sec. 3.4).

    Among the Pareto-optimal finite rows, normalise the objectives (min-max over
    the Pareto rows unless ``lower``/``upper`` are given), take the ``top_k`` rows
    whose normalised vectors have the largest cosine similarity with
    ``preference``, and return the one of them with the best overall performance
    (largest sum of normalised objectives). Ties go to the lower row index.

    Args:
        Y: Shape ``(n, m)``, maximisation form.
        preference: Non-negative weights, shape ``(m,)``, not all zero.
        top_k: Candidates by cosine similarity (K >= 1).
        lower: Optional normalisation bounds, shape ``(m,)``.
        upper: Optional normalisation bounds, shape ``(m,)``.

    Returns:
        A row index into ``Y`` of a Pareto-optimal row.
    """
    Y, ok = _check_Y(Y)
    w = _preference(preference, Y.shape[1])
    _check_top_k(top_k)
    rows = _pareto_rows(Y, ok)
    Z = normalize_objectives(Y[rows], lower, upper)
    return int(rows[_cosine_pick(Z, w, top_k)])


def select_weighted_sum(Y: Tensor, preference: Vector) -> int:
    """MAP's rule: the row maximising the preference-weighted sum ``Y @ w`` (``w`` normalised to sum to one).

    The maximum is always attained by a Pareto-optimal row; ties (possible with
    zero weights) go to a Pareto-optimal row, then to the lower index.

    Args:
        Y: Shape ``(n, m)``, maximisation form.
        preference: Non-negative weights, shape ``(m,)``, not all zero.

    Returns:
        A row index into ``Y``.
    """
    Y, ok = _check_Y(Y)
    w = _preference(preference, Y.shape[1])
    rows = _pareto_rows(Y, ok)
    return int(rows[preference_weighted_sum(Y[rows], w).argmax()])


def select_constrained(Y: Tensor, objective: int, thresholds: Vector, relative_to: Vector | None = None) -> int:
    """MAP's constrained pick: maximise one objective while every other one reaches its threshold (MAP Fig. 2).

    Args:
        Y: Shape ``(n, m)``, maximisation form.
        objective: Index of the objective to maximise.
        thresholds: Shape ``(m,)``; row ``i`` is feasible if ``Y[i, j] >= thresholds[j]``
            for every ``j != objective`` (the entry of ``objective`` is ignored;
            ``-inf`` leaves an objective free).
        relative_to: Optional reference scores, shape ``(m,)``, e.g. each
            expert's own score; the thresholds are then fractions of it (0.95
            means at least 95% of the expert's score). Constrained entries must
            be positive.

    Returns:
        A row index into ``Y``; ties on the objective go to the larger sum of the
        other objectives, then to the lower index.

    Raises:
        InfeasibleError: No finite row meets every threshold; the message gives
            the best value each constrained objective reaches on its own.
    """
    Y, ok = _check_Y(Y)
    m = Y.shape[1]
    if isinstance(objective, bool) or not isinstance(objective, int) or not 0 <= objective < m:
        raise ConfigError(f"objective index {objective!r} is out of range for {m} objectives")
    others = [j for j in range(m) if j != objective]
    limits = _vector(thresholds, m, "thresholds", finite=False)
    if torch.isnan(limits[others]).any():
        raise ConfigError(f"thresholds of the constrained objectives {others} must not be NaN, got {limits.tolist()}")
    if relative_to is not None:
        reference = _vector(relative_to, m, "relative_to", finite=False)
        bad = [j for j in others if not (torch.isfinite(reference[j]) and reference[j] > 0)]
        if bad:
            raise ConfigError(
                f"relative thresholds need positive finite reference scores; relative_to={reference.tolist()} "
                f"is not for objectives {bad}"
            )
        limits = limits * reference
    feasible = ok & (Y[:, others] >= limits[others]).all(dim=-1)
    if not feasible.any():
        parts = [f"objective {j} >= {limits[j].item():.6g} (best {Y[ok, j].max().item():.6g})" for j in others]
        raise InfeasibleError(
            "no row meets every threshold: " + "; ".join(parts) + "; lower a threshold (the best values "
            "above are reached by each objective on its own, not necessarily together)"
        )
    rows = feasible.nonzero().flatten()
    value = Y[rows, objective]
    rows = rows[value == value.max()]
    return int(rows[Y[rows][:, others].sum(dim=-1).argmax()])


def select_per_preferences(
    Y: Tensor, preferences: Tensor, top_k: int = 3, lower: Vector | None = None, upper: Vector | None = None
) -> Tensor:
    """BAMBO's set of recommended models: one cosine pick per preference, plus the best row per objective.

    BAMBO generates preference vectors by Das-Dennis (:func:`das_dennis`),
    selects a model for each with :func:`select_by_cosine`, and adds "the
    Pareto-optimal individuals that perform best from the perspective of each
    individual benchmark" (BAMBO Sec. 3.4).

    Args:
        Y: Shape ``(n, m)``, maximisation form.
        preferences: Shape ``(k, m)``, each row non-negative and not all zero.
        top_k: Candidates by cosine similarity per preference.
        lower: Optional normalisation bounds, shape ``(m,)``.
        upper: Optional normalisation bounds, shape ``(m,)``.

    Returns:
        Unique row indices into ``Y``, sorted, dtype int64.
    """
    Y, ok = _check_Y(Y)
    m = Y.shape[1]
    P = torch.as_tensor(preferences, dtype=torch.float64)
    if P.dim() != 2 or P.shape[1] != m:
        raise ConfigError(f"preferences must have shape (k, {m}), got {tuple(P.shape)}")
    _check_top_k(top_k)
    rows = _pareto_rows(Y, ok)
    Z = normalize_objectives(Y[rows], lower, upper)
    picks = {int(rows[Y[rows, j].argmax()]) for j in range(m)}
    for i, w in enumerate(P):
        picks.add(int(rows[_cosine_pick(Z, _preference(w, m, f"preferences[{i}]"), top_k)]))
    return torch.tensor(sorted(picks), dtype=torch.int64)


def _cosine_pick(Z: Tensor, w: Tensor, top_k: int) -> int:
    """Index into ``Z`` (``(k, m)``, normalised) of the best-overall row among the top-k by cosine with ``w``."""
    cosine = (Z @ w) / (Z.norm(dim=-1) * w.norm()).clamp_min(1e-12)
    candidates = torch.sort(cosine, descending=True, stable=True).indices[:top_k]
    return int(candidates[Z[candidates].sum(dim=-1).argmax()])


def _check_Y(Y: Tensor) -> tuple[Tensor, Tensor]:
    """``Y`` as float64 and its mask of finite rows; refuses bad shapes and all-failed ``Y``."""
    Y = torch.as_tensor(Y, dtype=torch.float64)
    if Y.dim() != 2 or Y.shape[1] == 0:
        raise ConfigError(f"Y must have shape (n, m) with m >= 1, got {tuple(Y.shape)}")
    ok = torch.isfinite(Y).all(dim=-1)
    if Y.shape[0] == 0:
        raise ConfigError("Y is empty: there is nothing to select")
    if not ok.any():
        raise ConfigError(f"all {Y.shape[0]} rows of Y are NaN or infinite (failed evaluations): nothing to select")
    return Y, ok


def _pareto_rows(Y: Tensor, ok: Tensor) -> Tensor:
    """Indices of the Pareto-optimal finite rows (first of identical rows), ascending."""
    finite = ok.nonzero().flatten()
    return finite[pareto_mask(Y[finite])]


def _vector(values: Vector, m: int, name: str, finite: bool = True) -> Tensor:
    v = torch.as_tensor(values, dtype=torch.float64)
    if v.shape != (m,):
        raise ConfigError(f"{name} must have shape ({m},), got {tuple(v.shape)}")
    if finite and not torch.isfinite(v).all():
        raise ConfigError(f"{name} must be finite, got {v.tolist()}")
    return v


def _preference(preference: Vector, m: int, name: str = "preference") -> Tensor:
    w = _vector(preference, m, name)
    if (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"{name} must be non-negative and not all zero, got {w.tolist()}")
    return w


def _check_top_k(top_k: int) -> None:
    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")


__all__ = [
    "das_dennis",
    "normalize_objectives",
    "select_by_cosine",
    "select_constrained",
    "select_per_preferences",
    "select_weighted_sum",
]
