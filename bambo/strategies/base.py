"""The ask/tell interface every search strategy implements, and its result."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from bambo.errors import ConfigError
from bambo.pareto import hypervolume, pareto_mask
from bambo.problem import Problem


@dataclass
class ParetoResult:
    """Everything a search evaluated and the Pareto set it found.

    Objectives are stored in maximisation form (``Y``); :attr:`Y_user` and
    :attr:`pareto_Y_user` restore the objectives' own directions.

    Attributes:
        X: Evaluated decision vectors, shape ``(n, d)``.
        Y: Objectives, maximisation form, shape ``(n, m)``; NaN rows failed.
        errors: ``{row: error text}`` of failed evaluations.
        parameter_names: Names of the d decision variables.
        objective_names: Names of the m objectives.
        signs: +1/-1 per objective (``Y_user = Y * signs``).
        ref_point: Hypervolume reference point, maximisation form, shape ``(m,)``.
        predicted_X: For amortised methods (MAP), the decision vectors of the
            surrogate-predicted Pareto set, ``(k, d)``.
        predicted_front: Their surrogate-predicted objectives, maximisation form, ``(k, m)``.
        hypervolume_history: Hypervolume w.r.t. ``ref_point`` after each evaluation.
        strategy: Name of the strategy that produced it.
        info: Strategy-specific facts (optimizer time per batch, evaluation counts,
            a recommended point), JSON-serialisable.
        front_columns: The objectives that define the Pareto set and the hypervolume
            (``None``: all); a preference family's scalarised value is not one of them.
    """

    X: Tensor
    Y: Tensor
    errors: dict[int, str]
    parameter_names: list[str]
    objective_names: list[str]
    signs: Tensor
    ref_point: Tensor | None = None
    predicted_X: Tensor | None = None
    predicted_front: Tensor | None = None
    hypervolume_history: list[float] = field(default_factory=list)
    strategy: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    front_columns: list[int] | None = None

    @property
    def front_Y(self) -> Tensor:
        """The objectives that define the Pareto set, maximisation form, ``(n, m')``."""
        return self.Y if self.front_columns is None else self.Y[:, self.front_columns]

    @property
    def ok(self) -> Tensor:
        """Mask of completed (finite) evaluations, shape ``(n,)``."""
        return torch.isfinite(self.Y).all(dim=-1)

    @property
    def pareto_mask(self) -> Tensor:
        """Mask of Pareto-optimal completed evaluations, shape ``(n,)``."""
        mask = torch.zeros(self.Y.shape[0], dtype=torch.bool)
        ok = self.ok
        if ok.any():
            # every evaluated x attaining a non-dominated value is reported (ties are common
            # for discrete metrics such as accuracy)
            mask[ok.nonzero().flatten()] = pareto_mask(self.front_Y[ok], deduplicate=False)
        return mask

    @property
    def pareto_X(self) -> Tensor:
        """Decision vectors of the Pareto set, ``(k, d)``."""
        return self.X[self.pareto_mask]

    @property
    def pareto_Y(self) -> Tensor:
        """Objectives of the Pareto set, maximisation form, ``(k, m)``."""
        return self.Y[self.pareto_mask]

    @property
    def Y_user(self) -> Tensor:
        """All objectives in their own directions, ``(n, m)``."""
        return self.Y * self.signs

    @property
    def pareto_Y_user(self) -> Tensor:
        """Pareto objectives in their own directions, ``(k, m)``."""
        return self.pareto_Y * self.signs

    @property
    def predicted_front_user(self) -> Tensor | None:
        """The predicted front in the objectives' own directions, ``(k, m)``, if any."""
        return None if self.predicted_front is None else self.predicted_front * self.signs

    @property
    def n_evaluations(self) -> int:
        """Number of evaluations, failed ones included."""
        return int(self.X.shape[0])


class Strategy(ABC):
    """A search strategy with an ask/tell loop.

    ``ask(n)`` proposes up to ``n`` points (fewer, or none, once a strategy with a
    finite design such as a grid is exhausted); ``tell(X, Y)`` reports their
    objectives in maximisation form, where a NaN row marks a failed evaluation: it
    is kept in the history but never reaches a model. Subclasses implement
    :meth:`ask` and may extend :meth:`tell` (call ``super().tell`` first) and
    :meth:`_finish` (to add a predicted front or facts to the result).

    Args:
        problem: The problem (bounds, objectives).
        seed: Seed of every random choice the strategy makes.
    """

    name: str = "strategy"

    def __init__(self, problem: Problem, seed: int = 0) -> None:
        self.problem = problem
        self.seed = seed
        self.X = torch.empty(0, problem.dim, dtype=torch.float64)
        self.Y = torch.empty(0, problem.num_objectives, dtype=torch.float64)
        self.errors: dict[int, str] = {}

    @abstractmethod
    def ask(self, n: int) -> Tensor:
        """Propose up to ``n`` points, shape ``(k, d)`` with ``k <= n``, inside the problem's bounds."""

    def replay(self, X: Tensor) -> None:
        """Advance the strategy as if ``ask(len(X))`` had just returned ``X`` (resuming a journaled run).

        The default asks again and discards the answer (every random choice is
        seeded, so the state advances as it did); the caller then tells the
        journaled results. Strategies whose asks are expensive override it.

        Args:
            X: The journaled batch, shape ``(k, d)``.
        """
        self.ask(X.shape[0])

    def _check_n(self, n: int) -> None:
        if n < 1:
            raise ConfigError(f"ask(n) needs n >= 1, got {n}")

    def _finish(self, result: ParetoResult) -> None:
        """Add strategy-specific parts (predicted front, info) to ``result``; default: nothing."""
        return None

    def tell(self, X: Tensor, Y: Tensor, errors: dict[int, str] | None = None) -> None:
        """Record evaluations.

        Args:
            X: Shape ``(n, d)``.
            Y: Shape ``(n, m)``, maximisation form; NaN rows are failures.
            errors: ``{row within X: error text}`` for failed rows.
        """
        X = torch.as_tensor(X, dtype=torch.float64).clone()
        Y = torch.as_tensor(Y, dtype=torch.float64).clone()
        if X.dim() != 2 or X.shape[1] != self.problem.dim:
            raise ConfigError(f"X must have shape (n, {self.problem.dim}), got {tuple(X.shape)}")
        if Y.shape != (X.shape[0], self.problem.num_objectives):
            raise ConfigError(f"Y must have shape ({X.shape[0]}, {self.problem.num_objectives}), got {tuple(Y.shape)}")
        bad_x = (~torch.isfinite(X).all(dim=-1)).nonzero().flatten().tolist()
        if bad_x:
            raise ConfigError(f"X rows {bad_x} are not finite: {X[bad_x[0]].tolist()}")
        lower, upper = self.problem.bounds
        slack = 1e-9 * (upper - lower)
        outside = ((X < lower - slack) | (X > upper + slack)).any(dim=-1).nonzero().flatten().tolist()
        if outside:
            raise ConfigError(
                f"X row {outside[0]} is outside the bounds: {X[outside[0]].tolist()} not in "
                f"[{lower.tolist()}, {upper.tolist()}]"
            )
        errors = dict(errors or {})
        bad_rows = [row for row in errors if not 0 <= row < X.shape[0]]
        if bad_rows:
            raise ConfigError(f"error rows {bad_rows} are outside the batch of {X.shape[0]} points")
        for row in (~torch.isfinite(Y).all(dim=-1)).nonzero().flatten().tolist():
            errors.setdefault(row, "non-finite objective")
        offset = self.X.shape[0]
        for row, text in errors.items():
            Y[row] = float("nan")
            self.errors[offset + row] = text
        self.X = torch.cat([self.X, X])
        self.Y = torch.cat([self.Y, Y])

    @property
    def completed(self) -> tuple[Tensor, Tensor]:
        """``(X, Y)`` of the completed evaluations only (what models may see)."""
        ok = torch.isfinite(self.Y).all(dim=-1)
        return self.X[ok], self.Y[ok]

    def result(self, ref_point: Tensor | None = None) -> ParetoResult:
        """The evaluations so far and their Pareto set.

        Args:
            ref_point: Hypervolume reference (maximisation form). Defaults to the
                problem's (fixed, so runs are comparable), else to the worst
                completed value per objective minus 10% of its range (fixed over
                this run's history only).
        """
        columns = getattr(self.problem, "front_columns", None)
        result = ParetoResult(
            X=self.X.clone(),
            Y=self.Y.clone(),
            errors=dict(self.errors),
            parameter_names=parameter_names_of(self.problem),
            objective_names=self.problem.objective_names,
            signs=self.problem.signs,
            strategy=self.name,
            front_columns=None if columns is None else list(columns),
        )
        ok, front = result.ok, result.front_Y
        ref = self.problem.ref_point
        if ref_point is not None:
            ref = torch.as_tensor(ref_point, dtype=torch.float64)
            if ref.shape != (front.shape[1],):
                raise ConfigError(f"ref_point has shape {tuple(ref.shape)}, expected ({front.shape[1]},)")
        if ref is None and ok.any():
            Yc = front[ok]
            span = (Yc.max(0).values - Yc.min(0).values).clamp_min(1e-12)
            ref = Yc.min(0).values - 0.1 * span
        result.ref_point = ref
        if ref is not None:
            result.hypervolume_history = _hypervolume_history(front, ref)
        self._finish(result)
        return result


def _hypervolume_history(Y: Tensor, ref: Tensor) -> list[float]:
    """Hypervolume after each evaluation; recomputed only when a point enters the front."""
    history: list[float] = []
    front = torch.empty(0, Y.shape[1], dtype=torch.float64)
    value = 0.0
    for y in Y:
        improves = bool(torch.isfinite(y).all()) and bool((y > ref).all())
        if improves and front.shape[0] > 0:
            improves = not bool(((front >= y).all(dim=-1)).any())
        if improves:
            front = torch.cat([front, y.unsqueeze(0)])
            front = front[pareto_mask(front)]
            value = hypervolume(front, ref)
        history.append(value)
    return history


def parameter_names_of(problem: Problem) -> list[str]:
    """Names of a problem's decision columns: a family's, a merge space's, else ``x0..``."""
    names = getattr(problem, "parameter_names", None)  # a task family names its joint columns
    if names is None and getattr(problem, "space", None) is not None:
        names = problem.space.parameter_names  # type: ignore[attr-defined]
    return list(names) if names is not None else [f"x{i}" for i in range(problem.dim)]
