"""Inner searches of PMTO: solutions by a confidence bound, tasks by evolution (DPP diversity).

The confidence bound is the registry's ``"ucb"`` (:mod:`bambo.acquisition`, BoTorch's
``UpperConfidenceBound``). Both searches are written here rather than taken from BoTorch's
``optimize_acqf`` because they run for many tasks at once: the bound is separable across
tasks, so one L-BFGS-B run over all tasks' starts replaces one ``optimize_acqf`` call per task, and
the determinant criterion is evaluated for a whole GA population with one solve
(:meth:`~bambo.surrogates.task_model.TaskModel.diversity_gain`).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from bambo.acquisition import get_acquisition
from bambo.errors import BoundsError
from bambo.parametric import ParametricProblem
from bambo.surrogates.parametric import ParametricTaskGP
from bambo.surrogates.task_model import TaskModel

__all__ = ["evolve_task", "maximize_bound"]


def maximize_bound(
    model: ParametricTaskGP,
    family: ParametricProblem,
    tasks: Tensor,
    beta: float,
    raw_samples: int,
    restarts: int,
    seed: int,
    starts: Tensor | None = None,
) -> Tensor:
    """Maximise ``mu + beta * sigma`` of the unified GP over x, for every task at once.

    The bound is the registry's ``"ucb"`` acquisition with BoTorch's ``beta = beta ** 2``.

    The bound is separable across tasks, so one L-BFGS-B run on the sum over all tasks'
    starts follows each task's own gradient (the runs share only the stopping test and
    L-BFGS's curvature memory, so a point may stop ~1e-5 short of its own optimum); per
    task the best of the optimised points and their starts is kept.

    Args:
        model: The unified GP over ``(x, theta)``.
        family: The task family (solution bounds, column layout).
        tasks: Task parameters ``(t, k)``.
        beta: Standard-deviation multiplier (0: the posterior mean).
        raw_samples: Uniform random solutions scored per task to pick the starts.
        restarts: Best raw samples per task used as starts.
        seed: Seed of the raw samples.
        starts: Extra starts ``(s, t, n)`` (e.g. the task model's answers).

    Returns:
        Shape ``(t, n)``.
    """
    lower, upper = family.solution_bounds
    t, n = tasks.shape[0], family.n_solution
    ucb = get_acquisition("ucb", model, beta=beta**2)

    def bound(X: Tensor) -> Tensor:  # X: (r, t, n) -> (r, t)
        Z = torch.cat([X, tasks.expand(X.shape[0], -1, -1)], -1).reshape(-1, 1, X.shape[-1] + tasks.shape[-1])
        return ucb(Z).reshape(X.shape[0], t)

    generator = torch.Generator().manual_seed(seed)
    raw = lower + (upper - lower) * torch.rand(raw_samples, t, n, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        top = bound(raw).topk(min(restarts, raw_samples), dim=0).indices  # (R, t)
    start = raw.gather(0, top.unsqueeze(-1).expand(-1, -1, n))
    if starts is not None:
        start = torch.cat([start, starts.clamp(lower, upper)])
    shape = start.shape

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        X = torch.tensor(flat, dtype=torch.float64).reshape(shape).requires_grad_(True)
        value = -bound(X).sum()
        value.backward()
        return float(value.detach()), X.grad.reshape(-1).numpy()

    box = list(zip(lower.repeat(shape[0] * t).tolist(), upper.repeat(shape[0] * t).tolist(), strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        found = minimize(
            objective, start.reshape(-1).numpy(), jac=True, method="L-BFGS-B", bounds=box, options={"maxiter": 100}
        )
    X = torch.as_tensor(found.x, dtype=torch.float64).reshape(shape).clamp(lower, upper)
    candidates = torch.cat([X, start])
    with torch.no_grad():
        best = bound(candidates).argmax(0)  # (t,)
    return candidates[best, torch.arange(t)]


def evolve_task(task_model: TaskModel, pool: Tensor, population: int, generations: int, seed: int) -> Tensor:
    """Task evolution: a pymoo GA over theta maximising the DPP log-determinant gain.

    Args:
        task_model: Supplies the kernel (:meth:`TaskModel.diversity_gain`).
        pool: Current tasks, shape ``(p, k)``.
        population: GA population size.
        generations: GA generations.
        seed: GA seed.

    Returns:
        The chosen task, shape ``(k,)``.
    """
    from pymoo.algorithms.soo.nonconvex.ga import GA
    from pymoo.core.problem import Problem as PymooProblem
    from pymoo.optimize import minimize as pymoo_minimize

    lower, upper = task_model.task_bounds

    class Diversity(PymooProblem):
        def __init__(self) -> None:
            super().__init__(n_var=lower.numel(), n_obj=1, xl=lower.numpy(), xu=upper.numpy())

        def _evaluate(self, x: np.ndarray, out: dict, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
            gain = task_model.diversity_gain(pool, torch.as_tensor(x, dtype=torch.float64))
            out["F"] = -gain.numpy()[:, None]

    found = pymoo_minimize(
        Diversity(),
        GA(pop_size=population, eliminate_duplicates=True),
        ("n_gen", generations),
        seed=seed % 2**31,
        verbose=False,
    )
    x = torch.as_tensor(np.atleast_2d(found.X)[0], dtype=torch.float64)
    if not torch.isfinite(x).all():
        raise BoundsError(f"task evolution returned a non-finite task {x.tolist()}")
    return x.clamp(lower, upper)
