"""The one result type of a search, and the one function that builds it from trials.

Every path that ends a search (:func:`bambo.optimize`, ``bambo run``/``resume``,
``bambo demo``, ``bambo report`` reading a journal, the benchmark contenders) builds
its :class:`ParetoResult` with :func:`build_result` from the experiment's trials and
the :class:`RunMeta` that the experiment wrote into its journal.

Objectives are read in their own directions (``result.Y``, ``result.pareto_Y``);
the maximisation form that strategies and indicators work in is kept beside them
(``result.Y_max``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from bambo.errors import ConfigError
from bambo.pareto import hypervolume, pareto_mask

if TYPE_CHECKING:
    from bambo.problem import Problem
    from bambo.store import Trial


@dataclass(frozen=True)
class RunMeta:
    """What a result needs to know about its problem, stored in the journal with the trials.

    Attributes:
        parameter_names: Names of the d decision variables.
        objective_names: Names of the m objectives.
        signs: +1 (maximised) / -1 (minimised) per objective.
        bounds: ``[[lower...], [upper...]]`` of the decision variables.
        ref_point: Hypervolume reference, maximisation form, over ``front_columns``.
        front_columns: The objectives that define the Pareto set (``None``: all).
        strategy: Name of the strategy that proposed the trials.
    """

    parameter_names: list[str]
    objective_names: list[str]
    signs: list[float]
    bounds: list[list[float]]
    ref_point: list[float] | None = None
    front_columns: list[int] | None = None
    strategy: str = ""

    @classmethod
    def of(cls, problem: Problem, strategy: str) -> RunMeta:
        """The metadata of a search of ``problem`` by the strategy named ``strategy``."""
        names = getattr(problem, "parameter_names", None)  # a task family names its joint columns
        if names is None and getattr(problem, "space", None) is not None:
            names = problem.space.parameter_names  # type: ignore[attr-defined]
        columns = problem.front_columns
        return cls(
            parameter_names=list(names) if names is not None else [f"x{i}" for i in range(problem.dim)],
            objective_names=list(problem.objective_names),
            signs=problem.signs.tolist(),
            bounds=problem.bounds.tolist(),
            ref_point=None if problem.ref_point is None else problem.ref_point.tolist(),
            front_columns=None if columns is None else list(columns),
            strategy=strategy,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the journal's ``meta`` row)."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunMeta:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


@dataclass(frozen=True)
class Artifacts:
    """What a strategy adds to its result beyond the evaluations (:meth:`Strategy.artifacts`).

    Attributes:
        predicted_X: Decision vectors of a surrogate-predicted Pareto set (MAP), ``(k, d)``.
        predicted_front: Their predicted objectives, maximisation form, ``(k, m)``.
        info: Strategy-specific facts (timings, counts, a recommended point), JSON-serialisable.
    """

    predicted_X: Tensor | None = None
    predicted_front: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class ParetoResult:
    """Everything a search evaluated and the Pareto set it found.

    Attributes:
        X: Evaluated decision vectors, shape ``(n, d)``, in trial order.
        Y_max: Objectives in maximisation form (minimised ones negated), ``(n, m)``;
            NaN rows failed. Read :attr:`Y` for the objectives' own directions.
        errors: ``{row: error text}`` of failed evaluations.
        parameter_names: Names of the d decision variables.
        objective_names: Names of the m objectives.
        signs: +1/-1 per objective (``Y = Y_max * signs``).
        ref_point: Hypervolume reference point, maximisation form, over the front columns.
        predicted_X: For amortised methods (MAP), the decision vectors of the
            surrogate-predicted Pareto set, ``(k, d)``.
        predicted_front_max: Their surrogate-predicted objectives, maximisation form, ``(k, m)``.
        hypervolume_history: Hypervolume w.r.t. ``ref_point`` after each evaluation.
        strategy: Name of the strategy that produced it.
        info: Strategy-specific facts and the loop's timings, JSON-serialisable.
        front_columns: The objectives that define the Pareto set and the hypervolume
            (``None``: all); a preference family's scalarised value is not one of them.
        trial_ids: The journal's id of each row.
        costs: Evaluation cost spent when each row's trial was proposed, in full evaluations:
            every trial up to it in the journal, low-fidelity ones included (``1, 2, 3, ...``
            without multi-fidelity).
    """

    X: Tensor
    Y_max: Tensor
    errors: dict[int, str]
    parameter_names: list[str]
    objective_names: list[str]
    signs: Tensor
    ref_point: Tensor | None = None
    predicted_X: Tensor | None = None
    predicted_front_max: Tensor | None = None
    hypervolume_history: list[float] = field(default_factory=list)
    strategy: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    front_columns: list[int] | None = None
    trial_ids: list[int] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)

    @property
    def Y(self) -> Tensor:  # noqa: N802 - the conventional name of objective values
        """All objectives in their own directions, ``(n, m)``; NaN rows failed."""
        return self.Y_max * self.signs

    @property
    def front_Y_max(self) -> Tensor:
        """The objectives that define the Pareto set, maximisation form, ``(n, m')``."""
        return self.Y_max if self.front_columns is None else self.Y_max[:, self.front_columns]

    @property
    def ok(self) -> Tensor:
        """Mask of completed (finite) evaluations, shape ``(n,)``."""
        return torch.isfinite(self.Y_max).all(dim=-1)

    @property
    def pareto_mask(self) -> Tensor:
        """Mask of Pareto-optimal completed evaluations, shape ``(n,)``.

        Every evaluated x attaining a non-dominated value is included (ties are
        common for discrete metrics such as accuracy).
        """
        mask = torch.zeros(self.Y_max.shape[0], dtype=torch.bool)
        ok = self.ok
        if ok.any():
            mask[ok.nonzero().flatten()] = pareto_mask(self.front_Y_max[ok], deduplicate=False)
        return mask

    @property
    def pareto_rows(self) -> list[int]:
        """Row indices of the Pareto set, in trial order."""
        return self.pareto_mask.nonzero().flatten().tolist()

    @property
    def pareto_X(self) -> Tensor:
        """Decision vectors of the Pareto set, ``(k, d)``."""
        return self.X[self.pareto_mask]

    @property
    def pareto_Y(self) -> Tensor:
        """Objectives of the Pareto set in their own directions, ``(k, m)``."""
        return self.Y[self.pareto_mask]

    @property
    def pareto_Y_max(self) -> Tensor:
        """Objectives of the Pareto set, maximisation form, ``(k, m)``."""
        return self.Y_max[self.pareto_mask]

    @property
    def predicted_front(self) -> Tensor | None:
        """The predicted front in the objectives' own directions, ``(k, m)``, if any."""
        return None if self.predicted_front_max is None else self.predicted_front_max * self.signs

    @property
    def n_evaluations(self) -> int:
        """Number of evaluations, failed ones included."""
        return int(self.X.shape[0])


def hypervolume_history(Y: Tensor, ref: Tensor) -> list[float]:
    """Hypervolume after each evaluation; recomputed only when a point enters the front.

    Args:
        Y: Objectives in maximisation form, ``(n, m)``; non-finite rows are skipped.
        ref: Reference point, ``(m,)``.

    Returns:
        ``n`` values.
    """
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


def build_result(
    trials: Sequence[Trial],
    meta: RunMeta,
    artifacts: Artifacts | None = None,
    ref_point: Sequence[float] | Tensor | None = None,
) -> ParetoResult:
    """The :class:`ParetoResult` of journaled trials.

    A trial that is not ``completed`` counts as failed (its error text, or its status).
    Only full-fidelity trials are rows (a low-fidelity score is a preview, not a result);
    the others count in :attr:`ParetoResult.costs` and ``info["fidelity"]``.

    Args:
        trials: The trials in id order.
        meta: The run's metadata.
        artifacts: What the strategy adds (predicted front, info).
        ref_point: Hypervolume reference, maximisation form, over the front columns;
            default: the problem's (fixed, so runs are comparable), else the worst
            completed value per front objective minus 10% of its range.

    Raises:
        ConfigError: ``ref_point`` has the wrong length.
    """
    m, d = len(meta.objective_names), len(meta.parameter_names)
    spent, costs, low = 0.0, [], 0
    full = []
    for trial in trials:
        spent += trial.cost
        if trial.fidelity < 1.0:
            low += 1
            continue
        full.append(trial)
        costs.append(spent)
    trials = full
    X = torch.tensor([t.x for t in trials], dtype=torch.float64).reshape(-1, d)
    Y = torch.full((len(trials), m), float("nan"), dtype=torch.float64)
    errors: dict[int, str] = {}
    for row, trial in enumerate(trials):
        if trial.status == "completed" and trial.objectives is not None:
            Y[row] = torch.tensor(trial.objectives, dtype=torch.float64)
        else:
            errors[row] = trial.error or f"trial {trial.id} is {trial.status}"
    artifacts = artifacts or Artifacts()
    info = dict(artifacts.info)
    if low:
        info["fidelity"] = {"low_fidelity_trials": low, "cost": spent}
    result = ParetoResult(
        X=X,
        Y_max=Y,
        errors=errors,
        parameter_names=list(meta.parameter_names),
        objective_names=list(meta.objective_names),
        signs=torch.tensor(meta.signs, dtype=torch.float64),
        predicted_X=None if artifacts.predicted_X is None else artifacts.predicted_X.clone(),
        predicted_front_max=None if artifacts.predicted_front is None else artifacts.predicted_front.clone(),
        strategy=meta.strategy,
        info=info,
        front_columns=None if meta.front_columns is None else list(meta.front_columns),
        trial_ids=[t.id for t in trials],
        costs=costs,
    )
    front = result.front_Y_max
    ref = None if meta.ref_point is None else torch.tensor(meta.ref_point, dtype=torch.float64)
    if ref_point is not None:
        ref = torch.as_tensor(ref_point, dtype=torch.float64)
        if ref.shape != (front.shape[1],):
            raise ConfigError(f"ref_point has shape {tuple(ref.shape)}, expected ({front.shape[1]},)")
    ok = result.ok
    if ref is None and ok.any():
        Yc = front[ok]
        span = (Yc.max(0).values - Yc.min(0).values).clamp_min(1e-12)
        ref = Yc.min(0).values - 0.1 * span
    result.ref_point = ref
    if ref is not None:
        result.hypervolume_history = hypervolume_history(front, ref)
    return result
