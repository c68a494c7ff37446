"""PMTO's unified model: one GP over solutions and task parameters jointly.

A ``ParametricTaskGP`` is a ``SingleTaskGP`` on ``(x, theta)`` whose kernel is the
product of a Matern-5/2 ARD kernel on the solution dimensions and one on the task
dimensions (PMTO Sec. "unified GP": ``k((x, theta), (x', theta')) =
k_x(x, x') k_theta(theta, theta')``), so what is learned on one task transfers to
nearby tasks. To optimise ``x`` for a given ``theta``, fix the task columns:
:meth:`ParametricTaskGP.fixed_features` for ``optimize_acqf(fixed_features=...)``,
or :func:`bambo.acquisition.acquisition_for_task` (BoTorch's
``FixedFeatureAcquisitionFunction``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from botorch.models import ModelListGP, SingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from torch import Tensor

from bambo.errors import ConfigError
from bambo.surrogates.data import check_training_data, resolve_bounds
from bambo.surrogates.gp import fit_gp_model


class ParametricTaskGP(SingleTaskGP):
    """A GP over the joint space of solutions and task parameters (one output).

    Args:
        train_X: Shape ``(n, d)``: solution columns and task-parameter columns.
        train_Y: Shape ``(n, 1)``.
        task_dims: Indices of the task-parameter columns (the others are the solution).
        bounds: Bounds of all ``d`` columns, ``(2, d)`` (default: the data's range).
    """

    def __init__(
        self, train_X: Tensor, train_Y: Tensor, task_dims: Sequence[int], bounds: Tensor | None = None
    ) -> None:
        X, Y = check_training_data(train_X, train_Y)
        if Y.shape[1] != 1:
            raise ConfigError(f"a ParametricTaskGP models one output, got {Y.shape[1]} (use fit_parametric_task_gp)")
        d = X.shape[1]
        task = [int(i) for i in task_dims]  # the caller's order: theta values follow it
        if not task or len(set(task)) != len(task) or min(task) < 0 or max(task) >= d or len(task) == d:
            raise ConfigError(
                f"task_dims must name some but not all of the {d} input columns, once each; got {list(task_dims)}"
            )
        solution = [i for i in range(d) if i not in task]
        covar = get_covar_module_with_dim_scaled_prior(
            ard_num_dims=len(solution), use_rbf_kernel=False, active_dims=solution
        ) * get_covar_module_with_dim_scaled_prior(ard_num_dims=len(task), use_rbf_kernel=False, active_dims=task)
        super().__init__(
            X,
            Y[:, :1],
            covar_module=covar,
            input_transform=Normalize(d, bounds=resolve_bounds(X, bounds)),
            outcome_transform=Standardize(1),
        )
        self.task_dims = task
        self.solution_dims = solution

    def fixed_features(self, theta: Sequence[float] | Tensor) -> dict[int, float]:
        """``{column: value}`` fixing the task parameters, for ``optimize_acqf(fixed_features=...)``."""
        values = torch.as_tensor(theta, dtype=torch.float64).reshape(-1).tolist()
        if len(values) != len(self.task_dims):
            raise ConfigError(f"theta has {len(values)} values for {len(self.task_dims)} task dimensions")
        return dict(zip(self.task_dims, values, strict=True))


def build_parametric_task_gp(
    train_X: Tensor, train_Y: Tensor, task_dims: Sequence[int] | None = None, bounds: Tensor | None = None
) -> ModelListGP:
    """Build one :class:`ParametricTaskGP` per output, not fitted.

    Args:
        train_X: Shape ``(n, d)``.
        train_Y: Shape ``(n, m)``.
        task_dims: Task-parameter columns (default: the last column).
        bounds: Input bounds ``(2, d)``.
    """
    X, Y = check_training_data(train_X, train_Y)
    task = list(task_dims) if task_dims is not None else [X.shape[1] - 1]
    return ModelListGP(*[ParametricTaskGP(X, Y[:, j : j + 1], task, bounds) for j in range(Y.shape[1])])


def fit_parametric_task_gp(
    train_X: Tensor, train_Y: Tensor, task_dims: Sequence[int] | None = None, bounds: Tensor | None = None
) -> ModelListGP:
    """Build and fit one :class:`ParametricTaskGP` per output (see :func:`build_parametric_task_gp`)."""
    return fit_gp_model(build_parametric_task_gp(train_X, train_Y, task_dims, bounds))
