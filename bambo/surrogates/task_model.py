"""PMTO's task model: task parameters -> the best solution found for them.

(theta_l, theta_u)-PMTO (``shared/papers/pmto-parametric-multitask-summary.txt``,
"probabilistic task model M: Theta -> X") fits one GP per solution dimension on the
pairs ``(theta_j, x*_j)`` of the task pool, where ``x*_j`` is the best solution
evaluated for task ``j``. Its predictive mean answers an unseen task instantly (the
online phase) and its kernel scores how well a set of tasks covers the task space
(task evolution's determinant, :meth:`TaskModel.diversity_gain`).

Each GP is a BoTorch ``SingleTaskGP`` with a Matern-5/2 ARD kernel over the task
parameters normalised to ``[theta_l, theta_u]`` and a standardised output, fitted
by marginal likelihood; predictions are clipped to the solution bounds.
"""

from __future__ import annotations

from pathlib import Path

import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor

from bambo.errors import BoundsError, ConfigError

__all__ = ["TaskModel"]


class TaskModel:
    """One GP per solution dimension mapping task parameters to the best solution.

    Args:
        thetas: Task parameters of the pool, shape ``(t, k)``.
        solutions: Best solution of each task, shape ``(t, n)``.
        task_bounds: ``[theta_l, theta_u]``, shape ``(2, k)``.
        solution_bounds: Shape ``(2, n)`` (predictions are clipped to them).
        states: Fitted GP state dicts (from :meth:`save`) to load instead of fitting.
    """

    def __init__(
        self,
        thetas: Tensor,
        solutions: Tensor,
        task_bounds: Tensor,
        solution_bounds: Tensor,
        states: list[dict[str, Tensor]] | None = None,
    ) -> None:
        T = torch.as_tensor(thetas, dtype=torch.float64)
        S = torch.as_tensor(solutions, dtype=torch.float64)
        self.task_bounds = torch.as_tensor(task_bounds, dtype=torch.float64)
        self.solution_bounds = torch.as_tensor(solution_bounds, dtype=torch.float64)
        k, n = self.task_bounds.shape[1], self.solution_bounds.shape[1]
        if T.dim() != 2 or T.shape[1] != k or S.shape != (T.shape[0], n):
            raise ConfigError(
                f"thetas must be (t, {k}) and solutions (t, {n}), got {tuple(T.shape)} and {tuple(S.shape)}"
            )
        if T.shape[0] < 2:
            raise ConfigError(f"a task model needs at least 2 tasks, got {T.shape[0]}")
        bad = (~torch.isfinite(T).all(-1)) | (~torch.isfinite(S).all(-1))
        if bad.any():
            row = int(bad.nonzero()[0, 0])
            raise ConfigError(f"task {row} is not finite: theta {T[row].tolist()}, solution {S[row].tolist()}")
        self.thetas, self.solutions = T, S
        self.n_evaluations: int | None = None  # set by :meth:`load`
        if states is not None and len(states) != n:
            raise ConfigError(f"{len(states)} saved GP states for {n} solution dimensions")
        self.models: list[SingleTaskGP] = []
        for j in range(n):
            gp = SingleTaskGP(
                T,
                S[:, j : j + 1],
                covar_module=get_covar_module_with_dim_scaled_prior(ard_num_dims=k, use_rbf_kernel=False),
                input_transform=Normalize(k, bounds=self.task_bounds),
                outcome_transform=Standardize(1),
            )
            if states is None:
                fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
            else:
                gp.load_state_dict(states[j])
            gp.eval()
            self.models.append(gp)

    def save(self, path: Path | str, n_evaluations: int | None = None) -> None:
        """Write the fitted model (training pairs, bounds, GP hyperparameters) for instant reuse.

        Args:
            path: The file.
            n_evaluations: How many evaluations it was fitted on (read back as :attr:`n_evaluations`).
        """
        torch.save(
            {
                "n_evaluations": n_evaluations,
                "thetas": self.thetas,
                "solutions": self.solutions,
                "task_bounds": self.task_bounds,
                "solution_bounds": self.solution_bounds,
                "states": [gp.state_dict() for gp in self.models],
            },
            Path(path),
        )

    @classmethod
    def load(cls, path: Path | str) -> TaskModel:
        """Read a model written by :meth:`save` (tensors only; no fitting)."""
        try:
            data = torch.load(Path(path), weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise ConfigError(f"cannot read task model {path}: {exc}") from None
        model = cls(data["thetas"], data["solutions"], data["task_bounds"], data["solution_bounds"], data["states"])
        model.n_evaluations = data.get("n_evaluations")
        return model

    @property
    def n_task(self) -> int:
        """Task-parameter dimension k."""
        return self.task_bounds.shape[1]

    def _check(self, theta: Tensor) -> Tensor:
        t = torch.as_tensor(theta, dtype=torch.float64)
        t = t.unsqueeze(0) if t.dim() == 1 else t
        if t.dim() != 2 or t.shape[1] != self.n_task:
            raise BoundsError(f"theta must have {self.n_task} values per task, got shape {tuple(t.shape)}")
        lower, upper = self.task_bounds
        if not torch.isfinite(t).all():
            raise BoundsError(f"theta is not finite: {t[~torch.isfinite(t).all(-1)][0].tolist()}")
        bad = ((t < lower - 1e-9) | (t > upper + 1e-9)).any(-1)
        if bad.any():
            row = t[bad.nonzero()[0, 0]].tolist()
            raise BoundsError(f"theta {row} is outside the task bounds [{lower.tolist()}, {upper.tolist()}]")
        return t

    @torch.no_grad()
    def predict(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Predicted best solution for each task parameter and its standard deviation.

        Args:
            theta: Shape ``(t, k)`` or ``(k,)``, inside the task bounds.

        Returns:
            ``(mean, std)``, each ``(t, n)``; the mean is clipped to the solution bounds.

        Raises:
            BoundsError: Wrong number of task parameters, or outside ``[theta_l, theta_u]``.
        """
        t = self._check(theta)
        means, stds = [], []
        for gp in self.models:
            post = gp.posterior(t)
            means.append(post.mean.squeeze(-1))
            stds.append(post.variance.clamp_min(0).sqrt().squeeze(-1))
        lower, upper = self.solution_bounds
        return torch.stack(means, -1).clamp(lower, upper), torch.stack(stds, -1)

    @torch.no_grad()
    def correlation(self, A: Tensor, B: Tensor) -> Tensor:
        """Kernel correlation between task parameters, one matrix per solution dimension's GP.

        The learned Matern kernel of each GP without an output scale (so the diagonal
        is one), on normalised task parameters.

        Args:
            A: Shape ``(a, k)``.
            B: Shape ``(b, k)``.

        Returns:
            Shape ``(n, a, b)``: one correlation matrix per solution dimension.
        """
        out = []
        for gp in self.models:
            a, b = gp.input_transform(A), gp.input_transform(B)
            kernel = getattr(gp.covar_module, "base_kernel", gp.covar_module)  # no output scale
            out.append(kernel(a, b).to_dense())
        return torch.stack(out)

    @torch.no_grad()
    def diversity_gain(self, pool: Tensor, candidates: Tensor, jitter: float = 1e-6) -> Tensor:
        """Log-determinant of the kernel matrix of ``pool`` plus each candidate (PMTO's DPP criterion).

        With unit diagonal, ``det K([pool; c]) = det K(pool) * (1 - k_c^T K(pool)^-1 k_c)``,
        so up to a constant shared by all candidates the log-determinant is the log of the
        Schur complement, computed here for every candidate at once instead of one
        determinant per candidate. Averaged over the solution dimensions' kernels.

        Args:
            pool: Shape ``(p, k)``, ``p >= 1``.
            candidates: Shape ``(c, k)``.
            jitter: Added to the diagonal of the pool's kernel matrix.

        Returns:
            Shape ``(c,)``: ``mean_j log det K_j([pool; candidate]) - log det K_j(pool)``.
        """
        K = self.correlation(pool, pool) + jitter * torch.eye(pool.shape[0], dtype=torch.float64)
        k = self.correlation(pool, candidates)  # (n, p, c)
        L = torch.linalg.cholesky(K)
        v = torch.linalg.solve_triangular(L, k, upper=False)
        schur = (1.0 + jitter - (v * v).sum(-2)).clamp_min(1e-12)  # (n, c)
        return schur.log().mean(0)
