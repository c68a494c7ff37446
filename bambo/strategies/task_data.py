"""What a task family's evaluations say about each task: PMTO's data (Wang et al. 2025, Alg. 1).

The best solution found for each task, the unified GP's training rows, the task model's
fit on the best tasks, and the diversity of a task pool; :mod:`bambo.strategies.pmto`
plans with them and benchmarks report them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bambo.errors import ConfigError
from bambo.parametric import ParametricProblem
from bambo.surrogates.task_model import TaskModel

__all__ = ["best_per_task", "fit_task_model", "pool_diversity", "task_pool", "task_scores", "training_rows"]


def task_pool(problem: ParametricProblem, thetas: Tensor) -> Tensor:
    """Distinct task parameters in order of first appearance, shape ``(P, k)``."""
    unique, inverse = torch.unique(thetas, dim=0, return_inverse=True)
    first = torch.full((unique.shape[0],), thetas.shape[0], dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(thetas.shape[0]), reduce="amin")
    return unique[first.argsort()]


def task_scores(problem: ParametricProblem, X: Tensor, Y: Tensor, pool: Tensor) -> Tensor:
    """Value of every completed row for every pool task, maximisation form, shape ``(N, P)``.

    A row scores its own task; if the family can :meth:`~ParametricProblem.rescore`
    (a preference family), it scores every task, otherwise ``-inf`` for the others.

    Args:
        problem: The family.
        X: Completed joint rows ``(N, n + k)``.
        Y: Their outputs ``(N, M)``, maximisation form, finite.
        pool: Task parameters ``(P, k)``.
    """
    rescored = problem.rescore(Y, pool)
    if rescored is not None:
        return rescored
    own = (problem.split(X)[1].unsqueeze(1) == pool.unsqueeze(0)).all(-1)  # (N, P)
    return torch.where(own, Y[:, :1], torch.full_like(own, -math.inf, dtype=Y.dtype))


def best_per_task(problem: ParametricProblem, X: Tensor, Y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each evaluated task's best solution (over every row that scores it, see :func:`task_scores`).

    Args:
        problem: The family.
        X: Joint rows, shape ``(N, n + k)``.
        Y: Outputs ``(N, M)``, maximisation form; non-finite rows (failures) are skipped.

    Returns:
        ``(thetas (t, k), solutions (t, n), values (t,))``, tasks in order of first
        appearance, ``values`` in maximisation form.
    """
    ok = torch.isfinite(Y).all(-1)
    X, Y = X[ok], Y[ok]
    if X.shape[0] == 0:
        return X.new_empty(0, problem.n_task), X.new_empty(0, problem.n_solution), X.new_empty(0)
    pool = task_pool(problem, problem.split(X)[1])
    scores = task_scores(problem, X, Y, pool)
    values, best = scores.max(0)
    return pool, problem.split(X)[0][best], values


def training_rows(problem: ParametricProblem, X: Tensor, Y: Tensor, top_k: int = 3) -> tuple[Tensor, Tensor]:
    """The unified GP's data: the evaluated rows, plus (for a family that can rescore)
    each task's ``top_k`` best rows of other tasks relabelled with its parameters.

    Args:
        problem: The family.
        X: Completed joint rows ``(N, n + k)``.
        Y: Their outputs ``(N, M)``, maximisation form, finite.
        top_k: Relabelled rows per task.

    Returns:
        ``(rows (N', n + k), values (N', 1))``.
    """
    rows, values = [X], [Y[:, :1]]
    pool = task_pool(problem, problem.split(X)[1])
    rescored = problem.rescore(Y, pool)
    if rescored is not None:
        solutions = problem.split(X)[0]
        top = rescored.topk(min(top_k, X.shape[0]), dim=0).indices  # (top_k, P)
        for j in range(pool.shape[0]):
            rows.append(problem.join(solutions[top[:, j]], pool[j]))
            values.append(rescored[top[:, j], j : j + 1])
    Z, V = torch.cat(rows), torch.cat(values)
    _, inverse = torch.unique(Z, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), Z.shape[0], dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(Z.shape[0]), reduce="amin")
    keep = first.sort().values
    return Z[keep], V[keep]


def fit_task_model(problem: ParametricProblem, X: Tensor, Y: Tensor, best_share: float = 0.7) -> TaskModel:
    """Fit the task model on the best ``best_share`` of tasks (at least 2, or all if fewer).

    Args:
        problem: The family.
        X: Joint rows ``(N, n + k)``.
        Y: Outputs ``(N, M)``, maximisation form (the first is the task objective).
        best_share: Fraction of tasks kept, ranked by their best value.

    Raises:
        ConfigError: ``best_share`` outside (0, 1], or fewer than 2 evaluated tasks.
    """
    if not 0 < best_share <= 1:
        raise ConfigError(f"best_share must be in (0, 1], got {best_share}")
    thetas, solutions, values = best_per_task(problem, X, Y)
    keep = max(min(2, thetas.shape[0]), math.ceil(best_share * thetas.shape[0]))
    order = values.argsort(descending=True)[:keep]
    return TaskModel(thetas[order], solutions[order], problem.task_bounds, problem.solution_bounds)


def pool_diversity(thetas: Tensor, task_bounds: Tensor, lengthscale: float = 0.2) -> dict[str, float]:
    """Model-free diversity of a task pool, for comparing task-selection rules.

    Args:
        thetas: Shape ``(t, k)``.
        task_bounds: Shape ``(2, k)``.
        lengthscale: Of a fixed RBF kernel on task parameters scaled to the unit box.

    Returns:
        ``log_det``: log-determinant of that kernel's matrix over the pool (higher is more
        diverse); ``nn_distance``: mean distance to the nearest other task, unit box.
    """
    lower, upper = task_bounds
    U = (thetas - lower) / (upper - lower)
    D = torch.cdist(U, U)
    K = torch.exp(-0.5 * (D / lengthscale) ** 2) + 1e-9 * torch.eye(U.shape[0], dtype=U.dtype)
    nn = (D + torch.diag(torch.full((U.shape[0],), math.inf, dtype=U.dtype))).min(-1).values
    return {"log_det": float(torch.linalg.slogdet(K).logabsdet), "nn_distance": float(nn.mean())}
