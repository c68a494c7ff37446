"""Model-based multi-fidelity search: a multi-fidelity GP and the MOMF acquisition (Irshad et al. 2021).

The model-based alternative to successive halving (:class:`bambo.fidelity.Halving`): the
strategy proposes each candidate *with* its fidelity, from a fixed set of fidelities
(``(0.25, 1.0)`` by default: a quarter of the evaluation data, or all of it).

- Model: BoTorch's ``SingleTaskMultiFidelityGP`` over ``(x, s)``, one output per objective
  plus the fidelity objective ``s`` itself, with the downsampling kernel
  (``linear_truncated=False``): the covariance of Klein et al.'s FABOLAS for a fidelity
  that is the share of the data used, the very meaning of a fidelity here
  (:mod:`bambo.fidelity`), so low-fidelity scores inform the full-fidelity posterior
  through a learned discrepancy instead of being ignored or taken at face value.
- Acquisition: BoTorch's ``MOMF`` (Irshad, Karsch & Döpp 2021, "Expected hypervolume
  improvement for simultaneous multi-objective and multi-fidelity optimization", Eq. 5):
  the hypervolume improvement in (objectives, fidelity) space divided by the evaluation's
  cost, here the fidelity itself (the share of the data scored, as the journal counts it).
  The fidelity objective's reference is 0. The q candidates are chosen sequentially
  (BoTorch's ``optimize_acqf_mixed`` with the fidelity fixed to each allowed value).
- Warm start: the problem's heuristic points at full fidelity (meaningful models whose
  scores anchor the front), then Sobol points at the lowest fidelity up to ``n_initial``.

The loop journals the fidelity of every proposal (:attr:`Strategy.proposes_fidelity`): ``ask``
returns ``(k, d + 1)`` rows whose last column is the fidelity, and ``tell`` gets the same
layout. Only full-fidelity evaluations enter the run's result and hypervolume.

Cost: BoTorch's MF-HVKG (the knowledge-gradient alternative) took 13 s of CPU for one
small proposal on this machine (``shared/notes``), so MOMF is the one offered; measured
against halving in ``benchmarks/results/multifidelity.md``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from botorch.acquisition.multi_objective.multi_fidelity import MOMF
from botorch.exceptions.warnings import OptimizationWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskMultiFidelityGP
from botorch.models.transforms.input import Normalize
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf_mixed
from botorch.sampling.normal import SobolQMCNormalSampler
from botorch.utils.multi_objective.box_decompositions.non_dominated import FastNondominatedPartitioning
from botorch.utils.multi_objective.hypervolume import infer_reference_point
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor
from torch.quasirandom import SobolEngine

from bambo.errors import ConfigError
from bambo.fidelity import FULL, check_fidelity
from bambo.pareto import pareto_front
from bambo.problem import Problem
from bambo.result import Artifacts
from bambo.strategies.base import Strategy


class MOMFSearch(Strategy):
    """Multi-fidelity BO with MOMF (the module docstring).

    Args:
        problem: A problem that supports fidelities (:attr:`~bambo.problem.Problem.supports_fidelity`).
        seed: Seeds the Sobol warm start, the quasi-MC samples and the restarts.
        fidelities: The fidelities a candidate may be evaluated at, in (0, 1]; 1 is added if missing.
        n_initial: Warm-start points (heuristic points in full, then Sobol points at the lowest fidelity).
        mc_samples: Quasi-MC samples of the acquisition.
        num_restarts: Restarts of the acquisition optimiser per fidelity.
        raw_samples: Raw samples that pick the restarts.
        maxiter: L-BFGS iterations per restart at most.

    Raises:
        ConfigError: The problem has no fidelities, or a bad option.
    """

    name = "momf"
    proposes_fidelity = True

    def __init__(
        self,
        problem: Problem,
        seed: int = 0,
        fidelities: Sequence[float] = (0.25, 1.0),
        n_initial: int = 8,
        mc_samples: int = 64,
        num_restarts: int = 4,
        raw_samples: int = 256,
        maxiter: int = 200,
    ) -> None:
        super().__init__(problem, seed)
        if not problem.supports_fidelity:
            raise ConfigError(
                f"strategy 'momf' needs a problem that evaluates at fidelities below 1 ({type(problem).__name__} "
                "evaluates in full only; a merge problem does when its evaluator takes a 'fidelity' argument)"
            )
        self.fidelities = sorted({check_fidelity(f) for f in fidelities} | {FULL})
        if len(self.fidelities) < 2:
            raise ConfigError(f"momf needs a fidelity below 1, got {list(fidelities)}")
        if n_initial < 2 or mc_samples < 1 or not 1 <= num_restarts <= raw_samples or maxiter < 1:
            raise ConfigError(
                f"need n_initial >= 2, mc_samples >= 1, 1 <= num_restarts <= raw_samples, maxiter >= 1; got "
                f"n_initial={n_initial}, mc_samples={mc_samples}, num_restarts={num_restarts}, "
                f"raw_samples={raw_samples}, maxiter={maxiter}"
            )
        self.n_initial, self.mc_samples, self.num_restarts = n_initial, mc_samples, num_restarts
        self.raw_samples, self.maxiter = raw_samples, maxiter
        d = problem.dim
        lower, upper = problem.bounds
        self.bounds = torch.stack(
            [torch.cat([lower, lower.new_tensor([self.fidelities[0]])]), torch.cat([upper, upper.new_tensor([FULL])])]
        )
        self.X = torch.empty(0, d + 1, dtype=torch.float64)
        self._warm_start = self._initial_design()
        self._pending = torch.empty(0, d + 1, dtype=torch.float64)
        self._iteration = 0

    def _initial_design(self) -> Tensor:
        heuristic = self.problem.heuristic_points()[: self.n_initial - 1]  # at least one low-fidelity point
        n_sobol = self.n_initial - heuristic.shape[0]
        lower, upper = self.problem.bounds
        sobol = lower + (upper - lower) * SobolEngine(self.problem.dim, scramble=True, seed=self.seed).draw(
            n_sobol, dtype=torch.float64
        )
        full = torch.full((heuristic.shape[0], 1), FULL, dtype=torch.float64)
        low = torch.full((n_sobol, 1), self.fidelities[0], dtype=torch.float64)
        return torch.cat([torch.cat([heuristic, full], dim=1), torch.cat([sobol, low], dim=1)])

    def tell(self, X: Tensor, Y: Tensor) -> None:
        """Learn evaluations; ``X`` has the fidelity as its last column, shape ``(n, d + 1)``.

        Raises:
            ConfigError: Wrong shapes, or points outside the bounds or the allowed fidelities.
        """
        X = torch.as_tensor(X, dtype=torch.float64).clone()
        Y = torch.as_tensor(Y, dtype=torch.float64).clone()
        d = self.problem.dim
        if X.dim() != 2 or X.shape[1] != d + 1:
            raise ConfigError(f"X must have shape (n, {d + 1}) with the fidelity last, got {tuple(X.shape)}")
        if Y.shape != (X.shape[0], self.problem.num_objectives):
            raise ConfigError(f"Y must have shape ({X.shape[0]}, {self.problem.num_objectives}), got {tuple(Y.shape)}")
        lower, upper = self.bounds
        slack = 1e-9 * (upper - lower)
        outside = (~torch.isfinite(X).all(dim=-1)) | ((X < lower - slack) | (X > upper + slack)).any(dim=-1)
        if outside.any():
            row = int(outside.nonzero()[0])
            raise ConfigError(f"X row {row} is outside the bounds or not finite: {X[row].tolist()}")
        Y[~torch.isfinite(Y).all(dim=-1)] = float("nan")
        self.X, self.Y = torch.cat([self.X, X]), torch.cat([self.Y, Y])
        if self._pending.shape[0] and X.shape[0]:
            matched = (torch.cdist(self._pending, X) < 1e-12).any(dim=1)
            self._pending = self._pending[~matched]

    def ask(self, n: int) -> Tensor:
        self._check_n(n)
        if self._warm_start.shape[0] > 0:
            X, self._warm_start = self._warm_start[:n], self._warm_start[n:]
        else:
            X = self._bayesian_batch(n)
        self._pending = torch.cat([self._pending, X])
        return X.clone()

    def replay(self, X: Tensor) -> None:
        """Advance without refitting: pop the warm start, or count a model-based batch (as BAMBO does)."""
        if self._warm_start.shape[0] > 0:
            self._warm_start = self._warm_start[X.shape[0] :]
        else:
            self._iteration += 1
        self._pending = torch.cat([self._pending, torch.as_tensor(X, dtype=torch.float64)])

    def _bayesian_batch(self, q: int) -> Tensor:
        X_ok, Y_ok = self.completed
        self._iteration += 1
        seed = self.seed * 100_003 + self._iteration
        if X_ok.shape[0] < 2:  # nothing to model yet (failures): keep exploring at the lowest fidelity
            lower, upper = self.problem.bounds
            x = lower + (upper - lower) * SobolEngine(self.problem.dim, scramble=True, seed=seed).draw(q).double()
            return torch.cat([x, torch.full((q, 1), self.fidelities[0], dtype=torch.float64)], dim=1)
        d, m = self.problem.dim, self.problem.num_objectives
        train_Y = torch.cat([Y_ok, X_ok[:, -1:]], dim=1)  # the fidelity objective: s itself
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = SingleTaskMultiFidelityGP(
                X_ok,
                train_Y,
                data_fidelities=[d],
                linear_truncated=False,
                input_transform=Normalize(d + 1, bounds=self.bounds),
                outcome_transform=Standardize(m + 1),
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizationWarning)
                fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        ref = torch.cat([self._objective_reference(Y_ok, X_ok), torch.zeros(1, dtype=torch.float64)])
        acqf = MOMF(
            model=model,
            ref_point=ref,
            partitioning=FastNondominatedPartitioning(ref_point=ref, Y=train_Y),
            sampler=SobolQMCNormalSampler(sample_shape=torch.Size([self.mc_samples]), seed=seed),
            X_pending=self._pending if self._pending.shape[0] else None,
            cost_call=lambda X: X[..., -1:],  # cost: the share of the data scored
        )
        with torch.random.fork_rng(), warnings.catch_warnings():
            torch.manual_seed(seed)
            warnings.simplefilter("ignore", OptimizationWarning)
            warnings.filterwarnings("ignore", message="Optimization failed", category=RuntimeWarning)
            candidates, _ = optimize_acqf_mixed(
                acqf,
                bounds=self.bounds,
                q=q,
                num_restarts=self.num_restarts,
                raw_samples=self.raw_samples,
                fixed_features_list=[{d: f} for f in self.fidelities],
                options={"maxiter": self.maxiter, "batch_limit": self.num_restarts},
            )
        return candidates.detach().clamp(self.bounds[0], self.bounds[1])

    def _objective_reference(self, Y: Tensor, X: Tensor) -> Tensor:
        """The problem's reference point, else the nadir of the full-fidelity front (or of all data)."""
        if self.problem.ref_point is not None:
            return self.problem.ref_point.to(Y)
        full = Y[X[:, -1] >= FULL]
        return infer_reference_point(pareto_front(full if full.shape[0] else Y))

    def artifacts(self) -> Artifacts:
        return Artifacts(info={"fidelities": list(self.fidelities)})
