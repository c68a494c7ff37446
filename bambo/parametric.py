"""Parametric task families: one objective ``f(x; theta)`` for every task parameter ``theta`` in a box.

(theta_l, theta_u)-PMTO (Wang et al. 2025, ``shared/papers/pmto-parametric-multitask-summary.txt``)
optimises a continuous family of tasks at once. Here a family is a :class:`Problem`
over the *joint* box ``[x_l, x_u] x [theta_l, theta_u]`` with one objective: a decision
row is ``(x, theta)``, solution columns first, so every strategy, the runner and the
journal work unchanged and PMTO (:mod:`bambo.strategies.pmto`) reads the task columns.

:class:`PreferenceFamily` turns a multi-objective problem into such a family (the
multi-objective PMTO the paper leaves open, Sec. VII): ``theta`` is a preference on
the simplex and ``f(x; theta)`` the augmented Chebyshev scalarisation of the
normalised objectives (:func:`chebyshev`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import torch
from pydantic import Field, model_validator
from torch import Tensor

from bambo.config_base import FrozenConfig
from bambo.errors import BoundsError, ConfigError
from bambo.merge_problem import MergeProblem
from bambo.problem import Objective, Problem

__all__ = [
    "FixedTask",
    "ParametricProblem",
    "PreferenceFamily",
    "Preferences",
    "anchor_range",
    "chebyshev",
    "preference_to_theta",
    "theta_to_preference",
]


def _box(bounds: Sequence[Sequence[float]] | Tensor, what: str) -> Tensor:
    b = torch.as_tensor(bounds, dtype=torch.float64)
    if b.dim() != 2 or b.shape[0] != 2 or b.shape[1] < 1:
        raise ConfigError(f"{what} must have shape (2, d) with d >= 1, got {tuple(b.shape)}")
    if not torch.isfinite(b).all() or not (b[0] < b[1]).all():
        raise ConfigError(f"{what} need finite lower < upper in every column, got {b.tolist()}")
    return b


class ParametricProblem(Problem):
    """A family of single-objective tasks over a joint (solution, task parameter) box.

    Subclasses implement :meth:`evaluate_task`. :meth:`evaluate_one` (used by the
    runner and every strategy) splits a joint row and calls it. The first objective is
    the task's; a family may report further outputs after it (side information, such
    as the objective vector a preference is scalarised from) and implement
    :meth:`rescore` to score any task from them without a new evaluation.

    Args:
        solution_bounds: Shape ``(2, n)``.
        task_bounds: ``[theta_l, theta_u]``, shape ``(2, k)``.
        objective: The one objective (its direction says whether ``f`` is minimised).
        solution_names: Names of the ``n`` solution columns (default ``x0..``).
        task_names: Names of the ``k`` task columns (default ``theta0..``).
    """

    can_rescore: bool = False  # True where :meth:`rescore` scores any task from side outputs

    def __init__(
        self,
        solution_bounds: Sequence[Sequence[float]] | Tensor,
        task_bounds: Sequence[Sequence[float]] | Tensor,
        objective: Objective,
        solution_names: Sequence[str] | None = None,
        task_names: Sequence[str] | None = None,
    ) -> None:
        self.solution_bounds = _box(solution_bounds, "solution_bounds")
        self.task_bounds = _box(task_bounds, "task_bounds")
        self.bounds = torch.cat([self.solution_bounds, self.task_bounds], dim=1)
        self.objectives = [objective]
        n, k = self.n_solution, self.n_task
        self.solution_names = list(solution_names) if solution_names else [f"x{i}" for i in range(n)]
        self.task_names = list(task_names) if task_names else [f"theta{i}" for i in range(k)]
        if len(self.solution_names) != n or len(self.task_names) != k:
            raise ConfigError(
                f"names: {len(self.solution_names)} solution names for {n} columns, "
                f"{len(self.task_names)} task names for {k} columns"
            )

    @property
    def n_solution(self) -> int:
        """Solution dimension n."""
        return self.solution_bounds.shape[1]

    @property
    def n_task(self) -> int:
        """Task-parameter dimension k."""
        return self.task_bounds.shape[1]

    @property
    def task_dims(self) -> list[int]:
        """Indices of the task columns in a joint row (the last ``k``)."""
        return list(range(self.n_solution, self.n_solution + self.n_task))

    @property
    def parameter_names(self) -> list[str]:
        """Names of the joint columns."""
        return self.solution_names + self.task_names

    def check_theta(self, theta: Sequence[float] | Sequence[Sequence[float]] | Tensor) -> Tensor:
        """Validate task parameters.

        Args:
            theta: Shape ``(k,)`` or ``(t, k)``.

        Returns:
            Shape ``(t, k)``, float64.

        Raises:
            BoundsError: Wrong number of columns, non-finite, or outside ``[theta_l, theta_u]``.
        """
        t = torch.as_tensor(theta, dtype=torch.float64)
        t = t.unsqueeze(0) if t.dim() == 1 else t
        if t.dim() != 2 or t.shape[1] != self.n_task:
            raise BoundsError(f"theta must have {self.n_task} values per task, got shape {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise BoundsError(f"theta is not finite: {t.tolist()}")
        lower, upper = self.task_bounds
        slack = 1e-9 * (upper - lower)
        outside = ((t < lower - slack) | (t > upper + slack)).any(-1).nonzero().flatten().tolist()
        if outside:
            raise BoundsError(
                f"theta {t[outside[0]].tolist()} is outside the task bounds [{lower.tolist()}, {upper.tolist()}]"
            )
        return t.clamp(lower, upper)

    def join(self, X: Tensor, theta: Tensor) -> Tensor:
        """Joint rows from solutions ``(t, n)`` and task parameters ``(t, k)`` (or one ``(k,)`` for all)."""
        X = torch.as_tensor(X, dtype=torch.float64)
        X = X.unsqueeze(0) if X.dim() == 1 else X
        T = self.check_theta(theta)
        if T.shape[0] == 1 and X.shape[0] != 1:
            T = T.expand(X.shape[0], -1)
        if X.shape != (T.shape[0], self.n_solution):
            raise BoundsError(f"x must have shape ({T.shape[0]}, {self.n_solution}), got {tuple(X.shape)}")
        return torch.cat([X, T], dim=-1)

    def split(self, Z: Tensor) -> tuple[Tensor, Tensor]:
        """Joint rows ``(..., n + k)`` -> solutions ``(..., n)`` and task parameters ``(..., k)``."""
        return Z[..., : self.n_solution], Z[..., self.n_solution :]

    def evaluate_one(self, x: Tensor) -> Tensor:
        solution, theta = self.split(x)
        value = float(self.evaluate_task(solution, theta))
        return self.to_max(torch.tensor([value], dtype=torch.float64))

    def evaluate_tasks(self, X: Tensor, theta: Tensor) -> Tensor:
        """``f(x_i; theta_i)`` in the objective's own direction, shape ``(t,)`` (``theta`` may be one row)."""
        return self.to_user(self.evaluate(self.join(X, theta)))[:, 0]

    def rescore(self, Y: Tensor, theta: Tensor) -> Tensor | None:
        """Task values of evaluated rows for other tasks, without evaluating; ``None`` if the family cannot.

        Args:
            Y: Outputs of evaluated rows, maximisation form, shape ``(N, M)``.
            theta: Task parameters, shape ``(P, k)``.

        Returns:
            Shape ``(N, P)``, the task objective in maximisation form, or ``None``.
        """
        return None

    @abstractmethod
    def evaluate_task(self, x: Tensor, theta: Tensor) -> float:
        """``f(x; theta)`` in the objective's own direction; ``x`` is ``(n,)``, ``theta`` ``(k,)``."""

    def heuristic_points(self) -> Tensor:
        """The centre of the joint box (there is nothing family-specific to start from)."""
        lower, upper = self.bounds
        return ((lower + upper) / 2).unsqueeze(0)

    def fixed_task(self, theta: Sequence[float] | Tensor) -> FixedTask:
        """The single task ``theta`` as an ordinary problem over the solution box (for single-task BO)."""
        return FixedTask(self, theta)


class FixedTask(Problem):
    """One member ``f(.; theta)`` of a family, as a problem over the solution box.

    Args:
        family: The family.
        theta: Its task parameters, shape ``(k,)``, inside the task bounds.
    """

    def __init__(self, family: ParametricProblem, theta: Sequence[float] | Tensor) -> None:
        self.family = family
        self.theta = family.check_theta(theta)[0]
        self.bounds = family.solution_bounds
        self.objectives = list(family.objectives[:1])

    def evaluate_one(self, x: Tensor) -> Tensor:
        return self.family.evaluate_one(torch.cat([x, self.theta]))[:1]


def theta_to_preference(theta: Tensor) -> Tensor:
    """Map the unit box ``[0, 1]^(m-1)`` onto the simplex of ``m`` weights, uniform to uniform.

    Stick-breaking: ``w_j = b_j * prod_{i<j} (1 - b_i)``, ``w_m = prod_i (1 - b_i)``, where the
    share ``b_j = 1 - (1 - t_j)^(1 / (m - j))`` is the inverse CDF of Beta(1, m - j) (j = 1..m-1)
    so that a uniform ``theta`` gives a uniform preference (Dirichlet(1, ..., 1)); without it
    most of the box would crowd the first objective's corner. Continuous and onto; for two
    objectives it is ``w = (t, 1 - t)``.

    Args:
        theta: Shape ``(..., m - 1)`` in ``[0, 1]``.

    Returns:
        Shape ``(..., m)``, non-negative, rows summing to one.
    """
    m = theta.shape[-1] + 1
    rest = torch.ones_like(theta[..., :1])
    weights = []
    for j in range(m - 1):
        share = 1 - (1 - theta[..., j : j + 1].clamp(0, 1)) ** (1.0 / (m - 1 - j))
        weights.append(rest * share)
        rest = rest * (1 - share)
    return torch.cat([*weights, rest], dim=-1)


def preference_to_theta(weights: Sequence[float] | Tensor) -> Tensor:
    """Inverse of :func:`theta_to_preference` (weights are normalised to sum to one first).

    Args:
        weights: Shape ``(..., m)``, non-negative, not all zero.

    Returns:
        Shape ``(..., m - 1)`` in ``[0, 1]`` (a coordinate whose remaining stick is empty is 0).

    Raises:
        ConfigError: Negative, non-finite or all-zero weights.
    """
    w = torch.as_tensor(weights, dtype=torch.float64)
    if w.shape[-1] < 2 or not torch.isfinite(w).all() or (w < 0).any() or (w.sum(-1) <= 0).any():
        raise ConfigError(f"a preference needs >= 2 non-negative finite weights, not all zero; got {w.tolist()}")
    w = w / w.sum(-1, keepdim=True)
    m = w.shape[-1]
    rest = torch.ones_like(w[..., :1])
    theta = []
    for j in range(m - 1):
        share = torch.where(rest > 1e-12, w[..., j : j + 1] / rest.clamp_min(1e-12), torch.zeros_like(rest))
        theta.append((1 - (1 - share.clamp(0, 1)) ** (m - 1 - j)).clamp(0, 1))
        rest = rest - w[..., j : j + 1]
    return torch.cat(theta, dim=-1)


def chebyshev(Y: Tensor, weights: Tensor, ideal: Tensor, nadir: Tensor, rho: float = 0.05) -> Tensor:
    """Augmented Chebyshev scalarisation of maximised objectives (to be minimised).

    With ``u = (ideal - y) / (ideal - nadir)`` (0 at the ideal point, 1 at the nadir),
    ``s = max_i w_i u_i + rho * sum_i u_i``. A larger ``w_i`` punishes a shortfall on
    objective ``i`` more, so the preference ``(0.7, 0.3)`` leans towards the first
    objective. The unweighted augmentation keeps minimisers Pareto optimal even for a
    weight of zero (rho > 0), and every properly Pareto-optimal point minimises it for
    some ``w`` (Miettinen 1999, Sec. 3.4).

    Args:
        Y: Objectives, maximisation form, shape ``(..., m)``.
        weights: Shape ``(..., m)`` (broadcast against ``Y``).
        ideal: Shape ``(m,)``, maximisation form.
        nadir: Shape ``(m,)``, maximisation form, below ``ideal``.
        rho: Weight of the augmentation term.

    Returns:
        Shape ``(...)``.
    """
    u = (ideal - Y) / (ideal - nadir)
    return (weights * u).max(-1).values + rho * u.sum(-1)


def anchor_range(problem: MergeProblem) -> tuple[Tensor, Tensor]:
    """Ideal and nadir of a merge problem from its anchors: the base model and each expert alone.

    BAMBO normalises each objective between the base model's and the expert's score
    (Sec. 3.1); here the ideal is each objective's best value over those ``1 + N``
    evaluations and the nadir its worst, so the expert of a task sets that task's ideal
    and the base model (usually) its nadir.

    Args:
        problem: The merge problem (``1 + N`` evaluations are made).

    Returns:
        ``(ideal, nadir)``, the objectives' own directions, shape ``(m,)`` each.

    Raises:
        ConfigError: An objective has the same value at every anchor (no range to normalise by).
    """
    Y = problem.evaluate(problem.anchor_points())
    ideal, nadir = problem.to_user(Y.max(0).values), problem.to_user(Y.min(0).values)
    flat = [
        name for name, lo, hi in zip(problem.objective_names, Y.min(0).values, Y.max(0).values, strict=True) if hi <= lo
    ]
    if flat:
        raise ConfigError(f"objectives {flat} score the same for the base model and every expert; give ideal and nadir")
    return ideal, nadir


class Preferences(FrozenConfig):
    """How a preference over the objectives is scalarised (:class:`PreferenceFamily`).

    Attributes:
        ideal: Best value of each objective, own directions; with ``nadir``, or neither:
            then both are measured from the base model and each expert alone
            (:func:`anchor_range`) when a run starts.
        nadir: Worst value of each objective worth considering, own directions.
        rho: Augmentation weight of the Chebyshev scalarisation.
    """

    ideal: list[float] | None = None
    nadir: list[float] | None = None
    rho: float = Field(default=0.05, ge=0)

    @model_validator(mode="after")
    def _both_or_neither(self) -> Preferences:
        if (self.ideal is None) != (self.nadir is None):
            raise ConfigError("preferences: give both ideal and nadir, or neither (then they are measured)")
        if self.ideal is not None and self.nadir is not None and len(self.ideal) != len(self.nadir):
            raise ConfigError(f"preferences: ideal has {len(self.ideal)} values but nadir {len(self.nadir)}")
        return self


class PreferenceFamily(ParametricProblem):
    """Preference-conditioned tasks of a multi-objective problem (PMTO for merging).

    The task parameter ``theta`` in ``[0, 1]^(m-1)`` is a preference (weights on the
    simplex, :func:`theta_to_preference`); the task is to minimise the augmented
    Chebyshev scalarisation (:func:`chebyshev`) of the objectives normalised between
    a fixed ``nadir`` and ``ideal`` (fixed so the task never changes under the model).
    Outputs: the scalarised value (first, minimised), then the wrapped problem's
    objectives, so nothing a merge evaluation measured is lost and :meth:`rescore`
    scores any preference from an evaluation made for another.

    Args:
        problem: The multi-objective problem (e.g. a :class:`~bambo.problem.MergeProblem`).
        ideal: Best value of each objective, in the objectives' own directions, shape ``(m,)``.
        nadir: Worst value of each objective worth considering, own directions, shape ``(m,)``.
        rho: Augmentation weight of the Chebyshev scalarisation.
    """

    def __init__(
        self, problem: Problem, ideal: Sequence[float] | Tensor, nadir: Sequence[float] | Tensor, rho: float = 0.05
    ) -> None:
        m = problem.num_objectives
        if m < 2:
            raise ConfigError(f"a preference family needs >= 2 objectives, the problem has {m}")
        ideal_t = torch.as_tensor(ideal, dtype=torch.float64)
        nadir_t = torch.as_tensor(nadir, dtype=torch.float64)
        if ideal_t.shape != (m,) or nadir_t.shape != (m,):
            raise ConfigError(f"ideal and nadir need shape ({m},), got {tuple(ideal_t.shape)}, {tuple(nadir_t.shape)}")
        self.ideal = problem.to_max(ideal_t)
        self.nadir = problem.to_max(nadir_t)
        if not (self.ideal > self.nadir).all():
            raise ConfigError(
                f"ideal {ideal_t.tolist()} must be better than nadir {nadir_t.tolist()} in every objective"
            )
        if rho < 0:
            raise ConfigError(f"rho must be >= 0, got {rho}")
        self.problem = problem
        self.rho = rho
        names = getattr(getattr(problem, "space", None), "parameter_names", None)
        super().__init__(
            problem.bounds,
            [[0.0] * (m - 1), [1.0] * (m - 1)],
            Objective(name="chebyshev", direction="minimize"),
            solution_names=names,
            task_names=[f"pref_{name}" for name in problem.objective_names[:-1]],
        )
        self.objectives = [self.objectives[0], *problem.objectives]
        self.front_columns = list(range(1, m + 1))  # the Pareto set is over the objectives, not the scalarisation
        self.ref_point = None if problem.ref_point is None else problem.ref_point.clone()

    def scalarize(self, Y: Tensor, theta: Tensor) -> Tensor:
        """Scalarised value (to minimise) of maximisation-form objectives ``(..., m)`` for ``theta`` ``(..., m-1)``."""
        return chebyshev(Y, theta_to_preference(theta), self.ideal, self.nadir, self.rho)

    def values(self, y: Tensor, theta: Tensor) -> Tensor:
        """All outputs, maximisation form, from the wrapped problem's objectives ``(m,)``: ``(1 + m,)``."""
        return torch.cat([-self.scalarize(y, theta).reshape(1), y])

    def evaluate_one(self, x: Tensor) -> Tensor:
        solution, theta = self.split(x)
        return self.values(self.problem.evaluate(solution.unsqueeze(0))[0], theta)

    def evaluate_task(self, x: Tensor, theta: Tensor) -> float:
        return float(self.scalarize(self.problem.evaluate(x.unsqueeze(0))[0], theta))

    @property
    def supports_fidelity(self) -> bool:
        """Whether the wrapped problem does."""
        return self.problem.supports_fidelity

    def metrics(self, x: Tensor, fidelity: float = 1.0) -> dict[str, float]:
        """The wrapped problem's metrics for the solution part of joint row ``x``."""
        return self.problem.metrics(self.split(x)[0], fidelity)

    def objective_values(self, metrics: dict[str, float], x: Tensor) -> list[float]:
        """All outputs, maximisation form, from the metrics of joint row ``x`` (for the runner)."""
        y = torch.tensor(self.problem.objective_values(metrics, self.split(x)[0]), dtype=torch.float64)
        return self.values(y, self.split(x)[1]).tolist()

    can_rescore = True

    def rescore(self, Y: Tensor, theta: Tensor) -> Tensor:
        return -self.scalarize(Y[:, 1:].unsqueeze(1), theta.unsqueeze(0))
